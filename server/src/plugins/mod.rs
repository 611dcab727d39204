//! Mode plugins: loading shared libraries safely (`loader`) and the registry of loaded modes
//! that requests look up (`registry`). Only this module touches `abi_stable` loading and
//! `libloading`.

mod loader;
mod registry;

pub use loader::PluginLoadError;
pub use registry::{LoadFailure, LoadedMode, ModeRegistry, PluginRenderError};
