use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::Credentials;

use crate::process::{http_get, Ross};
use crate::s3_support::{Moto, Proxy, BUCKET};
use crate::util::{corpus, TestServer, TestServerBuilder};

const MODES: [&str; 3] = ["crop", "resize", "resizecomp"];

fn corpus_file(path: &str) -> Vec<u8> {
    std::fs::read(corpus().join(path)).unwrap()
}

/// A server reading `BUCKET` at `endpoint` (moto itself, or a proxy in front of it).
fn s3_builder(endpoint: &str) -> TestServerBuilder {
    TestServer::builder()
        .set("ROSS__SOURCE__BUCKET", BUCKET)
        .set("ROSS__SOURCE__ENDPOINT", endpoint)
        .set("ROSS__SOURCE__REGION", "us-east-1")
        .set("ROSS__SOURCE__FORCE_PATH_STYLE", "true")
}

/// Percent-encodes a key for a URL path, keeping `/`.
fn url_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every mode over S3, with keys that need escaping and a prefix: the bytes served are exactly
/// those rendered from the same file on local disk.
#[tokio::test]
async fn every_mode_renders_from_s3_with_odd_keys_and_a_prefix() {
    let moto = Moto::start(true);
    let files = [
        ("products/1/Dune.jpg", "photos/Dune.jpg"),
        ("products/2/lady bird+ünï.jpg", "photos/LadyBird.jpg"),
        ("a.b/c..v2.jpeg", "photos/Storm.jpg"),
        (
            "100% cotton/shirt (1).png",
            "png/tmshre_riaphotographs_alpha.png",
        ),
    ];
    let objects: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(key, file)| (format!("originals/{key}"), corpus_file(file)))
        .collect();
    let objects: Vec<(&str, Vec<u8>)> = objects
        .iter()
        .map(|(k, b)| (k.as_str(), b.clone()))
        .collect();
    moto.seed(&objects).await;
    let s3 = s3_builder(&moto.endpoint())
        .set("ROSS__SOURCE__PREFIX", "originals")
        .start_s3(moto.credentials.clone())
        .await;
    let local = TestServer::builder().start().await;
    for (key, file) in files {
        // The original itself, streamed from the bucket unchanged.
        let original = s3.get(&format!("/{}", url_key(key))).await;
        assert_eq!(original.status, 200, "{key:?}: {}", original.text());
        assert!(
            original.body == corpus_file(file),
            "{key:?}: original changed"
        );
        for mode in MODES {
            let over_s3 = s3.get(&format!("/200/250/{mode}/{}", url_key(key))).await;
            assert_eq!(over_s3.status, 200, "{mode} {key:?}: {}", over_s3.text());
            assert_eq!(over_s3.header("content-type"), "image/jpeg");
            let from_disk = local.get(&format!("/200/250/{mode}/{file}")).await;
            assert!(
                over_s3.body == from_disk.body,
                "{mode} {key:?}: differs from the local render"
            );
        }
    }
    let ready = s3.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(
        ready.json()["source"]["location"],
        "s3://shop-images/originals/"
    );
}

/// Missing key 404, a damaged object 415, a missing bucket 502 (the operator's problem, not
/// the client's), wrong credentials 502 with their own code.
#[tokio::test]
async fn s3_answers_map_to_statuses_with_their_own_codes() {
    let moto = Moto::start(true);
    moto.seed(&[("broken.jpg", corpus_file("bad/truncated.jpg"))])
        .await;
    let s3 = s3_builder(&moto.endpoint())
        .start_s3(moto.credentials.clone())
        .await;
    let missing = s3.get("/200/250/crop/missing/key.jpg").await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.json()["error"]["code"], "source-not-found");
    let broken = s3.get("/200/250/crop/broken.jpg").await;
    assert_eq!(broken.status, 415, "{}", broken.text());

    let no_bucket = s3_builder(&moto.endpoint())
        .set("ROSS__SOURCE__BUCKET", "no-such-bucket")
        .start_s3(moto.credentials.clone())
        .await;
    let reply = no_bucket.get("/200/250/crop/broken.jpg").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "source-rejected");
    assert_eq!(no_bucket.get("/ready").await.status, 503);

    let wrong = Credentials::new(
        moto.credentials.access_key_id(),
        "not-the-secret",
        None,
        None,
        "test",
    );
    let denied = s3_builder(&moto.endpoint()).start_s3(wrong).await;
    let reply = denied.get("/200/250/crop/broken.jpg").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "source-denied");
    assert!(
        !reply.text().contains("Signature"),
        "internals leak: {}",
        reply.text()
    );
    let unknown = Credentials::new("AKIDNOBODY", "nothing", None, None, "test");
    let denied = s3_builder(&moto.endpoint()).start_s3(unknown).await;
    assert_eq!(denied.get("/200/250/crop/broken.jpg").await.status, 502);
    let ready = denied.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["source"]["ok"], false);
}

/// Twenty identical concurrent requests for an uncached variant make one GET; cache hits make
/// none; other sizes of the same key make one each.
#[tokio::test]
async fn one_get_per_variant_and_none_for_hits() {
    let moto = Moto::start(false);
    moto.seed(&[("p/Dune.jpg", corpus_file("photos/Dune.jpg"))])
        .await;
    let proxy = Proxy::start(moto.addr()).await;
    let s3 = Arc::new(
        s3_builder(&proxy.endpoint())
            .start_s3(moto.credentials.clone())
            .await,
    );
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let s3 = s3.clone();
            tokio::spawn(async move { s3.get("/300/300/crop/p/Dune.jpg").await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(proxy.gets("/p/Dune.jpg"), 1, "{:?}", proxy.requests());
    for _ in 0..5 {
        let hit = s3.get("/300/300/crop/p/Dune.jpg").await;
        assert_eq!(hit.header("x-cache"), "HIT");
    }
    assert_eq!(proxy.gets("/p/Dune.jpg"), 1, "{:?}", proxy.requests());
    // Another size moments later is rendered from the original kept in memory
    // (`cache.decoded_bytes`): no second GET.
    assert_eq!(s3.get("/200/250/resize/p/Dune.jpg").await.status, 200);
    assert_eq!(proxy.gets("/p/Dune.jpg"), 1, "{:?}", proxy.requests());
}

/// Regression: a known-bad object cost a GET on every request (the failure memo was read
/// after the fetch). Now each request for it costs a `HeadObject`; the object replaced, the
/// next request fetches and serves it.
#[tokio::test]
async fn a_bad_object_is_fetched_once_then_only_looked_at() {
    let moto = Moto::start(false);
    moto.seed(&[("p/bad.jpg", corpus_file("bad/truncated.jpg"))])
        .await;
    let proxy = Proxy::start(moto.addr()).await;
    let s3 = s3_builder(&proxy.endpoint())
        .start_s3(moto.credentials.clone())
        .await;
    for size in [300, 301, 302, 303] {
        let r = s3.get(&format!("/{size}/300/crop/p/bad.jpg")).await;
        assert_eq!(r.status, 415, "{}", r.text());
    }
    assert_eq!(proxy.gets("/p/bad.jpg"), 1, "{:?}", proxy.requests());
    let heads = || {
        proxy
            .requests()
            .iter()
            .filter(|l| l.starts_with("HEAD ") && l.contains("/p/bad.jpg"))
            .count()
    };
    assert_eq!(heads(), 3, "{:?}", proxy.requests());
    // S3's modification times have a resolution of a second: replaced a second later.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    moto.seed(&[("p/bad.jpg", corpus_file("photos/Dune.jpg"))])
        .await;
    assert_eq!(s3.get("/300/300/crop/p/bad.jpg").await.status, 200);
    assert_eq!(proxy.gets("/p/bad.jpg"), 2, "{:?}", proxy.requests());
}

/// Throttling (503 SlowDown) is retried with backoff up to `source.retries`, then 502.
#[tokio::test]
async fn throttling_is_retried_then_502() {
    let moto = Moto::start(false);
    moto.seed(&[("a.jpg", corpus_file("photos/Dune.jpg"))])
        .await;
    let proxy = Proxy::start(moto.addr()).await;
    let s3 = s3_builder(&proxy.endpoint())
        .set("ROSS__SOURCE__RETRIES", "2")
        // Every render fetches: nothing kept from the first for the second.
        .set("ROSS__CACHE__DECODED_BYTES", "0")
        .start_s3(moto.credentials.clone())
        .await;
    proxy.fail_next(2);
    let ok = s3.get("/200/250/crop/a.jpg").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(proxy.gets("/a.jpg"), 3, "{:?}", proxy.requests());

    proxy.fail_next(100);
    let started = Instant::now();
    let shed = s3.get("/200/250/resize/a.jpg").await;
    assert_eq!(shed.status, 502, "{}", shed.text());
    assert_eq!(shed.json()["error"]["code"], "source-unavailable");
    assert_eq!(proxy.gets("/a.jpg"), 6, "{:?}", proxy.requests());
    println!(
        "throttled S3: 502 after 3 attempts in {} ms",
        started.elapsed().as_millis()
    );
}

/// S3 stopped mid-run: cached variants still serve, new ones fail fast with 502 (or 504 if
/// the connection hangs), `/ready` says so, and everything recovers when S3 returns.
#[tokio::test]
async fn s3_going_down_and_coming_back() {
    let mut moto = Moto::start(false);
    let objects = [
        ("a.jpg", corpus_file("photos/Dune.jpg")),
        ("b.jpg", corpus_file("photos/Storm.jpg")),
    ];
    moto.seed(&objects).await;
    let s3 = s3_builder(&moto.endpoint())
        .set("ROSS__SOURCE__TIMEOUT_MS", "2000")
        .start_s3(moto.credentials.clone())
        .await;
    assert_eq!(s3.get("/200/250/crop/a.jpg").await.status, 200);
    assert_eq!(s3.get("/ready").await.status, 200);

    moto.stop();
    let hit = s3.get("/200/250/crop/a.jpg").await;
    assert_eq!(hit.status, 200, "a cache hit needs no S3");
    let started = Instant::now();
    let down = s3.get("/200/250/crop/b.jpg").await;
    let took = started.elapsed();
    assert!(
        matches!(down.status, 502 | 504),
        "{} {}",
        down.status,
        down.text()
    );
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert_eq!(down.header("retry-after"), "1");
    assert_eq!(s3.get("/ready").await.status, 503);
    println!(
        "S3 down: {} {} after {} ms",
        down.status,
        down.json()["error"]["code"],
        took.as_millis()
    );

    moto.restart();
    moto.seed(&objects).await;
    let back = s3.get("/200/250/crop/b.jpg").await;
    assert_eq!(back.status, 200, "{}", back.text());
    assert_eq!(s3.get("/ready").await.status, 200);
}

/// An S3 that accepts the connection but answers slowly: 504 within `timeout_ms` and a small
/// margin, and the server is fine afterwards.
#[tokio::test]
async fn slow_s3_is_504_within_the_timeout() {
    let moto = Moto::start(false);
    moto.seed(&[("a.jpg", corpus_file("photos/Dune.jpg"))])
        .await;
    let proxy = Proxy::start(moto.addr()).await;
    let s3 = s3_builder(&proxy.endpoint())
        .set("ROSS__SOURCE__TIMEOUT_MS", "800")
        .start_s3(moto.credentials.clone())
        .await;
    proxy.set_delay(Duration::from_secs(5));
    let started = Instant::now();
    let slow = s3.get("/200/250/crop/a.jpg").await;
    let took = started.elapsed();
    assert_eq!(slow.status, 504, "{}", slow.text());
    assert_eq!(slow.json()["error"]["code"], "source-timeout");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(1300),
        "took {took:?}"
    );
    println!(
        "slow S3: 504 after {} ms (timeout 800 ms)",
        took.as_millis()
    );
    proxy.set_delay(Duration::ZERO);
    let ok = s3.get("/200/250/crop/a.jpg").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

/// An object over `limits.max_source_bytes` is refused with 413, having transferred no more
/// than the limit (ross asks for a range one byte past it); an empty object is a bad image.
#[tokio::test]
async fn oversized_object_is_413_without_downloading_it() {
    let moto = Moto::start(false);
    let size = 40 << 20;
    let big: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    moto.seed(&[("huge.jpg", big), ("empty.jpg", Vec::new())])
        .await;
    let proxy = Proxy::start(moto.addr()).await;
    let s3 = s3_builder(&proxy.endpoint())
        .set("ROSS__LIMITS__MAX_SOURCE_BYTES", "1048576")
        .start_s3(moto.credentials.clone())
        .await;
    let reply = s3.get("/200/250/crop/huge.jpg").await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "source-too-large");
    // Give anything still in flight time to show up in the count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let moved = proxy.bytes_down();
    println!("oversized object: {moved} of {size} bytes transferred");
    assert!(moved < 1_100_000, "{moved} of {size} bytes transferred");
    let empty = s3.get("/200/250/crop/empty.jpg").await;
    assert_eq!(empty.status, 415, "{}", empty.text());
}

/// The real binary takes its credentials from the standard AWS chain (here the environment,
/// as OpenRoss did) and its S3 settings from `ROSS__SOURCE__*`.
#[test]
fn the_binary_reads_credentials_from_the_aws_environment() {
    let moto = Moto::start(true);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(moto.seed(&[("x/Dune.jpg", corpus_file("photos/Dune.jpg"))]));
    let dir = tempfile::tempdir().unwrap();
    let endpoint = moto.endpoint();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__SOURCE__KIND", "s3"),
            ("ROSS__SOURCE__BUCKET", BUCKET),
            ("ROSS__SOURCE__ENDPOINT", &endpoint),
            ("ROSS__SOURCE__FORCE_PATH_STYLE", "true"),
            ("AWS_ACCESS_KEY_ID", moto.credentials.access_key_id()),
            (
                "AWS_SECRET_ACCESS_KEY",
                moto.credentials.secret_access_key(),
            ),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let timeout = Duration::from_secs(20);
    let (status, body) = http_get(ross.port, "/200/250/crop/x/Dune.jpg", timeout).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(http_get(ross.port, "/ready", timeout).unwrap().0, 200);
    let (status, _) = http_get(ross.port, "/200/250/crop/x/none.jpg", timeout).unwrap();
    assert_eq!(status, 404);
}

/// With `source.events_queue`, the bucket's events reach ross through SQS (moto sends them
/// as S3 does): a replaced object's renders are purged and the next request renders the new
/// one; the message is deleted once acted on.
#[test]
fn the_events_queue_purges_a_replaced_object() {
    let moto = Moto::start(false);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(moto.seed(&[("x/Dune.jpg", corpus_file("photos/Dune.jpg"))]));
    let endpoint = moto.endpoint();
    let sqs = {
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(moto.credentials.clone())
            .http_client(crate::s3_support::http_client())
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    };
    let queue = runtime
        .block_on(sqs.create_queue().queue_name("ross-events").send())
        .unwrap()
        .queue_url
        .unwrap();
    let s3 = moto.client();
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    let notify = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .queue_arn("arn:aws:sqs:us-east-1:123456789012:ross-events")
                .events(Event::from("s3:ObjectCreated:*"))
                .events(Event::from("s3:ObjectRemoved:*"))
                .build()
                .unwrap(),
        )
        .build();
    runtime
        .block_on(
            s3.put_bucket_notification_configuration()
                .bucket(BUCKET)
                .notification_configuration(notify)
                .send(),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__SOURCE__KIND", "s3"),
            ("ROSS__SOURCE__BUCKET", BUCKET),
            ("ROSS__SOURCE__ENDPOINT", &endpoint),
            ("ROSS__SOURCE__FORCE_PATH_STYLE", "true"),
            ("ROSS__SOURCE__EVENTS_QUEUE", &queue),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let timeout = Duration::from_secs(20);
    let path = "/200/250/crop/x/Dune.jpg";
    let (status, old) = http_get(ross.port, path, timeout).unwrap();
    assert_eq!(status, 200);
    runtime
        .block_on(
            s3.put_object()
                .bucket(BUCKET)
                .key("x/Dune.jpg")
                .body(corpus_file("photos/Storm.jpg").into())
                .send(),
        )
        .unwrap();
    let started = Instant::now();
    loop {
        let (status, body) = http_get(ross.port, path, timeout).unwrap();
        assert_eq!(status, 200);
        if body != old {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the replaced object's render is still served 5 s later:\n{}",
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "events queue: fresh after {} ms",
        started.elapsed().as_millis()
    );
    let (_, metrics) = http_get(ross.port, "/metrics", timeout).unwrap();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(
        metrics.contains("ross_source_changes_total{noticed=\"queue\",outcome=\"purged\"} 1"),
        "{metrics}"
    );
    // Acted on, the messages are gone from the queue (the set-up's test event too).
    use aws_sdk_sqs::types::QueueAttributeName as Attribute;
    let left = || {
        let answer = runtime
            .block_on(
                sqs.get_queue_attributes()
                    .queue_url(&queue)
                    .attribute_names(Attribute::All)
                    .send(),
            )
            .unwrap();
        let attributes = answer.attributes.unwrap_or_default();
        [
            Attribute::ApproximateNumberOfMessages,
            Attribute::ApproximateNumberOfMessagesNotVisible,
        ]
        .map(|name| attributes.get(&name).cloned().unwrap_or_default())
    };
    let started = Instant::now();
    while left() != ["0", "0"] {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "messages left in the queue: {:?}",
            left()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
