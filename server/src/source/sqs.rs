//! The events queue (`source.events_queue`): S3 event notifications of the source bucket,
//! sent by S3 to an SQS queue (directly, or through SNS), read by ross with long polls, each
//! change purged as [`crate::changes::SourceChanges`] decides.
//!
//! - **Long polls** of up to 10 messages, waiting up to 20 s for one: an idle queue costs
//!   three requests a minute.
//! - **At least once.** A message is deleted only once its changes are purged (journaled
//!   here, kept for the cluster and the CDNs); one whose purge failed comes back after the
//!   visibility timeout and is tried again. A message that is not an S3 event is logged and
//!   deleted (it would never be one).
//! - **Failures** of the queue itself (unreachable, denied) are logged once a minute and
//!   tried again after 1 s, doubling up to a minute; `ross_source_events_queue_errors_total`
//!   counts them.
//! - The endpoint is the queue URL's own host, the region the one in its host
//!   (`sqs.REGION.amazonaws.com`), else `source.region`, else the AWS chain's. Credentials come
//!   from the AWS chain, as for the bucket.

use std::sync::{Arc, Weak};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::Region;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use ross_config::S3Settings;

use crate::cache::OncePerMinute;
use crate::changes::Noticed;
use crate::state::AppState;

/// Messages asked for in one receive (SQS's most).
const BATCH: i32 = 10;
/// How long a receive waits for a message (SQS's longest).
const WAIT_SECONDS: i32 = 20;
/// How long a received message stays hidden from other readers before it comes back, unless
/// deleted: room for its purges.
const VISIBILITY_SECONDS: i32 = 120;
/// The longest wait between tries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Starts reading `queue` for `state`'s bucket; the task ends once the state is dropped.
pub fn spawn(state: &Arc<AppState>, s3: &S3Settings, queue: &str) {
    let weak = Arc::downgrade(state);
    let s3 = s3.clone();
    let queue = queue.to_owned();
    tokio::spawn(async move {
        let client = client(&s3, &queue).await;
        tracing::info!(queue = %queue, "reading the source bucket's events from the queue");
        poll(weak, client, s3, queue).await;
    });
}

/// The region named by an SQS host (`sqs.eu-west-1.amazonaws.com`), if it names one.
pub fn region_of(queue: &str) -> Option<String> {
    let host = queue.split("://").nth(1)?.split('/').next()?;
    let rest = host.strip_prefix("sqs.")?;
    let (region, domain) = rest.split_once('.')?;
    domain.starts_with("amazonaws.").then(|| region.to_owned())
}

/// The scheme and host of the queue's URL: where its API answers.
pub fn endpoint_of(queue: &str) -> Option<String> {
    let (scheme, rest) = queue.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

async fn client(s3: &S3Settings, queue: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = region_of(queue).or_else(|| s3.region.clone()) {
        loader = loader.region(Region::new(region));
    }
    let shared = loader.load().await;
    let region = shared
        .region()
        .cloned()
        .unwrap_or_else(|| Region::from_static("us-east-1"));
    // A receive waits up to 20 s for a message: the bound is above it.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(s3.timeout)
        .operation_timeout(Duration::from_secs(WAIT_SECONDS as u64) + s3.timeout)
        .build();
    let mut config = aws_sdk_sqs::config::Builder::from(&shared)
        .region(region)
        .timeout_config(timeouts);
    if let Some(endpoint) = endpoint_of(queue) {
        config = config.endpoint_url(endpoint);
    }
    Client::from_conf(config.build())
}

async fn poll(state: Weak<AppState>, client: Client, s3: S3Settings, queue: String) {
    let mut failures = 0u32;
    static SAID: OncePerMinute = OncePerMinute::new();
    loop {
        let received = client
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(BATCH)
            .wait_time_seconds(WAIT_SECONDS)
            .visibility_timeout(VISIBILITY_SECONDS)
            .send()
            .await;
        let Some(state) = state.upgrade() else { return };
        let messages = match received {
            Ok(output) => {
                failures = 0;
                output.messages.unwrap_or_default()
            }
            Err(e) => {
                failures += 1;
                state
                    .metrics
                    .count(crate::telemetry::Count::EventsQueueError);
                let wait = Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF);
                if SAID.due() {
                    tracing::warn!(
                        queue = %queue, error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                        retry_in_s = wait.as_secs(),
                        "cannot read the events queue (said once a minute): replaced originals \
                         keep their renders until it answers"
                    );
                }
                drop(state);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let mut done = Vec::new();
        for message in messages {
            let (Some(body), Some(receipt)) = (message.body, message.receipt_handle) else {
                continue;
            };
            match crate::source::events::parse(body.as_bytes(), &s3.bucket, &s3.prefix) {
                Ok(parsed) => {
                    let applied = crate::routes::admin_api::events::apply(
                        &state,
                        parsed.events,
                        Noticed::Queue,
                    )
                    .await;
                    match applied {
                        Ok(_) => done.push(receipt),
                        // Not deleted: it comes back after the visibility timeout.
                        Err(e) => tracing::warn!(
                            error = ?e.detail,
                            "cannot purge the keys an event changed: it is read again later"
                        ),
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "a message that is not an S3 event deleted");
                    done.push(receipt);
                }
            }
        }
        drop(state);
        delete(&client, &queue, done).await;
    }
}

/// Deletes the messages of `receipts` (read and acted on).
async fn delete(client: &Client, queue: &str, receipts: Vec<String>) {
    if receipts.is_empty() {
        return;
    }
    let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
        .into_iter()
        .enumerate()
        .filter_map(|(i, receipt)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(receipt)
                .build()
                .ok()
        })
        .collect();
    let deleted = client
        .delete_message_batch()
        .queue_url(queue)
        .set_entries(Some(entries))
        .send()
        .await;
    match deleted {
        Ok(output) if output.failed.is_empty() => {}
        Ok(output) => tracing::warn!(
            failed = output.failed.len(),
            "some events could not be deleted from the queue: they are read again (harmless)"
        ),
        Err(e) => tracing::warn!(
            error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
            "cannot delete read events from the queue: they are read again (harmless)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_url_gives_endpoint_and_region() {
        let aws = "https://sqs.eu-west-1.amazonaws.com/123456789012/ross-events";
        assert_eq!(region_of(aws).as_deref(), Some("eu-west-1"));
        assert_eq!(
            endpoint_of(aws).as_deref(),
            Some("https://sqs.eu-west-1.amazonaws.com")
        );
        let local = "http://127.0.0.1:4566/123456789012/q";
        assert_eq!(region_of(local), None);
        assert_eq!(endpoint_of(local).as_deref(), Some("http://127.0.0.1:4566"));
    }
}
