//! A real S3-compatible server for the tests (moto's server mode, installed by `scripts/test`
//! into `target/test-env`), and a TCP proxy between ross and it that counts requests and
//! bytes and can be made slow.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::free_port;

/// The bucket every test uses.
pub const BUCKET: &str = "shop-images";

/// The virtual environment `scripts/test` installs moto into.
fn test_env() -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join("target/test-env/bin")
}

/// A moto server on 127.0.0.1, killed when dropped. In-memory: stopping it loses every
/// bucket.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    /// Credentials it accepts. With auth on, they are an IAM user's and anything else is
    /// refused; with auth off, moto accepts any.
    pub credentials: Credentials,
    auth: bool,
}

impl Moto {
    /// Starts moto on a free port. `auth`: enforce credentials (needed to test wrong ones).
    pub fn start(auth: bool) -> Moto {
        Moto::start_on(free_port(), auth)
    }

    /// Starts moto on `port` (to bring a stopped server back at the same address).
    pub fn start_on(port: u16, auth: bool) -> Moto {
        let bin = test_env().join("moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test, which installs moto into target/test-env",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if auth {
            // The IAM set-up below makes exactly three calls before auth applies.
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        let child = cmd.spawn().unwrap();
        // Wait for the port without sending a request: every request counts towards the
        // unauthenticated three.
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let credentials = if auth {
            let script =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("support/moto_iam.py");
            let out = Command::new(test_env().join("python"))
                .arg(script)
                .arg(format!("http://127.0.0.1:{port}"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "IAM set-up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            Credentials::new(
                key["id"].as_str().unwrap(),
                key["secret"].as_str().unwrap(),
                None,
                None,
                "moto-iam",
            )
        } else {
            Credentials::new("testing", "testing", None, None, "static")
        };
        Moto {
            child: Some(child),
            port,
            credentials,
            auth,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server; its port refuses connections until [`Moto::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh (empty) server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        *self = Moto::start_on(self.port, self.auth);
    }

    /// An SDK client with this server's credentials, for setting up fixtures.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let http = http_client();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(self.credentials.clone())
            .http_client(http)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Creates [`BUCKET`] and uploads `objects` (key, bytes) into it.
    pub async fn seed(&self, objects: &[(&str, Vec<u8>)]) {
        let s3 = self.client();
        s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        for (key, bytes) in objects {
            s3.put_object()
                .bucket(BUCKET)
                .key(*key)
                .body(ByteStream::from(bytes.clone()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("upload of {key:?}: {e:?}"));
        }
    }
}

/// The HTTP client the tests' SDK clients send with (the SDK's default one is not built).
pub fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy to one upstream. It records the request line of every HTTP request passing
/// through (ross sends S3 only bodiless GET and HEAD requests, so a request is one header
/// block), counts the bytes sent back, can hold every chunk of the answer for a while, and can
/// answer requests itself with S3's throttling error.
pub struct Proxy {
    pub port: u16,
    state: Arc<ProxyState>,
    accept: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    upstream: SocketAddr,
    delay_ms: AtomicU64,
    bytes_down: AtomicU64,
    fail_next: AtomicU64,
    /// Request lines containing this are refused with S3's `403 AccessDenied`.
    deny: Mutex<Option<String>>,
    requests: Mutex<Vec<String>>,
}

impl Proxy {
    /// Starts the proxy on a free port, on the current tokio runtime.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState {
            upstream,
            delay_ms: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            fail_next: AtomicU64::new(0),
            deny: Mutex::new(None),
            requests: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, shared.clone()));
            }
        });
        Proxy {
            port,
            state,
            accept,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Holds every chunk of every answer for `delay` before passing it on.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answers the next `n` requests itself with S3's `503 SlowDown`, as a throttling S3 does.
    pub fn fail_next(&self, n: u64) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Refuses every request whose request line contains `needle` with `403 AccessDenied`,
    /// as S3 answers a missing key to a reader without `s3:ListBucket`.
    pub fn deny_containing(&self, needle: &str) {
        *self.state.deny.lock().unwrap() = Some(needle.to_owned());
    }

    /// Request lines seen so far, such as `GET /shop-images/a.jpg?x-id=GetObject HTTP/1.1`.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    /// `GET` requests whose path contains `needle`.
    pub fn gets(&self, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|line| line.starts_with("GET ") && line.contains(needle))
            .count()
    }

    /// Bytes passed from the upstream to clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.state.bytes_down.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// S3's answer when it sheds load, sent by the proxy in place of the real one.
fn slow_down() -> String {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                <Message>Reduce your request rate.</Message></Error>";
    format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// S3's answer to a request the credentials may not make.
fn access_denied() -> String {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>\
                <Message>Access Denied</Message></Error>";
    format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn relay(client: TcpStream, state: Arc<ProxyState>) {
    let Ok(upstream) = TcpStream::connect(state.upstream).await else {
        return; // the client sees its connection closed, as with a server that died
    };
    let (mut client_rx, client_tx) = client.into_split();
    let client_tx = Arc::new(tokio::sync::Mutex::new(client_tx));
    let (mut upstream_rx, mut upstream_tx) = upstream.into_split();
    let up_state = state.clone();
    let up_client_tx = client_tx.clone();
    let up = async move {
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        'read: loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let request: Vec<u8> = pending.drain(..end + 4).collect();
                let line = String::from_utf8_lossy(&request)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                up_state.requests.lock().unwrap().push(line.clone());
                let shed = up_state
                    .fail_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let denied = up_state
                    .deny
                    .lock()
                    .unwrap()
                    .as_deref()
                    .is_some_and(|needle| line.contains(needle));
                let sent = if shed || denied {
                    let answer = if denied { access_denied() } else { slow_down() };
                    let mut tx = up_client_tx.lock().await;
                    tx.write_all(answer.as_bytes()).await
                } else {
                    upstream_tx.write_all(&request).await
                };
                if sent.is_err() {
                    break 'read;
                }
            }
        }
        let _ = upstream_tx.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match upstream_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay = state.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if client_tx.lock().await.write_all(&buf[..n]).await.is_err() {
                break;
            }
            state.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
        }
        let _ = client_tx.lock().await.shutdown().await;
    };
    tokio::join!(up, down);
}
