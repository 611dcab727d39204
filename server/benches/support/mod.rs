//! What the benchmarks that run the `ross` binary share: where the build is, a free port, a
//! plain HTTP GET and the memory figures of a process.

// Each benchmark includes this module and uses part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The folder holding the `ross` binary and the mode plugins (`target/release`), checked.
pub fn build_dir() -> PathBuf {
    // A bench runs from `target/release/deps`.
    let build = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(
        build.join("ross").exists() && build.join("libcrop.so").exists(),
        "build the workspace first: cargo build --release --workspace"
    );
    build
}

/// A TCP port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET on a new connection: the status and the whole response as text.
pub fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, text))
}

/// A memory figure of `/proc/{pid}/status` (`VmRSS:`, `VmHWM:`), in MiB.
pub fn status_mib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// A process killed when dropped, with its group: nginx's workers are children of its
/// master, and killing the master alone leaves them running, holding the port.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to a minute for `path` on `port` to answer 200; `what` names the server.
pub fn wait_for(port: u16, path: &str, what: &str) {
    let started = Instant::now();
    while get(port, path).map_or(0, |r| r.0) != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not answer {path}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts thumbor (`program`, 7.8 from `target/bench-env`) on a free port with its file loader
/// on `media`, nothing stored, results kept in `results` (`None`: not kept), two engine threads,
/// quality 90, logging errors only; returns it once it answers, and its port. Its settings
/// file goes in `dir`.
pub fn start_thumbor(
    program: &Path,
    dir: &Path,
    media: &Path,
    results: Option<&Path>,
) -> (Running, u16) {
    let port = free_port();
    let conf = dir.join("thumbor.conf");
    let result_storage = match results {
        Some(results) => format!(
            "RESULT_STORAGE = 'thumbor.result_storages.file_storage'\n\
             RESULT_STORAGE_FILE_STORAGE_ROOT_PATH = '{}'\n\
             RESULT_STORAGE_STORES_UNSAFE = True\n",
            results.display()
        ),
        None => "RESULT_STORAGE = None\n".to_owned(),
    };
    std::fs::write(
        &conf,
        format!(
            "LOADER = 'thumbor.loaders.file_loader'\n\
             FILE_LOADER_ROOT_PATH = '{}'\n\
             STORAGE = 'thumbor.storages.no_storage'\n\
             {result_storage}\
             ENGINE_THREADPOOL_SIZE = 2\n\
             QUALITY = 90\n\
             MAX_AGE = 604800\n",
            media.display()
        ),
    )
    .unwrap();
    let thumbor = Running(
        Command::new(program)
            .arg("-p")
            .arg(port.to_string())
            .arg("-i")
            .arg("127.0.0.1")
            .arg("-c")
            .arg(&conf)
            .arg("-l")
            .arg("error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(port, "/healthcheck", "thumbor");
    (thumbor, port)
}
