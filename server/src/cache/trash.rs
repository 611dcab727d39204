//! Purges of everything, a mode or a size, in milliseconds whatever they match: the folders
//! they match are renamed into `.trash/` at once, so neither ross nor nginx finds those files
//! again, and their entries and files are deleted in the background, paced by
//! `cache.purge_deletes_per_second`.
//!
//! **Steps**, each safe to be killed after:
//! 1. The purge is journaled (`purge/{id}`, flushed) and active, as every purge.
//! 2. Under the writers' lock and every path lock: a sequence `seq` (sled's id generator,
//!    rising across restarts), `.trash/{seq}.{id}.part` made, every matching folder renamed
//!    into it (`{format}`, `{format}.{w}.{h}` or `{format}.{w}.{h}.{mode}`), then the folder
//!    renamed to `.trash/{seq}.{id}`: its name is the record that this step finished. The
//!    entries the selector matches written before `seq` are dead from here on
//!    ([`DeadRule`]), and leave the totals. The purge is answered.
//! 3. In the background: the dead entries are removed from the index (by a scan), then the
//!    folder's files and folders are deleted, then the journal record is removed, then the
//!    folder itself.
//!
//! **Restart**: each `.trash/{seq}.{id}[.part]` folder with its journal record gives the rule
//! back, so its entries stay dead; a journal record with no finished folder is run again (a
//! new sequence, a new folder), and a `.part` folder is deleted like any other. A folder whose
//! journal record is gone has no entries left: its files are deleted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::index::DeadRule;
use super::{
    disk, io_error, lock, purge, CacheError, EntryMeta, Inner, PurgeJob, PurgeOutcome, Selector,
    Signal, VariantKey,
};
use crate::crash;

/// The trash folder, in the cache's root.
pub const TRASH_DIR: &str = ".trash";

/// How many dead entries are removed between two looks at the pace (removing an entry costs
/// about a tenth of deleting a file).
const INDEX_BATCH: u64 = 1000;

/// Purges that match at most this many entries have their files deleted before the answer.
const INLINE_FILES: u64 = 256;

/// The most time that may take.
const INLINE_TIME: Duration = Duration::from_millis(100);

/// The most time the deleting thread works before it lets go of the cache (which ends it once
/// the cache is dropped) and looks again.
const SLICE: Duration = Duration::from_millis(500);

/// A folder in the trash, to be deleted.
#[derive(Debug, Clone)]
pub(super) struct TrashRun {
    /// The purge's sequence.
    pub seq: u64,
    /// Its journal id.
    pub id: u64,
    /// `.trash/{seq}.{id}` (or `.part`).
    pub folder: PathBuf,
    /// Whether step 2 finished (the folder is not `.part`).
    pub finished: bool,
    /// What its files not yet deleted take on disk, as counted in `trash_disk` (`None` for a
    /// folder found at start-up: measured before it is deleted).
    pub left: Option<u64>,
    /// Where the scan for its dead entries goes on from (`Some(empty)` to start; `None` once
    /// done).
    pub scan_from: Option<Vec<u8>>,
    /// Whether its folders are in the cache's folder count (moved there in this process).
    pub in_folders: bool,
    /// What it purged: its rule keeps the entries it matched dead until they are removed.
    pub selector: Selector,
}

/// Whether `selector` is purged by moving folders to the trash.
pub(super) fn by_trash(selector: &Selector) -> bool {
    matches!(
        selector,
        Selector::All | Selector::Mode(_) | Selector::Size { .. }
    )
}

/// A trash folder's name: `{seq}.{id}.{what}`, what being `all`, `mode-{mode}` or
/// `size-{w}x{h}`, so that the folder alone says which entries are dead (a purge made while
/// `data_dir` was full has no journal record).
fn folder_name(seq: u64, id: u64, selector: &Selector) -> String {
    let what = match selector {
        Selector::Mode(mode) => format!("mode-{mode}"),
        Selector::Size { width, height } => format!("size-{width}x{height}"),
        _ => "all".to_owned(),
    };
    format!("{seq}.{id}.{what}")
}

/// Reads [`folder_name`]'s output (without `.part`).
fn parse_name(stem: &str) -> Option<(u64, u64, Selector)> {
    let mut parts = stem.splitn(3, '.');
    let (seq, id, what) = (parts.next()?, parts.next()?, parts.next()?);
    let selector = if what == "all" {
        Selector::All
    } else if let Some(mode) = what.strip_prefix("mode-") {
        plugin_api::is_mode_name(mode).then(|| Selector::Mode(mode.to_owned()))?
    } else {
        let size: ross_config::Size = what.strip_prefix("size-")?.parse().ok()?;
        Selector::size(size)
    };
    Some((seq.parse().ok()?, id.parse().ok()?, selector))
}

/// A folder found in the trash.
pub(super) struct Found {
    pub seq: u64,
    pub id: u64,
    pub selector: Selector,
    pub finished: bool,
    pub folder: PathBuf,
}

/// The trash folders in `trash`, oldest first. Anything else there is not ross's: left
/// alone.
pub(super) fn scan(trash: &Path) -> std::io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(trash)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let (stem, finished) = match name.strip_suffix(".part") {
            Some(stem) => (stem, false),
            None => (name.as_str(), true),
        };
        if let Some((seq, id, selector)) = parse_name(stem) {
            found.push(Found {
                seq,
                id,
                selector,
                finished,
                folder: entry.path(),
            });
        }
    }
    found.sort_by_key(|f| (f.seq, f.id));
    Ok(found)
}

/// Deletes at most `per_second` files and folders a second.
struct Pace {
    per_second: u64,
    started: Instant,
    done: u64,
}

impl Pace {
    fn new(per_second: u64) -> Pace {
        Pace {
            per_second: per_second.max(1),
            started: Instant::now(),
            done: 0,
        }
    }

    /// Counts `n` deletions, sleeping first if ahead of the pace; false once `signal` says
    /// stop.
    fn step(&mut self, n: u64, signal: &Signal) -> bool {
        self.done += n;
        let due = Duration::from_secs_f64(self.done as f64 / self.per_second as f64);
        while let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            if signal.stopped() {
                return false;
            }
            std::thread::sleep(ahead.min(Duration::from_millis(20)));
        }
        !signal.stopped()
    }
}

impl Inner {
    fn trash_dir(&self) -> PathBuf {
        self.dir.join(TRASH_DIR)
    }

    /// The folders `selector` (everything, a mode or a size) matches, each with its name in
    /// the trash.
    fn trash_sources(&self, selector: &Selector) -> std::io::Result<Vec<(PathBuf, String)>> {
        let mut sources = Vec::new();
        for format in subfolders(&self.dir)? {
            let top = self.dir.join(&format);
            match selector {
                Selector::All => sources.push((top, format)),
                Selector::Size { width, height } => {
                    let path = top.join(width.to_string()).join(height.to_string());
                    if path.is_dir() {
                        sources.push((path, format!("{format}.{width}.{height}")));
                    }
                }
                Selector::Mode(mode) => {
                    for width in subfolders(&top)? {
                        for height in subfolders(&top.join(&width))? {
                            let path = top.join(&width).join(&height).join(mode);
                            if path.is_dir() {
                                let name = format!("{format}.{width}.{height}.{mode}");
                                sources.push((path, name));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(sources)
    }

    /// Step 2 of a trash purge (see the module's documentation). Blocking.
    pub(super) fn run_trash(&self, job: &PurgeJob) -> Result<PurgeOutcome, CacheError> {
        let started = Instant::now();
        let selector = &job.selector;
        let trash = self.trash_dir();
        let (taken, outcome, folder) = {
            let mut log = self.writes.write().unwrap_or_else(|e| e.into_inner());
            let _paths: Vec<_> = self.stripes.iter().map(lock).collect();
            let seq = self.next_seq(&log)?;
            log.push(seq, selector.clone());
            self.seq.store(seq, Ordering::SeqCst);
            if let Some(hot) = &self.hot {
                match selector {
                    Selector::All => hot.invalidate_all(),
                    _ => {
                        let selector = selector.clone();
                        let _ = hot.invalidate_entries_if(move |v, _| selector.may_match(v));
                    }
                }
            }
            let name = folder_name(seq, job.id, selector);
            let (part, done) = (trash.join(format!("{name}.part")), trash.join(name));
            let moved = (|| {
                std::fs::create_dir(&part).map_err(io_error(&part))?;
                crash::point("purge.trash-made");
                for (source, name) in self.trash_sources(selector).map_err(io_error(&self.dir))? {
                    std::fs::rename(&source, part.join(name)).map_err(io_error(&source))?;
                    crash::point("purge.renamed-one");
                }
                std::fs::rename(&part, &done).map_err(io_error(&part))?;
                // The renames reach the disk before the answer (for a power cut: the folder's
                // name is the purge's record when data_dir was full).
                for dir in [&trash, &self.dir] {
                    File::open(dir)
                        .and_then(|f| f.sync_all())
                        .map_err(io_error(dir))?;
                }
                crash::point("purge.renamed-all");
                Ok::<_, CacheError>(())
            })();
            // Whatever was moved, the rule makes its entries dead; a purge that failed
            // half-way is run again (a new folder) and the half is deleted as it is.
            let taken = self.index.take(DeadRule {
                seq,
                id: job.id,
                selector: selector.clone(),
            });
            self.trash_disk.fetch_add(taken.disk, Ordering::Relaxed);
            let finished = moved.is_ok();
            let folder = if finished { done } else { part };
            lock(&self.trash).push(TrashRun {
                seq,
                id: job.id,
                folder: folder.clone(),
                finished,
                left: Some(taken.disk),
                // Nothing matched was indexed: nothing to look for.
                scan_from: (taken.entries > 0).then(Vec::new),
                in_folders: true,
                selector: selector.clone(),
            });
            (taken, moved, folder)
        };
        // The source epochs moved on above: the copies go now, outside the cache's locks.
        self.drop_copies(selector)?;
        outcome?;
        // A small purge leaves nothing behind: its files go before the answer (a few ms),
        // unless the trash thread is busy (then it does it). Its entries are the thread's.
        if taken.entries <= INLINE_FILES {
            if let Ok(_one) = self.deleting.try_lock() {
                let mut pace = Pace::new(u64::MAX);
                let until = Instant::now() + INLINE_TIME;
                if let Err(e) = self.delete_files(&folder, until, &mut pace) {
                    tracing::warn!(error = %e, "cannot delete a small purge's files at once");
                }
            }
        }
        self.trash_signal.wake();
        self.deactivate(job.id);
        tracing::info!(
            selector = ?selector, entries = taken.entries, bytes = taken.bytes,
            ms = started.elapsed().as_millis() as u64, "cache purged (moved to the trash)"
        );
        Ok(PurgeOutcome {
            entries: taken.entries,
            bytes: taken.bytes,
        })
    }

    /// Updates the trash run in `folder`.
    fn update_run(&self, folder: &Path, change: impl FnOnce(&mut TrashRun)) {
        if let Some(run) = lock(&self.trash).iter_mut().find(|r| r.folder == folder) {
            change(run);
        }
    }

    /// Deletes the files and folders under the trash folder `folder` (not the folder itself)
    /// until `until`, at `pace`, counting what goes; whether all went. One deleter at a time
    /// (the caller holds `deleting`).
    fn delete_files(
        &self,
        folder: &Path,
        until: Instant,
        pace: &mut Pace,
    ) -> Result<bool, CacheError> {
        let Some(run) = lock(&self.trash)
            .iter()
            .find(|r| r.folder == folder)
            .cloned()
        else {
            return Ok(true);
        };
        let mut left = run.left.unwrap_or(0);
        let mut files = 0u64;
        let done = delete_under(folder, until, &mut |meta| {
            let held = disk::disk_use(meta);
            if meta.is_dir() {
                if run.in_folders {
                    disk::sub_saturating(&self.folders, held);
                }
            } else {
                let take = held.min(left);
                left -= take;
                disk::sub_saturating(&self.trash_disk, take);
                files += 1;
                if files == 1 {
                    crash::point("trash.deleting");
                }
            }
            pace.step(1, &self.trash_signal)
        });
        self.update_run(folder, |r| r.left = Some(left));
        done.map_err(io_error(folder))
    }

    /// Deletes from the oldest folder in the trash for up to [`SLICE`]; whether there is more.
    fn delete_next(&self) -> Result<bool, CacheError> {
        if self.trash_paused.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let _one = lock(&self.deleting);
        let Some(run) = lock(&self.trash).first().cloned() else {
            self.hurry.store(false, Ordering::Relaxed);
            return Ok(false);
        };
        let until = Instant::now() + SLICE;
        // At full speed while the disk is short of room.
        let mut pace = Pace::new(if self.hurry.load(Ordering::Relaxed) {
            u64::MAX
        } else {
            self.purge_deletes_per_second.load(Ordering::Relaxed)
        });
        // With data_dir full, the files go (making room) and the index waits.
        let indexable = self.db.room().is_ok();
        let left = match run.left {
            Some(left) => left,
            None => {
                let measured = disk::tree_use(&run.folder);
                self.trash_disk.fetch_add(measured, Ordering::Relaxed);
                measured
            }
        };
        self.update_run(&run.folder, |r| r.left = Some(left));
        // Its dead entries first, while the rule still tells them.
        let mut scan_from = run.scan_from.clone();
        if let (Some(from), true) = (&run.scan_from, indexable) {
            let rule = DeadRule {
                seq: run.seq,
                id: run.id,
                selector: run.selector.clone(),
            };
            let (mut removed, mut examined) = (0u64, 0u64);
            let mut next = None;
            for item in self.index.iter_raw_from(from) {
                let (key, raw) = item?;
                if Instant::now() >= until {
                    next = Some(key.to_vec());
                    break;
                }
                examined += 1;
                if examined % INDEX_BATCH == 0 && !pace.step(INDEX_BATCH / 10, &self.trash_signal) {
                    next = Some(key.to_vec());
                    break;
                }
                let mut raw = Some(raw);
                while let Some(current) = raw.take() {
                    let entry = VariantKey::from_index_key(&key).zip(EntryMeta::decode(&current));
                    if !entry.is_some_and(|(v, m)| rule.kills(&v, &m)) {
                        break; // live: written since, or another purge's
                    }
                    if self.index.remove_dead(&key, &current)? {
                        removed += 1;
                        if removed == INDEX_BATCH {
                            crash::point("trash.index-some");
                        }
                    } else {
                        // Changed meanwhile (a hit's time noted): looked at again.
                        raw = self.index.get_raw(&key)?;
                    }
                }
            }
            self.update_run(&run.folder, |r| r.scan_from = next.clone());
            if next.is_some() {
                return Ok(true);
            }
            scan_from = None;
        }
        if !self.delete_files(&run.folder, until, &mut pace)? {
            return Ok(true);
        }
        let left = lock(&self.trash)
            .iter()
            .find(|r| r.folder == run.folder)
            .and_then(|r| r.left)
            .unwrap_or(0);
        if scan_from.is_some() {
            // Its entries wait for room in data_dir; looked at again in a while.
            return Ok(false);
        }
        if run.finished {
            self.db.room()?; // else tried again in a minute
            self.meta.remove(purge::journal_key(run.id))?;
        }
        crash::point("trash.journal-removed");
        match std::fs::remove_dir(&run.folder) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error(&run.folder)(e))
            }
            _ => {}
        }
        disk::sub_saturating(&self.trash_disk, left);
        self.index.drop_rule(run.id, run.seq);
        lock(&self.trash).retain(|r| r.folder != run.folder);
        tracing::info!(folder = %run.folder.display(), "purged files deleted");
        Ok(true)
    }
}

/// Every folder in `dir` whose name does not start with a dot.
fn subfolders(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.file_type()?.is_dir() {
            out.push(name);
        }
    }
    Ok(out)
}

/// Deletes everything under `dir` (not `dir` itself), files before their folders, telling
/// `each` of every file and folder just before it goes, until `until`; whether it finished.
fn delete_under(
    dir: &Path,
    until: Instant,
    each: &mut dyn FnMut(&std::fs::Metadata) -> bool,
) -> std::io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    for entry in entries {
        if Instant::now() >= until {
            return Ok(false);
        }
        let path = entry?.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if !delete_under(&path, until, each)? {
                return Ok(false);
            }
            let go_on = each(&meta);
            match std::fs::remove_dir(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            if !go_on {
                return Ok(false);
            }
        } else {
            let go_on = each(&meta);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            if !go_on {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Starts the thread that deletes the trash, oldest folder first; it ends once the cache is
/// dropped.
pub(super) fn spawn(inner: &Arc<Inner>) -> Result<(), CacheError> {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let signal = inner.trash_signal.clone();
    std::thread::Builder::new()
        .name("cache-trash".into())
        .spawn(move || loop {
            if signal.stopped() {
                break;
            }
            let Some(inner) = weak.upgrade() else { break };
            let more = match inner.delete_next() {
                Ok(more) => more,
                Err(e) => {
                    tracing::error!(error = %e, "cannot delete purged files; trying again in a minute");
                    drop(inner);
                    if !signal.wait(Duration::from_secs(60)) {
                        break;
                    }
                    continue;
                }
            };
            drop(inner);
            if !more && !signal.wait(Duration::from_secs(60)) {
                break;
            }
        })
        .map_err(|e| CacheError::Io {
            path: "cache-trash thread".into(),
            source: e,
        })?;
    Ok(())
}
