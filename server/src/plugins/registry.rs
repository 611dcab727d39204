//! The registry of loaded modes that requests look up by name.
//!
//! A request clones the `Arc` of the mode it renders with, so it finishes on that version even
//! if the registry changes meanwhile. The library code stays mapped for the life of the
//! process in any case (see [`super::loader`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use abi_stable::std_types::RStr;
use arc_swap::ArcSwap;
use plugin_api::{ImageBuf, ImageView, PluginModule_Ref, RenderError, TargetSize};

use super::loader::{self, PluginLoadError};

/// A mode served by a loaded plugin.
pub struct LoadedMode {
    /// URL name.
    pub name: String,
    /// The plugin's version of the mode.
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// The plugin file it was loaded from.
    pub file: PathBuf,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    module: PluginModule_Ref,
}

impl std::fmt::Debug for LoadedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LoadedMode({} {} from {})",
            self.name,
            self.version,
            self.file.display()
        )
    }
}

/// A render the plugin failed, or answered with pixels the host cannot use.
#[derive(Debug, thiserror::Error)]
pub enum PluginRenderError {
    /// The plugin returned an error (a caught panic included).
    #[error("mode {mode} failed: {error}")]
    Failed {
        /// The mode.
        mode: String,
        /// The plugin's error.
        error: RenderError,
    },
    /// The plugin returned an image that breaks the contract.
    #[error("mode {mode} returned an unusable image: {reason}")]
    BadOutput {
        /// The mode.
        mode: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl LoadedMode {
    /// Renders `source` at `target`. The output is checked: a valid buffer no larger than the
    /// target box.
    pub fn render(
        &self,
        source: ImageView<'_>,
        target: TargetSize,
    ) -> Result<ImageBuf, PluginRenderError> {
        let out = self.module.render()(RStr::from(self.name.as_str()), source, target)
            .into_result()
            .map_err(|error| PluginRenderError::Failed {
                mode: self.name.clone(),
                error,
            })?;
        let bad = |reason: String| PluginRenderError::BadOutput {
            mode: self.name.clone(),
            reason,
        };
        out.view()
            .validate()
            .map_err(|e| bad(e.message.to_string()))?;
        if out.width > target.width || out.height > target.height {
            return Err(bad(format!(
                "{}x{} is larger than the requested {}x{}",
                out.width, out.height, target.width, target.height
            )));
        }
        Ok(out)
    }
}

/// A plugin file that was refused, for the log and the admin page.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    /// The file.
    pub file: PathBuf,
    /// Why, in a line.
    pub error: PluginLoadError,
    /// When.
    pub at: SystemTime,
}

/// Loaded modes by name, and the failures seen loading them.
#[derive(Default)]
pub struct ModeRegistry {
    modes: ArcSwap<HashMap<String, Arc<LoadedMode>>>,
    failures: Mutex<Vec<LoadFailure>>,
}

impl ModeRegistry {
    /// Loads every `*.so` in `dir` (not hidden files, not subfolders). A file that fails is
    /// logged and recorded; the others load. Private copies go to `copies_dir`, which is
    /// emptied first: copies from an earlier run are no longer mapped by anyone.
    pub fn load_dir(dir: &Path, copies_dir: &Path) -> ModeRegistry {
        clear_stale_copies(copies_dir);
        let registry = ModeRegistry::default();
        let mut files = match plugin_files(dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot list the plugin folder");
                return registry;
            }
        };
        files.sort();
        let mut modes = HashMap::new();
        for file in files {
            match loader::open(&file, copies_dir) {
                Ok(lib) => {
                    for info in lib.modes {
                        let name = info.name.to_string();
                        if let Some(existing) = modes.get(&name) {
                            let existing: &Arc<LoadedMode> = existing;
                            let reason = format!(
                                "mode {name:?} is already provided by {}",
                                existing.file.display()
                            );
                            registry.record(PluginLoadError::InvalidMode {
                                file: file.clone(),
                                reason,
                            });
                            continue;
                        }
                        let mode = LoadedMode {
                            name: name.clone(),
                            version: info.version.to_string(),
                            description: info.description.to_string(),
                            file: file.clone(),
                            loaded_at: SystemTime::now(),
                            module: lib.module,
                        };
                        tracing::info!(
                            mode = %name, version = %mode.version, file = %file.display(),
                            "mode loaded"
                        );
                        modes.insert(name, Arc::new(mode));
                    }
                }
                Err(e) => registry.record(e),
            }
        }
        registry.modes.store(Arc::new(modes));
        registry
    }

    fn record(&self, error: PluginLoadError) {
        tracing::error!(error = %error, "plugin refused");
        let file = match &error {
            PluginLoadError::Copy { file, .. }
            | PluginLoadError::NotALibrary { file, .. }
            | PluginLoadError::NotAPlugin { file }
            | PluginLoadError::Incompatible { file, .. }
            | PluginLoadError::InitFailed { file, .. }
            | PluginLoadError::InvalidMode { file, .. } => file.clone(),
        };
        let failure = LoadFailure {
            file,
            error,
            at: SystemTime::now(),
        };
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(failure);
    }

    /// The mode called `name`, if loaded.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedMode>> {
        self.modes.load().get(name).cloned()
    }

    /// Every loaded mode, by name.
    pub fn modes(&self) -> Vec<Arc<LoadedMode>> {
        let mut all: Vec<_> = self.modes.load().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Every plugin file refused so far.
    pub fn failures(&self) -> Vec<LoadFailure> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with('.') && name.ends_with(".so") && path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

fn clear_stale_copies(copies_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(copies_dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
