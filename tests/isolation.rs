//! Renders in sandboxed worker processes: a mode that hangs, crashes, aborts, takes all memory
//! or tries to leave its sandbox costs its own request, never the server; reloads leave the
//! server flat; configuration mistakes stop start-up instead of costing the cache. The
//! fixtures (`plugin-api/examples/*ing_plugin.rs`) render like `crop` below 100 px wide and
//! misbehave from there.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{http_get, Ross};
use crate::util::{build_dir, built, fixture_plugin, plugin_folder, TestServer, ADMIN_TOKEN};

/// A server with `crop` and the fixture `fixture`, renders timed out after `timeout_ms`.
async fn server_with(fixture: &str, timeout_ms: &str, extra: &[(&str, &str)]) -> TestServer {
    let plugins = plugin_folder(&[built("crop"), fixture_plugin(fixture)]);
    let mut builder = TestServer::builder()
        .plugins(plugins.path())
        .set("ROSS__LIMITS__RENDER_TIMEOUT_MS", timeout_ms)
        .set("ROSS__LIMITS__MAX_CONCURRENT_RENDERS", "1");
    for (k, v) in extra {
        builder = builder.set(k, v);
    }
    let server = builder.start().await;
    // The folder is copied at load; the server keeps no handle on it.
    drop(plugins);
    server
}

fn code(reply: &crate::util::Reply) -> String {
    reply.json()["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// A render that never returns gets 503 render-timeout at the timeout, its worker is killed,
/// and the one render slot comes back at once: the next render is served right after.
#[tokio::test]
async fn a_stalled_render_is_killed_and_its_slot_comes_back() {
    let server = server_with("stalling_plugin", "800", &[]).await;
    let started = Instant::now();
    let r = server.get("/200/200/stall/photos/Dune.jpg").await;
    let stalled = started.elapsed();
    assert_eq!((r.status, code(&r).as_str()), (503, "render-timeout"));
    assert!(r.header("retry-after").parse::<u32>().is_ok());
    assert!(
        stalled < Duration::from_secs(3),
        "answered after {stalled:?}"
    );
    let after = Instant::now();
    let r = server.get("/300/300/crop/photos/Storm.jpg").await;
    let back = after.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    println!("the stalled render's slot came back and rendered a crop in {back:?}");
    assert!(
        back < Duration::from_secs(2),
        "the slot came back after {back:?}"
    );
    assert_eq!(server.state.metrics.counts().worker_timeouts, 1);
}

/// A null write and an abort() kill their worker: each is a 500 render-crashed that names
/// nothing inside, the server serves on, and a fresh worker renders the next request.
#[tokio::test]
async fn crashes_and_aborts_fail_their_request_only() {
    for (fixture, mode) in [("crashing_plugin", "crash"), ("aborting_plugin", "abort")] {
        let server = server_with(fixture, "10000", &[]).await;
        let hit = "/120/120/crop/photos/Dune.jpg";
        assert_eq!(server.get(hit).await.status, 200);
        let r = server
            .get(&format!("/300/300/{mode}/photos/Dune.jpg"))
            .await;
        assert_eq!(
            (r.status, code(&r).as_str()),
            (500, "render-crashed"),
            "{mode}"
        );
        assert!(
            !r.text().contains("SIG"),
            "internals in the body: {}",
            r.text()
        );
        let again = server.get(hit).await;
        assert_eq!((again.status, again.header("x-cache")), (200, "HIT"));
        let r = server.get("/310/300/crop/photos/Wood.jpg").await;
        assert_eq!(r.status, 200, "after {mode}: {}", r.text());
        // Below 100 px the mode renders like crop: its worker is a new one.
        let r = server.get(&format!("/90/90/{mode}/photos/Dune.jpg")).await;
        assert_eq!(r.status, 200, "{mode} below 100 px: {}", r.text());
        assert_eq!(server.state.metrics.counts().worker_crashes, 1);
    }
}

/// A mode that allocates 8 GiB meets its worker's address-space limit: 503 out-of-memory for
/// that request, and this process (the server) does not grow.
#[tokio::test]
async fn a_render_over_its_memory_fails_alone() {
    let server = server_with(
        "greedy_plugin",
        "10000",
        &[(
            "ROSS__LIMITS__WORKER_MEMORY_BYTES",
            &(640u64 << 20).to_string(),
        )],
    )
    .await;
    let rss = || crate::util::status_kib("VmRSS:");
    let before = rss();
    let r = server.get("/300/300/greedy/photos/Dune.jpg").await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (503, "out-of-memory"),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").parse::<u32>().is_ok());
    let grown = rss().saturating_sub(before);
    assert!(grown < 200 << 10, "the server grew by {grown} KiB");
    assert_eq!(
        server.get("/300/300/crop/photos/Dune.jpg").await.status,
        200
    );
}

/// Three crashes within a minute quarantine the mode: its next requests are 503
/// mode-quarantined at once, without a worker; its cached renders are still served; the admin
/// API and the metrics say so. A new build of its file lifts the quarantine.
#[tokio::test]
async fn a_mode_that_keeps_crashing_is_quarantined_until_its_file_changes() {
    let plugins = plugin_folder(&[built("crop"), fixture_plugin("crashing_plugin")]);
    let server = TestServer::builder()
        .plugins(plugins.path())
        .set("ROSS__LIMITS__MAX_CONCURRENT_RENDERS", "1")
        .start()
        .await;
    let small = "/60/60/crash/photos/Dune.jpg";
    assert_eq!(server.get(small).await.status, 200);
    for i in 0..3 {
        let r = server
            .get(&format!("/{}/300/crash/photos/Dune.jpg", 300 + i))
            .await;
        assert_eq!((r.status, code(&r).as_str()), (500, "render-crashed"));
    }
    let started = Instant::now();
    let r = server.get("/400/300/crash/photos/Dune.jpg").await;
    assert_eq!((r.status, code(&r).as_str()), (503, "mode-quarantined"));
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(r.header("retry-after"), "300");
    let crashes = server.state.metrics.counts().worker_crashes;
    assert_eq!(crashes, 3, "a quarantined mode still reached a worker");
    let hit = server.get(small).await;
    assert_eq!((hit.status, hit.header("x-cache")), (200, "HIT"));
    let plugins_api = server.admin("GET", "/plugins", "").await.json();
    let crash = plugins_api["modes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "crash")
        .unwrap()
        .clone();
    assert_eq!(crash["status"], "quarantined", "{crash}");
    assert!(
        crash["quarantine"]["reason"]
            .as_str()
            .unwrap()
            .contains("crashed its worker"),
        "{crash}"
    );
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.contains("ross_mode_quarantines_total 1"),
        "{metrics}"
    );
    // A new build (here the same bytes under a new inode) is a new load of the mode.
    let file = plugins.path().join("libcrashing_plugin.so");
    let tmp = plugins.path().join(".libcrashing_plugin.so.new");
    std::fs::copy(fixture_plugin("crashing_plugin"), &tmp).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let modes = server.state.modes.clone();
    tokio::task::spawn_blocking(move || modes.load_file(&file).unwrap())
        .await
        .unwrap();
    let r = server.get("/70/60/crash/photos/Dune.jpg").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.get("/500/300/crash/photos/Dune.jpg").await;
    assert_eq!(code(&r), "render-crashed");
}

/// The escape fixture tries to create a file, open a TCP socket, run a program and read
/// /etc/passwd: every attempt fails inside the worker (all four quarters of its output
/// black) and no file appears.
#[tokio::test]
async fn a_plugin_cannot_leave_its_sandbox() {
    let marker = Path::new("/tmp/ross-escaped");
    let _ = std::fs::remove_file(marker);
    let server = server_with("escaping_plugin", "10000", &[]).await;
    let r = server.get("/400/100/escape/photos/Dune.jpg").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let image = r.image();
    for (band, what) in [
        "created a file",
        "opened a socket",
        "ran a program",
        "read /etc/passwd",
    ]
    .iter()
    .enumerate()
    {
        let x = band as u32 * 100 + 50;
        let p = image.get_pixel(x, 50).0;
        assert!(p.iter().all(|&c| c < 64), "the plugin {what}: {p:?}");
    }
    assert!(!marker.exists(), "{} was written", marker.display());
    // The same mode below 100 px renders: the sandbox does not get in a render's way.
    assert_eq!(
        server.get("/90/60/escape/photos/Dune.jpg").await.status,
        200
    );
}

/// The processes whose parent is `pid`, any thread of it.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

/// The children of `pid` once there are `n` of them (a worker that was only started to
/// check the plugins is reaped on a thread of its own, a moment after the server goes on):
/// waits up to 5 s, then returns what there is.
pub(crate) fn children_settled(pid: u32, n: usize) -> Vec<u32> {
    let started = Instant::now();
    loop {
        let now = children(pid);
        if now.len() == n || started.elapsed() > Duration::from_secs(5) {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process's state letter (`R` running, `S` sleeping...).
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// CPU time a process has used, in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of the whole line, 12 and 13 after the name.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

/// The child of `pid` that spins: the worker of a stalled render (at least half a second of
/// CPU, which no idle or starting worker has).
fn spinning_child(pid: u32) -> u32 {
    let started = Instant::now();
    loop {
        if let Some(&busy) = children(pid).iter().find(|&&p| cpu_ticks(p) >= 50) {
            return busy;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no worker spins"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A worker killed with `kill -9` in the middle of a render fails that request (500
/// render-crashed); the server serves the next one with a fresh worker.
#[test]
fn a_worker_killed_mid_render_fails_that_request_only() {
    let plugins = plugin_folder(&[built("crop"), fixture_plugin("stalling_plugin")]);
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__PLUGINS__DIR", plugins.path().to_str().unwrap()),
            ("ROSS__LIMITS__RENDER_TIMEOUT_MS", "20000"),
        ],
    );
    let port = ross.port;
    let stalled = std::thread::spawn(move || {
        http_get(
            port,
            "/200/200/stall/photos/Dune.jpg",
            Duration::from_secs(30),
        )
        .unwrap()
    });
    let busy = spinning_child(ross.child.id());
    assert!(Command::new("kill")
        .args(["-9", &busy.to_string()])
        .status()
        .unwrap()
        .success());
    let (status, body) = stalled.join().unwrap();
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("render-crashed"));
    let (status, _) = http_get(
        port,
        "/300/300/crop/photos/Dune.jpg",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(status, 200);
    let log = crate::process::log_once_it_holds(dir.path(), "mode stall: worker crashed");
    assert!(log.contains("SIGKILL"), "{log}");
}

/// A crash reaches the log and Sentry naming the mode, the stage and the signal (a local
/// endpoint stands in for Sentry).
#[test]
fn a_crash_is_reported_with_its_mode_and_signal() {
    let (sentry_port, got) = crate::hardening::sentry_sink();
    let plugins = plugin_folder(&[built("crop"), fixture_plugin("crashing_plugin")]);
    let dir = tempfile::tempdir().unwrap();
    let dsn = format!("http://public@127.0.0.1:{sentry_port}/1");
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__PLUGINS__DIR", plugins.path().to_str().unwrap()),
            ("ROSS__SENTRY__DSN", &dsn),
        ],
    );
    let (status, _) = http_get(
        ross.port,
        "/300/300/crash/photos/Dune.jpg",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(status, 500);
    let log = crate::process::log_once_it_holds(dir.path(), "worker crashed in render");
    assert!(
        log.contains("mode crash") && log.contains("SIGSEGV"),
        "{log}"
    );
    let started = Instant::now();
    while !got.lock().unwrap().iter().any(|e| {
        e.contains("\"mode\":\"crash\"") && e.contains("SIGSEGV") && e.contains("crashed in render")
    }) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "Sentry did not get the crash: {:?}",
            got.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM with a render stalled in a worker: the process exits within the shutdown grace,
/// and no worker outlives it.
#[test]
fn sigterm_with_a_stalled_render_exits_and_leaves_no_worker() {
    let plugins = plugin_folder(&[built("crop"), fixture_plugin("stalling_plugin")]);
    let dir = tempfile::tempdir().unwrap();
    let mut ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__PLUGINS__DIR", plugins.path().to_str().unwrap()),
            ("ROSS__LIMITS__RENDER_TIMEOUT_MS", "60000"),
        ],
    );
    let port = ross.port;
    std::thread::spawn(move || {
        let _ = http_get(
            port,
            "/200/200/stall/photos/Dune.jpg",
            Duration::from_secs(60),
        );
    });
    let pid = ross.child.id();
    spinning_child(pid);
    let workers = children(pid);
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    loop {
        if ross.child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let left: Vec<u32> = workers
        .into_iter()
        .filter(|p| state_of(*p).is_some_and(|s| s != 'Z'))
        .collect();
    assert!(left.is_empty(), "workers outlived the server: {left:?}");
}

/// 100 reloads of a plugin while serving: the server process never maps a plugin copy, its
/// resident memory stays flat, old workers exit and old copies are deleted.
#[test]
fn reloads_leave_the_server_flat() {
    let plugins = plugin_folder(&[built("crop")]);
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[("ROSS__PLUGINS__DIR", plugins.path().to_str().unwrap())],
    );
    let pid = ross.child.id();
    let loads = || -> u64 {
        let (_, body) = http_get(ross.port, "/metrics", Duration::from_secs(5)).unwrap();
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix("ross_plugin_loads_total ")?.parse().ok())
            .unwrap()
    };
    let render = |i: u32| {
        let path = format!("/{}/300/crop/photos/Dune.jpg", 200 + i);
        assert_eq!(
            http_get(ross.port, &path, Duration::from_secs(10))
                .unwrap()
                .0,
            200
        );
    };
    let rss = || crate::util::status_kib_of(pid, "VmRSS:");
    let publish = || {
        let tmp = plugins.path().join(".libcrop.so.new");
        std::fs::copy(built("crop"), &tmp).unwrap();
        std::fs::rename(&tmp, plugins.path().join("libcrop.so")).unwrap();
    };
    // Warm: the first reloads and renders settle allocator pools.
    for i in 0..5 {
        let seen = loads();
        publish();
        while loads() == seen {
            std::thread::sleep(Duration::from_millis(20));
        }
        render(i);
    }
    let before = rss();
    for i in 5..105 {
        let seen = loads();
        publish();
        let started = Instant::now();
        while loads() == seen {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "reload {i} not seen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        render(i);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mapped: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains("loaded-plugins"))
        .collect();
    assert!(
        mapped.is_empty(),
        "the server maps plugin copies: {mapped:?}"
    );
    assert!(
        after < before + 16 * 1024,
        "the server grew from {before} to {after} KiB over 100 reloads"
    );
    let copies = std::fs::read_dir(dir.path().join("data/loaded-plugins"))
        .unwrap()
        .count();
    assert!(copies <= 2, "{copies} plugin copies left on disk");
    let workers = children(pid).len();
    assert!(workers <= 4, "{workers} worker processes after the reloads");
}

/// A `plugins.dir` that does not exist, holds no plugin, or holds no loadable one stops
/// `ross serve` and fails `ross check-config`, each with a line naming `plugins.dir`.
#[test]
fn a_plugin_folder_without_modes_is_a_startup_error() {
    let empty = tempfile::tempdir().unwrap();
    let broken = plugin_folder(&[fixture_plugin("abi_mismatch_plugin")]);
    let missing = empty.path().join("no-such-folder");
    for dir in [missing.as_path(), empty.path(), broken.path()] {
        for command in ["serve", "check-config"] {
            let data = tempfile::tempdir().unwrap();
            let out = Command::new(build_dir().join("ross"))
                .arg(command)
                .env("ROSS__PLUGINS__DIR", dir)
                .env("ROSS__SOURCE__ROOT", crate::util::corpus())
                .env("ROSS__DATA_DIR", data.path())
                .env("ROSS__SERVER__LISTEN", "127.0.0.1:0")
                .env("ROSS__ADMIN__TOKEN", ADMIN_TOKEN)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{command} with {}: {text}",
                dir.display()
            );
            assert!(text.contains("plugins.dir"), "{command}: {text}");
        }
    }
}

/// A mode absent at start-up (a folder with some of the modes, a misspelt folder fixed later)
/// keeps its cached renders: they are purged only by a new version, an operator, or the
/// mode's removal while serving.
#[tokio::test]
async fn a_mode_absent_at_startup_keeps_its_renders() {
    let dir = tempfile::tempdir().unwrap();
    let both = plugin_folder(&[built("crop"), built("resize")]);
    let first = TestServer::builder()
        .plugins(both.path())
        .start_at(dir.path())
        .await;
    assert_eq!(
        first.get("/300/300/resize/photos/Dune.jpg").await.status,
        200
    );
    assert_eq!(first.get("/300/300/crop/photos/Dune.jpg").await.status, 200);
    drop(first);
    let crop_only = plugin_folder(&[built("crop")]);
    let second = TestServer::builder()
        .plugins(crop_only.path())
        .start_at(dir.path())
        .await;
    assert_eq!(
        second.get("/300/300/resize/photos/Dune.jpg").await.status,
        404
    );
    let stats = second.admin("GET", "/stats", "").await.json();
    assert_eq!(stats["cache"]["entries"], 2, "{stats}");
    let renders = crate::process::cache_files(&dir.path().join("cache"));
    assert!(
        renders
            .iter()
            .any(|p| p.to_string_lossy().contains("/resize/")),
        "{renders:?}"
    );
    drop(second);
    // Back with the same version: served from the cache.
    let third = TestServer::builder()
        .plugins(both.path())
        .start_at(dir.path())
        .await;
    let r = third.get("/300/300/resize/photos/Dune.jpg").await;
    assert_eq!((r.status, r.header("x-cache")), (200, "HIT"));
}
