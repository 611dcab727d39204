//! Where the cluster's state lives: a folder of an S3 bucket (or any S3-compatible store),
//! used with the four calls every such store has (put, get, list in name order, delete),
//! without conditional writes. The store's clock, read from its answers' `Date` headers,
//! stamps every change, so the nodes' own clocks need not agree.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents, SharedInterceptor};
use aws_sdk_s3::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use ross_config::S3Settings;

/// Why the store did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// An object's own key-value pairs (S3's user metadata).
pub type Meta = std::collections::BTreeMap<String, String>;

/// Most names one listing returns (the rest comes with the next).
pub const LIST_MAX: usize = 10_000;

/// The cluster's folder.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Writes `body` at `name` (relative to the folder), replacing what was there.
    async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), StoreError>;
    /// What is at `name`, or `None` when nothing is.
    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The names that start with `folder` (a folder ending in `/`, or any prefix) and sort
    /// after `folder` + `after`, in order, without the folder, at most [`LIST_MAX`].
    async fn list(&self, folder: &str, after: &str) -> Result<Vec<String>, StoreError>;
    /// Removes `names` (missing ones are not an error).
    async fn delete(&self, names: &[String]) -> Result<(), StoreError>;
    /// Writes `body` at `name` with `meta` (`x-amz-meta-*` on S3).
    async fn put_with(&self, name: &str, body: Vec<u8>, meta: Meta) -> Result<(), StoreError>;
    /// What is at `name` with its `meta`, or `None` when nothing is.
    async fn get_with(&self, name: &str) -> Result<Option<(Vec<u8>, Meta)>, StoreError>;
    /// The store's time now, in ms since 1970, as well as it is known.
    fn now_ms(&self) -> u64;
    /// Whether the store's clock was read (from an answer) yet; until then
    /// [`Store::now_ms`] is the local clock.
    fn clock_known(&self) -> bool {
        true
    }
    /// Where it is, for people.
    fn describe(&self) -> String;
}

/// The local clock, in ms since 1970.
pub fn local_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The store's clock against ours, from the `Date` of its last answer (1 s resolution).
#[derive(Debug, Default)]
struct Clock {
    /// Store time minus local time, in ms.
    offset_ms: AtomicI64,
    /// Whether an answer gave it.
    known: std::sync::atomic::AtomicBool,
}

impl Intercept for ClockReader {
    fn name(&self) -> &'static str {
        "ross-cluster-clock"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| httpdate::parse_http_date(d).ok());
        if let Some(date) = date {
            let store = date
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as i64;
            // `Date` is whole seconds: the middle of its second is the best guess.
            let offset = store + 500 - local_ms() as i64;
            self.0.offset_ms.store(offset, Ordering::Relaxed);
            self.0.known.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct ClockReader(Arc<Clock>);

/// The folder `settings.prefix` of `settings.bucket`.
#[derive(Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Ends in `/`.
    prefix: String,
    clock: Arc<Clock>,
}

impl S3Store {
    /// A client for the folder; nothing is sent yet.
    pub async fn connect(
        settings: &S3Settings,
        credentials: Option<aws_sdk_s3::config::Credentials>,
    ) -> S3Store {
        let clock = Arc::new(Clock::default());
        let reader = SharedInterceptor::new(ClockReader(clock.clone()));
        S3Store {
            client: crate::source::s3::client(settings, credentials, Some(reader)).await,
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            clock,
        }
    }

    fn failed(&self, doing: &str, name: &str, e: impl std::error::Error) -> StoreError {
        StoreError(format!(
            "{doing} s3://{}/{}{name}: {}",
            self.bucket,
            self.prefix,
            DisplayErrorContext(e)
        ))
    }
}

#[async_trait::async_trait]
impl Store for S3Store {
    async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{name}", self.prefix))
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.failed("writing", name, e))?;
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_with(name).await?.map(|(body, _)| body))
    }

    async fn list(&self, folder: &str, after: &str) -> Result<Vec<String>, StoreError> {
        let full = format!("{}{folder}", self.prefix);
        let mut names = Vec::new();
        let mut start_after = format!("{full}{after}");
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .start_after(&start_after)
                .max_keys(1000)
                .send()
                .await
                .map_err(|e| self.failed("listing", folder, e))?;
            let before = names.len();
            for object in page.contents() {
                if let Some(name) = object.key().and_then(|k| k.strip_prefix(&full)) {
                    names.push(name.to_owned());
                }
            }
            let more = page.is_truncated().unwrap_or(false) && names.len() > before;
            if !more || names.len() >= LIST_MAX {
                names.truncate(LIST_MAX);
                return Ok(names);
            }
            start_after = format!("{full}{}", names.last().expect("just pushed"));
        }
    }

    async fn delete(&self, names: &[String]) -> Result<(), StoreError> {
        // DeleteObjects takes 1,000 keys at most.
        for chunk in names.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|name| {
                    ObjectIdentifier::builder()
                        .key(format!("{}{name}", self.prefix))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError(e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StoreError(e.to_string()))?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.failed("deleting under", "", e))?;
            if let Some(e) = output.errors().first() {
                return Err(StoreError(format!(
                    "deleting s3://{}/{}: {}",
                    self.bucket,
                    e.key().unwrap_or("?"),
                    e.message().unwrap_or("refused")
                )));
            }
        }
        Ok(())
    }

    async fn put_with(&self, name: &str, body: Vec<u8>, meta: Meta) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{name}", self.prefix))
            .content_type("application/octet-stream")
            .set_metadata(Some(meta.into_iter().collect()))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.failed("writing", name, e))?;
        Ok(())
    }

    async fn get_with(&self, name: &str) -> Result<Option<(Vec<u8>, Meta)>, StoreError> {
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(format!("{}{name}", self.prefix))
            .send()
            .await;
        let output = match sent {
            Ok(output) => output,
            Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("NoSuchKey") => {
                return Ok(None)
            }
            Err(e) => return Err(self.failed("reading", name, e)),
        };
        let meta: Meta = output
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| self.failed("reading", name, e))?;
        Ok(Some((body.to_vec(), meta)))
    }

    fn now_ms(&self) -> u64 {
        let offset = self.clock.offset_ms.load(Ordering::Relaxed);
        local_ms().saturating_add_signed(offset)
    }

    fn clock_known(&self) -> bool {
        self.clock.known.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// A store in memory, for tests: a clock of its own, and a switch that makes every call fail.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
    metas: std::sync::Mutex<std::collections::BTreeMap<String, Meta>>,
    now: std::sync::atomic::AtomicU64,
    down: std::sync::atomic::AtomicBool,
    /// Writes with metadata wait while a test holds it.
    gate: tokio::sync::RwLock<()>,
}

#[cfg(test)]
impl MemoryStore {
    /// Sets the store's clock.
    pub fn set_now(&self, ms: u64) {
        self.now.store(ms, Ordering::Relaxed);
    }

    /// Moves the store's clock on.
    pub fn advance(&self, by: std::time::Duration) {
        self.now.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }

    /// Makes every call fail (or work again).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// Holds every write with metadata (as a slow store would) until the guard is dropped.
    pub async fn hold_writes(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// Every name held.
    pub fn names(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    fn up(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::Relaxed) {
            Err(StoreError("the store is down".into()))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.up()?;
        self.objects.lock().unwrap().insert(name.to_owned(), body);
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.up()?;
        Ok(self.objects.lock().unwrap().get(name).cloned())
    }

    async fn list(&self, folder: &str, after: &str) -> Result<Vec<String>, StoreError> {
        self.up()?;
        let from = format!("{folder}{after}");
        Ok(self
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(folder) && k.as_str() > from.as_str())
            .take(LIST_MAX)
            .map(|k| k[folder.len()..].to_owned())
            .collect())
    }

    async fn delete(&self, names: &[String]) -> Result<(), StoreError> {
        self.up()?;
        let mut objects = self.objects.lock().unwrap();
        for name in names {
            objects.remove(name);
        }
        Ok(())
    }

    async fn put_with(&self, name: &str, body: Vec<u8>, meta: Meta) -> Result<(), StoreError> {
        let _open = self.gate.read().await;
        self.put(name, body).await?;
        self.metas.lock().unwrap().insert(name.to_owned(), meta);
        Ok(())
    }

    async fn get_with(&self, name: &str) -> Result<Option<(Vec<u8>, Meta)>, StoreError> {
        let meta = self
            .metas
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default();
        Ok(self.get(name).await?.map(|body| (body, meta)))
    }

    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
