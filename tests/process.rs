//! A real `ross` process on a free port, for what an in-process server cannot show: start-up,
//! crashes, and settings read from the process environment (such as AWS credentials).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{build_dir, corpus, free_port};

/// Minimal HTTP/1.1 GET: status and body.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(port, "GET", path, &[], b"", timeout)
}

/// The admin token the processes started here use.
pub const ADMIN_TOKEN: &str = "process-admin-token-0123";

/// An admin API call with the test token and a JSON body: status and body as JSON.
pub fn admin(port: u16, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, body) = http_request(
        port,
        method,
        &format!("/admin/api{path}"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
        Duration::from_secs(120),
    )
    .unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// `dir/log` (the log of a [`Ross`] started in `dir`) once it holds `needle`, or after 5 s:
/// log lines are written by a thread of their own, moments after the request.
pub fn log_once_it_holds(dir: &Path, needle: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        if log.contains(needle) || started.elapsed() > Duration::from_secs(5) {
            return log;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Minimal HTTP/1.1 request: status and body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    http_exchange(port, method, path, headers, body, timeout)
        .map(|(status, _, body)| (status, body))
}

/// Minimal HTTP/1.1 request: status, response head (lower-cased) and body.
pub fn http_exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body_at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&raw[..body_at]).to_lowercase();
    Ok((status, head, raw[body_at..].to_vec()))
}

pub struct Ross {
    pub child: Child,
    pub port: u16,
    /// The settings it was started with, as `ROSS__*` variables.
    env: Vec<(String, String)>,
}

/// Every file under `dir`, leaving out the folders whose name starts with a dot at its top
/// (ross's own: files being written).
pub fn cache_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if d == dir && e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => out.push(e.path()),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// Bytes of the files [`cache_files`] lists.
pub fn cache_bytes(dir: &Path) -> u64 {
    cache_files(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

impl Ross {
    /// Waits until start-up reconciliation and purges are done; returns the admin stats.
    pub fn settled(&self) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let (status, stats) = admin(self.port, "GET", "/stats", "");
            assert_eq!(status, 200, "{stats}");
            let cache = &stats["cache"];
            if cache["reconciled"] == true && cache["purges_running"] == 0 {
                return stats;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the cache did not settle: {stats}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn start(dir: &Path, extra: &[(&str, &str)]) -> Ross {
        Ross::start_with(dir, extra, None)
    }

    /// [`Ross::start`] with the process's address space limited to `address_space` bytes
    /// (`ulimit -v`), so that large allocations fail as on a machine short of memory.
    pub fn start_with(dir: &Path, extra: &[(&str, &str)], address_space: Option<u64>) -> Ross {
        // A listen address among `extra` (a restart on the same port) is kept.
        let port = extra
            .iter()
            .find(|(k, _)| *k == "ROSS__SERVER__LISTEN")
            .and_then(|(_, v)| v.rsplit(':').next()?.parse().ok())
            .unwrap_or_else(free_port);
        let ross = build_dir().join("ross");
        let mut cmd = match address_space {
            None => Command::new(&ross),
            Some(bytes) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg("ulimit -v \"$1\" && exec \"$0\" \"$2\"")
                    .arg(&ross)
                    .arg((bytes / 1024).to_string());
                sh
            }
        };
        let path = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
        let mut env: Vec<(String, String)> = [
            ("ROSS__SERVER__LISTEN", format!("127.0.0.1:{port}")),
            ("ROSS__SOURCE__ROOT", path(corpus())),
            ("ROSS__CACHE__DIR", path(dir.join("cache"))),
            ("ROSS__DATA_DIR", path(dir.join("data"))),
            ("ROSS__WHITELIST__ENABLED", "false".to_owned()),
            ("ROSS__PLUGINS__DIR", path(build_dir())),
            ("ROSS__ADMIN__TOKEN", ADMIN_TOKEN.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        cmd.arg("serve")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap());
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        while http_get(port, "/health", Duration::from_secs(1))
            .map(|r| r.0)
            .unwrap_or(0)
            != 200
        {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                panic!("ross exited with {status} at start-up:\n{log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "ross did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ross { child, port, env }
    }
}

/// `ross nginx-config` for the settings `env` (`ROSS__*` variables), as nginx listening on
/// 127.0.0.1:`port` with its access log in `nginx_dir`; the error is what it printed.
pub fn nginx_config<'a>(
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    port: u16,
    nginx_dir: &Path,
) -> Result<String, String> {
    let out = Command::new(build_dir().join("ross"))
        .arg("nginx-config")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--access-log")
        .arg(nginx_dir.join("access.log"))
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Ross {
    /// `ross nginx-config` for this server's settings (and `more`), as nginx listening on
    /// 127.0.0.1:`port` with its access log in `nginx_dir`.
    pub fn nginx_site(&self, port: u16, nginx_dir: &Path, more: &[(&str, &str)]) -> String {
        let env = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(more.iter().copied());
        nginx_config(env, port, nginx_dir).unwrap_or_else(|e| panic!("ross nginx-config: {e}"))
    }

    /// Stops the process as an operator would (SIGTERM) and waits for it to exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let started = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "ross did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to end by itself (at a crash point); false after `timeout`.
    pub fn ended_within(&mut self, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Ross {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
