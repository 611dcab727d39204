//! Originals from a folder on local disk. The root is resolved again on every read, so a
//! root that is a symlink (flipped to a new release) is followed; every read resolves symlinks
//! and refuses anything that ends up outside the root. Only regular files are read: a FIFO,
//! socket or device is "not found" at once instead of a read that never returns. Every read
//! and every readiness probe has a deadline (`source.timeout_ms`).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use tokio::io::AsyncReadExt;

use super::{Source, SourceError, SourceObject, SourceReader};
use crate::request::SourceKey;
use crate::stall::{Stall, StallReader};

/// A media folder.
#[derive(Debug)]
pub struct LocalSource {
    /// The root as configured, made absolute; resolved (symlinks followed) on each read.
    root: PathBuf,
    /// Bound on one read or probe.
    timeout: Duration,
}

impl LocalSource {
    /// Opens `root`, which must be an existing folder.
    pub fn new(root: &Path, timeout: Duration) -> std::io::Result<LocalSource> {
        let absolute = std::path::absolute(root)?;
        let resolved = std::fs::canonicalize(&absolute).map_err(|e| {
            std::io::Error::new(e.kind(), format!("media root {}: {e}", root.display()))
        })?;
        if !resolved.is_dir() {
            return Err(std::io::Error::new(
                ErrorKind::NotADirectory,
                format!("media root {} is not a folder", root.display()),
            ));
        }
        Ok(LocalSource {
            root: absolute,
            timeout,
        })
    }

    /// The media root, as configured (made absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The version of the file at `key` now (its modification time and length), and its
    /// modification time in milliseconds since the epoch. Blocking.
    pub fn version_now(&self, key: &SourceKey) -> Result<(String, Option<u64>), SourceError> {
        let (_, meta) = Self::open_file(&self.root, key, u64::MAX)?;
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        Ok((version_of(&meta), modified_ms))
    }

    /// Opens the regular file at `key`, refusing one larger than `max_bytes`. Blocking: one
    /// trip to the blocking pool for the whole open (resolving, checks, open, stat), not one
    /// per call, which under load made each a wait for a core.
    fn open_file(
        root: &Path,
        key: &SourceKey,
        max_bytes: u64,
    ) -> Result<(std::fs::File, std::fs::Metadata), SourceError> {
        let not_found = || SourceError::NotFound {
            key: key.to_string(),
        };
        let io = |source| SourceError::Io {
            key: key.to_string(),
            source,
        };
        let root = std::fs::canonicalize(root).map_err(io)?;
        // The key is validated (relative, no `..`), so the join stays under the root unless a
        // symlink points out of it, which canonicalisation reveals.
        let path = match std::fs::canonicalize(root.join(key.as_str())) {
            Ok(p) if p.starts_with(&root) => p,
            Ok(_) => return Err(not_found()),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Err(not_found())
            }
            Err(e) => return Err(io(e)),
        };
        if !std::fs::metadata(&path).map_err(io)?.is_file() {
            return Err(not_found());
        }
        // Non-blocking, so that a file swapped for a FIFO since the check cannot hang the open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(not_found());
        }
        if meta.len() > max_bytes {
            return Err(SourceError::TooLarge {
                key: key.to_string(),
                size: meta.len(),
                limit: max_bytes,
            });
        }
        Ok((file, meta))
    }

    /// The whole file at `key`. Blocking.
    fn read(root: &Path, key: &SourceKey, max_bytes: u64) -> Result<SourceObject, SourceError> {
        let io = |source| SourceError::Io {
            key: key.to_string(),
            source,
        };
        let (file, meta) = Self::open_file(root, key, max_bytes)?;
        // Read at most one byte past the limit, in case the file grew since the stat.
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > max_bytes {
            let size = bytes.len() as u64;
            return Err(SourceError::TooLarge {
                key: key.to_string(),
                size,
                limit: max_bytes,
            });
        }
        Ok(SourceObject {
            bytes: bytes.into(),
            modified: meta.modified().ok(),
            version: Some(version_of(&meta)),
        })
    }

    /// Runs `work` on the blocking pool with the root and a copy of `key`.
    async fn blocking<T: Send + 'static>(
        &self,
        key: &SourceKey,
        work: impl FnOnce(&Path, &SourceKey) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, SourceError> {
        let root = self.root.clone();
        let owned = key.clone();
        tokio::task::spawn_blocking(move || work(&root, &owned))
            .await
            .unwrap_or_else(|e| {
                Err(SourceError::Io {
                    key: key.to_string(),
                    source: std::io::Error::other(e),
                })
            })
    }

    async fn probe(&self) -> Result<(), SourceError> {
        let key = self.root.display().to_string();
        let io = |source| SourceError::Io {
            key: key.clone(),
            source,
        };
        let root = tokio::fs::canonicalize(&self.root).await.map_err(io)?;
        // Listed and readable: opening the folder and reading one entry.
        let mut entries = tokio::fs::read_dir(&root).await.map_err(io)?;
        entries.next_entry().await.map_err(io)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for LocalSource {
    async fn fetch(&self, key: &SourceKey, max_bytes: u64) -> Result<SourceObject, SourceError> {
        let read = self.blocking(key, move |root, key| Self::read(root, key, max_bytes));
        super::within(self.timeout, key, read).await
    }

    async fn open(&self, key: &SourceKey, max_bytes: u64) -> Result<SourceReader, SourceError> {
        let open = self.blocking(key, move |root, key| Self::open_file(root, key, max_bytes));
        let (file, meta) = super::within(self.timeout, key, open).await?;
        let file = tokio::fs::File::from_std(file);
        // Exactly the length seen at opening: a file that grew since is cut there, one that
        // shrank ends early (and the client sees a short body, not a wrong one).
        let reader = StallReader::new(
            file.take(meta.len()),
            Stall::new(self.timeout, "source.timeout_ms"),
        );
        Ok(SourceReader {
            len: meta.len(),
            modified: meta.modified().ok(),
            reader: Box::pin(reader),
        })
    }

    async fn version(&self, key: &SourceKey) -> Result<Option<String>, SourceError> {
        let stat = self.blocking(key, |root, key| Self::open_file(root, key, u64::MAX));
        let (_, meta) = super::within(self.timeout, key, stat).await?;
        Ok(Some(version_of(&meta)))
    }

    async fn check(&self) -> Result<(), SourceError> {
        super::within(self.timeout, self.root.display(), self.probe()).await
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// A local file's version: its modification time to the nanosecond and its length
/// (`1733412345.123456789-20480`). A file replaced by one written in the same nanosecond
/// with the same length is taken for the same; no file system in use is that fine-grained.
pub fn version_of(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}.{:09}-{}", meta.mtime(), meta.mtime_nsec(), meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_inside_and_refuses_symlinks_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/x.jpg"), b"12345").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        let src = LocalSource::new(&root, Duration::from_secs(5)).unwrap();
        let key = |k| SourceKey::new(k).unwrap();
        assert_eq!(
            &src.fetch(&key("a/x.jpg"), 100).await.unwrap().bytes[..],
            b"12345"
        );
        assert!(matches!(
            src.fetch(&key("link"), 100).await,
            Err(SourceError::NotFound { .. })
        ));
        assert!(matches!(
            src.fetch(&key("a"), 100).await,
            Err(SourceError::NotFound { .. })
        ));
        assert!(matches!(
            src.fetch(&key("a/x.jpg/y"), 100).await,
            Err(SourceError::NotFound { .. })
        ));
        assert!(matches!(
            src.fetch(&key("a/x.jpg"), 4).await,
            Err(SourceError::TooLarge { .. })
        ));
    }

    /// Regression: a named pipe in the media root hung each request forever (and, some
    /// hundreds later, every file operation). It is "not found" at once.
    #[tokio::test]
    async fn a_fifo_is_not_found_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.jpg");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let src = LocalSource::new(dir.path(), Duration::from_secs(5)).unwrap();
        let started = std::time::Instant::now();
        let got = src.fetch(&SourceKey::new("pipe.jpg").unwrap(), 100).await;
        assert!(matches!(got, Err(SourceError::NotFound { .. })), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// Regression: a symlinked media root was resolved once, so flipping the link to a new
    /// release kept serving the old folder; and /ready said ready with an unreadable root.
    #[tokio::test]
    async fn a_symlinked_root_is_followed_and_an_unreadable_one_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        for (release, body) in [("v1", b"one"), ("v2", b"two")] {
            std::fs::create_dir_all(dir.path().join(release)).unwrap();
            std::fs::write(dir.path().join(release).join("a.jpg"), body).unwrap();
        }
        let current = dir.path().join("current");
        std::os::unix::fs::symlink(dir.path().join("v1"), &current).unwrap();
        let src = LocalSource::new(&current, Duration::from_secs(5)).unwrap();
        let key = SourceKey::new("a.jpg").unwrap();
        assert_eq!(&src.fetch(&key, 100).await.unwrap().bytes[..], b"one");
        let next = dir.path().join("next");
        std::os::unix::fs::symlink(dir.path().join("v2"), &next).unwrap();
        std::fs::rename(&next, &current).unwrap();
        assert_eq!(&src.fetch(&key, 100).await.unwrap().bytes[..], b"two");
        assert!(src.check().await.is_ok());
        std::fs::remove_file(&current).unwrap();
        assert!(src.check().await.is_err());
    }
}
