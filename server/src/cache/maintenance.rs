//! The cache's background thread: purges left by the last run and those scheduled since,
//! reconciliation of the index with the disk at start-up, writing hit times in batches, and
//! eviction. It holds the cache weakly and ends once the cache is dropped.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{
    disk, io_error, lock, ms_of, CacheError, Inner, VariantKey, EVICT_START_PERMILLE,
    EVICT_TARGET_PERMILLE, FOLDER_BYTES_KEY,
};

/// How often hit times are written to the index (and eviction is considered) when nothing
/// wakes the thread sooner.
const TICK: Duration = Duration::from_secs(1);

pub(super) fn spawn(inner: &Arc<Inner>) -> Result<(), CacheError> {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let signal = inner.signal.clone();
    std::thread::Builder::new()
        .name("cache-maintenance".into())
        .spawn(move || {
            let mut reconciled = false;
            loop {
                let Some(inner) = weak.upgrade() else { break };
                inner.run_queued();
                inner.run_due_retries();
                if !reconciled {
                    inner.reconcile_logged();
                    reconciled = true;
                }
                inner.flush_touches();
                inner
                    .counters
                    .index_disk_bytes
                    .store(inner.db.size_on_disk(), Ordering::Relaxed);
                let start = inner.max_bytes / 1000 * EVICT_START_PERMILLE;
                inner.note_folders();
                inner.keep_free(0);
                if inner.used() > start {
                    let target = inner.max_bytes / 1000 * EVICT_TARGET_PERMILLE;
                    if let Err(e) = inner.evict_to(target) {
                        tracing::error!(error = %e, "eviction failed");
                    }
                }
                drop(inner);
                if !signal.wait(TICK) {
                    break;
                }
            }
        })
        .map_err(|e| CacheError::Io {
            path: "cache-maintenance thread".into(),
            source: e,
        })?;
    Ok(())
}

impl Inner {
    /// Runs the purges waiting for this thread, oldest first.
    fn run_queued(&self) {
        loop {
            let Some(job) = lock(&self.queued).pop_front() else {
                return;
            };
            if let Err(e) = self.run(&job) {
                // Left in the journal and active (its matches are not served) until a retry
                // (or, after a crash, start-up) finishes it.
                self.retry_later(job, 0, &e);
            }
        }
    }

    /// Notes the folders' disk use in the index's meta tree when it changed, for the next
    /// start.
    fn note_folders(&self) {
        if self.db.room().is_err() {
            return;
        }
        let folders = self.folders.load(Ordering::Relaxed);
        let noted = self.meta.get(FOLDER_BYTES_KEY).ok().flatten();
        if noted.as_deref() != Some(&folders.to_be_bytes()[..]) {
            if let Err(e) = self.meta.insert(FOLDER_BYTES_KEY, &folders.to_be_bytes()) {
                tracing::warn!(error = %e, "cannot note the cache folders' size");
            }
        }
    }

    fn reconcile_logged(&self) {
        let started = Instant::now();
        match self.reconcile() {
            Ok((dropped, strays)) => tracing::info!(
                entries = self.index.entries(),
                bytes = self.index.bytes(),
                disk_bytes = self.disk_bytes(),
                dropped_entries = dropped,
                removed_files = strays,
                ms = started.elapsed().as_millis() as u64,
                "cache index reconciled with the disk"
            ),
            Err(e) => tracing::error!(error = %e, "cache reconciliation failed"),
        }
        self.reconciled.store(true, Ordering::SeqCst);
    }

    /// Makes the index and the disk agree about everything older than this process: entries
    /// whose file is gone are dropped, entries get their file's size and disk use as
    /// measured, files the index does not know are removed (nothing says which plugin version
    /// rendered them), empty folders go, and what the folders take is measured. Entries and files made
    /// since the cache was opened are left alone: their writers are in charge of them.
    /// Returns (entries dropped, files removed).
    fn reconcile(&self) -> Result<(u64, u64), CacheError> {
        let mut dropped = 0;
        for item in self.index.iter() {
            let (key, meta) = item?;
            let (Some(variant), Some(meta)) = (VariantKey::from_index_key(&key), meta) else {
                self.index.remove_raw(&key)?;
                dropped += 1;
                continue;
            };
            if meta.created_ms >= self.opened_ms || self.index.is_dead(&variant, &meta) {
                continue; // a writer's, or the trash's
            }
            let path = self.dir.join(variant.relative_path());
            let _path = self.stripe(&variant);
            let still = self.index.get(&variant)?;
            if still.as_ref().map(|m| m.created_ms) != Some(meta.created_ms) {
                continue;
            }
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => {
                    if m.len() != meta.bytes || disk::disk_use(&m) != meta.disk {
                        let mut fixed = meta.clone();
                        fixed.bytes = m.len();
                        fixed.disk = disk::disk_use(&m);
                        self.index.insert(&variant, &fixed)?;
                    }
                }
                _ => {
                    self.forget(&variant);
                    self.index.remove(&variant)?;
                    dropped += 1;
                }
            }
        }
        let mut strays = 0;
        let mut emptied = BTreeSet::new();
        // The root, the marker and the folder of files being written (those files are
        // counted as reserved room), then every folder the sweep walks.
        let mut folders = std::fs::symlink_metadata(&self.dir).map_or(0, |m| disk::disk_use(&m));
        for entry in std::fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let entry = entry.map_err(io_error(&self.dir))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                // ross's own: the marker, files being written
                folders += entry.metadata().map_or(0, |m| disk::disk_use(&m));
                continue;
            }
            self.sweep(&entry.path(), &mut strays, &mut emptied, &mut folders)?;
        }
        // Measured while writers went on: near enough, and measured again at the next start.
        // Folders already moved to the trash were not walked: not taken off again.
        for run in lock(&self.trash).iter_mut() {
            run.in_folders = false;
        }
        self.folders.store(folders, Ordering::Relaxed);
        self.remove_empty_folders(emptied);
        Ok((dropped, strays))
    }

    /// Removes the files under `path` that are older than this process and not indexed, and
    /// adds what the folders under it take to `folders`.
    fn sweep(
        &self,
        path: &Path,
        strays: &mut u64,
        emptied: &mut BTreeSet<std::path::PathBuf>,
        folders: &mut u64,
    ) -> Result<(), CacheError> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(_) => return Ok(()), // gone meanwhile
        };
        if meta.is_dir() {
            *folders += disk::disk_use(&meta);
            let entries = match std::fs::read_dir(path) {
                Ok(entries) => entries,
                Err(_) => return Ok(()),
            };
            let mut empty = true;
            for entry in entries.flatten() {
                empty = false;
                self.sweep(&entry.path(), strays, emptied, folders)?;
            }
            if empty && meta.modified().map(ms_of).unwrap_or(0) < self.opened_ms {
                emptied.insert(path.to_owned());
            }
            return Ok(());
        }
        let old = meta.modified().map(ms_of).unwrap_or(0) < self.opened_ms;
        if !old {
            return Ok(());
        }
        let relative = path.strip_prefix(&self.dir).unwrap_or(path);
        let remove = match VariantKey::from_relative_path(relative) {
            Some(variant) => {
                let _path = self.stripe(&variant);
                // Checked and removed under the path's lock: a writer cannot slip in between.
                let unknown = self.index.get(&variant)?.is_none();
                let still_old = std::fs::symlink_metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| ms_of(t) < self.opened_ms);
                if unknown && still_old {
                    remove_file(path)?;
                    *strays += 1;
                }
                false
            }
            None => true, // not a variant at all
        };
        if remove {
            remove_file(path)?;
            *strays += 1;
        }
        if let Some(parent) = path.parent() {
            emptied.insert(parent.to_owned());
        }
        Ok(())
    }
}

fn remove_file(path: &Path) -> Result<(), CacheError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(path)(e)),
        _ => Ok(()),
    }
}
