//! Where originals come from. Every backend implements [`Source`]; the pipeline never knows
//! which one it talks to. Backends enforce `limits.max_source_bytes` themselves, before reading
//! an object whole.

mod local;

use std::time::SystemTime;

use bytes::Bytes;

use crate::request::SourceKey;
pub use local::LocalSource;

/// An original, read whole into memory (bounded by `limits.max_source_bytes`).
#[derive(Debug, Clone)]
pub struct SourceObject {
    /// The object's bytes.
    pub bytes: Bytes,
    /// When the object last changed, if the backend knows.
    pub modified: Option<SystemTime>,
}

/// Why an original could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No object has this key.
    #[error("no source object {key:?}")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// The object is bigger than the configured limit.
    #[error("source object {key:?} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The key asked for.
        key: String,
        /// Its size, as far as known.
        size: u64,
        /// `limits.max_source_bytes`.
        limit: u64,
    },
    /// The backend failed.
    #[error("reading source object {key:?} failed: {source}")]
    Io {
        /// The key asked for.
        key: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// A store of originals.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// Reads the object at `key`, refusing one larger than `max_bytes` without reading it whole.
    async fn fetch(&self, key: &SourceKey, max_bytes: u64) -> Result<SourceObject, SourceError>;
}
