//! The disk cache of rendered variants.
//!
//! A variant lives at `{cache.dir}/{width}/{height}/{mode}/{key}`, derived only from the
//! canonical request, so nginx can serve hits straight from disk and fall back to ross on a
//! miss. Files are written to `{cache.dir}/.tmp/` first, flushed and renamed into place, so a
//! reader (or nginx) never sees a partial file, and a crash leaves at most a temporary file,
//! which the next start removes. This module does not decide what to render or evict.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;

use crate::request::RenderRequest;

/// Folder under the cache root for files being written.
const TMP_DIR: &str = ".tmp";

/// A cache write that failed. The render is still served; it just is not cached.
#[derive(Debug, thiserror::Error)]
#[error("cannot write cache file {path}: {source}")]
pub struct CacheError {
    path: PathBuf,
    source: std::io::Error,
}

/// A variant read from the cache.
#[derive(Debug, Clone)]
pub struct CachedFile {
    /// The encoded image.
    pub bytes: Bytes,
    /// The file's modification time, for `Last-Modified` and `ETag`.
    pub modified: SystemTime,
}

/// The cache folder.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    /// Writers hold it shared while they check that their render is still current and write;
    /// a purge holds it exclusively while it moves a mode's folders away. So no render of a
    /// replaced plugin version lands in the cache after that version's purge.
    purge_lock: Arc<RwLock<()>>,
}

static TMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl DiskCache {
    /// Opens (creating) the cache at `dir` and removes temporary files left by a crash.
    pub fn open(dir: &Path) -> std::io::Result<DiskCache> {
        let tmp = dir.join(TMP_DIR);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(DiskCache {
            dir: dir.to_owned(),
            purge_lock: Arc::default(),
        })
    }

    /// Where the variant for `req` lives.
    pub fn path_for(&self, req: &RenderRequest) -> PathBuf {
        self.dir.join(req.canonical())
    }

    /// The cached variant for `req`, if there is one.
    pub async fn get(&self, req: &RenderRequest) -> Option<CachedFile> {
        let path = self.path_for(req);
        let meta = tokio::fs::metadata(&path).await.ok()?;
        if !meta.is_file() {
            return None;
        }
        let bytes = tokio::fs::read(&path).await.ok()?;
        Some(CachedFile {
            bytes: bytes.into(),
            modified: meta.modified().ok()?,
        })
    }

    /// Stores `bytes` as the variant for `req`, atomically. Blocking: call off the runtime.
    pub fn put(&self, req: &RenderRequest, bytes: &[u8]) -> Result<SystemTime, CacheError> {
        self.put_if(req, bytes, || true)
            .map(|written| written.unwrap_or_else(SystemTime::now))
    }

    /// Stores `bytes` as the variant for `req` if `current()` still holds once no purge can
    /// run, atomically. `Ok(None)`: not stored, because the render is no longer current (its
    /// mode was replaced by another version meanwhile). Blocking: call off the runtime.
    pub fn put_if(
        &self,
        req: &RenderRequest,
        bytes: &[u8],
        current: impl FnOnce() -> bool,
    ) -> Result<Option<SystemTime>, CacheError> {
        let _no_purge = self.purge_lock.read().unwrap_or_else(|e| e.into_inner());
        if !current() {
            return Ok(None);
        }
        self.write(req, bytes).map(Some)
    }

    /// Removes every cached render of `mode`, whatever its size: the mode's folders are moved
    /// into the temporary folder at once (so the variants disappear together) and deleted
    /// afterwards, off the caller's thread. Returns how many size folders held the mode.
    pub fn purge_mode(&self, mode: &str) -> std::io::Result<usize> {
        let mut moved = Vec::new();
        {
            let _exclusive = self.purge_lock.write().unwrap_or_else(|e| e.into_inner());
            for width in std::fs::read_dir(&self.dir)? {
                let width = width?;
                if width.file_name() == TMP_DIR || !width.file_type()?.is_dir() {
                    continue;
                }
                for height in std::fs::read_dir(width.path())? {
                    let folder = height?.path().join(mode);
                    if folder.is_dir() {
                        let seq = TMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
                        let trash = self
                            .dir
                            .join(TMP_DIR)
                            .join(format!("{}-{seq}.purge", std::process::id()));
                        std::fs::rename(&folder, &trash)?;
                        moved.push(trash);
                    }
                }
            }
        }
        let count = moved.len();
        if count > 0 {
            std::thread::spawn(move || {
                for folder in moved {
                    let _ = std::fs::remove_dir_all(folder);
                }
            });
        }
        Ok(count)
    }

    fn write(&self, req: &RenderRequest, bytes: &[u8]) -> Result<SystemTime, CacheError> {
        let path = self.path_for(req);
        let seq = TMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(TMP_DIR)
            .join(format!("{}-{seq}.part", std::process::id()));
        let result = (|| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_data()?;
            drop(file);
            std::fs::rename(&tmp, &path)?;
            std::fs::metadata(&path)?.modified()
        })();
        result.map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            CacheError { path, source }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{parse, Target};

    fn req(path: &str) -> RenderRequest {
        match parse(path, 2000, 2000).unwrap() {
            Target::Render(r) => r,
            Target::Original(_) => unreachable!(),
        }
    }

    #[tokio::test]
    async fn put_then_get_and_no_temporary_left() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path()).unwrap();
        let r = req("/10/20/crop/a%20b/c.jpg");
        assert!(cache.get(&r).await.is_none());
        cache.put(&r, b"jpeg").unwrap();
        assert_eq!(cache.path_for(&r), dir.path().join("10/20/crop/a b/c.jpg"));
        assert_eq!(&cache.get(&r).await.unwrap().bytes[..], b"jpeg");
        assert_eq!(
            std::fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn purging_a_mode_removes_it_at_every_size_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path()).unwrap();
        for path in [
            "/10/20/crop/a.jpg",
            "/30/40/crop/b/c.jpg",
            "/10/20/resize/a.jpg",
        ] {
            cache.put(&req(path), b"jpeg").unwrap();
        }
        assert_eq!(cache.purge_mode("crop").unwrap(), 2);
        assert!(cache.get(&req("/10/20/crop/a.jpg")).await.is_none());
        assert!(cache.get(&req("/30/40/crop/b/c.jpg")).await.is_none());
        assert!(cache.get(&req("/10/20/resize/a.jpg")).await.is_some());
        assert_eq!(cache.purge_mode("blur").unwrap(), 0);
        let stale = cache.put_if(&req("/10/20/crop/a.jpg"), b"old", || false);
        assert!(stale.unwrap().is_none());
        assert!(cache.get(&req("/10/20/crop/a.jpg")).await.is_none());
    }

    #[test]
    fn opening_removes_leftover_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(TMP_DIR)).unwrap();
        std::fs::write(dir.path().join(TMP_DIR).join("1-1.part"), b"half").unwrap();
        DiskCache::open(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(),
            0
        );
    }
}
