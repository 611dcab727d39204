//! Purges reach the CDN: Debian's Varnish with the xkey module and `deploy/varnish.vcl`, in
//! front of nginx with the site `ross nginx-config` writes, in front of ross, all started
//! here on free ports. And a CDN endpoint that is down gets its purges once it is back.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::deploy::{deploy, Nginx};
use crate::process::{admin, http_exchange, Ross};
use crate::util::{built, fixture_plugin, free_port, plugin_folder};

/// varnishd with `deploy/varnish.vcl`, its backend `backend` (nginx), on `port`.
struct Varnish {
    child: Child,
    port: u16,
}

impl Varnish {
    fn start(dir: &Path, backend: u16, port: u16) -> Varnish {
        let varnishd = Path::new("/usr/sbin/varnishd");
        assert!(
            varnishd.exists(),
            "varnishd is not installed: scripts/test installs Debian's varnish"
        );
        std::fs::create_dir_all(dir).unwrap();
        let vcl =
            deploy("varnish.vcl").replace(".port = \"80\";", &format!(".port = \"{backend}\";"));
        assert!(vcl.contains(&format!(".port = \"{backend}\";")));
        std::fs::write(dir.join("ross.vcl"), vcl).unwrap();
        let child = Command::new(varnishd)
            .arg("-F")
            // As root, varnishd would drop to its own users, who cannot read this folder.
            .args(["-j", "none"])
            .arg("-n")
            .arg(dir.join("work"))
            .args(["-a", &format!("127.0.0.1:{port}")])
            .arg("-f")
            .arg(dir.join("ross.vcl"))
            .args([
                "-s",
                "malloc,64m",
                "-p",
                "default_grace=0",
                "-p",
                "thread_pools=1",
            ])
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("varnishd.log")).unwrap())
            .spawn()
            .unwrap();
        let mut varnish = Varnish { child, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = varnish.child.try_wait().unwrap() {
                panic!(
                    "varnishd exited with {status}:\n{}",
                    std::fs::read_to_string(dir.join("varnishd.log")).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "varnishd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        varnish
    }

    /// GET through Varnish: whether Varnish answered from its cache (two ids in
    /// `X-Varnish`), and the body.
    fn get(&self, path: &str) -> (bool, Vec<u8>) {
        let (status, head, body) =
            http_exchange(self.port, "GET", path, &[], b"", Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("GET {path} through Varnish: {e}"));
        assert_eq!(status, 200, "{path}: {head}");
        let ids = head
            .lines()
            .find_map(|l| l.strip_prefix("x-varnish:"))
            .map_or(0, |v| v.split_whitespace().count());
        assert!(
            !head.contains("surrogate-key") && !head.contains("xkey:"),
            "Varnish passed the tags on: {head}"
        );
        (ids == 2, body)
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies `build` into `dir` as `name`, as a deploy would (a rename into place).
fn publish(build: &Path, dir: &Path, name: &str) {
    let staged = dir.join(format!(".{name}.new"));
    std::fs::copy(build, &staged).unwrap();
    std::fs::rename(&staged, dir.join(name)).unwrap();
}

/// Waits until `path` through Varnish is fetched anew (a miss), within 10 s; how long it took.
/// `ross` is asked what it sent, should it not come.
fn fresh_within(varnish: &Varnish, ross: u16, path: &str, started: Instant) -> Duration {
    loop {
        let (hit, _) = varnish.get(path);
        if !hit {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} still cached in Varnish 10 s after its purge; ross's CDN queue: {}",
            admin(ross, "GET", "/cdn", "").1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A purge by key, by mode and by a mode's new version makes Varnish fetch the purged renders
/// anew, and only them: the other variants stay cached there.
#[test]
fn purges_reach_varnish_and_only_what_they_name_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(&[built("crop"), built("resize")]);
    publish(&fixture_plugin("swap_red"), plugins.path(), "libswap.so");
    let varnish_port = free_port();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__PLUGINS__DIR", plugins.path().to_str().unwrap()),
            ("ROSS__CDN__EDGE__KIND", "varnish"),
            (
                "ROSS__CDN__EDGE__URL",
                &format!("http://127.0.0.1:{varnish_port}/"),
            ),
        ],
    );
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(nginx_dir.join("tmp")).unwrap();
    let nginx_port = free_port();
    let site = ross.nginx_site(nginx_port, &nginx_dir, &[]);
    let _nginx = Nginx::start(&nginx_dir, &site, nginx_port);
    let varnish = Varnish::start(&dir.path().join("varnish"), nginx_port, varnish_port);

    let dune = "/200/250/crop/photos/Dune.jpg";
    let dune_resized = "/200/250/resize/photos/Dune.jpg";
    let elephants = "/200/250/crop/photos/Elephants.jpg";
    let swapped = "/200/250/swap/photos/Elephants.jpg";
    let all = [dune, dune_resized, elephants, swapped];
    let cache_all = || {
        for path in all {
            varnish.get(path);
            assert!(varnish.get(path).0, "{path} not cached by Varnish");
        }
    };
    cache_all();
    let mut took = Vec::new();

    // By key: both renders of Dune, and nothing else.
    let started = Instant::now();
    let (status, body) = admin(ross.port, "POST", "/purge", r#"{"key": "photos/Dune.jpg"}"#);
    assert_eq!(status, 200, "{body}");
    took.push(("key", fresh_within(&varnish, ross.port, dune, started)));
    fresh_within(&varnish, ross.port, dune_resized, started);
    assert!(varnish.get(elephants).0, "another key's render was purged");
    assert!(varnish.get(swapped).0);

    // By mode.
    cache_all();
    let started = Instant::now();
    let (status, body) = admin(ross.port, "POST", "/purge", r#"{"mode": "resize"}"#);
    assert_eq!(status, 200, "{body}");
    took.push((
        "mode",
        fresh_within(&varnish, ross.port, dune_resized, started),
    ));
    assert!(varnish.get(dune).0, "a crop was purged with resize");

    // A new version of a mode: fetched anew, and from the new version (the CDN is told
    // once the old version's files are gone, or nginx would hand them to it again).
    cache_all();
    let (_, red) = varnish.get(swapped);
    let started = Instant::now();
    publish(&fixture_plugin("swap_blue"), plugins.path(), "libswap.so");
    took.push((
        "new version",
        new_body_within(&varnish, ross.port, swapped, &red, started),
    ));
    assert!(varnish.get(elephants).0, "another mode's render was purged");

    let (_, cdn) = admin(ross.port, "GET", "/cdn", "");
    assert_eq!(cdn["cdns"][0]["name"], "edge");
    assert!(cdn["cdns"][0]["sent"].as_u64().unwrap() >= 3, "{cdn}");
    assert_eq!(cdn["cdns"][0]["pending"], serde_json::json!([]), "{cdn}");
    for (what, took) in &took {
        eprintln!(
            "purge by {what}: fresh through Varnish after {} ms",
            took.as_millis()
        );
        assert!(
            *took < Duration::from_secs(if *what == "new version" { 5 } else { 2 }),
            "{what}: {took:?}"
        );
    }
}

/// Requests an endpoint received: method, path and the `xkey-purge` header.
type Received = Arc<Mutex<Vec<String>>>;

/// A CDN endpoint on `port` that takes every request with 200 and notes it.
fn endpoint(port: u16, received: Received) -> std::thread::JoinHandle<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(10) {
            let mut stream = stream.unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let line = head.lines().next().unwrap_or_default().to_owned();
            let tags = head
                .lines()
                .find_map(|l| l.strip_prefix("xkey-purge:"))
                .unwrap_or_default()
                .trim()
                .to_owned();
            if line.is_empty() {
                continue;
            }
            received.lock().unwrap().push(format!("{line} [{tags}]"));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            break;
        }
    })
}

/// A purge made while the CDN is down waits (shown by the API as pending, with its error)
/// and reaches the CDN once it is back; a restart meanwhile loses nothing.
#[test]
fn a_cdn_that_is_down_gets_the_purge_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let cdn_port = free_port();
    let env = [
        ("ROSS__CDN__EDGE__KIND", "varnish"),
        (
            "ROSS__CDN__EDGE__URL",
            &format!("http://127.0.0.1:{cdn_port}/")[..],
        ),
    ];
    let ross = Ross::start(dir.path(), &env);
    let (status, body) = admin(ross.port, "POST", "/purge", r#"{"key": "photos/Dune.jpg"}"#);
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let failing = loop {
        let (_, cdn) = admin(ross.port, "GET", "/cdn", "");
        let edge = &cdn["cdns"][0];
        if edge["failures"].as_u64().unwrap_or(0) >= 1 {
            break edge.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{cdn}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        failing["pending"][0]["what"], "key photos/Dune.jpg",
        "{failing}"
    );
    assert!(failing["pending"][0]["last_error"].is_string(), "{failing}");
    // Kept across a restart.
    ross.stop();
    let ross = Ross::start(dir.path(), &env);
    let (_, cdn) = admin(ross.port, "GET", "/cdn", "");
    assert_eq!(
        cdn["cdns"][0]["pending"][0]["what"], "key photos/Dune.jpg",
        "{cdn}"
    );
    // Back: the purge arrives.
    let received: Received = Arc::default();
    let server = endpoint(cdn_port, received.clone());
    let back = Instant::now();
    while received.lock().unwrap().is_empty() {
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "the purge did not reach the CDN once it was back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.join().unwrap();
    assert_eq!(
        received.lock().unwrap()[0],
        "purge / http/1.1 [k-photos/dune.jpg]"
    );
    let started = Instant::now();
    loop {
        let (_, cdn) = admin(ross.port, "GET", "/cdn", "");
        if cdn["cdns"][0]["pending"] == serde_json::json!([]) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{cdn}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// ross, nginx with its generated site, and Varnish in front, on free ports, the CDN `edge`
/// being that Varnish.
fn front(dir: &Path, extra: &[(&str, &str)]) -> (Ross, Nginx, Varnish) {
    let varnish_port = free_port();
    let url = format!("http://127.0.0.1:{varnish_port}/");
    let mut env = vec![
        ("ROSS__CDN__EDGE__KIND", "varnish"),
        ("ROSS__CDN__EDGE__URL", url.as_str()),
    ];
    env.extend_from_slice(extra);
    let ross = Ross::start(dir, &env);
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(nginx_dir.join("tmp")).unwrap();
    let nginx_port = free_port();
    let site = ross.nginx_site(nginx_port, &nginx_dir, &[]);
    let nginx = Nginx::start(&nginx_dir, &site, nginx_port);
    let varnish = Varnish::start(&dir.join("varnish"), nginx_port, varnish_port);
    (ross, nginx, varnish)
}

/// Waits until `path` through Varnish is a miss with another body than `old`, within 10 s;
/// how long it took.
fn new_body_within(
    varnish: &Varnish,
    ross: u16,
    path: &str,
    old: &[u8],
    started: Instant,
) -> Duration {
    loop {
        let (hit, body) = varnish.get(path);
        if !hit && body != old {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} not fresh through Varnish 10 s after its original changed; ross's CDN \
             queue: {}",
            admin(ross, "GET", "/cdn", "").1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A local original replaced under the media root is noticed by ross's watcher: its renders
/// are fresh through nginx and Varnish within 2 s, other keys stay cached, and one removed
/// is gone from nginx too. Changes made while ross was stopped are found at the next start.
#[test]
fn a_replaced_local_original_is_fresh_through_nginx_and_varnish() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir_all(media.join("photos")).unwrap();
    let corpus = crate::util::corpus().join("photos");
    for name in ["Dune.jpg", "Elephants.jpg", "Storm.jpg"] {
        std::fs::copy(corpus.join(name), media.join("photos").join(name)).unwrap();
    }
    let root = media.to_str().unwrap().to_owned();
    let (ross, nginx, varnish) = front(dir.path(), &[("ROSS__SOURCE__ROOT", &root)]);
    let dune = "/200/250/crop/photos/Dune.jpg";
    let elephants = "/200/250/crop/photos/Elephants.jpg";
    for path in [dune, elephants] {
        varnish.get(path);
        assert!(varnish.get(path).0, "{path} not cached by Varnish");
    }
    let (_, old) = varnish.get(dune);

    // Replaced as deploys do, by a rename into place.
    let started = Instant::now();
    publish(&corpus.join("Storm.jpg"), &media.join("photos"), "Dune.jpg");
    let took = new_body_within(&varnish, ross.port, dune, &old, started);
    eprintln!(
        "replaced original: fresh through Varnish after {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    let (status, through_nginx) =
        crate::process::http_get(nginx.port, dune, Duration::from_secs(10)).unwrap();
    assert_eq!(status, 200);
    assert_ne!(through_nginx, old, "nginx still serves the old render");
    assert!(varnish.get(elephants).0, "another key's render was purged");

    // Removed: nginx no longer has it to serve.
    std::fs::remove_file(media.join("photos/Elephants.jpg")).unwrap();
    let started = Instant::now();
    loop {
        let (status, _) =
            crate::process::http_get(nginx.port, elephants, Duration::from_secs(10)).unwrap();
        if status == 404 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a removed original's render is still served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) =
        crate::process::http_get(ross.port, "/metrics", Duration::from_secs(10)).unwrap();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(
        metrics.contains("ross_source_changes_total{noticed=\"watch\",outcome=\"purged\"} 2"),
        "{metrics}"
    );

    // Changed while ross is stopped: found by the check at start-up.
    let port = ross.port.to_string();
    let listen = format!("127.0.0.1:{port}");
    varnish.get(dune);
    let (_, before) = varnish.get(dune);
    drop(ross);
    publish(
        &corpus.join("Elephants.jpg"),
        &media.join("photos"),
        "Dune.jpg",
    );
    let started = Instant::now();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__SOURCE__ROOT", &root),
            ("ROSS__SERVER__LISTEN", &listen),
            ("ROSS__CDN__EDGE__KIND", "varnish"),
            (
                "ROSS__CDN__EDGE__URL",
                &format!("http://127.0.0.1:{}/", varnish.port),
            ),
        ],
    );
    new_body_within(&varnish, ross.port, dune, &before, started);
}

/// An S3 event for a replaced object (posted as SNS would, with the events secret as a basic
/// authentication password) makes its renders fresh through nginx and Varnish within 2 s; the
/// same event again purges nothing (every render is of the version it names); a wrong secret
/// is refused.
#[test]
fn an_s3_event_for_a_replaced_object_makes_it_fresh() {
    use crate::s3_support::{Moto, BUCKET};
    let moto = Moto::start(false);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let corpus = crate::util::corpus().join("photos");
    let read = |name: &str| std::fs::read(corpus.join(name)).unwrap();
    runtime.block_on(moto.seed(&[("img/Dune.jpg", read("Dune.jpg"))]));
    let dir = tempfile::tempdir().unwrap();
    let endpoint = moto.endpoint();
    let secret = "events-secret-0123456789";
    let (ross, nginx, varnish) = front(
        dir.path(),
        &[
            ("ROSS__SOURCE__KIND", "s3"),
            ("ROSS__SOURCE__BUCKET", BUCKET),
            ("ROSS__SOURCE__PREFIX", "img"),
            ("ROSS__SOURCE__ENDPOINT", &endpoint),
            ("ROSS__SOURCE__FORCE_PATH_STYLE", "true"),
            ("ROSS__SOURCE__EVENTS_SECRET", secret),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let dune = "/200/250/crop/Dune.jpg";
    varnish.get(dune);
    let (hit, old) = varnish.get(dune);
    assert!(hit, "not cached by Varnish");

    let s3 = moto.client();
    let put = runtime.block_on(
        s3.put_object()
            .bucket(BUCKET)
            .key("img/Dune.jpg")
            .body(read("Storm.jpg").into())
            .send(),
    );
    let etag = put.unwrap().e_tag().unwrap().to_owned();
    let event = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": "img/Dune.jpg", "eTag": etag.trim_matches('"')}}
    }]});
    let sns = serde_json::json!({"Type": "Notification", "Message": event.to_string()}).to_string();
    let post = |password: &str| {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("sns:{password}"));
        let (status, body) = crate::process::http_request(
            ross.port,
            "POST",
            "/admin/api/source-events",
            &[("Authorization", &format!("Basic {basic}"))],
            sns.as_bytes(),
            Duration::from_secs(20),
        )
        .unwrap();
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    assert_eq!(post("wrong-secret-0123456789").0, 401);
    let started = Instant::now();
    let (status, answer) = post(secret);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["purged"], 1, "{answer}");
    let took = new_body_within(&varnish, ross.port, dune, &old, started);
    eprintln!(
        "S3 event: fresh through Varnish after {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    let (_, through_nginx) =
        crate::process::http_get(nginx.port, dune, Duration::from_secs(10)).unwrap();
    assert_ne!(through_nginx, old);
    // Delivered again: its renders are all of that version now.
    let (status, answer) = post(secret);
    assert_eq!(
        (status, &answer["purged"]),
        (200, &serde_json::json!(0)),
        "{answer}"
    );
    assert!(
        varnish.get(dune).0,
        "a repeated event purged current renders"
    );
}

/// A purge by key reaches CloudFront as an invalidation of the key's cached paths (and the
/// original's), through `aws-sdk-cloudfront`, against the S3-compatible test server's
/// CloudFront API.
#[test]
fn purges_reach_cloudfront_as_invalidations() {
    use crate::s3_support::Moto;
    use aws_sdk_cloudfront::types::{
        CustomOriginConfig, DefaultCacheBehavior, DistributionConfig, Origin, OriginProtocolPolicy,
        Origins, ViewerProtocolPolicy,
    };
    let moto = Moto::start(false);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cloudfront = aws_sdk_cloudfront::Client::from_conf(
        aws_sdk_cloudfront::Config::builder()
            .behavior_version(aws_sdk_cloudfront::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudfront::config::Region::new("us-east-1"))
            .endpoint_url(moto.endpoint())
            .credentials_provider(moto.credentials.clone())
            .http_client(crate::s3_support::http_client())
            .build(),
    );
    let origin = Origin::builder()
        .id("ross")
        .domain_name("images.example.com")
        .custom_origin_config(
            CustomOriginConfig::builder()
                .http_port(80)
                .https_port(443)
                .origin_protocol_policy(OriginProtocolPolicy::HttpOnly)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let config = DistributionConfig::builder()
        .caller_reference("ross-test")
        .comment("ross")
        .enabled(true)
        .origins(
            Origins::builder()
                .quantity(1)
                .items(origin)
                .build()
                .unwrap(),
        )
        .default_cache_behavior(
            DefaultCacheBehavior::builder()
                .target_origin_id("ross")
                .viewer_protocol_policy(ViewerProtocolPolicy::AllowAll)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let made = runtime
        .block_on(
            cloudfront
                .create_distribution()
                .distribution_config(config)
                .send(),
        )
        .unwrap();
    let id = made.distribution.unwrap().id;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = moto.endpoint();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__CDN__CF__KIND", "cloudfront"),
            ("ROSS__CDN__CF__DISTRIBUTION_ID", &id),
            ("ROSS__CDN__CF__ENDPOINT", &endpoint),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    for path in [
        "/200/250/crop/photos/Dune.jpg",
        "/100/100/resize/photos/Dune.jpg",
        "/200/250/crop/photos/Storm.jpg",
    ] {
        let (status, _) =
            crate::process::http_get(ross.port, path, Duration::from_secs(20)).unwrap();
        assert_eq!(status, 200, "{path}");
    }
    let (status, body) = admin(ross.port, "POST", "/purge", r#"{"key": "photos/Dune.jpg"}"#);
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let invalidation = loop {
        let listed = runtime
            .block_on(cloudfront.list_invalidations().distribution_id(&id).send())
            .unwrap();
        let items = listed
            .invalidation_list
            .and_then(|l| l.items)
            .unwrap_or_default();
        if let Some(first) = items.first() {
            break first.id.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no invalidation 10 s after the purge; ross's CDN queue: {}",
            admin(ross.port, "GET", "/cdn", "").1
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let got = runtime
        .block_on(
            cloudfront
                .get_invalidation()
                .distribution_id(&id)
                .id(invalidation)
                .send(),
        )
        .unwrap();
    let mut paths = got
        .invalidation
        .unwrap()
        .invalidation_batch
        .unwrap()
        .paths
        .unwrap()
        .items
        .unwrap_or_default();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/100/100/resize/photos/Dune.jpg",
            "/200/250/crop/photos/Dune.jpg",
            "/photos/Dune.jpg"
        ]
    );
    let (_, cdn) = admin(ross.port, "GET", "/cdn", "");
    assert_eq!(cdn["cdns"][0]["pending"], serde_json::json!([]), "{cdn}");
}
