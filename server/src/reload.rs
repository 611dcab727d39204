//! Keeping the loaded modes in step with the plugin folder while the server runs, and the
//! cache in step with the modes.
//!
//! The folder (not each file: a watch on a file is lost when the file is replaced by a rename)
//! is watched with notify's debouncer. Events only say *when* to look: each time, the folder
//! is scanned and compared with what is loaded, so a lost or merged event costs nothing, and a
//! scan also runs every second as a safety net. A new or changed file is loaded only once it
//! has kept the same size, time and inode for 200 ms: a `Create` event can arrive while
//! the file is still being written. A file that fails to load is not retried until it changes.
//!
//! Whenever a mode is put in service with a version other than the one its cached renders
//! were made with, the cache is told ([`Cache::adopt_mode_version`]) and purges them; a mode
//! whose file is removed while the server runs has its renders purged
//! ([`Cache::retire_mode`]): once nginx serves hits from the cache folder, a render left on
//! disk would still be served. A mode merely absent at start-up is never purged: a misspelt
//! `plugins.dir`, or a folder holding some of the modes, must not cost the cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use notify::RecursiveMode;
use notify_debouncer_full::new_debouncer;

use crate::cache::{Cache, Selector};
use crate::cdn::Notifier;
use crate::changes::Purger;
use crate::plugins::{plugin_files, Fingerprint, ModeChange, ModeRegistry, PluginLoadError};
use crate::telemetry::{Count, Metrics};

/// How long a changed file must stay unchanged before it is loaded.
const SETTLE: Duration = Duration::from_millis(200);
/// The debouncer's window: events closer together than this arrive as one batch.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Scan interval while a file is settling.
const TICK: Duration = Duration::from_millis(50);
/// Scan interval otherwise (the safety net for lost events).
const IDLE_SCAN: Duration = Duration::from_secs(1);

/// Applies the plugin folder to the registry, and version changes to the cache.
pub struct Reloader {
    dir: PathBuf,
    registry: Arc<ModeRegistry>,
    cache: Cache,
    /// The CDNs, told of each mode's purge.
    purges: Notifier,
    state: Mutex<ScanState>,
    /// Where purges of a changed mode are counted.
    metrics: Arc<Metrics>,
    /// With `cache.development`: where every load of a plugin purges its modes' renders.
    development: Option<Arc<Purger>>,
}

#[derive(Default)]
struct ScanState {
    /// Changed files waiting to settle: the fingerprint seen and since when.
    settling: HashMap<PathBuf, (Fingerprint, Instant)>,
    /// Files refused, with the fingerprint that failed: not retried until it changes.
    refused: HashMap<PathBuf, Fingerprint>,
}

impl Reloader {
    /// A reloader for `dir`, keeping `cache` in step with the modes of `registry`.
    pub fn new(
        dir: &Path,
        registry: Arc<ModeRegistry>,
        cache: Cache,
        purges: Notifier,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        Reloader {
            dir: dir.to_owned(),
            registry,
            cache,
            purges,
            state: Mutex::default(),
            metrics,
            development: None,
        }
    }

    /// The same reloader for `cache.development`: every load of a plugin (at start-up too)
    /// purges its modes' renders through `purger`, whatever their version, so a mode rebuilt
    /// without a new version is never served from renders of the build before.
    pub fn developing(mut self, purger: Arc<Purger>) -> Reloader {
        self.development = Some(purger);
        self
    }

    /// Loads every plugin in the folder now, without waiting for files to settle (start-up).
    /// Modes the cache holds renders of that no plugin provides are left alone (and
    /// reported): their renders stay valid, and are purged if the mode comes back with
    /// another version.
    pub fn load_all(&self) {
        let files = plugin_files(&self.dir).unwrap_or_else(|e| {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot list the plugin folder");
            Vec::new()
        });
        let mut state = self.lock_state();
        self.registry.batch(|| {
            for file in files {
                if let Ok(fp) = Fingerprint::of(&file) {
                    self.load(&mut state, &file, fp);
                }
            }
        });
        let recorded = self.cache.recorded_modes().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read which modes the cache holds");
            Vec::new()
        });
        for mode in recorded {
            if !self.registry.contains(&mode) {
                tracing::warn!(
                    mode = %mode,
                    "the cache holds renders of this mode, which no plugin provides now: they \
                     are kept (purge them from the admin page if the mode is gone for good)"
                );
            }
        }
    }

    /// Compares the folder with what is loaded and acts on the difference: removes modes
    /// whose file is gone, loads files that are new or changed and have settled. Returns
    /// whether a file is still settling (the caller should look again soon).
    pub fn scan(&self) -> bool {
        let present: HashMap<PathBuf, Fingerprint> = match plugin_files(&self.dir) {
            Ok(files) => files
                .into_iter()
                .filter_map(|f| Fingerprint::of(&f).ok().map(|fp| (f, fp)))
                .collect(),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the plugin folder");
                return false;
            }
        };
        let mut state = self.lock_state();
        let loaded = self.loaded();
        for file in loaded.keys().filter(|f| !present.contains_key(*f)) {
            let changes = self.registry.remove_file(file);
            self.apply(&changes);
        }
        state.refused.retain(|f, _| present.contains_key(f));
        state.settling.retain(|f, _| present.contains_key(f));
        let mut files: Vec<(&PathBuf, &Fingerprint)> = present.iter().collect();
        files.sort_by_key(|(file, _)| *file);
        for (file, fp) in files {
            if loaded.get(file) == Some(fp) || state.refused.get(file) == Some(fp) {
                state.settling.remove(file);
                continue;
            }
            match state.settling.get(file) {
                Some((seen, since)) if seen == fp => {
                    if since.elapsed() >= SETTLE {
                        state.settling.remove(file);
                        self.load(&mut state, file, *fp);
                    }
                }
                _ => {
                    state.settling.insert(file.clone(), (*fp, Instant::now()));
                }
            }
        }
        !state.settling.is_empty()
    }

    /// The files of the folder not yet in service: new or changed since they were loaded, and
    /// not refused as they are. Reads the folder; does not wait for a load in progress (a file
    /// being loaded is pending until it is in service).
    pub fn pending(&self) -> Vec<PathBuf> {
        let Ok(files) = plugin_files(&self.dir) else {
            return Vec::new();
        };
        let loaded = self.loaded();
        // A scan holds the state while it loads: then nothing counts as refused (the file
        // being loaded is pending, as it is).
        let refused = match self.state.try_lock() {
            Ok(state) => state.refused.clone(),
            Err(_) => HashMap::new(),
        };
        files
            .into_iter()
            .filter(|file| {
                let Ok(fp) = Fingerprint::of(file) else {
                    return false;
                };
                loaded.get(file) != Some(&fp) && refused.get(file) != Some(&fp)
            })
            .collect()
    }

    /// Watches the folder on a thread of its own, which ends once the reloader is dropped.
    pub fn watch(self: &Arc<Self>) -> notify::Result<()> {
        let (tx, rx) = mpsc::channel();
        let mut debouncer = new_debouncer(DEBOUNCE, None, tx)?;
        debouncer.watch(&self.dir, RecursiveMode::NonRecursive)?;
        let reloader: Weak<Reloader> = Arc::downgrade(self);
        tracing::info!(dir = %self.dir.display(), "watching the plugin folder");
        std::thread::Builder::new()
            .name("plugin-watch".into())
            .spawn(move || {
                let _watching = debouncer;
                let mut settling = false;
                loop {
                    let wait = if settling { TICK } else { IDLE_SCAN };
                    match rx.recv_timeout(wait) {
                        Ok(Err(errors)) => {
                            for e in errors {
                                tracing::warn!(error = %e, "plugin folder watch error");
                            }
                        }
                        Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    while rx.try_recv().is_ok() {}
                    let Some(reloader) = reloader.upgrade() else {
                        break;
                    };
                    settling = reloader.scan();
                }
            })
            .map_err(notify::Error::io)?;
        Ok(())
    }

    /// Loads `file`, last seen as `seen`. A refusal is remembered against `seen`, so the same
    /// bytes are not tried again but a newer file is.
    fn load(&self, state: &mut ScanState, file: &Path, seen: Fingerprint) {
        match self.registry.load_file(file) {
            Ok(changes) => {
                state.refused.remove(file);
                self.apply(&changes);
            }
            // A newer file arrived meanwhile: the next scan sees it settle and loads it.
            Err(PluginLoadError::Changed { .. }) => {}
            Err(_) => {
                // Logged and recorded by the registry; the old version, if any, serves on.
                state.refused.insert(file.to_owned(), seen);
            }
        }
    }

    /// Tells the cache about each mode now served with another version, or no longer served.
    fn apply(&self, changes: &[ModeChange]) {
        for change in changes {
            let result = match &change.after {
                Some(version) => self.cache.adopt_mode_version(&change.mode, version),
                None => self.cache.retire_mode(&change.mode).map(|()| None),
            };
            // A purge was scheduled (it runs in the background): the CDNs hear of it too.
            let purging = match (&change.after, &result) {
                (Some(version), Ok(Some(Some(_)))) => Some(Selector::OtherVersions {
                    mode: change.mode.clone(),
                    version: version.clone(),
                }),
                (None, Ok(_)) => Some(Selector::Retired(change.mode.clone())),
                _ => None,
            };
            // Sent to the CDNs once the purge, which runs in the background, is done: until
            // then nginx may still serve the old version's files, and a CDN purged earlier
            // would fetch them again.
            if let Some(selector) = purging {
                let held = self.purges.purging(&selector);
                held.release_when_done(self.cache.clone(), selector, crate::cdn::HOLD_LIMIT);
            }
            match result {
                Ok(Some(Some(before))) => {
                    self.metrics.count(Count::ModePurge);
                    tracing::info!(
                        mode = %change.mode, from = %before,
                        to = change.after.as_deref().unwrap_or(""),
                        "mode version changed: renders of other versions are being purged"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::error!(
                    mode = %change.mode, error = %e,
                    "cannot purge the renders of a changed mode"
                ),
            }
            if let (Some(purger), Some(_)) = (&self.development, &change.after) {
                match purger.purge(Selector::Mode(change.mode.clone())) {
                    Ok(purged) => tracing::info!(
                        mode = %change.mode, purged = purged.entries,
                        "mode loaded (cache.development): its renders purged"
                    ),
                    Err(e) => tracing::error!(
                        mode = %change.mode, error = ?e.detail,
                        "cannot purge the renders of a reloaded mode"
                    ),
                }
            }
        }
    }

    /// The files in service, as they were when loaded.
    fn loaded(&self) -> HashMap<PathBuf, Fingerprint> {
        self.registry
            .files()
            .into_iter()
            .map(|f| (f.file, f.fingerprint))
            .collect()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, ScanState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
