use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{build_dir, corpus, fixture_plugin, plugin_folder};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Minimal HTTP/1.1 GET: status and body.
fn http_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<(u16, Vec<u8>)> {
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

struct Ross {
    child: Child,
    port: u16,
}

impl Ross {
    fn start(dir: &Path, extra: &[(&str, &str)]) -> Ross {
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

/// A bad config stops start-up with one line per bad key, naming it; exit code 2.
#[test]
fn bad_configuration_names_every_key() {
    let out = Command::new(build_dir().join("ross"))
        .arg("check-config")
        .env("ROSS__LIMITS__MAX_WIDTH", "wide")
        .env("ROSS__WHITELIST__SIZES", "72x72,big")
        .env("ROSS__NOPE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 3, "{err}");
    for needle in [
        "limits.max_width",
        "ROSS__LIMITS__MAX_WIDTH",
        "whitelist.sizes",
        "nope",
    ] {
        assert!(err.contains(needle), "{needle} not in {err}");
    }
    let ok = Command::new(build_dir().join("ross"))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(ok.status.success());
    let text = String::from_utf8(ok.stdout).unwrap();
    assert!(
        text.contains("server.listen = \"127.0.0.1:8080\""),
        "{text}"
    );
}

/// A broken plugin file is logged and start-up goes on.
#[test]
fn broken_plugins_do_not_stop_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(&[
        build_dir().join("libcrop.so"),
        fixture_plugin("abi_mismatch_plugin"),
    ]);
    std::fs::write(plugins.path().join("libbroken.so"), b"garbage").unwrap();
    let ross = Ross::start(
        dir.path(),
        &[("ROSS__PLUGINS__DIR", plugins.path().to_str().unwrap())],
    );
    let (status, _) = http_get(
        ross.port,
        "/100/100/crop/photos/Dune.jpg",
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(status, 200);
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        log.contains("libbroken.so") && log.contains("not a loadable shared library"),
        "{log}"
    );
    assert!(
        log.contains("libabi_mismatch_plugin.so") && log.contains("incompatible plugin ABI"),
        "{log}"
    );
}

/// Killing the server while it renders leaves no partial file in the cache: every variant
/// file present is a whole image, and the next start clears unfinished temporaries.
#[test]
fn a_render_killed_half_way_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut ross = Ross::start(dir.path(), &[("ROSS__LIMITS__MAX_CONCURRENT_RENDERS", "1")]);
    let port = ross.port;
    let clients: Vec<_> = (0..12)
        .map(|i| {
            std::thread::spawn(move || {
                let path = format!("/{}/1500/crop/webp/symbolic-d.webp", 1500 + i);
                let _ = http_get(port, &path, Duration::from_secs(30));
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    ross.child.kill().unwrap(); // SIGKILL: no clean-up runs
    ross.child.wait().unwrap();
    for c in clients {
        c.join().unwrap();
    }
    let variants = dir.path().join("cache/1500");
    let mut complete = 0;
    for entry in std::fs::read_dir(&variants).into_iter().flatten().flatten() {
        let file = entry.path().join("crop/webp/symbolic-d.webp");
        if file.exists() {
            // Variants are JPEG whatever the key's extension: decode by content.
            let bytes = std::fs::read(&file).unwrap();
            let img = image::load_from_memory(&bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(img.height(), 1500);
            complete += 1;
        }
    }
    assert!(
        complete < 12,
        "every render finished before the kill; the test proved nothing"
    );
    drop(ross);
    let _restarted = Ross::start(dir.path(), &[]);
    let leftovers = std::fs::read_dir(dir.path().join("cache/.tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "temporaries survived a restart");
}
