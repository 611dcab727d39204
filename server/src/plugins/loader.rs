//! Loading one plugin file, safely.
//!
//! Three facts about `abi_stable` 0.11 and glibc shape this (see `ARCHITECTURE.md`):
//! libraries are never unloaded; `dlopen` returns an already-loaded library for the same path;
//! and overwriting a loaded library in place crashes the process. So each file is first copied
//! to a unique path in the data folder and only the copy is ever opened. The copy is opened with
//! `RTLD_NOW` first, which refuses a library with unresolved symbols with the dynamic linker's
//! own message before abi_stable runs any of its code; abi_stable then checks the ABI version,
//! the plugin-api version and the full layout of the root module.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};
use plugin_api::{ModeInfo, PluginModule_Ref};

use crate::request::is_mode_word;

/// Why a plugin file was refused. Each variant names the file and says what to do in a line.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginLoadError {
    /// The file could not be copied to the data folder.
    #[error("{file}: cannot copy the plugin into the data folder: {reason}")]
    Copy {
        /// The plugin file.
        file: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The dynamic linker refused the file: not a shared library, wrong architecture, or
    /// unresolved symbols.
    #[error("{file}: not a loadable shared library: {reason}")]
    NotALibrary {
        /// The plugin file.
        file: PathBuf,
        /// The dynamic linker's message.
        reason: String,
    },
    /// A shared library, but not a ross plugin.
    #[error("{file}: not a ross mode plugin (no root module; build it with export_modes!)")]
    NotAPlugin {
        /// The plugin file.
        file: PathBuf,
    },
    /// Built against an incompatible plugin-api or abi_stable.
    #[error(
        "{file}: incompatible plugin ABI: {reason}; rebuild it against this server's plugin-api"
    )]
    Incompatible {
        /// The plugin file.
        file: PathBuf,
        /// What differs, in a sentence.
        reason: String,
    },
    /// The plugin's own initialisation failed or panicked.
    #[error("{file}: plugin initialisation failed: {reason}")]
    InitFailed {
        /// The plugin file.
        file: PathBuf,
        /// The plugin's error.
        reason: String,
    },
    /// The plugin declared an unusable mode.
    #[error("{file}: {reason}")]
    InvalidMode {
        /// The plugin file.
        file: PathBuf,
        /// What is wrong with the mode list.
        reason: String,
    },
}

/// A plugin library opened and checked.
pub(crate) struct OpenedLibrary {
    pub(crate) module: PluginModule_Ref,
    pub(crate) modes: Vec<ModeInfo>,
}

/// Distinguishes copies made by this process.
static COPY_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Copies `file` into `copies_dir` under a name never used before, via a temporary name and a
/// rename so a half-written copy is never opened.
fn private_copy(file: &Path, copies_dir: &Path) -> Result<PathBuf, PluginLoadError> {
    let copy_err = |e: std::io::Error| PluginLoadError::Copy {
        file: file.to_owned(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(copies_dir).map_err(copy_err)?;
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let seq = COPY_SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let name = format!("{stem}.{}.{seq}.so", std::process::id());
    let tmp = copies_dir.join(format!(".{name}.tmp"));
    let dest = copies_dir.join(name);
    std::fs::copy(file, &tmp).map_err(copy_err)?;
    std::fs::rename(&tmp, &dest).map_err(copy_err)?;
    Ok(dest)
}

/// Opens the library with every symbol resolved now, so a library with missing symbols is
/// refused with the linker's message instead of failing at its first call.
#[allow(unsafe_code)]
fn preflight(copy: &Path, file: &Path) -> Result<(), PluginLoadError> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: opening a library runs its initialisers. ross plugins are trusted code the
    // operator installed (like any shared library); this is the same open abi_stable performs
    // next, with eager binding so that symbol errors surface here.
    let library = unsafe { Library::open(Some(copy), RTLD_NOW | RTLD_LOCAL) };
    match library {
        Ok(lib) => {
            // Libraries are never unloaded (abi_stable cannot unload them either); keeping
            // this handle avoids a pointless unload and reload before abi_stable opens it.
            std::mem::forget(lib);
            Ok(())
        }
        Err(e) => {
            // libloading's own message is just "dlopen failed"; the linker's is the source.
            let reason = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
            // The linker names the private copy; the operator knows the file by its own name.
            let reason = reason.replace(&format!("{}: ", copy.display()), "");
            Err(PluginLoadError::NotALibrary {
                file: file.to_owned(),
                reason,
            })
        }
    }
}

/// Summarises abi_stable's errors (a layout mismatch prints hundreds of lines) in a sentence.
fn summarise(file: &Path, e: LibraryError) -> PluginLoadError {
    let file = file.to_owned();
    match e {
        LibraryError::OpenError { err, .. } => PluginLoadError::NotALibrary {
            file,
            reason: err.to_string(),
        },
        LibraryError::GetSymbolError { .. } => PluginLoadError::NotAPlugin { file },
        LibraryError::IncompatibleVersionNumber {
            library_name,
            expected_version,
            actual_version,
        } => PluginLoadError::Incompatible {
            file,
            reason: format!(
                "it was built against {library_name} {actual_version}, this server has \
                     {expected_version}"
            ),
        },
        LibraryError::AbiInstability(_) => PluginLoadError::Incompatible {
            file,
            reason: "its root module layout differs from this server's plugin-api".into(),
        },
        LibraryError::InvalidAbiHeader(header) => PluginLoadError::Incompatible {
            file,
            reason: format!("it uses abi_stable ABI {header:?}, which this server cannot read"),
        },
        LibraryError::RootModule {
            err: RootModuleError::Unwound,
            ..
        } => PluginLoadError::InitFailed {
            file,
            reason: "it panicked while starting".into(),
        },
        LibraryError::RootModule { err, .. } => PluginLoadError::InitFailed {
            file,
            reason: first_line(&err.to_string()),
        },
        other => PluginLoadError::Incompatible {
            file,
            reason: first_line(&other.to_string()),
        },
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("unknown error")
        .trim()
        .to_owned()
}

/// Copies, opens and checks the plugin at `file`, and lists its modes.
pub(crate) fn open(file: &Path, copies_dir: &Path) -> Result<OpenedLibrary, PluginLoadError> {
    let copy = private_copy(file, copies_dir)?;
    let opened = open_copy(&copy, file);
    if opened.is_err() {
        // A refused copy is never used; a loaded one must stay on disk while mapped.
        let _ = std::fs::remove_file(&copy);
    }
    opened
}

fn open_copy(copy: &Path, file: &Path) -> Result<OpenedLibrary, PluginLoadError> {
    preflight(copy, file)?;
    let header = lib_header_from_path(copy).map_err(|e| summarise(file, e))?;
    let module = header
        .init_root_module::<PluginModule_Ref>()
        .map_err(|e| summarise(file, e))?;
    let modes = module.modes()()
        .into_result()
        .map_err(|e| PluginLoadError::InitFailed {
            file: file.to_owned(),
            reason: e.message.to_string(),
        })?;
    let invalid = |reason: String| PluginLoadError::InvalidMode {
        file: file.to_owned(),
        reason,
    };
    if modes.is_empty() {
        return Err(invalid("the plugin declares no modes".into()));
    }
    for m in &modes {
        if !is_mode_word(&m.name) || m.name.len() > 64 {
            return Err(invalid(format!(
                "mode name {:?} is not lower-case letters, digits, '_' or '-' starting with a \
                 letter",
                m.name.as_str()
            )));
        }
    }
    Ok(OpenedLibrary {
        module,
        modes: modes.into_iter().collect(),
    })
}
