//! Test harness: builders for servers under test, paths to the built plugins and corpus, and
//! image comparison helpers. Each server gets its own temporary folders.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::config::Credentials;
use http_body_util::BodyExt;
use image::RgbImage;
use poem::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use poem::http::{HeaderMap, Method};
use ross::source::S3Source;
use ross::AppState;
use ross_config::{Settings, SourceSettings};
use tempfile::TempDir;

/// The shared test corpus (`../shared/corpus` from the repository root).
pub fn corpus() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    assert!(
        root.is_dir(),
        "the test corpus is expected at {}",
        root.display()
    );
    root.canonicalize().unwrap()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `target/<profile>`: where the workspace build leaves `ross` and the mode plugins.
pub fn build_dir() -> PathBuf {
    // This test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for needed in ["libcrop.so", "libresize.so", "libresizecomp.so", "ross"] {
        assert!(
            dir.join(needed).exists(),
            "{} is missing: build the workspace first (cargo build --workspace --examples)",
            dir.join(needed).display()
        );
    }
    dir
}

/// A mode plugin built by the workspace, such as `built("crop")` for `libcrop.so`.
pub fn built(name: &str) -> PathBuf {
    build_dir().join(format!("lib{name}.so"))
}

/// A test fixture plugin built from `plugin-api/examples/`.
pub fn fixture_plugin(name: &str) -> PathBuf {
    let path = build_dir().join("examples").join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} is missing: build with --examples",
        path.display()
    );
    path
}

/// Mode `name` of the plugin `file`, opened in this (test) process: for what only a worker
/// asks a plugin (its decode need), which the server never loads itself.
pub fn mode_code(file: &Path, name: &str) -> ross::plugins::ModeCode {
    ross::plugins::ModeCode::open(file, file)
        .unwrap()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{} provides no mode {name}", file.display()))
}

/// A folder holding copies of the given plugin files.
pub fn plugin_folder(files: &[PathBuf]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    dir
}

/// Settings for a server under test, as `ROSS__*` overrides on top of the defaults.
pub struct TestServerBuilder {
    env: Vec<(String, String)>,
}

/// A server in this process, serving through `ross::run` on a socket of its own
/// (127.0.0.1, a free port) as `ross serve` does: every request passes the HTTP layer (the
/// connection bounds, the memory-hit fast path, the router). It has its own cache and data
/// folders; dropping it shuts it down and waits until it has stopped.
pub struct TestServer {
    /// The server's state, for looking at counters.
    pub state: Arc<AppState>,
    client: Client,
    _running: Running,
    /// Holds the cache and data folders (unless given); removed when the server is dropped.
    _dir: Option<TempDir>,
}

/// `ross::run` on a runtime and thread of its own, until dropped. The state's own background
/// work (the plugin watcher, the pipes of the workers started with it) stays on the test's
/// runtime, where the state was made, as before: a test that blocks its thread for long can
/// still stall renders.
struct Running {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(state: Arc<AppState>) -> (Running, u16) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("ross-test-server-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let stopped = async move {
                    let _ = stop.await;
                };
                runtime
                    .block_on(ross::run(listener, state, stopped))
                    .expect("the test server serves");
            })
            .unwrap();
        (
            Running {
                shutdown: Some(shutdown),
                thread: Some(thread),
            },
            port,
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Makes requests to a test server, each on a connection of its own.
pub struct Client {
    port: u16,
}

impl Client {
    pub fn request(&self, method: Method, path: impl Into<String>) -> RequestBuilder {
        RequestBuilder {
            port: self.port,
            method,
            path: path.into(),
            headers: HeaderMap::new(),
            body: Vec::new(),
        }
    }

    pub fn get(&self, path: impl Into<String>) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: impl Into<String>) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub fn delete(&self, path: impl Into<String>) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }
}

/// A request being put together; sent by [`TestServer::request`].
pub struct RequestBuilder {
    port: u16,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl RequestBuilder {
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: std::fmt::Debug,
        V: TryInto<HeaderValue>,
        V::Error: std::fmt::Debug,
    {
        self.headers
            .append(name.try_into().unwrap(), value.try_into().unwrap());
        self
    }

    pub fn content_type(self, value: &str) -> Self {
        self.header(CONTENT_TYPE, value)
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends it over HTTP/1.1 and reads the whole answer.
    pub async fn send(mut self) -> Reply {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("the test server accepts");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        let connection = tokio::spawn(connection);
        if !self.headers.contains_key(HOST) {
            let host = format!("127.0.0.1:{}", self.port);
            self.headers.insert(HOST, host.parse().unwrap());
        }
        let mut req = poem::http::Request::builder()
            .method(self.method)
            .uri(self.path)
            .body(http_body_util::Full::new(bytes::Bytes::from(self.body)))
            .unwrap();
        *req.headers_mut() = self.headers;
        let resp = sender.send_request(req).await.expect("an answer");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        drop(sender);
        let _ = connection.await;
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// The admin token of in-process test servers.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123";

/// A response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: poem::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The body decoded as an image (any format `image` reads).
    pub fn image(&self) -> RgbImage {
        image::load_from_memory(&self.body)
            .unwrap_or_else(|e| panic!("body is not an image ({e}): {:?}", self.text()))
            .into_rgb8()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }
}

impl TestServer {
    /// A builder serving the corpus with the whitelist off and the built plugins.
    pub fn builder() -> TestServerBuilder {
        // Render workers are `ross worker` processes: this test binary is not `ross`.
        ross::worker::use_program(build_dir().join("ross"));
        TestServerBuilder { env: Vec::new() }
            .set("ROSS__SOURCE__ROOT", corpus().to_str().unwrap())
            .set("ROSS__WHITELIST__ENABLED", "false")
            .set("ROSS__PLUGINS__DIR", build_dir().to_str().unwrap())
            .set("ROSS__ADMIN__TOKEN", ADMIN_TOKEN)
    }

    /// An admin API call (`path` under `/admin/api`) with the token and a JSON body.
    pub async fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        let method: Method = method.parse().unwrap();
        let req = self
            .client
            .request(method, format!("/admin/api{path}"))
            .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
            .content_type("application/json")
            .body(body.to_owned());
        self.request(req).await
    }

    /// Waits until start-up reconciliation and every purge have finished.
    pub async fn settled(&self) {
        let started = std::time::Instant::now();
        loop {
            let stats = self.state.cache.stats();
            if stats.reconciled && stats.purges_running == 0 {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the cache did not settle: {stats:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(self.client.get(path)).await
    }

    pub async fn request(&self, req: RequestBuilder) -> Reply {
        req.send().await
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.state.settings.cache.dir.clone()
    }
}

impl TestServerBuilder {
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn media(self, dir: &Path) -> Self {
        self.set("ROSS__SOURCE__ROOT", dir.to_str().unwrap())
    }

    pub fn plugins(self, dir: &Path) -> Self {
        self.set("ROSS__PLUGINS__DIR", dir.to_str().unwrap())
    }

    pub fn whitelist(self, sizes: &str) -> Self {
        self.set("ROSS__WHITELIST__ENABLED", "true")
            .set("ROSS__WHITELIST__SIZES", sizes)
    }

    /// The settings this builder describes, with cache and data under `dir`.
    pub fn settings(&self, dir: &Path) -> Settings {
        let mut env = vec![
            (
                "ROSS__CACHE__DIR".to_owned(),
                dir.join("cache").to_str().unwrap().to_owned(),
            ),
            (
                "ROSS__DATA_DIR".to_owned(),
                dir.join("data").to_str().unwrap().to_owned(),
            ),
        ];
        env.extend(self.env.iter().cloned());
        Settings::from_parts(None, None, env).expect("test settings are valid")
    }

    pub async fn start(self) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::new(self.settings(dir.path()))
            .await
            .expect("server starts");
        TestServer::around(state, Some(dir))
    }

    /// Starts with the cache and data folders under `dir`, which outlives the server: a
    /// server started again there finds what this one left.
    pub async fn start_at(self, dir: &Path) -> TestServer {
        let state = AppState::new(self.settings(dir))
            .await
            .expect("server starts");
        TestServer::around(state, None)
    }

    /// Starts a server whose S3 source (the `ROSS__SOURCE__*` keys set) signs with
    /// `credentials` instead of the process's AWS chain, which tests running side by side
    /// cannot share.
    pub async fn start_s3(self, credentials: Credentials) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let settings = self.set("ROSS__SOURCE__KIND", "s3").settings(dir.path());
        let SourceSettings::S3(s3) = &settings.source else {
            unreachable!("source.kind is s3")
        };
        let source = S3Source::connect(s3, Some(credentials)).await;
        let state =
            tokio::task::spawn_blocking(move || AppState::with_source(settings, Arc::new(source)))
                .await
                .unwrap()
                .expect("server starts");
        TestServer::around(state, Some(dir))
    }
}

impl TestServer {
    fn around(state: Arc<AppState>, dir: Option<TempDir>) -> TestServer {
        let (running, port) = Running::start(state.clone());
        TestServer {
            state,
            client: Client { port },
            _running: running,
            _dir: dir,
        }
    }
}

/// A memory figure of this process (`VmRSS:`, `VmHWM:`), in KiB.
pub fn status_kib(field: &str) -> u64 {
    status_kib_of(std::process::id(), field)
}

/// A memory figure of process `pid` (`VmRSS:`, `VmHWM:`), in KiB.
pub fn status_kib_of(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Mean absolute difference per channel value (0..255) of two images of the same size.
pub fn mae(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions(), "images differ in size");
    let total: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    total as f64 / a.as_raw().len() as f64
}

/// Every corpus file a server must render (everything outside `bad/`), as keys.
pub fn good_corpus_keys() -> Vec<String> {
    let mut keys = Vec::new();
    for sub in [
        "photos",
        "jpeg-variants",
        "png",
        "webp",
        "exif-orientation",
        "openross",
    ] {
        let mut names: Vec<String> = std::fs::read_dir(corpus().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| {
                let n = n.to_ascii_lowercase();
                [".jpg", ".jpeg", ".png", ".gif", ".webp"]
                    .iter()
                    .any(|ext| n.ends_with(ext))
            })
            .collect();
        names.sort();
        keys.extend(names.into_iter().map(|n| format!("{sub}/{n}")));
    }
    keys
}

/// A tmpfs of a given size mounted for a test (as root), unmounted when dropped: a small
/// file system to fill.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `path` (created); `None` where mounting is not allowed
    /// (not root): the caller skips, saying so.
    pub fn mount(path: &Path, bytes: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs {
            path: path.to_owned(),
        })
    }

    /// Bytes free on it.
    pub fn free(&self) -> u64 {
        let out = std::process::Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&self.path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        parts.next().unwrap() * parts.next().unwrap()
    }

    /// Fills it until `left` bytes are free, with the file `filler`.
    pub fn fill_to(&self, left: u64) -> PathBuf {
        let filler = self.path.join("filler");
        let size = self.free().saturating_sub(left);
        std::fs::write(&filler, vec![0u8; size as usize]).unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
