//! The registry of loaded modes that requests look up by name.
//!
//! A request clones the `Arc` of the mode it renders with, so it finishes on that version even
//! if the registry changes meanwhile. The library code stays mapped for the life of the
//! process in any case (see [`super::loader`]). Plugin files are loaded, replaced and removed
//! one at a time; a file either puts all its modes in service or none.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use plugin_api::{ImageBuf, ImageView, RenderError, TargetSize};

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
    /// Unique to this load of this mode in this process: renders of different loads are
    /// never merged, even when their versions are equal.
    pub id: u64,
    module: loader::Module,
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
    /// The plugin ABI its library was built against.
    pub fn abi_version(&self) -> &'static str {
        self.module.abi_version()
    }

    /// The box the decoded source must cover for a render at `target` (never less than
    /// `target`), or `None` for the full size. Plugins built before ABI 0.1.1 do not say:
    /// `target`.
    pub fn decode_box(&self, target: TargetSize) -> Option<(u32, u32)> {
        let Some(need) = self.module.decode_need(&self.name, target) else {
            return Some((target.width, target.height));
        };
        (!need.full_size).then(|| (need.width.max(target.width), need.height.max(target.height)))
    }

    /// Whether this mode takes RGBA sources and keeps their transparency (plugins built
    /// before ABI 0.1.2 do not: they are handed RGB).
    pub fn takes_alpha(&self) -> bool {
        self.module.takes_alpha(&self.name)
    }

    /// Renders `source` at `target`. The output is checked: a valid buffer no larger than the
    /// target box.
    pub fn render(
        &self,
        source: ImageView<'_>,
        target: TargetSize,
    ) -> Result<ImageBuf, PluginRenderError> {
        let out = self
            .module
            .render(&self.name, source, target)
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

/// How many refusals are kept for the admin page; older ones are only in the log.
const FAILURES_KEPT: usize = 100;

/// What a file on disk looked like when it was read: a replaced file (a new inode after a
/// rename) or a rewritten one (new size or time) differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    dev: u64,
    ino: u64,
}

impl Fingerprint {
    /// The fingerprint of `file` now.
    pub fn of(file: &Path) -> std::io::Result<Fingerprint> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(file)?;
        Ok(Fingerprint {
            len: meta.len(),
            modified: meta.modified().ok(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// A plugin file whose modes are in service.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    /// The file in the plugin folder.
    pub file: PathBuf,
    /// What it looked like when loaded.
    pub fingerprint: Fingerprint,
    /// The modes it provides.
    pub modes: Vec<String>,
    /// The private copy that is mapped.
    copy: PathBuf,
}

/// One mode's change of state from a load or a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChange {
    /// The mode.
    pub mode: String,
    /// The version served before, if any.
    pub before: Option<String>,
    /// The version served now, if any.
    pub after: Option<String>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Plugin files loaded and put in service, start-up included.
    pub loads: AtomicU64,
    /// Plugin files refused.
    pub failures: AtomicU64,
}

/// Loaded modes by name, the files they come from, and the failures seen loading them.
///
/// Lookups are lock-free (`ArcSwap`). Changes (a file loaded, replaced or removed) are
/// serialised by one mutex, build a new map and swap it in whole, so a request sees either the
/// old set of modes or the new one.
pub struct ModeRegistry {
    modes: ArcSwap<HashMap<String, Arc<LoadedMode>>>,
    files: Mutex<HashMap<PathBuf, LoadedFile>>,
    failures: Mutex<VecDeque<LoadFailure>>,
    copies_dir: PathBuf,
    /// Load, failure and mapping counters.
    pub stats: PluginStats,
}

impl ModeRegistry {
    /// An empty registry that keeps private copies of plugin files in `copies_dir`, which is
    /// emptied first: copies from an earlier run are no longer mapped by anyone.
    pub fn new(copies_dir: &Path) -> ModeRegistry {
        clear_stale_copies(copies_dir);
        ModeRegistry {
            modes: ArcSwap::default(),
            files: Mutex::default(),
            failures: Mutex::default(),
            copies_dir: copies_dir.to_owned(),
            stats: PluginStats::default(),
        }
    }

    /// An empty registry, then every `*.so` in `dir` (not hidden files, not subfolders) in
    /// name order. A file that fails is logged and recorded; the others load.
    pub fn load_dir(dir: &Path, copies_dir: &Path) -> ModeRegistry {
        let registry = ModeRegistry::new(copies_dir);
        match plugin_files(dir) {
            Ok(files) => {
                for file in files {
                    let _ = registry.load_file(&file);
                }
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot list the plugin folder")
            }
        }
        registry
    }

    /// Loads (or reloads) the plugin at `file` and puts its modes in service in one swap,
    /// replacing those the same file provided before. Refused, with the old version left
    /// serving, when it fails to load or its test render, or when another file already
    /// provides one of its modes. Returns the modes whose state changed.
    pub fn load_file(&self, file: &Path) -> Result<Vec<ModeChange>, PluginLoadError> {
        let fingerprint = Fingerprint::of(file).map_err(|e| PluginLoadError::Copy {
            file: file.to_owned(),
            reason: e.to_string(),
        });
        let opened = fingerprint.and_then(|fp| {
            // Written to while it was copied, the copy may mix two builds: refuse it before
            // it is opened; the reloader tries again once the file has settled.
            let unchanged = || Fingerprint::of(file).ok() == Some(fp);
            Ok((fp, loader::open(file, &self.copies_dir, &unchanged)?))
        });
        let (fingerprint, lib) = match opened {
            Ok(ok) => ok,
            Err(e) => {
                self.record(e.clone());
                return Err(e);
            }
        };
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.modes.load_full();
        let names: Vec<String> = lib.modes.iter().map(|m| m.name.to_string()).collect();
        for name in &names {
            if let Some(other) = current.get(name).filter(|m| m.file.as_path() != file) {
                let error = PluginLoadError::InvalidMode {
                    file: file.to_owned(),
                    reason: format!(
                        "mode {name:?} is already provided by {}",
                        other.file.display()
                    ),
                };
                self.record(error.clone());
                return Err(error);
            }
        }
        let mut next: HashMap<String, Arc<LoadedMode>> = (*current).clone();
        let previous = files.remove(file);
        let mut changes = Vec::new();
        for old in previous.iter().flat_map(|p| &p.modes) {
            if !names.contains(old) {
                let before = next.remove(old).map(|m| m.version.clone());
                changes.push(ModeChange {
                    mode: old.clone(),
                    before,
                    after: None,
                });
            }
        }
        let loaded_at = SystemTime::now();
        for info in &lib.modes {
            let mode = LoadedMode {
                name: info.name.to_string(),
                version: info.version.to_string(),
                description: info.description.to_string(),
                file: file.to_owned(),
                loaded_at,
                id: NEXT_MODE_ID.fetch_add(1, Ordering::Relaxed),
                module: lib.module,
            };
            tracing::info!(
                mode = %mode.name, version = %mode.version, file = %file.display(),
                "mode loaded"
            );
            changes.push(ModeChange {
                mode: mode.name.clone(),
                before: current.get(&mode.name).map(|m| m.version.clone()),
                after: Some(mode.version.clone()),
            });
            next.insert(mode.name.clone(), Arc::new(mode));
        }
        self.modes.store(Arc::new(next));
        files.insert(
            file.to_owned(),
            LoadedFile {
                file: file.to_owned(),
                fingerprint,
                modes: names,
                copy: lib.copy,
            },
        );
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::telemetry::names::PLUGIN_LOADS).increment(1);
        if let Some(previous) = previous {
            // The old library stays mapped (requests in flight may still be in it); its file
            // is not needed once mapped.
            let _ = std::fs::remove_file(&previous.copy);
        }
        Ok(changes)
    }

    /// Takes the modes `file` provided out of service (the file was deleted).
    pub fn remove_file(&self, file: &Path) -> Vec<ModeChange> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let Some(previous) = files.remove(file) else {
            return Vec::new();
        };
        let mut next: HashMap<String, Arc<LoadedMode>> = (**self.modes.load()).clone();
        let changes = previous
            .modes
            .iter()
            .map(|name| {
                let before = next.remove(name).map(|m| m.version.clone());
                tracing::info!(mode = %name, file = %file.display(), "mode removed");
                ModeChange {
                    mode: name.clone(),
                    before,
                    after: None,
                }
            })
            .collect();
        self.modes.store(Arc::new(next));
        let _ = std::fs::remove_file(&previous.copy);
        changes
    }

    fn record(&self, error: PluginLoadError) {
        if let PluginLoadError::Changed { .. } = error {
            tracing::debug!(error = %error, "plugin changed while loading");
            return;
        }
        tracing::error!(error = %error, "plugin refused");
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::telemetry::names::PLUGIN_FAILURES).increment(1);
        crate::telemetry::report_refused_plugin(error.file(), &error);
        let failure = LoadFailure {
            file: error.file().to_owned(),
            error,
            at: SystemTime::now(),
        };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() == FAILURES_KEPT {
            failures.pop_front();
        }
        failures.push_back(failure);
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

    /// The plugin files in service, by path.
    pub fn files(&self) -> Vec<LoadedFile> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<LoadedFile> = files.values().cloned().collect();
        all.sort_by(|a, b| a.file.cmp(&b.file));
        all
    }

    /// The most recent refusals (up to 100), oldest first.
    pub fn failures(&self) -> Vec<LoadFailure> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.iter().cloned().collect()
    }
}

/// Distinguishes every load of every mode in this process.
static NEXT_MODE_ID: AtomicU64 = AtomicU64::new(1);

/// The plugin files in `dir`: `*.so`, not hidden (a leading dot marks a file being written),
/// not folders, in name order.
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_plugin_name(&path) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Whether `path` is named like a plugin: `*.so`, not hidden.
fn is_plugin_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && name.ends_with(".so")
}

fn clear_stale_copies(copies_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(copies_dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
