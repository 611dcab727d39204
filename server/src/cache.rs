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
