//! The sled database in `data_dir`: opened once per process, with one tree per purpose.
//!
//! This module owns `data_dir`'s lock and the database handle; what lives in each tree belongs
//! to the module that uses it ([`crate::cache`] for cache entries and the purge journal,
//! [`crate::whitelist`] for allowed sizes). Images never go into sled: keys, sizes and times
//! only. Writes are durable once flushed; sled flushes in the background every
//! half second, and callers that promise durability (admin edits, purge journals)
//! flush explicitly. Every call here may block on disk: call it off the async runtime.

use std::fs::File;
use std::path::{Path, PathBuf};

/// Version of the layout of the trees below. A database written with another version is
/// refused at start-up rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

/// How often sled writes its log to disk on its own: at most this much of the cache index is
/// lost in a crash, which start-up reconciliation repairs from the files.
const FLUSH_EVERY_MS: u64 = 500;

/// sled's page cache. The index is small (about 100 bytes an entry), so this holds the hot
/// part of a large cache without taking much memory.
const PAGE_CACHE_BYTES: u64 = 64 << 20;

/// How long start-up waits for `data_dir`'s lock before refusing.
pub const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// The lock file that keeps a second process off the same `data_dir`.
const LOCK_FILE: &str = "ross.lock";

/// Key of the schema version in the meta tree.
const SCHEMA_KEY: &[u8] = b"schema-version";

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Another process holds `data_dir`.
    #[error(
        "data_dir {path} is in use by another ross process; give each process its own data_dir"
    )]
    Locked {
        /// The folder.
        path: PathBuf,
    },
    /// The database was written by an incompatible version of ross.
    #[error(
        "data_dir {path} holds a database of schema {found}, this ross reads schema {expected}; \
         use the ross that wrote it, or move the folder away to start afresh"
    )]
    Schema {
        /// The folder.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The folder or the database could not be read or written.
    #[error("data_dir {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// sled failed.
    #[error("data_dir {path}: database error: {source}")]
    Sled {
        /// The folder.
        path: PathBuf,
        /// What failed.
        source: sled::Error,
    },
}

/// The open database. Cloning is cheap and shares the one handle.
#[derive(Clone)]
pub struct Database {
    db: sled::Db,
    dir: PathBuf,
    room: std::sync::Arc<Room>,
    /// Held for the life of the process: the OS releases it however the process ends.
    _lock: std::sync::Arc<File>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({})", self.dir.display())
    }
}

/// Takes an exclusive lock on `file` for as long as it stays open; false when another
/// process holds it. A process that is closing (flushing its database) holds its locks a
/// moment longer, so this waits that moment ([`LOCK_PATIENCE`]) before giving up.
pub fn lock_exclusive(file: &File) -> std::io::Result<bool> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// What must stay free on `data_dir`'s file system for sled to write (its log grows by 512 KiB
/// segments, and a write it cannot make leaves it refusing every write until a restart), or a
/// tenth of the file system, if smaller.
const DATA_HEADROOM: u64 = 64 << 20;

/// How long a look at `data_dir`'s free space is trusted.
const ROOM_FRESH: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether `data_dir` has room, looked at now and then.
#[derive(Debug, Default)]
struct Room {
    /// (when looked, whether there was room), or `None` before the first look.
    last: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
    /// Refusals said in the log, once a minute.
    said: crate::cache::OncePerMinute,
}

/// Whether an error comes from a full disk.
pub trait FullDisk: std::fmt::Display {
    /// Whether it does.
    fn full_disk(&self) -> bool;
}

impl<T: FullDisk + ?Sized> FullDisk for &T {
    fn full_disk(&self) -> bool {
        (**self).full_disk()
    }
}

impl FullDisk for DbError {
    fn full_disk(&self) -> bool {
        match self {
            DbError::Io { source, .. } => source.full_disk(),
            DbError::Sled { source, .. } => source.full_disk(),
            _ => false,
        }
    }
}

impl FullDisk for std::io::Error {
    fn full_disk(&self) -> bool {
        crate::cache::no_space(self)
    }
}

impl FullDisk for sled::Error {
    fn full_disk(&self) -> bool {
        matches!(self, sled::Error::Io(e) if e.full_disk())
    }
}

/// The error a write refused for want of room gives.
pub fn no_room_error() -> sled::Error {
    sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC))
}

/// The trees, by purpose.
#[derive(Debug, Clone, Copy)]
pub enum TreeName {
    /// Cache entries, keyed by variant.
    CacheEntries,
    /// Allowed sizes and whether the whitelist is on.
    Whitelist,
    /// Schema version, purge journal, the plugin version behind each mode's renders.
    Meta,
    /// The cluster's state as this node knows it: changes not yet sent, the last writer of
    /// each whitelist item, the changes applied.
    Cluster,
    /// Purges waiting to be sent to the CDNs in front.
    Cdn,
    /// The reduced originals kept on disk, by source key.
    Reduced,
}

impl TreeName {
    fn as_str(self) -> &'static str {
        match self {
            TreeName::CacheEntries => "cache-entries",
            TreeName::Whitelist => "whitelist",
            TreeName::Meta => "meta",
            TreeName::Cluster => "cluster",
            TreeName::Cdn => "cdn",
            TreeName::Reduced => "reduced",
        }
    }
}

impl Database {
    /// Opens (creating) the database in `dir`, refusing a folder another process holds and a
    /// database of another schema version.
    pub fn open(dir: &Path) -> Result<Database, DbError> {
        let io = |source| DbError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        if !lock_exclusive(&lock).map_err(io)? {
            return Err(DbError::Locked {
                path: dir.to_owned(),
            });
        }
        let sled_err = |source| DbError::Sled {
            path: dir.to_owned(),
            source,
        };
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .cache_capacity(PAGE_CACHE_BYTES)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()
            .map_err(|e| match e {
                // Our own lock makes this unlikely; sled's says so only in its message.
                sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
                    DbError::Locked {
                        path: dir.to_owned(),
                    }
                }
                e => sled_err(e),
            })?;
        let database = Database {
            db,
            room: std::sync::Arc::new(Room::default()),
            dir: dir.to_owned(),
            _lock: std::sync::Arc::new(lock),
        };
        database.check_schema()?;
        Ok(database)
    }

    fn check_schema(&self) -> Result<(), DbError> {
        let meta = self.tree(TreeName::Meta)?;
        let err = |source| DbError::Sled {
            path: self.dir.clone(),
            source,
        };
        match meta.get(SCHEMA_KEY).map_err(err)? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref()).map_or(0, u32::from_be_bytes);
                if found != SCHEMA_VERSION {
                    return Err(DbError::Schema {
                        path: self.dir.clone(),
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(err)?;
                self.db.flush().map_err(err)?;
            }
        }
        Ok(())
    }

    /// The tree for `name`.
    pub fn tree(&self, name: TreeName) -> Result<sled::Tree, DbError> {
        self.db
            .open_tree(name.as_str())
            .map_err(|source| DbError::Sled {
                path: self.dir.clone(),
                source,
            })
    }

    /// Writes everything so far to disk.
    pub fn flush(&self) -> sled::Result<()> {
        self.db.flush().map(drop)
    }

    /// Whether `data_dir` has room for sled to write: call before any write that can wait or
    /// be refused (refusing it keeps sled from failing half-way, which would leave it
    /// refusing every write until a restart). An `ENOSPC` error when not; said in the log
    /// once a minute.
    pub fn room(&self) -> sled::Result<()> {
        let mut last = self.room.last.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = last.filter(|(at, _)| at.elapsed() < ROOM_FRESH);
        let room = match fresh {
            Some((_, room)) => room,
            None => {
                let room = match rustix::fs::statvfs(&self.dir) {
                    Ok(s) => {
                        let free = s.f_bavail.saturating_mul(s.f_frsize);
                        let size = s.f_blocks.saturating_mul(s.f_frsize);
                        free >= DATA_HEADROOM.min(size / 10)
                    }
                    Err(_) => true, // cannot tell: let the write say
                };
                *last = Some((std::time::Instant::now(), room));
                room
            }
        };
        drop(last);
        if room {
            return Ok(());
        }
        if self.room.said.due() {
            tracing::error!(
                data_dir = %self.dir.display(),
                "data_dir is full: whitelist edits, cache indexing and purge journals are \
                 refused (503 storage-full) until there is room; renders are served uncached"
            );
        }
        Err(no_room_error())
    }

    /// A number never handed out before by this database (ids of journal records).
    pub fn generate_id(&self) -> sled::Result<u64> {
        self.db.generate_id()
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
impl Database {
    /// Opens `dir`, in a test that had it open before. sled's flusher thread holds its file
    /// (and sled's lock) for a moment after the last handle is dropped: a new process never
    /// sees that, a test in the same process can, so this waits for the lock up to 5 s.
    pub(crate) fn open_again(dir: &Path) -> Result<Database, DbError> {
        let started = std::time::Instant::now();
        loop {
            match Database::open(dir) {
                Err(DbError::Locked { .. })
                    if started.elapsed() < std::time::Duration::from_secs(5) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => return opened,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_the_same_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Database::open(dir.path()).unwrap();
        let second = Database::open(dir.path()).unwrap_err();
        assert!(matches!(second, DbError::Locked { .. }), "{second}");
        assert!(second.to_string().contains("data_dir"), "{second}");
        drop(first);
        Database::open_again(dir.path()).expect("free again once the first is closed");
    }

    #[test]
    fn another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::open(dir.path()).unwrap();
            let meta = db.tree(TreeName::Meta).unwrap();
            meta.insert(SCHEMA_KEY, &99u32.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let err = Database::open_again(dir.path()).unwrap_err();
        assert!(matches!(err, DbError::Schema { found: 99, .. }), "{err}");
    }
}
