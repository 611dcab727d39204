//! The reduced-originals tier on disk: one copy per source key (see [`super::copy`]), in
//! `{data_dir}/reduced/` (not in `cache.dir`, which `cache.max_bytes` bounds and nginx
//! serves), indexed in the `reduced` tree of the database, least recently used out first
//! within `cache.originals_bytes` as the disk counts it (allocated blocks). No copy is begun
//! with less than `cache.min_free_bytes` free on the folder's file system, and none is kept
//! that left less.
//!
//! The server never holds a copy's bytes: it opens the files, and the worker that decodes an
//! original writes its copy into the file it is handed, as a worker that renders from a copy
//! reads and checks the file it is handed ([`super::direct`]: past the page cache).
//!
//! Each copy records the version of the original it was made from; the pipeline uses a copy
//! only once the source has said its original is still that version (a stat, a `HeadObject`),
//! and a purge that touches an original drops its copy ([`ReducedTier::drop_matching`]).
//!
//! Crash safety, write by write: a copy is written to `{id}.part` (by a worker), cut to its
//! length, renamed to `{id}.copy`, then recorded; dropping one removes its record, then its
//! file. A process killed between any two steps leaves a file without a record (removed when
//! the tier opens) or a record without a file (dropped when it opens, or when it is opened
//! for a read); a file torn by the disk, or written short by a worker killed mid-write, is
//! never renamed or fails its checksum when a worker reads it, and is dropped. Files are not
//! synced: a lost copy costs a decode.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use serde::{Deserialize, Serialize};

use super::direct;
use crate::cache::purge::Selector;

/// How often a copy's last use is written to the database (its place in the order is kept
/// in memory at every use; the database only orders the copies when the tier opens again).
const TOUCH_EVERY_MS: u64 = 60_000;

/// A copy as the database records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// Names its file.
    id: u64,
    /// Its length.
    bytes: u64,
    /// What it takes on disk.
    disk: u64,
    /// The version of the original it was made from.
    version: String,
    /// When it was last used (or made), milliseconds since the Unix epoch.
    used_ms: u64,
}

/// Figures for the metrics and the admin page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Copies held.
    pub copies: u64,
    /// What they take on disk.
    pub disk: u64,
    /// The bound.
    pub max_bytes: u64,
}

/// A copy opened for a worker to read back (and check) for a render.
#[derive(Debug)]
pub struct StoredCopy {
    /// The file, read-only (bypassing the page cache where the file system allows it).
    pub file: std::fs::File,
    /// Which copy it is, for [`ReducedTier::drop_unusable`].
    pub id: u64,
    /// The version of the original it was made from.
    pub version: String,
}

/// A new copy's file (`{id}.part`), for a worker to write and [`ReducedTier::keep`] to keep;
/// removed if it is dropped unkept.
#[derive(Debug)]
pub struct NewCopy {
    /// The file, write-only (bypassing the page cache where the file system allows it).
    pub file: std::fs::File,
    id: u64,
    /// Until kept.
    part: Option<PathBuf>,
}

impl Drop for NewCopy {
    fn drop(&mut self) {
        if let Some(part) = &self.part {
            remove_file(part);
        }
    }
}

/// Why the tier could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The folder.
    #[error("{path}: {source}")]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database.
    #[error("the reduced originals' index: {0}")]
    Db(#[from] sled::Error),
}

/// The tier: cloned handles share it.
#[derive(Clone)]
pub struct ReducedTier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReducedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReducedTier")
            .field("dir", &self.inner.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Inner {
    dir: PathBuf,
    tree: sled::Tree,
    max_bytes: u64,
    min_free_bytes: u64,
    next_id: AtomicU64,
    state: Mutex<State>,
}

struct State {
    /// Every copy, most recently used first.
    order: LruCache<String, Record>,
    /// Their disk use.
    disk: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ReducedTier {
    /// Opens the tier in `dir` with its index in `tree`, bounded to `max_bytes`: records
    /// without a file and files without a record go, and copies over the bound. With
    /// `max_bytes` 0 the tier is emptied and keeps nothing. Blocking.
    pub fn open(
        dir: &Path,
        tree: sled::Tree,
        max_bytes: u64,
        min_free_bytes: u64,
    ) -> Result<ReducedTier, TierError> {
        let io = |source| TierError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut records = Vec::new();
        for item in tree.iter() {
            let (key, value) = item?;
            match (
                String::from_utf8(key.to_vec()),
                serde_json::from_slice::<Record>(&value),
            ) {
                (Ok(key), Ok(record)) => records.push((key, record)),
                _ => {
                    tree.remove(key)?;
                }
            }
        }
        let mut files = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_suffix(".copy")
                .and_then(|id| u64::from_str_radix(id, 16).ok());
            match id {
                Some(id) => {
                    files.insert(id, entry.path());
                }
                // Half-written copies, and anything else: not the tier's.
                None => remove_file(&entry.path()),
            }
        }
        records.sort_by_key(|(_, r)| r.used_ms);
        let mut order = LruCache::unbounded();
        let mut disk = 0;
        let mut last_id = 0;
        for (key, record) in records {
            if files.remove(&record.id).is_none() {
                tree.remove(key.as_bytes())?;
                continue;
            }
            last_id = last_id.max(record.id);
            disk += record.disk;
            // Oldest first: the last pushed is the most recently used.
            order.push(key, record);
        }
        for path in files.values() {
            remove_file(path);
        }
        let tier = ReducedTier {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                tree,
                max_bytes,
                min_free_bytes,
                next_id: AtomicU64::new(last_id.max(now_ms() << 8) + 1),
                state: Mutex::new(State { order, disk }),
            }),
        };
        let mut gone = Vec::new();
        tier.inner.evict(&mut tier.inner.state(), &mut gone)?;
        gone.iter().for_each(|path| remove_file(path));
        Ok(tier)
    }

    /// Whether it keeps copies (`cache.originals_bytes` is not 0).
    pub fn enabled(&self) -> bool {
        self.inner.max_bytes > 0
    }

    /// The version of the original `key`'s copy was made from, if it holds one.
    pub fn version(&self, key: &str) -> Option<String> {
        self.inner
            .state()
            .order
            .peek(key)
            .map(|r| r.version.clone())
    }

    /// `key`'s copy, opened for a worker to read (and check), if the tier holds one made from
    /// version `version` of the original (the one the source vouches for now): a copy of
    /// another version is stale and dropped, and so is a record whose file is gone. Counts as
    /// a use. Blocking.
    pub fn open_copy(&self, key: &str, version: &str) -> Option<StoredCopy> {
        let record = {
            let mut state = self.inner.state();
            let record = state.order.peek(key)?;
            if record.version != version {
                drop(state);
                self.drop_stale(key, version);
                return None;
            }
            let record = state.order.get_mut(key)?;
            let now = now_ms();
            if now.saturating_sub(record.used_ms) >= TOUCH_EVERY_MS {
                record.used_ms = now;
                let value = serde_json::to_vec(&*record).expect("records serialise");
                // Only the order after a restart depends on it.
                let _ = self.inner.tree.insert(key.as_bytes(), value);
            }
            record.clone()
        };
        let path = self.inner.path(record.id);
        match direct::open_read(&path) {
            Ok(file) => Some(StoredCopy {
                file,
                id: record.id,
                version: record.version,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.drop_unusable(key, record.id, &e.to_string());
                None
            }
            // Kept: the next open may well succeed (a lack of file handles, say).
            Err(e) => {
                tracing::warn!(key, path = %path.display(), error = %e, "cannot open a reduced original");
                None
            }
        }
    }

    /// Drops `key`'s copy `id` (the one [`ReducedTier::open_copy`] gave) because `problem` makes
    /// it unusable: gone, cut short, damaged. Blocking.
    pub fn drop_unusable(&self, key: &str, id: u64, problem: &str) {
        let mut state = self.inner.state();
        // Unless replaced meanwhile (its file removed by the replacement: no trouble).
        if state.order.peek(key).is_some_and(|r| r.id == id) {
            tracing::warn!(key, path = %self.inner.path(id).display(), error = problem, "dropping a reduced original that cannot be used");
            let gone = self.inner.remove(&mut state, key).ok().flatten();
            drop(state);
            gone.iter().for_each(|path| remove_file(path));
        }
    }

    /// Drops `key`'s copy if it was made from another version of the original than `version`
    /// (the one the source vouches for now). Blocking.
    pub fn drop_stale(&self, key: &str, version: &str) {
        let mut state = self.inner.state();
        if state.order.peek(key).is_none_or(|r| r.version == version) {
            return;
        }
        let stale = self.inner.remove(&mut state, key).ok().flatten();
        drop(state);
        stale.iter().for_each(|path| remove_file(path));
    }

    /// A new copy's file for a worker to write, unless the tier keeps nothing or the disk
    /// has less than `cache.min_free_bytes` free. Blocking.
    pub fn create(&self) -> std::io::Result<Option<NewCopy>> {
        if !self.enabled() || crate::cache::free_bytes(&self.inner.dir)? < self.inner.min_free_bytes
        {
            return Ok(None);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let part = self.inner.path(id).with_extension("part");
        let file = direct::create(&part)?;
        Ok(Some(NewCopy {
            file,
            id,
            part: Some(part),
        }))
    }

    /// Keeps the copy written to `new` (its first `len` bytes) as `key`'s, made from version
    /// `version` of the original, in place of any it held, if `still_current()` says, once
    /// the file is in place, that no purge of the original began since it was fetched
    /// (checked under the tier's lock, which [`ReducedTier::drop_matching`] takes too). A
    /// copy larger than an eighth of the bound, or one that left less than
    /// `cache.min_free_bytes` free, is not kept (its file goes). Blocking. Returns whether it
    /// was kept.
    pub fn keep(
        &self,
        mut new: NewCopy,
        key: &str,
        version: &str,
        len: u64,
        still_current: impl FnOnce() -> bool,
    ) -> std::io::Result<bool> {
        if version.is_empty() || len > self.inner.max_bytes / 8 {
            return Ok(false);
        }
        // The disk is shared: a copy is worth less than the room others need.
        if crate::cache::free_bytes(&self.inner.dir)? < self.inner.min_free_bytes {
            return Ok(false);
        }
        let id = new.id;
        let path = self.inner.path(id);
        let Some(part) = new.part.clone() else {
            return Ok(false);
        };
        // The worker wrote whole blocks: cut to the copy's length, then in place.
        new.file.set_len(len)?;
        crate::crash::point("reduced.part-written");
        std::fs::rename(&part, &path)?;
        new.part = None;
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) => {
                remove_file(&path);
                return Err(e);
            }
        };
        let record = Record {
            id,
            bytes: len,
            disk: crate::cache::disk_use(&meta),
            version: version.to_owned(),
            used_ms: now_ms(),
        };
        crate::crash::point("reduced.renamed");
        let mut state = self.inner.state();
        if !still_current() {
            drop(state);
            remove_file(&path);
            return Ok(false);
        }
        let value = serde_json::to_vec(&record).expect("records serialise");
        if let Err(e) = self.inner.tree.insert(key.as_bytes(), value) {
            drop(state);
            remove_file(&path);
            return Err(std::io::Error::other(e));
        }
        state.disk += record.disk;
        let mut gone = Vec::new();
        if let Some(old) = state.order.put(key.to_owned(), record) {
            state.disk -= old.disk;
            gone.push(self.inner.path(old.id));
        }
        let evicted = self.inner.evict(&mut state, &mut gone);
        drop(state);
        gone.iter().for_each(|path| remove_file(path));
        evicted.map_err(std::io::Error::other)?;
        Ok(true)
    }

    /// Drops the copies of the originals `selector` touches (a key, a prefix, everything; a
    /// purge of a mode or a size leaves them): their records under the tier's lock, their
    /// files after it. Blocking.
    pub fn drop_matching(&self, selector: &Selector) -> Result<u64, sled::Error> {
        let mut state = self.inner.state();
        let keys: Vec<String> = match selector {
            Selector::Key(key) => state
                .order
                .peek(key)
                .map(|_| key.clone())
                .into_iter()
                .collect(),
            Selector::Prefix(_) | Selector::All => state
                .order
                .iter()
                .map(|(k, _)| k)
                .filter(|k| selector.touches_original(k))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let mut gone = Vec::new();
        let mut removed = Ok(());
        for key in &keys {
            match self.inner.remove(&mut state, key) {
                Ok(path) => gone.extend(path),
                Err(e) => {
                    removed = Err(e);
                    break;
                }
            }
        }
        drop(state);
        gone.iter().for_each(|path| remove_file(path));
        removed.map(|()| gone.len() as u64)
    }

    /// Copies held and what they take.
    pub fn stats(&self) -> TierStats {
        let state = self.inner.state();
        TierStats {
            copies: state.order.len() as u64,
            disk: state.disk,
            max_bytes: self.inner.max_bytes,
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.copy"))
    }

    /// Removes `key`'s copy's record; its file is the caller's to remove (after the lock).
    fn remove(&self, state: &mut State, key: &str) -> Result<Option<PathBuf>, sled::Error> {
        self.tree.remove(key.as_bytes())?;
        crate::crash::point("reduced.record-removed");
        Ok(state.order.pop(key).map(|record| {
            state.disk -= record.disk;
            self.path(record.id)
        }))
    }

    /// Drops the least recently used copies' records until the rest fit the bound, adding
    /// their files to `gone`.
    fn evict(&self, state: &mut State, gone: &mut Vec<PathBuf>) -> Result<(), sled::Error> {
        while state.disk > self.max_bytes {
            let Some(key) = state.order.peek_lru().map(|(k, _)| k.clone()) else {
                break;
            };
            gone.extend(self.remove(state, &key)?);
        }
        Ok(())
    }
}

/// Removes a file, saying why it could not (a file already gone is no trouble).
fn remove_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a reduced original")
        }
    }
}

#[cfg(test)]
impl ReducedTier {
    /// Keeps `bytes` (a copy) as `key`'s, written as a worker writes it, then kept.
    fn put(
        &self,
        key: &str,
        version: &str,
        bytes: &[u8],
        still_current: impl FnOnce() -> bool,
    ) -> std::io::Result<bool> {
        let Some(new) = self.create()? else {
            return Ok(false);
        };
        let len = direct::Aligned::new().write(&new.file, &[bytes])?;
        self.keep(new, key, version, len, still_current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::{DecodeBox, Decoded};
    use crate::reduced::copy;

    fn copy_of(n: u8, side: u32) -> Vec<u8> {
        let image = Decoded::rgb(vec![n; (side * side * 3) as usize], side, side);
        copy::encode(&image, Some(DecodeBox::cover(side, side)))
    }

    fn open(dir: &Path, db: &sled::Db, max: u64) -> ReducedTier {
        ReducedTier::open(
            &dir.join("reduced"),
            db.open_tree("reduced").unwrap(),
            max,
            0,
        )
        .unwrap()
    }

    /// Reads `key`'s copy back as a worker does, dropping it if it is unusable as the
    /// pipeline does when the worker says so.
    fn read(tier: &ReducedTier, key: &str, version: &str) -> Option<Vec<u8>> {
        let stored = tier.open_copy(key, version)?;
        let read = direct::read(&stored.file, 1 << 30)
            .map(|(bytes, at)| copy::verify(&bytes[at..]).map(|_| bytes[at..].to_vec()));
        let checked = read.map_err(|e| e.to_string());
        match checked.and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(bytes) => Some(bytes),
            Err(problem) => {
                tier.drop_unusable(key, stored.id, &problem);
                None
            }
        }
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("reduced")).unwrap().count()
    }

    #[test]
    fn copies_are_kept_within_the_bound_least_recently_used_out_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        // 20x20 RGB: 1,240 bytes, 4 KiB on disk; room for three.
        let tier = open(dir.path(), &db, 12 << 10);
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            assert!(tier.put(key, "v1", &copy_of(i as u8, 20), || true).unwrap());
        }
        assert_eq!(tier.stats().copies, 3);
        // a used last: b is the least recently used, and goes for d.
        assert!(read(&tier, "a", "v1").is_some());
        assert!(tier.put("d", "v1", &copy_of(9, 20), || true).unwrap());
        assert!(tier.version("b").is_none() && tier.version("a").is_some());
        let stats = tier.stats();
        assert_eq!(stats.copies, 3);
        assert!(stats.disk <= 12 << 10, "{stats:?}");
        assert_eq!(files(dir.path()), 3);
        // The version asked for (the one the source vouches for) must be the copy's: a copy
        // of another is stale, and goes.
        assert!(read(&tier, "a", "v2").is_none());
        assert!(tier.version("a").is_none());
        // Dropped without a read too, once the source vouches for another version.
        tier.drop_stale("c", "v1");
        assert_eq!(tier.version("c").as_deref(), Some("v1"));
        tier.drop_stale("c", "v2");
        assert!(tier.version("c").is_none());
        assert_eq!(files(dir.path()), 1);
        // A copy larger than an eighth of the bound is not kept.
        assert!(!tier.put("e", "v1", &copy_of(1, 30), || true).unwrap());
        // Nor one whose original was purged meanwhile (the file goes too).
        assert!(!tier.put("f", "v1", &copy_of(1, 20), || false).unwrap());
        assert_eq!(files(dir.path()), 1);
    }

    #[test]
    fn purges_drop_the_copies_of_the_originals_they_touch() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tier = open(dir.path(), &db, 1 << 30);
        for key in ["shoes/a.jpg", "shoes/b.jpg", "hats/c.jpg"] {
            tier.put(key, "v1", &copy_of(1, 20), || true).unwrap();
        }
        assert_eq!(
            tier.drop_matching(&Selector::Mode("crop".into())).unwrap(),
            0
        );
        assert_eq!(
            tier.drop_matching(&Selector::Key("shoes/a.jpg".into()))
                .unwrap(),
            1
        );
        assert_eq!(
            tier.drop_matching(&Selector::Prefix("shoes/".into()))
                .unwrap(),
            1
        );
        assert!(tier.version("hats/c.jpg").is_some());
        assert_eq!(tier.drop_matching(&Selector::All).unwrap(), 1);
        assert_eq!(
            (tier.stats().copies, tier.stats().disk, files(dir.path())),
            (0, 0, 0)
        );
    }

    #[test]
    fn what_a_crash_leaves_is_cleaned_up_when_the_tier_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tier = open(dir.path(), &db, 1 << 30);
        for key in ["a", "b", "c"] {
            tier.put(key, "v1", &copy_of(1, 20), || true).unwrap();
        }
        let path = |key: &str| {
            tier.inner
                .path(tier.inner.state().order.peek(key).unwrap().id)
        };
        // a: cut short by a crash mid-write and then renamed (a torn file); b: its file gone
        // (killed between removing the record and the file, the other way round); a stray
        // half-written copy and a file with no record.
        let a = path("a");
        let bytes = std::fs::read(&a).unwrap();
        std::fs::write(&a, &bytes[..bytes.len() / 2]).unwrap();
        std::fs::remove_file(path("b")).unwrap();
        std::fs::write(dir.path().join("reduced/00000000000000ff.part"), b"half").unwrap();
        std::fs::write(dir.path().join("reduced/00000000000000fe.copy"), &bytes).unwrap();
        drop(tier);
        let tier = open(dir.path(), &db, 1 << 30);
        // b's record and both strays went when it opened; a's torn file goes when read.
        assert_eq!(tier.stats().copies, 2);
        assert_eq!(files(dir.path()), 2);
        assert!(read(&tier, "a", "v1").is_none());
        assert!(tier.version("a").is_none());
        assert!(read(&tier, "c", "v1").is_some());
        assert_eq!(files(dir.path()), 1);
    }

    #[test]
    fn a_tier_of_zero_bytes_empties_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tier = open(dir.path(), &db, 1 << 30);
        tier.put("a", "v1", &copy_of(1, 20), || true).unwrap();
        drop(tier);
        let tier = open(dir.path(), &db, 0);
        assert!(!tier.enabled());
        assert_eq!((tier.stats().copies, files(dir.path())), (0, 0));
        assert!(!tier.put("a", "v1", &copy_of(1, 20), || true).unwrap());
    }
}
