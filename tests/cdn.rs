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

    // A new version of a mode.
    cache_all();
    let started = Instant::now();
    publish(&fixture_plugin("swap_blue"), plugins.path(), "libswap.so");
    took.push((
        "new version",
        fresh_within(&varnish, ross.port, swapped, started),
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
