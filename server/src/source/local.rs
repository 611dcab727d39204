//! Originals from a folder on local disk. The root is resolved once at start-up; every read
//! resolves symlinks and refuses anything that ends up outside the root.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use super::{Source, SourceError, SourceObject};
use crate::request::SourceKey;

/// A media folder.
#[derive(Debug)]
pub struct LocalSource {
    /// Canonical absolute root: comparisons against it detect escapes through symlinks.
    root: PathBuf,
}

impl LocalSource {
    /// Opens `root`, which must be an existing folder.
    pub fn new(root: &Path) -> std::io::Result<LocalSource> {
        let root = std::fs::canonicalize(root).map_err(|e| {
            std::io::Error::new(e.kind(), format!("media root {}: {e}", root.display()))
        })?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                ErrorKind::NotADirectory,
                format!("media root {} is not a folder", root.display()),
            ));
        }
        Ok(LocalSource { root })
    }
}

#[async_trait::async_trait]
impl Source for LocalSource {
    async fn fetch(&self, key: &SourceKey, max_bytes: u64) -> Result<SourceObject, SourceError> {
        let not_found = || SourceError::NotFound {
            key: key.to_string(),
        };
        let io = |source| SourceError::Io {
            key: key.to_string(),
            source,
        };
        // The key is validated (relative, no `..`), so the join stays under the root unless a
        // symlink points out of it, which canonicalisation reveals.
        let path = match tokio::fs::canonicalize(self.root.join(key.as_str())).await {
            Ok(p) if p.starts_with(&self.root) => p,
            Ok(_) => return Err(not_found()),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Err(not_found())
            }
            Err(e) => return Err(io(e)),
        };
        let file = tokio::fs::File::open(&path).await.map_err(io)?;
        let meta = file.metadata().await.map_err(io)?;
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
        // Read at most one byte past the limit, in case the file grew since the stat.
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(max_bytes + 1)
            .read_to_end(&mut bytes)
            .await
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
        })
    }

    async fn check(&self) -> Result<(), SourceError> {
        let key = self.root.display().to_string();
        match tokio::fs::metadata(&self.root).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(SourceError::NotFound { key }),
            Err(source) => Err(SourceError::Io { key, source }),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
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
        let src = LocalSource::new(&root).unwrap();
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
}
