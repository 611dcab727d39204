//! Where originals come from. Every backend implements [`Source`]; the pipeline never knows
//! which one it talks to. Backends enforce `limits.max_source_bytes` themselves, before reading
//! an object whole. An original is either read whole (to render it) or opened as a reader (to
//! send it unchanged, a buffer at a time).

pub mod events;
mod local;
pub(crate) mod s3;
pub mod sqs;
pub mod watch;

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::request::SourceKey;
pub use local::LocalSource;
pub use s3::S3Source;

/// An original, read whole into memory (bounded by `limits.max_source_bytes`).
#[derive(Debug, Clone)]
pub struct SourceObject {
    /// The object's bytes.
    pub bytes: Bytes,
    /// When the object last changed, if the backend knows.
    pub modified: Option<SystemTime>,
    /// Which version of the object this is, if the backend knows: its ETag in S3; its
    /// modification time (to the nanosecond) and length on local disk. Two reads of one
    /// unchanged object give the same version; a replaced object, another.
    pub version: Option<String>,
}

/// An original opened to be streamed.
pub struct SourceReader {
    /// Its length in bytes (at most the limit it was opened with).
    pub len: u64,
    /// When the object last changed, if the backend knows.
    pub modified: Option<SystemTime>,
    /// Its bytes, `len` of them at most. A read that makes no progress for the source's
    /// timeout fails, so a hung file or store cannot hold the reader forever.
    pub reader: Pin<Box<dyn AsyncRead + Send + Sync>>,
}

impl std::fmt::Debug for SourceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceReader")
            .field("len", &self.len)
            .field("modified", &self.modified)
            .finish_non_exhaustive()
    }
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
    /// The key cannot name an object in the store (longer than S3 allows, with the prefix):
    /// refused before any request is sent.
    #[error("the key {key:?} is longer than the {limit} bytes the store allows")]
    KeyTooLong {
        /// The key asked for.
        key: String,
        /// The longest key that fits, in bytes.
        limit: usize,
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
    /// The local backend failed.
    #[error("reading source object {key:?} failed: {source}")]
    Io {
        /// The key asked for.
        key: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The store refused access (403: credentials, policy, signature).
    #[error("access to source object {key:?} was denied: {detail}")]
    Denied {
        /// The key asked for.
        key: String,
        /// The store's answer, for the log.
        detail: String,
    },
    /// The store rejected the request for another reason (a 4xx such as `NoSuchBucket`).
    #[error("the source store rejected {key:?} with {status} {code}: {detail}")]
    Rejected {
        /// The key asked for.
        key: String,
        /// HTTP status of the store's answer.
        status: u16,
        /// The store's error code, if it sent one.
        code: String,
        /// The store's answer, for the log.
        detail: String,
    },
    /// The store failed or could not be reached, after the configured retries.
    #[error("the source store failed for {key:?}: {detail}")]
    Unavailable {
        /// The key asked for.
        key: String,
        /// What failed, for the log.
        detail: String,
    },
    /// The store did not answer in time.
    #[error("the source store did not answer for {key:?} within {} ms", after.as_millis())]
    Timeout {
        /// The key asked for.
        key: String,
        /// The configured bound.
        after: Duration,
    },
}

/// `work` on `key`, or [`SourceError::Timeout`] once `limit` has passed.
pub(crate) async fn within<T>(
    limit: Duration,
    key: impl ToString,
    work: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(SourceError::Timeout {
            key: key.to_string(),
            after: limit,
        })
    })
}

/// A store of originals.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// Reads the object at `key`, refusing one larger than `max_bytes` without reading it whole.
    async fn fetch(&self, key: &SourceKey, max_bytes: u64) -> Result<SourceObject, SourceError>;

    /// Opens the object at `key` to be streamed, refusing one larger than `max_bytes`. Opening
    /// has the source's deadline; so has each read of the reader, not the whole transfer.
    async fn open(&self, key: &SourceKey, max_bytes: u64) -> Result<SourceReader, SourceError>;

    /// The version of the object at `key` ([`SourceObject::version`]), without reading it
    /// (`None`: the store does not say): a stat of a local file, a `HeadObject` in S3. Asked
    /// before an original read moments ago (or one that failed to decode) is used again, to
    /// see whether it changed since.
    async fn version(&self, key: &SourceKey) -> Result<Option<String>, SourceError>;

    /// Whether the store answers, for `GET /ready`.
    async fn check(&self) -> Result<(), SourceError>;

    /// Where originals come from, for logs and `/ready`: a folder or `s3://bucket/prefix`.
    fn describe(&self) -> String;
}
