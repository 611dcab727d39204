//! The host's side of the boundary: opening a plugin's root module, whichever version of the
//! ABI it was built against, and calling it through one handle, [`Plugin`].
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
//! `#[sabi(missing_field(option))]` field to [`crate::PluginModule`]; and adding a pixel
//! format or an error kind, a constant (the two are open `u8`s). No frozen copy is needed for
//! either.
//!
//! Two lines are open: this one ([`PLUGIN_ABI_VERSION`]'s major and minor), and the closed
//! line 0.1, whose enums were exhaustive: its plugins are checked against
//! [`crate::legacy`]'s types, which are today's in memory, and then called as every plugin is.

use abi_stable::abi_stability::check_layout_compatibility;
use abi_stable::library::{LibHeader, RootModule, RootModuleError};
use abi_stable::sabi_types::{VersionNumber, VersionStrings};
use abi_stable::std_types::RStr;
use abi_stable::StableAbi;

use crate::{
    legacy, DecodeNeed, ImageBuf, ImageView, ModeInfo, PluginModule_Ref, RenderError,
    RenderErrorKind, TargetSize, PLUGIN_ABI_VERSION,
};

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
    /// fields up to `render`: abi_stable's reports of both checks (the library as the newer
    /// side, then as the older), hundreds of lines.
    Layout(String),
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

/// The line of the ABI a plugin was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// [`PLUGIN_ABI_VERSION`]'s: checked against [`crate::PluginModule`].
    Current,
    /// 0.1, closed: checked against [`crate::legacy::PluginModule`].
    Legacy,
}

impl Line {
    fn of(version: VersionNumber) -> Option<Line> {
        let current = parsed(PLUGIN_ABI_VERSION);
        match (version.major, version.minor) {
            (major, minor) if (major, minor) == (current.major, current.minor) => {
                Some(Line::Current)
            }
            (0, 1) => Some(Line::Legacy),
            _ => None,
        }
    }
}

/// Whether this host takes plugins built against ABI `version` (`"0.2.0"`): its line or the
/// closed line 0.1. (Whether a plugin of it loads then rests on its layout.)
pub fn takes_abi(version: &str) -> bool {
    let mut parts = version.split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch)), None) => Line::of(VersionNumber {
            major,
            minor,
            patch,
        })
        .is_some(),
        _ => false,
    }
}

/// The ABI versions this host takes, in words.
fn supported() -> String {
    let current = parsed(PLUGIN_ABI_VERSION);
    format!(
        "0.1.x and {}.{}.x (its own is {PLUGIN_ABI_VERSION})",
        current.major, current.minor
    )
}

fn parsed(version: &'static str) -> VersionNumber {
    VersionNumber::new(VersionStrings::new(version)).expect("the ABI version parses")
}

/// The ABI version `header`'s library was built against, as it says.
pub fn abi_version(header: &LibHeader) -> &'static str {
    header.version_strings().version.as_str()
}

/// A plugin's root module, opened and checked, of whichever ABI version it was built
/// against: the one way the host calls a plugin. Entry points the plugin lacks (it is older
/// than this host) read as absent, and it is handed only pixel formats its version has.
#[derive(Clone, Copy)]
pub struct Plugin {
    root: PluginModule_Ref,
    /// The ABI version it was built against, as it says.
    abi: &'static str,
    /// Its version, parsed. An entry point appended from 0.2.0 on is read only when this is
    /// 0.2.0 or later: a plugin of line 0.1 may have fields of its own past `takes_alpha`.
    version: VersionNumber,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plugin(ABI {})", self.abi)
    }
}

impl Plugin {
    /// The ABI version it was built against, as it says.
    pub fn abi_version(self) -> &'static str {
        self.abi
    }

    /// The modes the library declares.
    pub fn modes(self) -> Result<Vec<ModeInfo>, RenderError> {
        self.root.modes()()
            .into_result()
            .map(|v| v.into_iter().collect())
    }

    /// Renders `source` in `mode` at `target`. A source of a pixel format the plugin's ABI
    /// version does not have is refused here, before the plugin sees it.
    pub fn render(
        self,
        mode: &str,
        source: ImageView<'_>,
        target: TargetSize,
    ) -> Result<ImageBuf, RenderError> {
        if !knows(self.version, source.format) {
            return Err(RenderError::new(
                RenderErrorKind::Unsupported,
                format!(
                    "pixel format {:?} is newer than the plugin's ABI {}",
                    source.format, self.abi
                ),
            ));
        }
        self.root.render()(RStr::from(mode), source, target).into_result()
    }

    /// The decode `mode` needs for `target`; `None` from a plugin that cannot say (built
    /// before ABI 0.1.1), which gets just what covers the target.
    pub fn decode_need(self, mode: &str, target: TargetSize) -> Option<DecodeNeed> {
        self.root.decode_need().map(|f| f(RStr::from(mode), target))
    }

    /// Whether `mode` takes RGBA sources and keeps their transparency; false from a plugin
    /// built before ABI 0.1.2 (it is handed RGB).
    pub fn takes_alpha(self, mode: &str) -> bool {
        self.root.takes_alpha().is_some_and(|f| f(RStr::from(mode)))
    }

    /// Whether `mode` shows the source fitted inside its decode need's box rather than
    /// covering it; false from a plugin built before ABI 0.2.1 (its decodes cover the box).
    /// Read from plugins of line 0.2 only: one of line 0.1 may have a field of its own there.
    pub fn fits_within(self, mode: &str) -> bool {
        Line::of(self.version) == Some(Line::Current)
            && self.root.fits_within().is_some_and(|f| f(RStr::from(mode)))
    }
}

/// Whether a plugin built against ABI `version` has pixel format `format`.
fn knows(version: VersionNumber, format: crate::PixelFormat) -> bool {
    format
        .added_in()
        .is_some_and(|added| (version.major, version.minor, version.patch) >= added)
}

/// Opens the root module of the library `header` describes: its ABI version on this host's
/// line (same major and minor; any patch, newer or older) or on the closed line 0.1, its
/// layout checked against that line's in whichever direction the library is the larger side,
/// then its constructor run.
pub fn open(header: &LibHeader) -> Result<Plugin, OpenError> {
    let abi = abi_version(header);
    let version_error = || OpenError::Version {
        found: abi.to_owned(),
    };
    let version = VersionNumber::new(header.version_strings()).map_err(|_| version_error())?;
    let line = Line::of(version).ok_or_else(version_error)?;
    let layout = header.layout().ok_or(OpenError::NoLayout)?;
    match line {
        Line::Current => check_layout::<PluginModule_Ref>(header, layout)?,
        Line::Legacy => check_layout::<legacy::PluginModule_Ref>(header, layout)?,
    }
    // SAFETY: the layout was checked just above against the root module of the library's own
    // line, the library's against the host's or the other way round: every field both have
    // matches in full; a field only the host has is read through the library's own prefix
    // metadata (absent: `None`), and a field only the library has is never read. The types
    // of line 0.1 are this line's in memory (the assertions in `legacy`), and `Plugin` hands
    // a plugin only formats its version has and reads no field appended after 0.1 from it.
    #[allow(unsafe_code)]
    let root = unsafe { header.unchecked_layout::<PluginModule_Ref>() };
    Ok(Plugin {
        root: root.map_err(OpenError::Init)?,
        abi,
        version,
    })
}

/// Checks `layout`, a library's root module, against `M`, in whichever direction the
/// library is the larger side.
fn check_layout<M: RootModule>(
    header: &LibHeader,
    layout: &'static abi_stable::type_layout::TypeLayout,
) -> Result<(), OpenError> {
    if let Err(as_newer) = header.ensure_layout::<M>() {
        // Not a plugin as new as the host's types or newer: an older one has fewer fields,
        // and passes with the roles swapped.
        if let Err(as_older) =
            check_layout_compatibility(layout, <M as StableAbi>::LAYOUT).into_result()
        {
            // Either report may be the telling one: for an older plugin, the first only says
            // that it has fewer fields.
            return Err(OpenError::Layout(format!(
                "checked as a plugin as new as this host or newer:\n{as_newer}\n\
                 checked as an older plugin:\n{as_older}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PixelFormat;

    #[test]
    fn plugins_are_handed_only_formats_their_version_has() {
        let v = |s: &'static str| parsed(s);
        for version in ["0.1.0", "0.1.2", "0.2.0", PLUGIN_ABI_VERSION] {
            for format in [PixelFormat::Rgb8, PixelFormat::Rgba8, PixelFormat::Gray8] {
                assert!(knows(v(version), format), "{version} {format:?}");
            }
            assert!(!knows(v(version), PixelFormat::from_raw(9)));
        }
    }

    #[test]
    fn lines() {
        let v = |s: &'static str| Line::of(parsed(s));
        assert_eq!(v("0.1.0"), Some(Line::Legacy));
        assert_eq!(v("0.1.9"), Some(Line::Legacy));
        assert_eq!(v(PLUGIN_ABI_VERSION), Some(Line::Current));
        assert_eq!(v("0.2.7"), Some(Line::Current));
        for other in ["0.0.1", "0.3.0", "1.0.0", "1.2.0"] {
            assert_eq!(v(other), None, "{other}");
            assert!(!takes_abi(other), "{other}");
        }
        for taken in ["0.1.0", "0.1.9", PLUGIN_ABI_VERSION, "0.2.7"] {
            assert!(takes_abi(taken), "{taken}");
        }
        for junk in ["", "0.2", "0.2.0.1", "a.b.c", "0.2.x"] {
            assert!(!takes_abi(junk), "{junk}");
        }
    }
}
