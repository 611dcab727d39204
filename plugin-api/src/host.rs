//! The host's side of the boundary: opening a plugin's root module, whichever version of this
//! ABI's line it was built against, with one check and no frozen copy of any older version.
//!
//! abi_stable checks a library against the host's types in one direction only: the library
//! may have *more* root-module fields than the host (it is newer), never fewer
//! (`abi_checking.rs`: a field count greater on the interface side is an error). A host that
//! appended an entry point would so refuse every plugin built before, unless it kept a frozen
//! copy of each older root module and tried them in turn. Here the check runs in the other
//! direction when the first fails: with the plugin's layout as the interface and the host's as
//! the implementation, a plugin with fewer fields passes, and every field both sides have is
//! still compared in full (name, type, layout, function signature). A field the plugin lacks
//! is read through its own prefix metadata, as `None`. So adding an entry point is appending a
//! `#[sabi(missing_field(option))]` field to [`crate::PluginModule`]; no loader code changes.

use abi_stable::abi_stability::check_layout_compatibility;
use abi_stable::library::{LibHeader, LibraryError, RootModuleError};
use abi_stable::sabi_types::{VersionNumber, VersionStrings};
use abi_stable::StableAbi;

use crate::{PluginModule_Ref, PLUGIN_ABI_VERSION};

/// Why a library's root module could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Built against a version of the ABI this host does not know (another line, or a
    /// version string that does not parse).
    Version {
        /// The library's ABI version.
        found: String,
    },
    /// Exported without its layout (`#[unsafe_no_layout_constant]`): nothing could be
    /// checked, so it is refused.
    NoLayout,
    /// Its root module's layout differs from this host's in a field both have, or in the
    /// fields up to `render`. The whole report is in abi_stable's error.
    Layout(LibraryError),
    /// Its root module's constructor failed or panicked.
    Init(RootModuleError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Version { found } => write!(
                f,
                "it was built against plugin ABI {found}, and this server takes {}",
                supported()
            ),
            OpenError::NoLayout => {
                f.write_str("it was exported without its layout, so it cannot be checked")
            }
            OpenError::Layout(_) => {
                f.write_str("its root module layout differs from this server's plugin-api")
            }
            OpenError::Init(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// The ABI versions this host takes, in words.
fn supported() -> String {
    let current = parsed(PLUGIN_ABI_VERSION);
    format!(
        "{}.{}.0 to {PLUGIN_ABI_VERSION} (and later {}.{}.x)",
        current.major, current.minor, current.major, current.minor
    )
}

fn parsed(version: &'static str) -> VersionNumber {
    VersionNumber::new(VersionStrings::new(version)).expect("the ABI version parses")
}

/// The ABI version `header`'s library was built against, as it says.
pub fn abi_version(header: &LibHeader) -> &'static str {
    header.version_strings().version.as_str()
}

/// Opens the root module of the library `header` describes: its ABI version on this host's
/// line (same major and minor; any patch, newer or older), its layout checked against this
/// host's in whichever direction the library is the larger side, then its constructor run.
pub fn open_root_module(header: &LibHeader) -> Result<PluginModule_Ref, OpenError> {
    let found = abi_version(header);
    let version = VersionNumber::new(header.version_strings()).map_err(|_| OpenError::Version {
        found: found.to_owned(),
    })?;
    let current = parsed(PLUGIN_ABI_VERSION);
    if (version.major, version.minor) != (current.major, current.minor) {
        return Err(OpenError::Version {
            found: found.to_owned(),
        });
    }
    let layout = header.layout().ok_or(OpenError::NoLayout)?;
    if let Err(newer_or_other) = header.ensure_layout::<PluginModule_Ref>() {
        // Not a plugin as new as this host or newer: an older one has fewer fields, and
        // passes with the roles swapped.
        let host = <PluginModule_Ref as StableAbi>::LAYOUT;
        if check_layout_compatibility(layout, host).is_err() {
            return Err(OpenError::Layout(newer_or_other));
        }
    }
    // SAFETY: the layout was checked just above, the library's against this host's or the
    // other way round: every field both have matches in full; a field only this host has is
    // read through the library's own prefix metadata (absent: `None`), and a field only the
    // library has is never read.
    #[allow(unsafe_code)]
    let module = unsafe { header.unchecked_layout::<PluginModule_Ref>() };
    module.map_err(OpenError::Init)
}
