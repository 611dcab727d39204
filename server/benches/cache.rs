//! The cost of the cache index, measured against references taken in the same run:
//!
//! 1. cache-hit throughput and p99 latency over HTTP, with hit recording on, against the same
//!    server with it off (runs alternated, medians compared);
//! 2. time to purge every entry, against removing the same number of plain files, also on
//!    disk;
//! 3. time from start to first answer (and to the first cache hit) of the `ross` binary with
//!    the index full, against an empty data folder.
//!
//! Run with `cargo bench -p ross --bench cache [-- ENTRIES]` (default 100000 entries) after
//! `cargo build --release --workspace`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ross::cache::{Cache, Selector};
use ross::db::Database;
use ross::render::InProcessModes;
use ross_config::Settings;
use support::{build_dir, free_port, get};

/// Encoded size of the fake variants: a typical 200x200 thumbnail.
const VARIANT_BYTES: usize = 6_000;
/// Client connections of the hit benchmark.
const CONNECTIONS: usize = 16;
/// Length of one hit run.
const RUN: Duration = Duration::from_secs(3);
/// Runs per configuration, alternated.
const ROUNDS: usize = 3;

fn main() {
    // `cargo bench` passes `--bench` first; a number among the arguments sets the size.
    let entries: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let build = build_dir();
    let work = tempfile::tempdir().unwrap();
    let (cache_dir, data_dir, media) = (
        work.path().join("cache"),
        work.path().join("data"),
        work.path().join("media"),
    );
    std::fs::create_dir_all(&media).unwrap();

    println!("== filling the index with {entries} variants of {VARIANT_BYTES} bytes");
    let started = Instant::now();
    fill(&build, &cache_dir, &data_dir, entries);
    let fill_time = started.elapsed();
    println!(
        "filled in {:.1} s ({:.0} writes/s, each fsynced); sled takes {} MB on disk",
        fill_time.as_secs_f64(),
        f64::from(entries) / fill_time.as_secs_f64(),
        dir_bytes(&data_dir.join("sled")) / 1_000_000
    );

    println!("\n== start-up: time to first answer");
    let empty = work.path().join("empty");
    let (cold_health, _) = start_binary(
        &build,
        &media,
        &empty.join("cache"),
        &empty.join("data"),
        None,
    );
    let (full_health, full_hit) = start_binary(
        &build,
        &media,
        &cache_dir,
        &data_dir,
        Some("/100/100/crop/bench/7.jpg"),
    );
    println!(
        "empty data_dir: /health after {} ms; {entries} entries: /health after {} ms \
         (ratio {:.2}), first cache hit after {} ms",
        cold_health.as_millis(),
        full_health.as_millis(),
        full_health.as_secs_f64() / cold_health.as_secs_f64(),
        full_hit.map_or(0, |d| d.as_millis())
    );

    println!("\n== cache hits over HTTP: {CONNECTIONS} connections, {ROUNDS} alternated runs of {} s each", RUN.as_secs());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let settings = Settings::from_parts(
        None,
        None,
        [
            ("ROSS__CACHE__DIR", cache_dir.to_str().unwrap()),
            ("ROSS__DATA_DIR", data_dir.to_str().unwrap()),
            ("ROSS__SOURCE__ROOT", media.to_str().unwrap()),
            ("ROSS__PLUGINS__DIR", build.to_str().unwrap()),
            ("ROSS__PLUGINS__HOT_RELOAD", "false"),
            ("ROSS__WHITELIST__ENABLED", "false"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .unwrap();
    // Render workers are `ross worker`: this benchmark's binary is not `ross`.
    ross::worker::use_program(build.join("ross"));
    let state = runtime.block_on(ross::AppState::new(settings)).unwrap();
    while !state.cache.stats().reconciled {
        std::thread::sleep(Duration::from_millis(50));
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(ross::run(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    let mut on = Vec::new();
    let mut off = Vec::new();
    for round in 0..ROUNDS * 2 {
        let tracking = round % 2 == 0;
        state.cache.set_hit_tracking(tracking);
        let run = hit_run(port, entries);
        println!(
            "  index updates {}: {:.0} hits/s, p50 {:.2} ms, p99 {:.2} ms",
            if tracking { "on " } else { "off" },
            run.per_second,
            run.p50_ms,
            run.p99_ms
        );
        if tracking {
            on.push(run)
        } else {
            off.push(run)
        }
    }
    let median = |runs: &mut Vec<HitRun>, f: fn(&HitRun) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on_rate, off_rate) = (
        median(&mut on, |r| r.per_second),
        median(&mut off, |r| r.per_second),
    );
    let (on_p99, off_p99) = (
        median(&mut on, |r| r.p99_ms),
        median(&mut off, |r| r.p99_ms),
    );
    println!(
        "hits with the index / without: throughput {:.3}, p99 latency {:.3} (medians; the index \
         costs under 10% when throughput >= 0.90 and p99 <= 1.10)",
        on_rate / off_rate,
        on_p99 / off_p99
    );
    let _ = stop.send(());
    runtime.block_on(server).unwrap().unwrap();

    println!("\n== purging every entry");
    state.cache.set_hit_tracking(true);
    let indexed = state.cache.stats().entries;
    let started = Instant::now();
    let purged = state.cache.purge(Selector::All).unwrap();
    let purge_time = started.elapsed();
    drop(state);
    drop(runtime);
    let plain = work.path().join("plain");
    for i in 0..entries {
        let dir = plain.join(format!("{}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("{i}.jpg")), [7u8; VARIANT_BYTES]).unwrap();
    }
    // On disk, as the cache's fsynced files are: removing a file whose blocks were never
    // written costs a tenth as much here (5 us against 90 us on this ext4 with discard).
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    assert!(synced, "sync failed");
    let started = Instant::now();
    std::fs::remove_dir_all(&plain).unwrap();
    let rm_time = started.elapsed();
    println!(
        "purged {} of {indexed} entries ({} MB) in {:.2} s; removing {entries} plain files \
         (synced to disk) took {:.2} s; ratio {:.2}",
        purged.entries,
        purged.bytes / 1_000_000,
        purge_time.as_secs_f64(),
        rm_time.as_secs_f64(),
        purge_time.as_secs_f64() / rm_time.as_secs_f64()
    );
}

/// Writes `entries` variants of `crop` through the cache, recorded as the built plugin's
/// version (as a server would have).
fn fill(build: &Path, cache_dir: &Path, data_dir: &Path, entries: u32) {
    let modes = InProcessModes::load_dir(build);
    let version = modes.get("crop").unwrap().spec.version.clone();
    let db = Database::open(data_dir).unwrap();
    let metrics = std::sync::Arc::new(ross::telemetry::Metrics::new());
    let cache = Cache::open(cache_dir, 10 << 30, 64 << 20, &db, metrics).unwrap();
    cache.adopt_mode_version("crop", &version).unwrap();
    while cache.stats().purges_running > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let cache = Arc::new(cache);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (cache, version) = (cache.clone(), version.clone());
            std::thread::spawn(move || {
                let body = vec![7u8; VARIANT_BYTES];
                for i in (t..entries).step_by(4) {
                    let path = format!("/100/100/crop/bench/{i}.jpg");
                    let ross::request::Target::Render(req) =
                        ross::request::parse(&path, 2000, 2000).unwrap()
                    else {
                        unreachable!()
                    };
                    let variant =
                        ross::cache::VariantKey::new(&req, ross::cache::OutputFormat::Jpeg);
                    cache
                        .put(&variant, &version, &body, cache.ticket(), || true)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    cache.flush().unwrap();
}

/// Starts the binary and times its first `/health` answer and, if asked, its first hit.
fn start_binary(
    build: &Path,
    media: &Path,
    cache: &Path,
    data: &Path,
    hit: Option<&str>,
) -> (Duration, Option<Duration>) {
    let port = free_port();
    let started = Instant::now();
    let mut child = Command::new(build.join("ross"))
        .arg("serve")
        .env("ROSS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("ROSS__SOURCE__ROOT", media)
        .env("ROSS__CACHE__DIR", cache)
        .env("ROSS__DATA_DIR", data)
        .env("ROSS__PLUGINS__DIR", build)
        .env("ROSS__WHITELIST__ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = |path: &str, want: &str| loop {
        if let Ok((status, head)) = get(port, path) {
            if status == 200 && head.contains(want) {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ross did not answer {path}"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let health = until("/health", "");
    let first_hit = hit.map(|path| until(path, "X-Cache: HIT"));
    let _ = child.kill();
    let _ = child.wait();
    (health, first_hit)
}

struct HitRun {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Keep-alive clients asking for cached variants, spread over the whole index, for [`RUN`].
fn hit_run(port: u16, entries: u32) -> HitRun {
    let started = Instant::now();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            std::thread::spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut latencies = Vec::new();
                let mut i = c as u64 * 7919;
                let mut line = String::new();
                while started.elapsed() < RUN {
                    i = (i * 6364136223846793005 + 1442695040888963407) % u64::from(entries);
                    let t = Instant::now();
                    write!(
                        writer,
                        "GET /100/100/crop/bench/{i}.jpg HTTP/1.1\r\nHost: b\r\n\r\n"
                    )
                    .unwrap();
                    let mut length = 0;
                    let mut hit = false;
                    loop {
                        line.clear();
                        reader.read_line(&mut line).unwrap();
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        hit |= lower.starts_with("x-cache: hit");
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    assert!(hit, "not a cache hit: bench/{i}.jpg");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    HitRun {
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
