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
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body_at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 4);
    Ok((status, raw[body_at..].to_vec()))
}

pub struct Ross {
    pub child: Child,
    pub port: u16,
}

impl Ross {
    pub fn start(dir: &Path, extra: &[(&str, &str)]) -> Ross {
        let port = free_port();
        let mut cmd = Command::new(build_dir().join("ross"));
        cmd.arg("serve")
            .env("ROSS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("ROSS__SOURCE__ROOT", corpus())
            .env("ROSS__CACHE__DIR", dir.join("cache"))
            .env("ROSS__DATA_DIR", dir.join("data"))
            .env("ROSS__WHITELIST__ENABLED", "false")
            .env("ROSS__PLUGINS__DIR", build_dir())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap());
        for (k, v) in extra {
            cmd.env(k, v);
        }
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
        Ross { child, port }
    }
}

impl Drop for Ross {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
