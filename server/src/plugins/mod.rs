//! Mode plugins: the registry of modes in service and their generations (`registry`, in the
//! server), and opening plugin libraries safely (`loader`, `code`, in render workers only:
//! the server process never maps a plugin). Only this module touches `abi_stable` loading and
//! `libloading`.

mod code;
mod loader;
mod registry;

pub use code::ModeCode;
pub use loader::{libraries_mapped, PluginLoadError};
pub use registry::{
    plugin_files, Fingerprint, Generation, LoadFailure, LoadedFile, LoadedMode, ModeChange,
    ModeRef, ModeRegistry, PluginRenderError, Quarantine, QUARANTINE_AFTER, QUARANTINE_WINDOW,
};
