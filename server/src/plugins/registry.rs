//! The modes in service, as generations of plugin files, and the failures seen loading them.
//!
//! The server never opens a plugin: it copies each file to a private path, has a worker
//! process open, check and test-render the copy inside its sandbox ([`crate::worker::probe`]),
//! and keeps what the worker said of its modes. The plugin files in service at one time make a
//! [`Generation`]: render workers are started for a generation and load exactly its copies.
//! A file loaded, replaced or removed makes a new generation, swapped in whole, so a request
//! sees the old set of modes or the new one; a request holds the generation it started with
//! ([`ModeRef`]) and renders on that generation's workers, so it finishes on the version it
//! started with. A generation's copies are deleted once no request or worker needs them.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use plugin_api::RenderError;

use super::loader::PluginLoadError;
use crate::telemetry::{Count, Metrics};
use crate::worker::pool::{probe, Failure, GenerationPlan, JobFailure, Spawner};
use crate::worker::protocol::{ModeSpec, PluginToLoad, Stage, WorkerSettings};

/// Failures that cost a worker (a hang, a crash, memory) within [`QUARANTINE_WINDOW`] that
/// put a mode in quarantine.
pub const QUARANTINE_AFTER: usize = 3;
/// See [`QUARANTINE_AFTER`].
pub const QUARANTINE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// A mode served by a plugin in service, as the server knows it: by what its plugin said.
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
    /// The plugin ABI its library was built against.
    pub abi_version: String,
    /// Whether it keeps transparency.
    pub takes_alpha: bool,
    failures: Mutex<VecDeque<Instant>>,
    quarantine: Mutex<Option<Quarantine>>,
    /// Renders of this load that produced an image.
    rendered: AtomicU64,
    /// Renders of this load that failed in the mode's own code: an error or unusable pixels
    /// from the plugin, or its worker hung, crashed or ran out of memory while rendering.
    render_failures: AtomicU64,
}

/// Why and since when a mode is out of service.
#[derive(Debug, Clone)]
pub struct Quarantine {
    /// Since when.
    pub since: SystemTime,
    /// Why, in a line.
    pub reason: String,
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

impl LoadedMode {
    fn new(spec: ModeSpec, file: &Path, loaded_at: SystemTime) -> LoadedMode {
        LoadedMode {
            name: spec.name,
            version: spec.version,
            description: spec.description,
            file: file.to_owned(),
            loaded_at,
            id: NEXT_MODE_ID.fetch_add(1, Ordering::Relaxed),
            abi_version: spec.abi_version,
            takes_alpha: spec.takes_alpha,
            failures: Mutex::default(),
            quarantine: Mutex::default(),
            rendered: AtomicU64::new(0),
            render_failures: AtomicU64::new(0),
        }
    }

    /// Counts a render of this load: whether it produced an image, or failed in the mode's
    /// own code (failures of the source, the decoder or the server are not the mode's). The
    /// load keeps its own count (what the plugins page shows, since this load) and `metrics`
    /// the mode's over every load (`ross_mode_renders_total`).
    pub fn note_render(&self, metrics: &Metrics, ok: bool) {
        let counter = if ok {
            &self.rendered
        } else {
            &self.render_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics.mode_render(&self.name, ok);
    }

    /// (renders that produced an image, renders that failed in the mode's code) since this
    /// load.
    pub fn render_counts(&self) -> (u64, u64) {
        (
            self.rendered.load(Ordering::Relaxed),
            self.render_failures.load(Ordering::Relaxed),
        )
    }

    /// The plugin ABI its library was built against.
    pub fn abi_version(&self) -> &str {
        &self.abi_version
    }

    /// Why the mode is out of service, if it is: it hung, crashed or ran out of memory
    /// [`QUARANTINE_AFTER`] times within [`QUARANTINE_WINDOW`]. Lifted only by a new build of
    /// its plugin file (a new load is a new `LoadedMode`).
    pub fn quarantine(&self) -> Option<Quarantine> {
        self.quarantine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notes a job of this mode that cost its worker. Only failures in the mode's own code
    /// count (a crash while decoding is the file's). Returns the quarantine this failure
    /// began, if it began one.
    pub fn note_failure(&self, failure: &JobFailure) -> Option<Quarantine> {
        if failure.stage != Stage::Render {
            return None;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|at| at.elapsed() < QUARANTINE_WINDOW);
        failures.push_back(Instant::now());
        if failures.len() < QUARANTINE_AFTER {
            return None;
        }
        let mut quarantine = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        if quarantine.is_some() {
            return None;
        }
        let what = match failure.failure {
            Failure::Timeout => "ran past the render timeout",
            Failure::Crashed => "crashed its worker",
            Failure::OutOfMemory => "ran out of memory",
        };
        let began = Quarantine {
            since: SystemTime::now(),
            reason: format!(
                "{QUARANTINE_AFTER} renders within {} s failed, the last one {what}",
                QUARANTINE_WINDOW.as_secs()
            ),
        };
        *quarantine = Some(began.clone());
        Some(began)
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

/// A plugin file in service: its private copy, deleted once no generation uses it.
#[derive(Debug)]
struct PluginCopy {
    file: PathBuf,
    fingerprint: Fingerprint,
    modes: Vec<String>,
    copy: PathBuf,
}

impl Drop for PluginCopy {
    fn drop(&mut self) {
        // Workers that mapped it keep their mapping; no new worker needs it.
        let _ = std::fs::remove_file(&self.copy);
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
}

/// The plugin files in service at one time, and their modes.
pub struct Generation {
    /// Unique in this process; 0 is the empty generation before any load.
    pub id: u64,
    plugins: Vec<Arc<PluginCopy>>,
    modes: HashMap<String, Arc<LoadedMode>>,
    /// What starting one of its workers takes, made once (every miss hands it on).
    plan: Arc<GenerationPlan>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Generation({}, {} plugins)", self.id, self.plugins.len())
    }
}

impl Generation {
    fn new(
        id: u64,
        plugins: Vec<Arc<PluginCopy>>,
        modes: HashMap<String, Arc<LoadedMode>>,
    ) -> Generation {
        let plan = Arc::new(GenerationPlan {
            id,
            plugins: plugins
                .iter()
                .map(|p| PluginToLoad {
                    file: p.file.clone(),
                    copy: p.copy.clone(),
                })
                .collect(),
        });
        Generation {
            id,
            plugins,
            modes,
            plan,
        }
    }

    /// What starting a worker of this generation takes.
    pub fn plan(&self) -> &Arc<GenerationPlan> {
        &self.plan
    }
}

/// A mode, with the generation of plugins it was looked up in: renders run on that
/// generation's workers.
#[derive(Debug, Clone)]
pub struct ModeRef {
    /// The mode.
    pub mode: Arc<LoadedMode>,
    /// Its generation.
    pub generation: Arc<Generation>,
}

impl std::ops::Deref for ModeRef {
    type Target = LoadedMode;
    fn deref(&self) -> &LoadedMode {
        &self.mode
    }
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

/// What a change of generation is announced to (the worker pool).
type GenerationListener = Box<dyn Fn(Arc<GenerationPlan>) + Send + Sync>;

/// The generation in service, and the failures seen loading plugins.
///
/// Lookups are lock-free (`ArcSwap`). Changes (a file loaded, replaced or removed) are
/// serialised by one mutex, build a new generation and swap it in whole.
pub struct ModeRegistry {
    current: ArcSwap<Generation>,
    changing: Mutex<()>,
    failures: Mutex<VecDeque<LoadFailure>>,
    copies_dir: PathBuf,
    spawner: Arc<Spawner>,
    probe_settings: WorkerSettings,
    runtime: tokio::runtime::Handle,
    listener: Mutex<Option<GenerationListener>>,
    /// While set, generations are not announced (start-up loads every file, then announces
    /// the last generation once).
    quiet: std::sync::atomic::AtomicBool,
    /// Where loads, refusals and quarantines are counted.
    metrics: Arc<Metrics>,
}

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

impl ModeRegistry {
    /// An empty registry that keeps private copies of plugin files in `copies_dir` (emptied
    /// first: copies from an earlier run are used by no one) and checks plugins in workers
    /// started by `spawner` with `settings`, from the Tokio runtime `runtime`.
    pub fn new(
        copies_dir: &Path,
        spawner: Arc<Spawner>,
        settings: WorkerSettings,
        runtime: tokio::runtime::Handle,
        metrics: Arc<Metrics>,
    ) -> ModeRegistry {
        clear_stale_copies(copies_dir);
        ModeRegistry {
            current: ArcSwap::from_pointee(Generation::new(0, Vec::new(), HashMap::new())),
            changing: Mutex::default(),
            failures: Mutex::default(),
            copies_dir: copies_dir.to_owned(),
            spawner,
            probe_settings: settings,
            runtime,
            listener: Mutex::default(),
            quiet: std::sync::atomic::AtomicBool::new(false),
            metrics,
        }
    }

    /// Tells `listener` of every generation put in service from now on.
    pub fn on_generation(&self, listener: impl Fn(Arc<GenerationPlan>) + Send + Sync + 'static) {
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(listener));
    }

    /// The generation in service.
    pub fn generation(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Loads (or reloads) the plugin at `file` and puts its modes in service in one swap,
    /// replacing those the same file provided before. Refused, with the old version left
    /// serving, when a worker cannot load it or test-render its modes, or when another file
    /// already provides one of its modes. Returns the modes whose state changed. Blocking:
    /// call it off the runtime.
    pub fn load_file(&self, file: &Path) -> Result<Vec<ModeChange>, PluginLoadError> {
        let checked = self.check(file);
        let (fingerprint, copy, specs) = match checked {
            Ok(ok) => ok,
            Err(e) => {
                self.record(e.clone());
                return Err(e);
            }
        };
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load_full();
        for spec in &specs {
            if let Some(other) = current.modes.get(&spec.name).filter(|m| m.file != file) {
                let error = PluginLoadError::InvalidMode {
                    file: file.to_owned(),
                    reason: format!(
                        "mode {:?} is already provided by {}",
                        spec.name,
                        other.file.display()
                    ),
                };
                self.record(error.clone());
                return Err(error);
            }
        }
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let mut modes = current.modes.clone();
        let mut changes = Vec::new();
        let previous = current.plugins.iter().find(|p| p.file == file);
        for old in previous.iter().flat_map(|p| &p.modes) {
            if !names.contains(old) {
                let before = modes.remove(old).map(|m| m.version.clone());
                changes.push(ModeChange {
                    mode: old.clone(),
                    before,
                    after: None,
                });
            }
        }
        let loaded_at = SystemTime::now();
        for spec in specs {
            let mode = LoadedMode::new(spec, file, loaded_at);
            tracing::info!(
                mode = %mode.name, version = %mode.version, file = %file.display(),
                "mode loaded"
            );
            changes.push(ModeChange {
                mode: mode.name.clone(),
                before: current.modes.get(&mode.name).map(|m| m.version.clone()),
                after: Some(mode.version.clone()),
            });
            modes.insert(mode.name.clone(), Arc::new(mode));
        }
        let mut plugins: Vec<Arc<PluginCopy>> = current
            .plugins
            .iter()
            .filter(|p| p.file != file)
            .cloned()
            .collect();
        plugins.push(Arc::new(PluginCopy {
            file: file.to_owned(),
            fingerprint,
            modes: names,
            copy,
        }));
        plugins.sort_by(|a, b| a.file.cmp(&b.file));
        self.install(Generation::new(
            NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            plugins,
            modes,
        ));
        self.metrics.count(Count::PluginLoad);
        Ok(changes)
    }

    /// Copies `file`, has a worker load and test-render the copy, and says what it provides.
    fn check(&self, file: &Path) -> Result<(Fingerprint, PathBuf, Vec<ModeSpec>), PluginLoadError> {
        let fingerprint = Fingerprint::of(file).map_err(|e| PluginLoadError::Copy {
            file: file.to_owned(),
            reason: e.to_string(),
        })?;
        let copy = private_copy(file, &self.copies_dir)?;
        let remove_copy = |e: PluginLoadError| {
            let _ = std::fs::remove_file(&copy);
            e
        };
        // Written to while it was copied, the copy may mix two builds: refused before it is
        // opened; the reloader tries again once the file has settled.
        if Fingerprint::of(file).ok() != Some(fingerprint) {
            return Err(remove_copy(PluginLoadError::Changed {
                file: file.to_owned(),
            }));
        }
        let plugin = [PluginToLoad {
            file: file.to_owned(),
            copy: copy.clone(),
        }];
        let probed = self
            .runtime
            .block_on(probe(&self.spawner, &self.probe_settings, &plugin));
        let reports = probed.map_err(|reason| {
            remove_copy(PluginLoadError::Crashed {
                file: file.to_owned(),
                reason: format!("the worker loading it failed: {reason}"),
            })
        })?;
        let report = reports.0.into_iter().next().ok_or_else(|| {
            remove_copy(PluginLoadError::Crashed {
                file: file.to_owned(),
                reason: "the worker loading it said nothing of it".into(),
            })
        })?;
        let specs = report.result.map_err(remove_copy)?;
        Ok((fingerprint, copy, specs))
    }

    fn install(&self, generation: Generation) {
        self.current.store(Arc::new(generation));
        if !self.quiet.load(Ordering::SeqCst) {
            self.announce();
        }
    }

    fn announce(&self) {
        let plan = self.current.load().plan().clone();
        if let Some(listener) = &*self.listener.lock().unwrap_or_else(|e| e.into_inner()) {
            let _entered = self.runtime.enter();
            listener(plan);
        }
    }

    /// Runs `load` (loads and removals) and announces only the generation it ends with: at
    /// start-up, workers are started once, for every file, rather than once per file.
    pub fn batch<R>(&self, load: impl FnOnce() -> R) -> R {
        self.quiet.store(true, Ordering::SeqCst);
        let result = load();
        self.quiet.store(false, Ordering::SeqCst);
        self.announce();
        result
    }

    /// Takes the modes `file` provided out of service (the file was deleted).
    pub fn remove_file(&self, file: &Path) -> Vec<ModeChange> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load_full();
        let Some(previous) = current.plugins.iter().find(|p| p.file == file) else {
            return Vec::new();
        };
        let mut modes = current.modes.clone();
        let changes = previous
            .modes
            .iter()
            .map(|name| {
                let before = modes.remove(name).map(|m| m.version.clone());
                tracing::info!(mode = %name, file = %file.display(), "mode removed");
                ModeChange {
                    mode: name.clone(),
                    before,
                    after: None,
                }
            })
            .collect();
        let plugins = current
            .plugins
            .iter()
            .filter(|p| p.file != file)
            .cloned()
            .collect();
        self.install(Generation::new(
            NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            plugins,
            modes,
        ));
        changes
    }

    fn record(&self, error: PluginLoadError) {
        if let PluginLoadError::Changed { .. } = error {
            tracing::debug!(error = %error, "plugin changed while loading");
            return;
        }
        tracing::error!(error = %error, "plugin refused");
        self.metrics.count(Count::PluginRefused);
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

    /// Counts a quarantine `mode` entered.
    pub fn quarantined(&self, mode: &str, quarantine: &Quarantine) {
        tracing::error!(mode = %mode, reason = %quarantine.reason, "mode quarantined until its plugin file changes");
        self.metrics.count(Count::Quarantine);
    }

    /// The mode called `name`, if in service, with its generation.
    pub fn get(&self, name: &str) -> Option<ModeRef> {
        let generation = self.current.load_full();
        let mode = generation.modes.get(name)?.clone();
        Some(ModeRef { mode, generation })
    }

    /// Whether a mode called `name` is in service (without taking its generation).
    pub fn contains(&self, name: &str) -> bool {
        self.current.load().modes.contains_key(name)
    }

    /// Every mode in service, by name.
    pub fn modes(&self) -> Vec<Arc<LoadedMode>> {
        let mut all: Vec<_> = self.current.load().modes.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The plugin files in service, by path.
    pub fn files(&self) -> Vec<LoadedFile> {
        self.current
            .load()
            .plugins
            .iter()
            .map(|p| LoadedFile {
                file: p.file.clone(),
                fingerprint: p.fingerprint,
                modes: p.modes.clone(),
            })
            .collect()
    }

    /// The most recent refusals (up to 100), oldest first.
    pub fn failures(&self) -> Vec<LoadFailure> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.iter().cloned().collect()
    }
}

/// Distinguishes every load of every mode in this process.
static NEXT_MODE_ID: AtomicU64 = AtomicU64::new(1);

/// Distinguishes copies made by this process.
static COPY_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Copies `file` into `copies_dir` under a name never used before, via a temporary name and a
/// rename so a half-written copy is never opened. Workers open only copies: `dlopen` returns
/// an already-loaded library for the same path, and a file rewritten in place while mapped
/// crashes whoever maps it.
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
    let copied = std::fs::copy(file, &tmp).and_then(|_| std::fs::rename(&tmp, &dest));
    if let Err(e) = copied {
        // A full disk stops a copy half-way: the half goes, not to take the room for good.
        let _ = std::fs::remove_file(&tmp);
        return Err(copy_err(e));
    }
    Ok(dest)
}

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
