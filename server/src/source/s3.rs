//! Originals from an S3 bucket, or any store that speaks the S3 API (MinIO, Ceph, R2).
//!
//! One ranged `GetObject` per fetch, read whole (to render) or streamed (an original sent
//! unchanged). The SDK retries 5xx, throttling and connection failures
//! with backoff (`source.retries`); the whole fetch, body included, is bounded by
//! `source.timeout_ms`. The range asks for one byte past `limits.max_source_bytes`, so an
//! object over the limit is refused (413) having moved at most that much; a store that ignores
//! ranges is refused on its `Content-Length` before the body is read, and a body longer than
//! announced is cut off at the limit. Credentials come from the standard AWS chain unless the
//! caller supplies them.

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use ross_config::S3Settings;

use tokio::io::AsyncReadExt;

use super::{Source, SourceError, SourceObject, SourceReader};
use crate::request::SourceKey;
use crate::stall::{Stall, StallReader};

/// Region used when neither `source.region` nor the AWS chain names one. S3-compatible stores
/// mostly ignore it, but request signing needs one.
const FALLBACK_REGION: &str = "us-east-1";

/// First retry delay; later ones double, with jitter, up to [`MAX_BACKOFF`]. The SDK's own
/// default (1 s) is long for a client waiting on an image.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A bucket, through a shared SDK client (one connection pool for the process).
#[derive(Debug, Clone)]
pub struct S3Source {
    client: Client,
    bucket: String,
    /// Empty, or a folder ending in `/`.
    prefix: String,
    timeout: Duration,
    /// A folder of the bucket that is not originals (the cluster's state), never served.
    hidden: Option<String>,
}

/// The longest object key S3 takes, in bytes of UTF-8.
pub const MAX_OBJECT_KEY: usize = 1024;

impl S3Source {
    /// Builds the client. `credentials` replaces the AWS chain (tests, embedding); `None` uses
    /// the chain: environment, shared profile, web identity, container or instance role.
    /// Nothing is sent to S3 here: a bucket that does not answer shows in `/ready`.
    pub async fn connect(settings: &S3Settings, credentials: Option<Credentials>) -> S3Source {
        S3Source {
            client: client(settings, credentials, None).await,
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
            hidden: None,
        }
    }

    /// Never serves what lies under `folder` of the bucket (which ends in `/`): the cluster
    /// keeps its state there when it shares the originals' bucket.
    pub fn hiding(mut self, folder: &str) -> S3Source {
        self.hidden = Some(folder.to_owned());
        self
    }

    /// The object key in the bucket for a request key: the prefix, then the key as decoded.
    /// A key S3 could not take is refused here, before any request: the store's own refusal
    /// would be a 502, which a client could cause at will.
    fn object_key(&self, key: &SourceKey) -> Result<String, SourceError> {
        let object_key = format!("{}{}", self.prefix, key.as_str());
        if object_key.len() > MAX_OBJECT_KEY {
            return Err(SourceError::KeyTooLong {
                key: key.to_string(),
                limit: MAX_OBJECT_KEY - self.prefix.len(),
            });
        }
        if self
            .hidden
            .as_deref()
            .is_some_and(|h| object_key.starts_with(h))
        {
            return Err(SourceError::NotFound {
                key: key.to_string(),
            });
        }
        Ok(object_key)
    }

    /// Sends the `GetObject` and checks the answer's size: the body is not read yet.
    async fn start(&self, key: &SourceKey, max_bytes: u64) -> Result<Started, SourceError> {
        let object_key = self.object_key(key)?;
        // Ask for one byte more than the limit: an object over it then costs at most that much
        // transfer, and the total in `Content-Range` tells its real size.
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .range(format!("bytes=0-{max_bytes}"))
            .send()
            .await;
        let output = match sent {
            Ok(output) => output,
            // The range of an empty object is unsatisfiable: it is an empty original.
            Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("InvalidRange") => {
                return Ok(Started {
                    body: ByteStream::from_static(b""),
                    len: Some(0),
                    modified: None,
                    version: None,
                })
            }
            Err(e) => {
                let missing = is_missing_key(&e);
                return Err(classify(e, key, missing, self.timeout));
            }
        };
        // Refuse on the size the store reports (a store that ignores `Range` sends the whole
        // length): dropping the body closes the connection instead of downloading the rest.
        let total = output
            .content_range()
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, total)| total.parse::<u64>().ok());
        let announced = output.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(size) = total.or(announced).filter(|&n| n > max_bytes) {
            return Err(SourceError::TooLarge {
                key: key.to_string(),
                size,
                limit: max_bytes,
            });
        }
        Ok(Started {
            modified: output
                .last_modified()
                .and_then(|t| SystemTime::try_from(*t).ok()),
            version: output.e_tag().map(etag),
            len: announced,
            body: output.body,
        })
    }

    async fn get(&self, key: &SourceKey, max_bytes: u64) -> Result<SourceObject, SourceError> {
        let Started {
            body: mut chunks,
            len,
            modified,
            version,
        } = self.start(key, max_bytes).await?;
        let mut bytes = Vec::with_capacity(len.unwrap_or(0).min(max_bytes) as usize);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| SourceError::Unavailable {
                key: key.to_string(),
                detail: format!(
                    "reading the body of s3://{}/{}{key}: {e}",
                    self.bucket, self.prefix,
                ),
            })?;
            bytes.extend_from_slice(&chunk);
            // A body longer than announced is cut off at the limit.
            if bytes.len() as u64 > max_bytes {
                return Err(SourceError::TooLarge {
                    key: key.to_string(),
                    size: bytes.len() as u64,
                    limit: max_bytes,
                });
            }
        }
        Ok(SourceObject {
            bytes: bytes.into(),
            modified,
            version,
        })
    }
}

/// An S3 client for `settings` (bucket and prefix aside): the SDK over one HTTP/TLS stack,
/// the retries and timeouts of `settings`. `credentials` replaces the AWS chain;
/// `interceptor` sees every exchange (the cluster reads the store's clock from it).
pub async fn client(
    settings: &S3Settings,
    credentials: Option<Credentials>,
    interceptor: Option<aws_sdk_s3::config::SharedInterceptor>,
) -> Client {
    // One HTTP/TLS stack for the SDK and the credential providers: hyper 1 + rustls (ring).
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    let shared = loader.load().await;
    let region = shared
        .region()
        .cloned()
        .unwrap_or_else(|| Region::from_static(FALLBACK_REGION));
    let retry = RetryConfig::standard()
        .with_max_attempts(settings.retries + 1)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.timeout)
        .operation_timeout(settings.timeout)
        .build();
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .region(region)
        .force_path_style(settings.force_path_style)
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(endpoint) = &settings.endpoint {
        config = config.endpoint_url(endpoint);
    }
    if let Some(interceptor) = interceptor {
        config = config.interceptor(interceptor);
    }
    Client::from_conf(config.build())
}

/// A `GetObject` answered and checked, its body still to read.
struct Started {
    body: ByteStream,
    /// `Content-Length`, if the store sent one.
    len: Option<u64>,
    modified: Option<SystemTime>,
    /// The ETag, unquoted.
    version: Option<String>,
}

/// An ETag as S3 events give it: without the quotes the HTTP header has.
pub fn etag(raw: &str) -> String {
    raw.trim_matches('"').to_owned()
}

#[async_trait::async_trait]
impl Source for S3Source {
    async fn fetch(&self, key: &SourceKey, max_bytes: u64) -> Result<SourceObject, SourceError> {
        super::within(self.timeout, key, self.get(key, max_bytes)).await
    }

    async fn open(&self, key: &SourceKey, max_bytes: u64) -> Result<SourceReader, SourceError> {
        let started = super::within(self.timeout, key, self.start(key, max_bytes)).await?;
        let Some(len) = started.len else {
            // A store that streams without a length (none of S3's kind is known to): read it
            // whole, within the limit, so the response can say how long it is.
            drop(started);
            let object = self.fetch(key, max_bytes).await?;
            return Ok(SourceReader {
                len: object.bytes.len() as u64,
                modified: object.modified,
                reader: Box::pin(std::io::Cursor::new(object.bytes)),
            });
        };
        // At most `len` bytes (checked against the limit above), each read with the deadline.
        let reader = StallReader::new(
            started.body.into_async_read().take(len),
            Stall::new(self.timeout, "source.timeout_ms"),
        );
        Ok(SourceReader {
            len,
            modified: started.modified,
            reader: Box::pin(reader),
        })
    }

    async fn version(&self, key: &SourceKey) -> Result<Option<String>, SourceError> {
        let head = async {
            let sent = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(self.object_key(key)?)
                .send()
                .await;
            match sent {
                Ok(output) => Ok(output.e_tag().map(etag)),
                Err(e) => {
                    let missing =
                        matches!(&e, SdkError::ServiceError(ctx) if ctx.err().is_not_found());
                    Err(classify(e, key, missing, self.timeout))
                }
            }
        };
        super::within(self.timeout, key, head).await
    }

    async fn check(&self) -> Result<(), SourceError> {
        let probe = self.client.head_bucket().bucket(&self.bucket).send();
        let key = format!("s3://{}", self.bucket);
        match tokio::time::timeout(self.timeout, probe).await {
            Ok(Ok(_)) => Ok(()),
            // A missing bucket is a misconfiguration, not a missing image.
            Ok(Err(e)) => Err(classify(e, &key, false, self.timeout)),
            Err(_) => Err(SourceError::Timeout {
                key,
                after: self.timeout,
            }),
        }
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// An error and its causes on one line, `outer: inner: root`, for the log. (The SDK's
/// `DisplayErrorContext` appends a multi-line debug dump.)
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

/// Whether a `GetObject` failure means the key does not exist: `NoSuchKey`, or a bare 404 from
/// a store that sends no code. `NoSuchBucket` is a misconfiguration, not a missing image.
fn is_missing_key(err: &SdkError<GetObjectError, HttpResponse>) -> bool {
    match err {
        SdkError::ServiceError(ctx) => {
            ctx.err().is_no_such_key()
                || (ctx.raw().status().as_u16() == 404 && ctx.err().code() != Some("NoSuchBucket"))
        }
        _ => false,
    }
}

/// Maps an SDK failure to what the client is told. `missing` is the operation's own "no such
/// key" answer; any other 404 (such as `NoSuchBucket`) is the operator's problem, not the
/// client's, and so is not a 404.
fn classify<E>(
    err: SdkError<E, HttpResponse>,
    key: &(impl std::fmt::Display + ?Sized),
    missing: bool,
    timeout: Duration,
) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let key = key.to_string();
    if missing {
        return SourceError::NotFound { key };
    }
    let detail = error_chain(&err);
    match &err {
        SdkError::TimeoutError(_) => SourceError::Timeout {
            key,
            after: timeout,
        },
        SdkError::DispatchFailure(f) if f.is_timeout() => SourceError::Timeout {
            key,
            after: timeout,
        },
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or("").to_owned();
            match status {
                403 => SourceError::Denied { key, detail },
                429 | 500.. => SourceError::Unavailable { key, detail },
                _ if code == "SlowDown" || code.contains("Throttl") => {
                    SourceError::Unavailable { key, detail }
                }
                _ => SourceError::Rejected {
                    key,
                    status,
                    code,
                    detail,
                },
            }
        }
        _ => SourceError::Unavailable { key, detail },
    }
}
