//! The disk cache of rendered variants: the only module that reads or writes `cache.dir`, and
//! the owner of the cache's trees in sled (entries, purge journal, mode versions).
//!
//! - **Layout** ([`layout`]): a variant lives at `{format}/{width}/{height}/{mode}/{key}`, so
//!   nginx can serve hits straight from disk.
//! - **Writes**: a file is written to `.tmp/`, fsynced and renamed into place, then indexed.
//!   A crash leaves at most a temporary file (removed at the next start) or a file without an
//!   entry (removed by reconciliation); never a partial file at a variant's path.
//! - **Hits** read the file and note the time in memory; a background thread writes those
//!   times to the index in batches, so a hit never writes to sled. A disk hit reads its
//!   entry (on the blocking pool) before keeping the file in memory; a memory hit reads
//!   nothing.
//! - **Hot variants** (`cache.memory_bytes`) are also kept in memory, least recently used out
//!   first: a hit there reads no file. The memory holds only what the disk and the index hold:
//!   a variant goes in under its path lock while its entry is indexed (after a render, or after
//!   a hit that finds the same file still in place), and every removal (eviction, purge,
//!   reconciliation) takes it out under the same lock. While a purge runs, hits it may
//!   remove are not served from memory either.
//! - **Bounded size**: the bytes indexed plus those being written never exceed
//!   `cache.max_bytes`; the least recently served entries are evicted in the background
//!   (and by a writer itself, when the background has not kept up).
//! - **Purges** ([`purge`]) are journaled before any file goes and run again after a crash.
//!   While one runs, hits it may remove are not served from the cache (during a mode's
//!   version change, only files the index says the new version made are).
//! - **Start-up** opens the index and serves at once; a background thread finishes
//!   interrupted purges and reconciles the index with the disk.
//!
//! Which variant to render, and when a mode's version changed, are decided elsewhere; this
//! module is told.

mod disk;
pub mod index;
pub mod layout;
mod maintenance;
pub mod purge;
mod purge_log;
mod trash;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::db::{Database, DbError, FullDisk, TreeName};
use crate::file_headers::FileHeaders;
use crate::reduced::ReducedTier;
use crate::telemetry::{Count, Metrics};
pub use disk::{disk_use, free_bytes, no_space, OncePerMinute};
pub use index::EntryMeta;
use index::Index;
pub use layout::{OutputFormat, VariantKey, TMP_DIR};
pub use purge::{PurgeOutcome, Selector};
use purge_log::PurgeLog;
use trash::{TrashRun, TRASH_DIR};

/// The file that marks a folder as a ross cache, and whose lock keeps a second process out.
/// A folder that already holds other files and no marker is refused: reconciliation removes
/// whatever the index does not know.
const MARKER: &str = ".ross-cache";

/// The background evictor starts when the cache is this full (per mille of `max_bytes`)...
const EVICT_START_PERMILLE: u64 = 950;
/// ...and evicts down to this, so a burst of renders finds room without waiting.
const EVICT_TARGET_PERMILLE: u64 = 900;

/// Hits remembered between two writes of last-served times. Beyond it, more hits are not
/// recorded until the next write (the entries keep their older times): memory stays bounded
/// however many distinct variants are hit.
const MAX_PENDING_TOUCHES: usize = 1 << 18;

/// Longest a cache read may take before the request renders instead.
const READ_DEADLINE: Duration = Duration::from_secs(2);

/// Path locks: a file and its entry change together under the lock of their path's stripe.
const STRIPES: usize = 64;

/// Why the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file or folder in the cache could not be read or written.
    #[error("cache.dir: {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The index failed.
    #[error("cache index: {0}")]
    Index(#[from] sled::Error),
    /// The index's trees could not be opened.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The reduced originals could not be opened.
    #[error("cache.dir: {0}")]
    Reduced(#[from] crate::reduced::tier::TierError),
    /// `cache.dir` holds files ross did not write.
    #[error(
        "cache.dir {path} already holds files and is not a ross cache (no {MARKER} file); \
         point cache.dir at a new or empty folder: ross deletes whatever its index does not know"
    )]
    NotACache {
        /// The folder.
        path: PathBuf,
    },
    /// Another process uses `cache.dir`.
    #[error("cache.dir {path} is in use by another ross process; give each process its own")]
    InUse {
        /// The folder.
        path: PathBuf,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A variant read from the cache.
#[derive(Debug, Clone)]
pub struct CachedFile {
    /// The encoded image.
    pub bytes: Bytes,
    /// The file's modification time, for `Last-Modified` and `ETag`.
    pub modified: SystemTime,
    /// Both, made once (a file in memory is served many times).
    pub headers: FileHeaders,
}

impl CachedFile {
    fn new(bytes: Bytes, modified: SystemTime) -> CachedFile {
        let headers = FileHeaders::new(modified, bytes.len() as u64);
        CachedFile {
            bytes,
            modified,
            headers,
        }
    }
}

/// A file as read from disk, with the inode it was read from.
struct ReadFile {
    file: CachedFile,
    inode: (u64, u64),
}

/// The hot variants in memory, bounded by their bytes.
type Hot = moka::sync::Cache<VariantKey, CachedFile>;

/// What became of a render offered to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written and indexed; the file's modification time.
    Stored(SystemTime),
    /// Not written: a purge started, or the mode's version changed, after the request began.
    Stale,
    /// Not written: no room could be made (the render alone is larger than the cache).
    NoRoom,
    /// Not written: the disk is full (`cache.dir`'s, even after evicting to make room, or
    /// `data_dir`'s, where its entry would go).
    NoSpace,
}

/// The purges run when a request began. Its render is cached only if no purge that matches
/// it ran since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTicket(u64);

/// Counters and totals, for the admin API and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct CacheStats {
    /// Entries indexed.
    pub entries: u64,
    /// Bytes of the files indexed.
    pub bytes: u64,
    /// What the cache takes on disk, as `du` counts it: the files' blocks, the cache's
    /// folders, purged files not yet deleted. Held within `max_bytes`.
    pub disk_bytes: u64,
    /// `cache.max_bytes`.
    pub max_bytes: u64,
    /// Purges started and not yet finished.
    pub purges_running: usize,
    /// Whether start-up reconciliation with the disk has finished.
    pub reconciled: bool,
    /// Bytes sled takes on disk for ross's state.
    pub index_disk_bytes: u64,
    /// Hot variants held in memory.
    pub memory_entries: u64,
    /// Their bytes, at most `cache.memory_bytes`.
    pub memory_bytes: u64,
}

#[derive(Default)]
struct Counters {
    /// sled's size on disk, measured by the maintenance thread (asking sled is file I/O,
    /// which stats readers on the async runtime must not do).
    index_disk_bytes: AtomicU64,
}

/// A purge that is journaled and active.
#[derive(Debug, Clone)]
pub struct PurgeJob {
    id: u64,
    selector: Selector,
    /// Whether its journal record was written (not while `data_dir` is full: a purge then
    /// still stops the files being served, see [`Inner::begin`]).
    journaled: bool,
}

impl PurgeJob {
    /// Whether it is journaled: a crash before it finishes resumes it at the next start.
    pub fn journaled(&self) -> bool {
        self.journaled
    }
}

/// Wakes the maintenance thread, and tells it to stop.
#[derive(Default)]
struct Signal {
    state: Mutex<(bool, bool)>, // (work to do, stop)
    cond: Condvar,
}

impl Signal {
    fn wake(&self) {
        lock(&self.state).0 = true;
        self.cond.notify_all();
    }

    fn stop(&self) {
        lock(&self.state).1 = true;
        self.cond.notify_all();
    }

    fn stopped(&self) -> bool {
        lock(&self.state).1
    }

    /// Waits up to `timeout` for a wake-up; returns false once stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = lock(&self.state);
        let (mut guard, _) = self
            .cond
            .wait_timeout_while(guard, timeout, |(work, stop)| !*work && !*stop)
            .unwrap_or_else(|e| e.into_inner());
        guard.0 = false;
        !guard.1
    }
}

/// The path lock of `variant`.
fn stripe_of(variant: &VariantKey) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(variant);
    hash as usize % STRIPES
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The meta-tree key of the version behind a mode's renders.
/// `meta` key: the disk use of the cache's folders, as last noted (so that the bound holds
/// from start-up, before reconciliation measures it again).
const FOLDER_BYTES_KEY: &[u8] = b"cache-folder-bytes";

fn version_key(mode: &str) -> Vec<u8> {
    format!("mode-version/{mode}").into_bytes()
}

impl FullDisk for CacheError {
    fn full_disk(&self) -> bool {
        match self {
            CacheError::Io { source, .. } => disk::no_space(source),
            CacheError::Index(e) => e.full_disk(),
            CacheError::Db(e) => e.full_disk(),
            _ => false,
        }
    }
}

/// The cache. Cloning is cheap and shares it.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
    _open: Arc<Closer>,
}

/// Shared by the cache's handles: once the last is dropped, the thread deleting the trash
/// stops at its next step (it holds the cache while it works, so the cache could not end
/// before it did).
struct Closer(Arc<Signal>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.stop();
    }
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    db: Database,
    index: Index,
    meta: sled::Tree,
    /// When this process opened the cache: files and entries older than this and unknown to
    /// the other side are leftovers of an earlier run.
    opened_ms: u64,
    stripes: Vec<Mutex<()>>,
    /// Room reserved for files being written and not yet indexed.
    reserved: AtomicU64,
    /// What the cache's own folders take on disk (and its marker): moved by each folder a
    /// write makes or a removal takes away, measured again by reconciliation.
    folders: AtomicU64,
    /// What the files in the trash take on disk (purged, not yet deleted).
    trash_disk: AtomicU64,
    /// Folders in the trash, oldest first, for the thread that deletes them.
    trash: Mutex<Vec<TrashRun>>,
    /// Wakes that thread.
    trash_signal: Arc<Signal>,
    /// Held by whoever deletes trash files (that thread, or a small purge before answering).
    deleting: Mutex<()>,
    /// `cache.purge_deletes_per_second`.
    purge_deletes_per_second: AtomicU64,
    /// Set when the disk is short of room: the trash is deleted at full speed.
    hurry: AtomicBool,
    /// Holds the trash's deletion (tests that look at a trash left for the next start).
    trash_paused: AtomicBool,
    /// `cache.min_free_bytes`.
    min_free_bytes: AtomicU64,
    /// "The disk is full", said once a minute.
    no_space_said: disk::OncePerMinute,
    /// The purges' sequence number, read lock-free when a request begins (a copy of the
    /// log's, set under its lock).
    seq: AtomicU64,
    /// Writers hold it shared from their check against the log to their index entry; a purge
    /// holds it exclusively to note itself, so once it has, no render begun earlier that it
    /// matches is written.
    writes: RwLock<PurgeLog>,
    /// The log's source epochs, read by requests without its lock.
    epochs: Arc<RwLock<purge_log::Epochs>>,
    /// Purges journaled and not finished. Read on every hit, so lock-free.
    active: ArcSwap<Vec<PurgeJob>>,
    /// Purges for the maintenance thread, by journal id.
    queued: Mutex<VecDeque<PurgeJob>>,
    /// Purges that failed, each with when to try it again and how many times it failed: they
    /// stay active (their matches are not served) until a retry finishes them.
    retries: Mutex<Vec<(std::time::Instant, u32, PurgeJob)>>,
    /// The version each mode's renders will be of once queued purges have run.
    expected_versions: Mutex<HashMap<String, Option<String>>>,
    /// Last-served times not yet written to the index.
    touches: Mutex<HashMap<Vec<u8>, u64>>,
    track_hits: AtomicBool,
    /// One eviction at a time.
    evicting: Mutex<()>,
    /// Hot variants (`None` when `cache.memory_bytes` is 0).
    hot: Option<Hot>,
    reconciled: AtomicBool,
    /// The reduced originals, when kept.
    reduced: Option<ReducedTier>,
    counters: Counters,
    /// Where evictions are counted.
    metrics: Arc<Metrics>,
    signal: Arc<Signal>,
    _marker: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.signal.stop();
        self.trash_signal.stop();
        self.flush_touches();
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "cannot flush the cache index");
        }
    }
}

impl Cache {
    /// Opens the cache in `dir` with its index in `db`, bounded to `max_bytes`, and starts its
    /// background work. Blocking: the index is scanned once for its totals.
    /// Up to `memory_bytes` of the most recently served variants are also kept in memory.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        memory_bytes: u64,
        db: &Database,
        metrics: Arc<Metrics>,
    ) -> Result<Cache, CacheError> {
        Cache::open_held(dir, max_bytes, memory_bytes, None, db, metrics, false)
    }

    /// [`Cache::open`], keeping reduced originals (see [`crate::reduced`]) in `originals`
    /// (not in `dir`: `max_bytes` bounds what `dir` holds) within `originals_bytes` of disk,
    /// leaving `min_free_bytes` free on its file system: 0 keeps none (and deletes those kept
    /// before).
    pub fn open_keeping_originals(
        dir: &Path,
        max_bytes: u64,
        memory_bytes: u64,
        originals: (&Path, u64, u64),
        db: &Database,
        metrics: Arc<Metrics>,
    ) -> Result<Cache, CacheError> {
        Cache::open_held(
            dir,
            max_bytes,
            memory_bytes,
            Some(originals),
            db,
            metrics,
            false,
        )
    }

    /// [`Cache::open`], with the trash's deletion held from the start if `trash_paused`.
    fn open_held(
        dir: &Path,
        max_bytes: u64,
        memory_bytes: u64,
        originals: Option<(&Path, u64, u64)>,
        db: &Database,
        metrics: Arc<Metrics>,
        trash_paused: bool,
    ) -> Result<Cache, CacheError> {
        let marker = claim_folder(dir)?;
        let tmp = dir.join(TMP_DIR);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_error(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
        // Opened before the purges journaled as unfinished run again: they drop copies too.
        let reduced = match originals {
            Some((folder, max, min_free)) => {
                let tree = db.tree(TreeName::Reduced)?;
                let tier = ReducedTier::open(folder, tree, max, min_free)?;
                tier.enabled().then_some(tier)
            }
            None => None,
        };
        let meta = db.tree(TreeName::Meta)?;
        let trash_dir = dir.join(TRASH_DIR);
        std::fs::create_dir_all(&trash_dir).map_err(io_error(&trash_dir))?;
        let mut journal = std::collections::BTreeMap::new();
        for item in meta.scan_prefix(purge::JOURNAL_PREFIX) {
            let (key, value) = item?;
            let id = purge::journal_id(&key);
            match (id, serde_json::from_slice::<Selector>(&value)) {
                (Some(id), Ok(selector)) => {
                    journal.insert(id, selector);
                }
                _ => {
                    tracing::warn!("dropping an unreadable purge journal record");
                    meta.remove(key)?;
                }
            }
        }
        // Folders in the trash: each keeps its purge's entries dead until deleted; a purge
        // whose move to the trash finished is not run again.
        let mut runs = Vec::new();
        let mut rules = Vec::new();
        let mut moved = BTreeSet::new();
        let mut unjournaled = std::collections::BTreeMap::new();
        for found in trash::scan(&trash_dir).map_err(io_error(&trash_dir))? {
            let trash::Found {
                seq,
                id,
                selector,
                finished,
                folder,
            } = found;
            rules.push(index::DeadRule {
                seq,
                id,
                selector: selector.clone(),
            });
            if finished {
                moved.insert(id);
            } else if !journal.contains_key(&id) {
                // Begun with data_dir full, and cut short: its folder is its record.
                unjournaled.insert(id, selector.clone());
            }
            runs.push(TrashRun {
                seq,
                id,
                folder,
                finished,
                left: None,
                scan_from: Some(Vec::new()),
                in_folders: false,
                selector,
            });
        }
        // Sequences rise across restarts (sled's id generator), and above every trash folder's
        // (a data_dir restored from a backup could otherwise make new entries look dead).
        let first_seq = db
            .generate_id()?
            .max(rules.iter().map(|r| r.seq + 1).max().unwrap_or(0));
        let log = PurgeLog::new(purge_log::kept_for(Duration::ZERO), first_seq);
        let epochs = log.epochs();
        let dead: index::DeadRules = Arc::new(ArcSwap::from_pointee(rules));
        let index = Index::open(db.tree(TreeName::CacheEntries)?, dead)?;
        // Until reconciliation measures them again: as last noted, or at least the root,
        // the marker and the folder of files being written.
        let folders = meta
            .get(FOLDER_BYTES_KEY)?
            .and_then(|v| Some(u64::from_be_bytes(v.as_ref().try_into().ok()?)))
            .unwrap_or_else(|| {
                [dir.to_owned(), tmp.clone(), dir.join(MARKER)]
                    .iter()
                    .filter_map(|p| std::fs::symlink_metadata(p).ok())
                    .map(|m| disk::disk_use(&m))
                    .sum()
            });
        let queued: VecDeque<PurgeJob> = journal
            .into_iter()
            .map(|(id, selector)| (id, selector, true))
            .chain(unjournaled.into_iter().map(|(id, s)| (id, s, false)))
            .filter(|(id, _, _)| !moved.contains(id))
            .map(|(id, selector, journaled)| PurgeJob {
                id,
                selector,
                journaled,
            })
            .collect();
        if !queued.is_empty() {
            tracing::info!(
                purges = queued.len(),
                "purges interrupted by the last stop will finish in the background"
            );
        }
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            max_bytes,
            db: db.clone(),
            index,
            meta,
            opened_ms: now_ms(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            reserved: AtomicU64::new(0),
            folders: AtomicU64::new(folders),
            trash_disk: AtomicU64::new(0),
            trash: Mutex::new(runs),
            trash_signal: Arc::default(),
            deleting: Mutex::new(()),
            purge_deletes_per_second: AtomicU64::new(2000),
            hurry: AtomicBool::new(false),
            trash_paused: AtomicBool::new(trash_paused),
            min_free_bytes: AtomicU64::new(0),
            no_space_said: disk::OncePerMinute::default(),
            seq: AtomicU64::new(0),
            writes: RwLock::new(log),
            epochs,
            active: ArcSwap::from_pointee(queued.iter().cloned().collect()),
            queued: Mutex::new(queued),
            retries: Mutex::new(Vec::new()),
            expected_versions: Mutex::default(),
            touches: Mutex::default(),
            track_hits: AtomicBool::new(true),
            evicting: Mutex::new(()),
            hot: (memory_bytes > 0).then(|| {
                Hot::builder()
                    .max_capacity(memory_bytes)
                    .support_invalidation_closures()
                    .weigher(|_, file: &CachedFile| {
                        u32::try_from(file.bytes.len()).unwrap_or(u32::MAX)
                    })
                    .build()
            }),
            reconciled: AtomicBool::new(false),
            reduced,
            counters: Counters::default(),
            metrics,
            signal: Arc::default(),
            _marker: marker,
        });
        maintenance::spawn(&inner)?;
        trash::spawn(&inner)?;
        let closer = Closer(inner.trash_signal.clone());
        Ok(Cache {
            inner,
            _open: Arc::new(closer),
        })
    }

    /// The purges run so far: take it when a request begins, give it back to [`Cache::put`].
    pub fn ticket(&self) -> WriteTicket {
        WriteTicket(self.inner.seq.load(Ordering::SeqCst))
    }

    /// Keeps `n` bytes free on `cache.dir`'s disk (`cache.min_free_bytes`), evicting the least
    /// recently served entries when there are fewer.
    pub fn set_min_free_bytes(&self, n: u64) {
        self.inner.min_free_bytes.store(n, Ordering::Relaxed);
    }

    /// Bounds the files and folders the trash's deletion removes per second
    /// (`cache.purge_deletes_per_second`).
    pub fn set_purge_deletes_per_second(&self, n: u64) {
        self.inner
            .purge_deletes_per_second
            .store(n.max(1), Ordering::Relaxed);
    }

    /// Tells the cache how long a render may take (`limits.render_timeout`): purges are
    /// remembered for longer than that, so that no render begun before one is cached after it.
    pub fn set_render_timeout(&self, render_timeout: Duration) {
        let mut log = self.inner.writes.write().unwrap_or_else(|e| e.into_inner());
        log.keep_for(purge_log::kept_for(render_timeout));
    }

    /// The source epoch of `key`: what an original fetched or decoded for it is kept under,
    /// and used only while this has not moved on. Only a purge that touches the original (of
    /// the key, a prefix of it, everything: [`Selector::touches_original`]) moves it, so
    /// purges of other keys, modes or sizes leave the originals being reused be.
    pub fn source_epoch(&self, key: &str) -> u64 {
        let epochs = self.inner.epochs.read().unwrap_or_else(|e| e.into_inner());
        epochs.source_epoch(key)
    }

    /// The cached file for `variant`, unless there is none or a running purge may remove it
    /// (while a mode's older renders are being purged, a file is served only if the index
    /// says the version in service made it). The file is opened and read through one handle,
    /// so an eviction meanwhile cannot cut it short (an unlinked file stays readable while
    /// open).
    pub async fn get(&self, variant: &VariantKey) -> Option<CachedFile> {
        let needs_version = match self.inner.hit_rule(variant)? {
            Ok(file) => return Some(file),
            Err(needs_version) => needs_version,
        };
        let inner = self.inner.clone();
        let v = variant.clone();
        let read = tokio::task::spawn_blocking(move || inner.read_hit(&v, needs_version));
        // A cache folder that hangs (a stuck mount) must not hang the request: past the
        // deadline it is a miss, and the render that follows reports what fails.
        let file = match tokio::time::timeout(READ_DEADLINE, read).await {
            Ok(joined) => joined.ok()??,
            Err(_) => {
                tracing::warn!(variant = %variant, "cache read timed out; rendering instead");
                return None;
            }
        };
        self.inner.touch(variant);
        Some(file)
    }

    /// Notes a hit served by someone else (nginx, from the cache folder): its time counts for
    /// eviction as a hit ross served would. Nothing happens for a variant not indexed.
    pub fn note_hit(&self, variant: &VariantKey) {
        self.inner.touch(variant);
    }

    /// [`Cache::get`] for a caller already on the blocking pool (a render about to start,
    /// checking that a render just finished did not cache the variant). Blocking.
    pub fn get_blocking(&self, variant: &VariantKey) -> Option<CachedFile> {
        let needs_version = match self.inner.hit_rule(variant)? {
            Ok(file) => return Some(file),
            Err(needs_version) => needs_version,
        };
        let file = self.inner.read_hit(variant, needs_version)?;
        self.inner.touch(variant);
        Some(file)
    }

    /// The variant if it is held in memory and no running purge may remove it: what
    /// [`Cache::get`] serves without reading a file, answered at once.
    pub fn get_in_memory(&self, variant: &VariantKey) -> Option<CachedFile> {
        let inner = &self.inner;
        inner.hot.as_ref()?;
        if !matches!(inner.running_purges(variant), Purging::No) {
            return None;
        }
        inner.in_memory(variant)
    }

    /// Stores `bytes`, rendered by `version` of the mode from version `source` of the original
    /// (empty: not known), as `variant`, unless a purge began after `ticket` was taken or
    /// `current()` no longer holds once no purge can start.
    /// A full disk evicts the least recently served entries and tries once more, then gives
    /// up ([`PutOutcome::NoSpace`]: the render is served uncached). Blocking: call off the
    /// runtime.
    pub fn put(
        &self,
        variant: &VariantKey,
        version: &str,
        source: &str,
        bytes: &[u8],
        ticket: WriteTicket,
        current: impl Fn() -> bool,
    ) -> Result<PutOutcome, CacheError> {
        let inner = &self.inner;
        // Room for the file is reserved before it is written: even files being written never
        // take the cache past its bound.
        let depth = variant.relative_path().components().count();
        let room = disk::reservation(bytes.len() as u64, depth);
        if room > inner.max_bytes || !inner.reserve(room) {
            return Ok(PutOutcome::NoRoom);
        }
        let attempt = || {
            inner.write_temporary(bytes).and_then(|tmp| {
                let placed = inner.place(variant, (version, source), &tmp, bytes, ticket, &current);
                if !matches!(placed, Ok(PutOutcome::Stored(_))) {
                    let _ = std::fs::remove_file(&tmp);
                }
                placed
            })
        };
        let mut outcome = attempt();
        if outcome.as_ref().is_err_and(|e| e.full_disk()) {
            inner.make_room(room);
            outcome = attempt();
        }
        let outcome = match outcome {
            Err(e) if e.full_disk() => Ok(PutOutcome::NoSpace),
            other => other,
        };
        if matches!(outcome, Ok(PutOutcome::NoSpace)) {
            inner.metrics.count(Count::CacheNoSpace);
            if inner.no_space_said.due() {
                tracing::error!(
                    cache_dir = %inner.dir.display(),
                    "the disk is full: renders are served but not cached (said once a minute; \
                     ross_cache_no_space_total counts them); lower cache.max_bytes or raise \
                     cache.min_free_bytes"
                );
            }
        }
        inner.reserved.fetch_sub(room, Ordering::SeqCst);
        if inner.used() > inner.max_bytes / 1000 * EVICT_START_PERMILLE {
            inner.signal.wake();
        }
        outcome
    }

    /// Journals a purge and makes it active (hits it may remove are no longer served), without
    /// removing anything yet: [`Cache::finish_purge`] does. Blocking.
    pub fn begin_purge(&self, selector: Selector) -> Result<PurgeJob, CacheError> {
        self.inner.begin(selector)
    }

    /// Runs a purge begun with [`Cache::begin_purge`] to its end. Blocking. A purge that
    /// fails stays active and is tried again in the background until it finishes.
    pub fn finish_purge(&self, job: PurgeJob) -> Result<PurgeOutcome, CacheError> {
        self.inner
            .run(&job)
            .inspect_err(|e| self.inner.retry_later(job, 0, e))
    }

    /// Gives up a purge begun with [`Cache::begin_purge`] whose change could not be made (its
    /// journal record goes; hits it matched are served again).
    pub fn abandon_purge(&self, job: PurgeJob) {
        if job.journaled {
            if let Err(e) = self.inner.meta.remove(purge::journal_key(job.id)) {
                tracing::warn!(error = %e, "cannot remove an abandoned purge's journal record");
            }
        }
        self.inner.deactivate(job.id);
    }

    /// The cached variants `selector` names, `limit` at most. Blocking (reads the index).
    pub fn variants(
        &self,
        selector: &Selector,
        limit: usize,
    ) -> Result<Vec<VariantKey>, CacheError> {
        self.inner
            .matching(selector)
            .take(limit)
            .map(|item| item.map(|(variant, _)| variant))
            .collect()
    }

    /// The cached variants `selector` names with what the index knows of each, `limit` at
    /// most. Blocking (reads the index).
    pub fn entries(
        &self,
        selector: &Selector,
        limit: usize,
    ) -> Result<Vec<(VariantKey, EntryMeta)>, CacheError> {
        self.inner.matching(selector).take(limit).collect()
    }

    /// The source keys with variants in the index whose names start with `prefix`, each once,
    /// in order, after `after` (not included), `limit` at most. Blocking (reads the index).
    pub fn keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, CacheError> {
        Ok(self.inner.index.keys(prefix, after, limit)?)
    }

    /// How many variants, and bytes, a purge by `selector` would remove now. Blocking (reads
    /// the index).
    pub fn count(&self, selector: &Selector) -> Result<PurgeOutcome, CacheError> {
        if let Some(totals) = self.inner.index.matching_totals(selector) {
            return Ok(PurgeOutcome {
                entries: totals.entries,
                bytes: totals.bytes,
            });
        }
        let mut outcome = PurgeOutcome::default();
        for item in self.inner.matching(selector) {
            let (_, meta) = item?;
            outcome.entries += 1;
            outcome.bytes += meta.bytes;
        }
        Ok(outcome)
    }

    /// Removes every variant `selector` names, crash-safely. Blocking.
    pub fn purge(&self, selector: Selector) -> Result<PurgeOutcome, CacheError> {
        let job = self.begin_purge(selector)?;
        self.finish_purge(job)
    }

    /// A mode is now served by `version`. If the cache may hold renders of another version,
    /// they are purged in the background (hits on the mode are renders until then) and
    /// `version` is recorded once they are gone. Returns the version the cache's renders of
    /// the mode were of before, when it differed (`Some(None)`: none was recorded). Blocking.
    pub fn adopt_mode_version(
        &self,
        mode: &str,
        version: &str,
    ) -> Result<Option<Option<String>>, CacheError> {
        let inner = &self.inner;
        let mut expected = lock(&inner.expected_versions);
        let behind = match expected.get(mode) {
            Some(v) => v.clone(),
            None => inner
                .meta
                .get(version_key(mode))?
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
        };
        if behind.as_deref() == Some(version) {
            return Ok(None);
        }
        inner.schedule(Selector::OtherVersions {
            mode: mode.to_owned(),
            version: version.to_owned(),
        })?;
        expected.insert(mode.to_owned(), Some(version.to_owned()));
        Ok(Some(behind))
    }

    /// Whether a purge by `selector` is still running (or waiting to be run, or retried).
    pub fn is_purging(&self, selector: &Selector) -> bool {
        self.inner
            .active
            .load()
            .iter()
            .any(|job| &job.selector == selector)
    }

    /// No plugin provides `mode` any more: its renders are purged in the background (nginx
    /// would otherwise go on serving them) and its version record is forgotten. Blocking.
    pub fn retire_mode(&self, mode: &str) -> Result<(), CacheError> {
        let inner = &self.inner;
        let mut expected = lock(&inner.expected_versions);
        inner.schedule(Selector::Retired(mode.to_owned()))?;
        expected.insert(mode.to_owned(), None);
        Ok(())
    }

    /// Modes whose renders the cache may hold (those with a version recorded or expected).
    pub fn recorded_modes(&self) -> Result<Vec<String>, CacheError> {
        let inner = &self.inner;
        let mut modes = BTreeSet::new();
        for key in inner.meta.scan_prefix(b"mode-version/").keys() {
            let key = key?;
            if let Some(mode) = key.strip_prefix(b"mode-version/") {
                modes.insert(String::from_utf8_lossy(mode).into_owned());
            }
        }
        for (mode, version) in lock(&inner.expected_versions).iter() {
            if version.is_some() {
                modes.insert(mode.clone());
            } else {
                modes.remove(mode);
            }
        }
        Ok(modes.into_iter().collect())
    }

    /// Totals and counters now.
    pub fn stats(&self) -> CacheStats {
        let inner = &self.inner;
        if let Some(hot) = &inner.hot {
            hot.run_pending_tasks(); // so that its totals are current
        }
        CacheStats {
            entries: inner.index.entries(),
            bytes: inner.index.bytes(),
            disk_bytes: inner.disk_bytes(),
            max_bytes: inner.max_bytes,
            purges_running: inner.active.load().len(),
            reconciled: inner.reconciled.load(Ordering::SeqCst),
            index_disk_bytes: inner.counters.index_disk_bytes.load(Ordering::Relaxed),
            memory_entries: inner.hot.as_ref().map_or(0, |hot| hot.entry_count()),
            memory_bytes: inner.hot.as_ref().map_or(0, |hot| hot.weighted_size()),
        }
    }

    /// The entry for `variant`, if indexed. Blocking.
    pub fn entry(&self, variant: &VariantKey) -> Result<Option<EntryMeta>, CacheError> {
        Ok(self.inner.index.get(variant)?)
    }

    /// The reduced originals, when kept (`cache.originals_bytes` is not 0).
    pub fn reduced(&self) -> Option<&ReducedTier> {
        self.inner.reduced.as_ref()
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Whether hits are recorded for eviction (on by default). Off, eviction orders entries
    /// by when they were written; the benchmark uses it to measure what recording costs.
    pub fn set_hit_tracking(&self, on: bool) {
        self.inner.track_hits.store(on, Ordering::Relaxed);
    }

    /// Writes pending last-served times and flushes the database (at shutdown). Blocking.
    pub fn flush(&self) -> Result<(), CacheError> {
        self.inner.flush_touches();
        Ok(self.inner.db.flush()?)
    }
}

/// Creates `dir` (or accepts an existing ross cache), and locks its marker for this process.
/// A folder without the marker is taken only when empty, or when it holds nothing but what
/// ross wrote before it had an index (`.tmp` and `{width}` folders): those files predate the
/// index and are removed by reconciliation.
fn claim_folder(dir: &Path) -> Result<File, CacheError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let marker = dir.join(MARKER);
    if !marker.exists() {
        let entries = std::fs::read_dir(dir).map_err(io_error(dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let unindexed_ross = entry.file_type().is_ok_and(|t| t.is_dir())
                && (name == TMP_DIR || name.bytes().all(|b| b.is_ascii_digit()));
            if !unindexed_ross {
                return Err(CacheError::NotACache {
                    path: dir.to_owned(),
                });
            }
        }
        std::fs::write(
            &marker,
            "This folder is a ross cache: ross deletes anything here its index does not know.\n",
        )
        .map_err(io_error(&marker))?;
    }
    let file = File::open(&marker).map_err(io_error(&marker))?;
    match crate::db::lock_exclusive(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(CacheError::InUse {
            path: dir.to_owned(),
        }),
        Err(e) => Err(io_error(&marker)(e)),
    }
}

fn read_whole(path: &Path) -> Option<ReadFile> {
    use std::os::unix::fs::MetadataExt;
    let mut file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).ok()?;
    Some(ReadFile {
        file: CachedFile::new(bytes.into(), meta.modified().ok()?),
        inode: (meta.dev(), meta.ino()),
    })
}

static TMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// What running purges mean for a hit on one variant.
enum Purging {
    /// None may remove it.
    No,
    /// A purge may remove it: not served from the cache.
    Variant,
    /// The mode's other versions are being purged: served only if the index says this
    /// version made it.
    OtherVersions(String),
}

impl Inner {
    fn running_purges(&self, variant: &VariantKey) -> Purging {
        let mut purging = Purging::No;
        for job in self.active.load().iter() {
            match &job.selector {
                Selector::OtherVersions { mode, version } if *mode == variant.mode => {
                    purging = Purging::OtherVersions(version.clone());
                }
                other if other.may_match(variant) => return Purging::Variant,
                _ => {}
            }
        }
        purging
    }

    /// How a hit on `variant` may be served: `None` not at all (a purge may remove it),
    /// `Some(Ok(file))` from memory, `Some(Err(version))` from disk, if the index says
    /// `version` made it when one is given.
    #[allow(clippy::type_complexity)]
    fn hit_rule(&self, variant: &VariantKey) -> Option<Result<CachedFile, Option<String>>> {
        match self.running_purges(variant) {
            Purging::Variant => None,
            Purging::OtherVersions(version) => Some(Err(Some(version))),
            Purging::No => Some(self.in_memory(variant).ok_or(None)),
        }
    }

    /// Reads `variant`'s file (if the index says `version` made it, when one is given) and
    /// keeps it in memory. Blocking.
    fn read_hit(&self, variant: &VariantKey, version: Option<String>) -> Option<CachedFile> {
        if let Some(version) = version {
            let entry = self.index.get(variant).ok()??;
            if entry.version != version {
                return None;
            }
        }
        let path = self.dir.join(variant.relative_path());
        let read = read_whole(&path)?;
        self.remember(variant, &path, &read);
        Some(read.file)
    }

    /// The variant from memory, its hit noted; the caller has checked the running purges.
    fn in_memory(&self, variant: &VariantKey) -> Option<CachedFile> {
        let file = self.hot.as_ref()?.get(variant)?;
        self.touch(variant);
        Some(file)
    }

    /// Notes a hit's time for eviction.
    fn touch(&self, variant: &VariantKey) {
        if self.track_hits.load(Ordering::Relaxed) {
            let mut touches = lock(&self.touches);
            if touches.len() < MAX_PENDING_TOUCHES {
                touches.insert(variant.index_key(), now_ms());
            }
        }
    }

    /// Keeps a file read from disk in memory, if it is still the variant's indexed file: under
    /// the path lock, so a removal or replacement either happened before (the entry is gone,
    /// or the path holds another file) or comes after and takes it out again.
    fn remember(&self, variant: &VariantKey, path: &Path, read: &ReadFile) {
        use std::os::unix::fs::MetadataExt;
        let Some(hot) = &self.hot else { return };
        // Not worth a wait: a purge moving folders holds every path lock for a moment.
        let Some(_path) = self.try_stripe(variant) else {
            return;
        };
        let indexed = self.index.get(variant).is_ok_and(|e| e.is_some());
        let same_file = std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == read.inode);
        if indexed && same_file {
            hot.insert(variant.clone(), read.file.clone());
        }
    }

    /// Takes `variant` out of memory. Call under its path lock.
    fn forget(&self, variant: &VariantKey) {
        if let Some(hot) = &self.hot {
            hot.invalidate(variant);
        }
    }

    fn stripe(&self, variant: &VariantKey) -> MutexGuard<'_, ()> {
        lock(&self.stripes[stripe_of(variant)])
    }

    /// [`Inner::stripe`], unless another holds it now.
    fn try_stripe(&self, variant: &VariantKey) -> Option<MutexGuard<'_, ()>> {
        match self.stripes[stripe_of(variant)].try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Writes `bytes` to a new file in `.tmp/` and fsyncs it.
    fn write_temporary(&self, bytes: &[u8]) -> Result<PathBuf, CacheError> {
        let seq = TMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(TMP_DIR)
            .join(format!("{}-{seq}.part", std::process::id()));
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_data()
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_error(&tmp)(e)
        })?;
        Ok(tmp)
    }

    /// What the cache takes on disk now.
    fn disk_bytes(&self) -> u64 {
        self.index.disk()
            + self.folders.load(Ordering::Relaxed)
            + self.trash_disk.load(Ordering::Relaxed)
    }

    /// The next purge sequence: from sled's id generator, so that sequences rise across
    /// restarts (entries record theirs), and above the last one given.
    fn next_seq(&self, log: &PurgeLog) -> Result<u64, CacheError> {
        // sled writes its id counter now and then: with data_dir full, the next in memory.
        Ok(self.db.generate_id().unwrap_or(0).max(log.seq + 1))
    }

    /// What counts against the bound: what the cache takes on disk and the room reserved
    /// for files being written.
    fn used(&self) -> u64 {
        self.disk_bytes() + self.reserved.load(Ordering::SeqCst)
    }

    /// Evicts so that `need` more bytes leave `cache.min_free_bytes` free on the disk (looked
    /// at each time: `statvfs` costs about a microsecond).
    fn keep_free(&self, need: u64) {
        let min_free = self.min_free_bytes.load(Ordering::Relaxed);
        if min_free == 0 {
            return;
        }
        let free = disk::free_bytes(&self.dir).unwrap_or(u64::MAX);
        let short = (min_free + need).saturating_sub(free);
        if short > 0 {
            self.make_room(short);
        }
    }

    /// Frees `n` bytes of disk at least: hurries the trash's deletion and evicts the least
    /// recently served entries (a little more than asked, so that a full disk is not met again
    /// at the next write).
    fn make_room(&self, n: u64) {
        self.hurry.store(true, Ordering::Relaxed);
        self.trash_signal.wake();
        let margin = (self.max_bytes / 100).max(n);
        let target = self.used().saturating_sub(n + margin);
        if let Err(e) = self.evict_to(target) {
            tracing::error!(error = %e, "eviction failed");
        }
    }

    /// Reserves room for `n` bytes about to be written, evicting first if needed.
    fn reserve(&self, n: u64) -> bool {
        self.keep_free(n);
        let mut evicted = false;
        loop {
            let reserved = self.reserved.load(Ordering::SeqCst);
            if self.disk_bytes() + reserved + n <= self.max_bytes {
                if self
                    .reserved
                    .compare_exchange(reserved, reserved + n, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if evicted {
                return false;
            }
            let target = (self.max_bytes / 1000 * EVICT_TARGET_PERMILLE)
                .min(self.max_bytes.saturating_sub(n + reserved));
            if let Err(e) = self.evict_to(target) {
                tracing::error!(error = %e, "eviction failed");
            }
            evicted = true;
        }
    }

    /// Renames the written file into place and indexes it, if still wanted.
    fn place(
        &self,
        variant: &VariantKey,
        (version, source): (&str, &str),
        tmp: &Path,
        bytes: &[u8],
        ticket: WriteTicket,
        current: impl FnOnce() -> bool,
    ) -> Result<PutOutcome, CacheError> {
        let n = bytes.len() as u64;
        let log = self.writes.read().unwrap_or_else(|e| e.into_inner());
        if log.bars(ticket.0, variant) || !current() {
            return Ok(PutOutcome::Stale);
        }
        if self.db.room().is_err() {
            return Ok(PutOutcome::NoSpace); // no entry can be written for it
        }
        let _path = self.stripe(variant);
        let path = self.dir.join(variant.relative_path());
        let folders = disk::rename_into_place(&self.dir, tmp, &path).map_err(io_error(&path))?;
        self.folders.fetch_add(folders, Ordering::Relaxed);
        let file = std::fs::metadata(&path);
        let modified = file
            .as_ref()
            .ok()
            .and_then(|m| m.modified().ok())
            .unwrap_or_else(SystemTime::now);
        let now = now_ms();
        let entry = EntryMeta {
            bytes: n,
            // Written and synced already, so its blocks are allocated.
            disk: file
                .as_ref()
                .map_or(index::estimated_disk(n), disk::disk_use),
            created_ms: now,
            last_served_ms: now,
            seq: log.seq,
            version: version.to_owned(),
            source: source.to_owned(),
        };
        if let Err(e) = self.index.insert(variant, &entry) {
            // Without an entry the file would escape the bound: take it back.
            self.forget(variant);
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        if let Some(hot) = &self.hot {
            let file = CachedFile::new(Bytes::copy_from_slice(bytes), modified);
            hot.insert(variant.clone(), file);
        }
        Ok(PutOutcome::Stored(modified))
    }

    /// Removes `variant`'s file and entry, if the entry is still the one written at
    /// `created_ms` (when given). Returns what was removed.
    fn remove_variant(
        &self,
        variant: &VariantKey,
        created_ms: Option<u64>,
        emptied: &mut BTreeSet<PathBuf>,
    ) -> Result<Option<EntryMeta>, CacheError> {
        let _path = self.stripe(variant);
        let Some(entry) = self.index.get(variant)? else {
            return Ok(None);
        };
        if created_ms.is_some_and(|c| c != entry.created_ms) {
            return Ok(None); // written again since it was chosen
        }
        self.unlink(variant, emptied)?;
        Ok(self.index.remove(variant)?)
    }

    /// Takes `variant` out of memory and removes its file (the caller holds its path lock).
    fn unlink(
        &self,
        variant: &VariantKey,
        emptied: &mut BTreeSet<PathBuf>,
    ) -> Result<(), CacheError> {
        self.forget(variant);
        let path = self.dir.join(variant.relative_path());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
        if let Some(parent) = path.parent() {
            emptied.insert(parent.to_owned());
        }
        Ok(())
    }

    /// Removes the folders in `candidates` (and their parents) that are empty, deepest first;
    /// never the cache root. A writer that loses its folder this way creates it again.
    fn remove_empty_folders(&self, candidates: BTreeSet<PathBuf>) {
        let mut all = BTreeSet::new();
        for dir in candidates {
            let mut d = dir.as_path();
            while d != self.dir && d.starts_with(&self.dir) && all.insert(d.to_owned()) {
                match d.parent() {
                    Some(p) => d = p,
                    None => break,
                }
            }
        }
        for dir in all.iter().rev() {
            disk::sub_saturating(&self.folders, disk::remove_empty_folder(dir));
        }
    }

    /// Evicts least recently served entries until what the cache takes (with the room
    /// reserved) is at most `target`.
    fn evict_to(&self, target: u64) -> Result<(), CacheError> {
        let _one = lock(&self.evicting);
        let used = || self.used();
        if used() <= target {
            return Ok(());
        }
        self.flush_touches();
        // Purged files not yet deleted count against the bound: they are deleted at full
        // speed now, and only what they will not free is evicted (renders made since a purge
        // of everything are not thrown out for the trash's sake).
        let trash = self.trash_disk.load(Ordering::Relaxed);
        if trash > 0 {
            self.hurry.store(true, Ordering::Relaxed);
            self.trash_signal.wake();
        }
        let excess = used().saturating_sub(target).saturating_sub(trash);
        if excess == 0 {
            return Ok(());
        }
        // The oldest entries that free `excess`: a max-heap on last-served time keeps only
        // as many as needed, so memory follows what is evicted, not the index size.
        let mut oldest = std::collections::BinaryHeap::new();
        let mut held = 0u64;
        for item in self.index.iter() {
            let (key, meta) = item?;
            let Some(meta) = meta else { continue };
            if VariantKey::from_index_key(&key).is_some_and(|v| self.index.is_dead(&v, &meta)) {
                continue; // the trash's to delete
            }
            held += meta.disk;
            oldest.push((meta.last_served_ms, meta.created_ms, key, meta.disk));
            while let Some(top) = oldest.peek() {
                if held - top.3 >= excess {
                    held -= top.3;
                    oldest.pop();
                } else {
                    break;
                }
            }
        }
        let mut emptied = BTreeSet::new();
        let (mut entries, mut bytes) = (0, 0);
        for (_, created, key, _) in oldest.into_sorted_vec() {
            if used() <= target {
                break;
            }
            let Some(variant) = VariantKey::from_index_key(&key) else {
                self.index.remove_raw(&key)?;
                continue;
            };
            if let Some(gone) = self.remove_variant(&variant, Some(created), &mut emptied)? {
                entries += 1;
                bytes += gone.bytes;
            }
        }
        self.remove_empty_folders(emptied);
        self.metrics.add(Count::Evicted, entries);
        self.metrics.add(Count::EvictedBytes, bytes);
        tracing::debug!(entries, bytes, "evicted");
        Ok(())
    }

    /// Writes the last-served times gathered from hits to the index.
    fn flush_touches(&self) {
        if self.db.room().is_err() {
            return; // kept for later: hit times can wait for room
        }
        let touches = std::mem::take(&mut *lock(&self.touches));
        for (key, ms) in touches {
            if let Err(e) = self.index.touch(&key, ms) {
                tracing::warn!(error = %e, "cannot record a cache hit");
                return;
            }
        }
    }

    /// Journals `selector` (flushed before returning) and makes it active.
    ///
    /// With `data_dir` full, nothing can be journaled, but a purge must still stop the files
    /// being served: one of everything, a mode or a size is moved to the trash all the same
    /// (the trash folder's name is its record); one of a key or a prefix removes the files
    /// and leaves their entries (which point at nothing, and go when next rendered or at the
    /// next start). Other purges are refused.
    fn begin(&self, selector: Selector) -> Result<PurgeJob, CacheError> {
        let journaled = match self.db.room() {
            Ok(()) => true,
            Err(_) if trash::by_trash(&selector) || selector.index_prefix().is_some() => false,
            Err(e) => return Err(e.into()),
        };
        // The id generator writes once a million ids: when it cannot, a time will do.
        let id = self.db.generate_id().unwrap_or_else(|_| now_ms() << 20);
        if journaled {
            let record = serde_json::to_vec(&selector).expect("selectors serialise");
            self.meta.insert(purge::journal_key(id), record)?;
            self.db.flush()?;
        }
        let job = PurgeJob {
            id,
            selector,
            journaled,
        };
        self.active.rcu(|jobs| {
            let mut jobs = (**jobs).clone();
            jobs.push(job.clone());
            jobs
        });
        Ok(job)
    }

    /// Drops the reduced originals `selector` touches, once its source epochs moved on (a
    /// copy being stored checks the epoch under the tier's lock: none made before the purge
    /// is kept after it).
    fn drop_copies(&self, selector: &Selector) -> Result<(), CacheError> {
        if let Some(tier) = &self.reduced {
            tier.drop_matching(selector)?;
        }
        Ok(())
    }

    /// Ends the purge `id`'s activity: hits it matched are served again.
    fn deactivate(&self, id: u64) {
        self.active.rcu(|jobs| {
            jobs.iter()
                .filter(|j| j.id != id)
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    /// Has the maintenance thread try `job`, which failed (`failures` times before), again:
    /// after 1 s, doubling up to a minute. It stays active meanwhile.
    fn retry_later(&self, job: PurgeJob, failures: u32, error: &CacheError) {
        let wait = Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60));
        tracing::error!(
            error = %error, selector = ?job.selector, retry_in_s = wait.as_secs(),
            "purge failed; its matches are not served until a retry finishes it"
        );
        lock(&self.retries).push((std::time::Instant::now() + wait, failures + 1, job));
    }

    /// Tries again the failed purges that are due.
    fn run_due_retries(&self) {
        let now = std::time::Instant::now();
        let due: Vec<_> = {
            let mut retries = lock(&self.retries);
            let (due, later) = retries.drain(..).partition(|(at, _, _)| *at <= now);
            *retries = later;
            due
        };
        for (_, failures, job) in due {
            match self.run(&job) {
                Ok(_) => tracing::info!(selector = ?job.selector, "purge finished on a retry"),
                Err(e) => self.retry_later(job, failures, &e),
            }
        }
    }

    /// Journals `selector` and leaves it to the maintenance thread.
    fn schedule(&self, selector: Selector) -> Result<(), CacheError> {
        let job = self.begin(selector)?;
        lock(&self.queued).push_back(job);
        self.signal.wake();
        Ok(())
    }

    /// The indexed variants `selector` names, with their entries.
    fn matching<'a>(
        &'a self,
        selector: &'a Selector,
    ) -> impl Iterator<Item = Result<(VariantKey, EntryMeta), CacheError>> + 'a {
        let items: Box<dyn Iterator<Item = _>> = match selector.index_prefix() {
            Some(prefix) => Box::new(self.index.scan_prefix(&prefix)),
            None => Box::new(self.index.iter()),
        };
        items.filter_map(move |item| {
            let (key, meta) = match item {
                Ok(pair) => pair,
                Err(e) => return Some(Err(e.into())),
            };
            // Reconciliation drops entries it cannot read.
            let (variant, meta) = (VariantKey::from_index_key(&key)?, meta?);
            (selector.matches(&variant, Some(&meta.version))
                && !self.index.is_dead(&variant, &meta))
            .then_some(Ok((variant, meta)))
        })
    }

    /// Runs a journaled purge: no render begun before it is cached after this starts (see
    /// [`Selector::bars_earlier_renders`]); every matching entry and file goes; then its
    /// follow-up is recorded and its journal record removed.
    fn run(&self, job: &PurgeJob) -> Result<PurgeOutcome, CacheError> {
        if trash::by_trash(&job.selector) {
            return self.run_trash(job);
        }
        let started = std::time::Instant::now();
        let selector = &job.selector;
        if selector.bars_earlier_renders() {
            let mut log = self.writes.write().unwrap_or_else(|e| e.into_inner());
            let seq = self.next_seq(&log)?;
            log.push(seq, selector.clone());
            self.seq.store(seq, Ordering::SeqCst);
        }
        self.drop_copies(selector)?;
        let mut outcome = PurgeOutcome::default();
        let mut emptied = BTreeSet::new();
        for item in self.matching(selector) {
            let (variant, entry) = item?;
            let gone = if job.journaled {
                self.remove_variant(&variant, None, &mut emptied)?
            } else {
                // data_dir is full: the files go, their entries wait (see `begin`).
                let _path = self.stripe(&variant);
                self.unlink(&variant, &mut emptied)?;
                Some(entry)
            };
            if let Some(gone) = gone {
                outcome.entries += 1;
                outcome.bytes += gone.bytes;
            }
        }
        self.remove_empty_folders(emptied);
        if !job.journaled {
            self.deactivate(job.id);
            tracing::warn!(selector = ?selector, entries = outcome.entries, "cache purged with data_dir full: files removed, entries left");
            return Ok(outcome);
        }
        match selector {
            Selector::OtherVersions { mode, version } => {
                self.meta.insert(version_key(mode), version.as_bytes())?;
            }
            Selector::Retired(mode) => {
                self.meta.remove(version_key(mode))?;
            }
            _ => {}
        }
        self.meta.remove(purge::journal_key(job.id))?;
        self.deactivate(job.id);
        tracing::info!(
            selector = ?selector, entries = outcome.entries, bytes = outcome.bytes,
            ms = started.elapsed().as_millis() as u64, "cache purged"
        );
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;
