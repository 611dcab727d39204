//! Memory kept after load: the `ross` binary renders 5,000 distinct variants of the corpus
//! photos (8 clients), then its resident memory is read once it is idle, beside its peak.
//! The allocator choice in `main.rs` rests on this figure. Run with
//! `cargo bench -p ross --bench memory` after `cargo build --release --workspace`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{build_dir, free_port, get, status_mib};

const RENDERS: usize = 5_000;
const CLIENTS: usize = 8;

fn main() {
    let build = build_dir();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let photos: Vec<String> = {
        let mut names: Vec<String> = std::fs::read_dir(corpus.join("photos"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".jpg"))
            .collect();
        names.sort();
        names
    };
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(build.join("ross"))
        .arg("serve")
        .env("ROSS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("ROSS__SOURCE__ROOT", &corpus)
        .env("ROSS__DATA_DIR", work.path().join("data"))
        .env("ROSS__PLUGINS__DIR", &build)
        .env("ROSS__WHITELIST__ENABLED", "false")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while get(port, "/health").map_or(0, |r| r.0) != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "ross did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let modes = ["crop", "resize", "resizecomp"];
    let paths: Arc<Vec<String>> = Arc::new(
        (0..RENDERS)
            .map(|i| {
                format!(
                    "/{}/{}/{}/photos/{}",
                    100 + i % 900,
                    100 + (i * 7) % 900,
                    modes[i % 3],
                    photos[i % photos.len()]
                )
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (paths, next) = (paths.clone(), next.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { return };
                assert_eq!(get(port, path).map_or(0, |r| r.0), 200, "{path}");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let elapsed = t.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let (rss, peak) = (
        status_mib(child.id(), "VmRSS:"),
        status_mib(child.id(), "VmHWM:"),
    );
    println!(
        "{RENDERS} renders by {CLIENTS} clients in {:.0} s; idle resident memory after: {rss} MiB \
         (peak {peak} MiB)",
        elapsed.as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
}
