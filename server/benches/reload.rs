//! The memory cost of hot reloads, measured on the real server: `ross serve` with `crop` in
//! its plugin folder, the plugin published again (by rename) 100 times, each reload waited
//! for (`ross_plugin_loads_total` on `/metrics`) and followed by one render. Plugins are
//! loaded only by render workers, which exit with their generation, so the server's resident
//! memory and its mappings of plugin copies should not move; the figures show whether they do.
//!
//! `cargo bench -p ross --bench reload` after `cargo build --release --workspace`.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{build_dir, free_port, get, status_mib};

const RELOADS: usize = 100;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Mappings of plugin copies in process `pid`, and the kilobytes they span.
fn plugin_maps(pid: u32) -> (usize, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut count = 0;
    let mut kib = 0;
    for line in maps.lines().filter(|l| l.contains("loaded-plugins")) {
        let range = line.split_whitespace().next().unwrap();
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        kib += (end - start) / 1024;
        count += 1;
    }
    (count, kib)
}

/// The processes whose parent is `pid` (any of its threads): the server's workers.
fn children(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .map(|t| {
                    std::fs::read_to_string(t.path().join("children"))
                        .map(|c| c.split_whitespace().count())
                        .unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0)
}

fn loads(port: u16) -> u64 {
    let (_, text) = get(port, "/metrics").unwrap();
    text.lines()
        .find(|l| l.starts_with("ross_plugin_loads_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let build = build_dir();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let work = tempfile::tempdir().unwrap();
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let built = build.join("libcrop.so");
    let installed = plugins.join("libcrop.so");
    let publish = || {
        let tmp = plugins.join(".libcrop.so.new");
        std::fs::copy(&built, &tmp).unwrap();
        std::fs::rename(&tmp, &installed).unwrap();
    };
    publish();
    let port = free_port();
    let server = Running(
        Command::new(build.join("ross"))
            .arg("serve")
            .env("ROSS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("ROSS__SOURCE__ROOT", &corpus)
            .env("ROSS__DATA_DIR", work.path().join("data"))
            .env("ROSS__PLUGINS__DIR", &plugins)
            .env("ROSS__WHITELIST__ENABLED", "false")
            .env("ROSS__LOG__ACCESS", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = server.0.id();
    let started = Instant::now();
    while get(port, "/health").map_or(0, |r| r.0) != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ross did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let render = |i: usize| {
        let (status, _) = get(port, &format!("/{}/300/crop/photos/Dune.jpg", 200 + i)).unwrap();
        assert_eq!(status, 200);
    };
    render(0);
    let before = (status_mib(pid, "VmRSS:"), plugin_maps(pid), children(pid));
    let started = Instant::now();
    for i in 1..=RELOADS {
        let seen = loads(port);
        publish();
        let waited = Instant::now();
        while loads(port) == seen {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "reload {i} not seen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        render(i);
    }
    let took = started.elapsed();
    // Workers of old generations exit as their last job ends.
    std::thread::sleep(Duration::from_millis(500));
    let after = (status_mib(pid, "VmRSS:"), plugin_maps(pid), children(pid));
    let copies = std::fs::read_dir(work.path().join("data/loaded-plugins"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!("ross reload cost: the server with libcrop.so, {RELOADS} reloads, each followed by one render");
    println!("{:<40} {:>10} {:>10}", "", "before", "after");
    println!(
        "{:<40} {:>6} MiB {:>6} MiB",
        "server resident (VmRSS)", before.0, after.0
    );
    println!(
        "{:<40} {:>10} {:>10}",
        "plugin copies mapped by the server", before.1 .0, after.1 .0
    );
    println!(
        "{:<40} {:>10} {:>10}",
        "worker processes", before.2, after.2
    );
    println!("{:<40} {:>10} {:>10}", "plugin copies on disk", "", copies);
    println!(
        "reload time: {:.0} ms each, seen on /metrics (settle time, copy, a worker's checks and \
         test render, swap, a render)",
        took.as_secs_f64() * 1000.0 / RELOADS as f64
    );
}
