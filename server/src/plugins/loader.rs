//! Loading one plugin file, safely.
//!
//! This runs in render workers, never in the server process (see `crate::worker`). Three facts
//! about `abi_stable` 0.11 and glibc shape it (see `ARCHITECTURE.md`): libraries are never
//! unloaded; `dlopen` returns an already-loaded library for the same path; and overwriting a
//! loaded library in place crashes the process. So the server copies each file to a unique
//! path in the data folder and workers only ever open the copy. The copy is opened with
//! `RTLD_NOW` first, which refuses a library with unresolved symbols with the dynamic linker's
//! own message before abi_stable runs any of its code; `plugin_api::host` then checks the ABI
//! version (the server's line, or the closed line 0.1) and the layout of the root module (in
//! whichever direction the plugin is the larger side: older and newer plugins pass) and gives
//! the one handle every plugin is called through, `plugin_api::host::Plugin`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};
use plugin_api::host::{self, OpenError, Plugin};
use plugin_api::{ImageView, ModeInfo, PixelFormat, TargetSize};

/// Why a plugin file was refused. Each variant names the file and says what to do in a line.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    /// The file changed while it was being copied (a newer build arrived): not a refusal,
    /// the newer file is loaded once it has settled.
    #[error("{file}: changed while it was being read; the newer file will be loaded")]
    Changed {
        /// The plugin file.
        file: PathBuf,
    },
    /// The plugin declared an unusable mode.
    #[error("{file}: {reason}")]
    InvalidMode {
        /// The plugin file.
        file: PathBuf,
        /// What is wrong with the mode list.
        reason: String,
    },
    /// The worker loading it died or hung (a crash in the library's initialisers or its test
    /// render).
    #[error("{file}: {reason}")]
    Crashed {
        /// The plugin file.
        file: PathBuf,
        /// How the worker ended.
        reason: String,
    },
}

impl PluginLoadError {
    /// The plugin file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            PluginLoadError::Copy { file, .. }
            | PluginLoadError::NotALibrary { file, .. }
            | PluginLoadError::NotAPlugin { file }
            | PluginLoadError::Incompatible { file, .. }
            | PluginLoadError::InitFailed { file, .. }
            | PluginLoadError::Changed { file }
            | PluginLoadError::InvalidMode { file, .. }
            | PluginLoadError::Crashed { file, .. } => file,
        }
    }
}

/// A plugin library opened and checked.
pub(crate) struct OpenedLibrary {
    /// Its root module.
    pub(crate) module: Plugin,
    pub(crate) modes: Vec<ModeInfo>,
}

/// Libraries this process has mapped; never unmapped, so this only grows.
static LIBRARIES_MAPPED: AtomicU64 = AtomicU64::new(0);

/// How many plugin libraries this process has mapped (loaded, reloaded, or refused after the
/// dynamic linker had opened them). None is ever unmapped: each costs its size in memory for
/// the life of the process.
pub fn libraries_mapped() -> u64 {
    LIBRARIES_MAPPED.load(Ordering::Relaxed)
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
            LIBRARIES_MAPPED.fetch_add(1, Ordering::Relaxed);
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

/// Opens and checks `copy`, the private copy of the plugin file `file` (named in errors)
/// (its modes are test-rendered next, with [`test_render`], once the worker is sandboxed). Runs in a worker (or in-process in benchmarks): the
/// server process never opens a plugin.
pub(crate) fn open(copy: &Path, file: &Path) -> Result<OpenedLibrary, PluginLoadError> {
    check_elf(copy).map_err(|reason| PluginLoadError::NotALibrary {
        file: file.to_owned(),
        reason,
    })?;
    preflight(copy, file)?;
    let header = lib_header_from_path(copy).map_err(|e| summarise(file, e))?;
    // Any version of the ABI's line, older or newer than this server's, or of line 0.1.
    let module = host::open(header).map_err(|e| match e {
        OpenError::Init(RootModuleError::Unwound) => PluginLoadError::InitFailed {
            file: file.to_owned(),
            reason: "it panicked while starting".into(),
        },
        OpenError::Init(err) => PluginLoadError::InitFailed {
            file: file.to_owned(),
            reason: first_line(&err.to_string()),
        },
        other => {
            if let OpenError::Layout(report) = &other {
                // Hundreds of lines: the one-line reason is what the log and the admin show.
                tracing::debug!(file = %file.display(), report = %report, "layout report");
            }
            PluginLoadError::Incompatible {
                file: file.to_owned(),
                reason: other.to_string(),
            }
        }
    })?;
    let modes = module.modes().map_err(|e| PluginLoadError::InitFailed {
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
        if !plugin_api::is_mode_name(&m.name) {
            return Err(invalid(format!(
                "mode name {:?} is not lower-case letters, digits, '_' or '-' starting with a \
                 letter, at most 64 bytes",
                m.name.as_str()
            )));
        }
    }
    Ok(OpenedLibrary {
        module,
        modes: modes.into_iter().collect(),
    })
}

/// Renders a small gradient at a smaller size, as ross will, before the mode is put in
/// service: a plugin that cannot render at all is refused while the old version still serves.
pub(crate) fn test_render(module: Plugin, mode: &str) -> Result<(), String> {
    let (w, h) = (24u32, 16u32);
    let pixels: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [(x * 10) as u8, (y * 15) as u8, 128]))
        .collect();
    let view = ImageView::new(&pixels, w, h, PixelFormat::Rgb8).map_err(|e| e.to_string())?;
    let target = TargetSize {
        width: 12,
        height: 10,
    };
    // Asked on every miss, before its render: it must answer at once (and here, in time).
    module.decode_need(mode, target);
    let out = module
        .render(mode, view, target)
        .map_err(|e| e.to_string())?;
    out.check_output(target)
        .map_err(|e| format!("its test render of a 12x10 box: {}", e.message))
}

/// Checks that `path` is a complete 64-bit little-endian ELF file: every program segment and
/// the section table lie inside the file. The dynamic linker maps segments without checking
/// them against the file's length, and touching a page past the end of a truncated file
/// kills the process with SIGBUS; a plugin copied while still being written is refused here.
fn check_elf(path: &Path) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut header = [0u8; 64];
    if file.read_exact(&mut header).is_err() || &header[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if header[4] != 2 || header[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let u16_at = |b: &[u8], at: usize| u64::from(u16::from_le_bytes([b[at], b[at + 1]]));
    let u64_at =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let truncated = || format!("truncated ELF file ({len} bytes)");
    let (phoff, shoff) = (u64_at(&header, 0x20), u64_at(&header, 0x28));
    let (phentsize, phnum) = (u16_at(&header, 0x36), u16_at(&header, 0x38));
    let (shentsize, shnum) = (u16_at(&header, 0x3A), u16_at(&header, 0x3C));
    let end_of = |offset: u64, count: u64, size: u64| offset.checked_add(count * size);
    if phentsize < 0x28
        || end_of(phoff, phnum, phentsize).is_none_or(|end| end > len)
        || end_of(shoff, shnum, shentsize).is_none_or(|end| end > len)
    {
        return Err(truncated());
    }
    let mut table = vec![0u8; (phnum * phentsize) as usize];
    file.seek(SeekFrom::Start(phoff))
        .and_then(|_| file.read_exact(&mut table))
        .map_err(|_| truncated())?;
    for entry in table.chunks_exact(phentsize as usize) {
        let (offset, filesz) = (u64_at(entry, 8), u64_at(entry, 0x20));
        if offset.checked_add(filesz).is_none_or(|end| end > len) {
            return Err(truncated());
        }
    }
    Ok(())
}
