//! The cost of the cache index and of purges, measured against references taken in the same
//! run. The entries are laid out as a shop's are: 1,000 sizes in two modes across many keys.
//!
//! 1. cache-hit throughput and p99 latency over HTTP, with hit recording on, against the same
//!    server with it off (runs alternated, medians compared);
//! 2. a purge of one mode (half the entries): the time to answer, and hits on the other mode
//!    while the purged files are deleted in the background, against hits just before;
//! 3. a purge of everything: the time to answer, and the background deletion at full speed
//!    against removing the same number of plain files, also on disk;
//! 4. renders of distinct crops with a purge of an unrelated key every 0.5 s, against the same
//!    load without: requests served, renders cached, originals fetched;
//! 5. `du` of a cache of 10,000 distinct sizes against `cache.max_bytes` (and against the sum of
//!    the file lengths, which the bound counted before);
//! 6. time from start to first answer (and to the first cache hit) of the `ross` binary with
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

/// The path of the `i`th entry: 50 widths by 20 heights, two modes, 1,000 variants a key.
fn variant_path(i: u32) -> String {
    let mode = if i.is_multiple_of(2) {
        "crop"
    } else {
        "resize"
    };
    format!(
        "/{}/{}/{mode}/bench/k{}.jpg",
        100 + i % 50,
        100 + (i / 50) % 20,
        i / 1000
    )
}

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
        Some(&variant_path(7)),
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
        let run = hit_run(port, entries, false);
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

    println!("\n== purging one mode (half the entries) while hits on the other go on");
    state.cache.set_hit_tracking(true);
    let before = hit_run(port, entries, true);
    let started = Instant::now();
    let purged = state.cache.purge(Selector::Mode("resize".into())).unwrap();
    let answered = started.elapsed();
    let during = hit_run(port, entries, true);
    let trash = cache_dir.join(".trash");
    let trash_left = || std::fs::read_dir(&trash).map_or(0, |d| d.count());
    println!(
        "answered in {:.1} ms ({} entries); hits on crop while the trash is deleted \
         (cache.purge_deletes_per_second 2,000): {:.0}/s, p99 {:.2} ms, against {:.0}/s, p99 \
         {:.2} ms just before: throughput {:.3}, p99 {:.3}{}",
        answered.as_secs_f64() * 1e3,
        purged.entries,
        during.per_second,
        during.p99_ms,
        before.per_second,
        before.p99_ms,
        during.per_second / before.per_second,
        during.p99_ms / before.p99_ms,
        if trash_left() > 0 {
            ""
        } else {
            " (the deletion ended before the run did)"
        }
    );

    println!("\n== purging everything");
    state.cache.set_purge_deletes_per_second(1_000_000);
    while trash_left() > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Back to the full count: the purged mode's entries again.
    fill_more(&build, &state.cache, entries);
    let indexed = state.cache.stats().entries;
    let started = Instant::now();
    let purged = state.cache.purge(Selector::All).unwrap();
    let purge_time = started.elapsed();
    let deleting = Instant::now();
    while trash_left() > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let deleted = deleting.elapsed();
    let _ = stop.send(());
    runtime.block_on(server).unwrap().unwrap();
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
        "purged {} of {indexed} entries ({} MB): answered in {:.1} ms, files and entries \
         deleted in the background (unpaced) in {:.2} s; removing {entries} plain files (synced \
         to disk) took {:.2} s: answer / rm {:.4}, deletion / rm {:.2}",
        purged.entries,
        purged.bytes / 1_000_000,
        purge_time.as_secs_f64() * 1e3,
        deleted.as_secs_f64(),
        rm_time.as_secs_f64(),
        purge_time.as_secs_f64() / rm_time.as_secs_f64(),
        deleted.as_secs_f64() / rm_time.as_secs_f64()
    );

    purges_under_load(&build, work.path());
    du_against_the_bound(work.path());
}

/// Puts the entries of the `resize` mode back (after its purge).
fn fill_more(build: &Path, cache: &Cache, entries: u32) {
    let body = vec![7u8; VARIANT_BYTES];
    let modes = InProcessModes::load_dir(build);
    let version = modes.get("resize").unwrap().spec.version.clone();
    for i in (1..entries).step_by(2) {
        put_variant(cache, &variant_path(i), &version, &body);
    }
}

fn put_variant(cache: &Cache, path: &str, version: &str, body: &[u8]) {
    let ross::request::Target::Render(req) = ross::request::parse(path, 2000, 2000).unwrap() else {
        unreachable!()
    };
    let variant = ross::cache::VariantKey::new(&req, ross::cache::OutputFormat::Jpeg);
    cache
        .put(&variant, version, "", body, cache.ticket(), || true)
        .unwrap();
}

/// Distinct crops of the corpus photos from 4 clients for 8 s, with a purge of an unrelated
/// key every 0.5 s and without (runs alternated): a purge should cost renders of other keys
/// nothing.
fn purges_under_load(build: &Path, work: &Path) {
    const CLIENTS: u32 = 4;
    const RUN: Duration = Duration::from_secs(8);
    println!("\n== distinct crops from {CLIENTS} clients for {} s, with a purge of another key every 0.5 s and without", RUN.as_secs());
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/photos");
    let mut names: Vec<String> = std::fs::read_dir(&photos)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    names.sort();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (round, purging) in [false, true, false, true].into_iter().enumerate() {
        let dir = work.join(format!("load-{round}"));
        let settings = Settings::from_parts(
            None,
            None,
            [
                ("ROSS__CACHE__DIR", dir.join("cache").to_str().unwrap()),
                ("ROSS__DATA_DIR", dir.join("data").to_str().unwrap()),
                ("ROSS__SOURCE__ROOT", photos.to_str().unwrap()),
                ("ROSS__PLUGINS__DIR", build.to_str().unwrap()),
                ("ROSS__PLUGINS__HOT_RELOAD", "false"),
                ("ROSS__WHITELIST__ENABLED", "false"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap();
        let state = runtime.block_on(ross::AppState::new(settings)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(ross::run(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        let started = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let names = names.clone();
                std::thread::spawn(move || {
                    let mut served = 0u32;
                    let mut n = c;
                    while started.elapsed() < RUN {
                        // The clients on the same photo at once, each at its own size (a
                        // page's sizes), every request a variant not asked for before.
                        let count = names.len() as u32;
                        let photo = &names[((n / 4) % count) as usize];
                        let side = 100 + n % 4 + 4 * (n / (4 * count));
                        let path = format!("/{side}/{side}/crop/{photo}");
                        let (status, _) = get(port, &path).unwrap();
                        assert_eq!(status, 200, "{path}");
                        served += 1;
                        n += CLIENTS;
                    }
                    served
                })
            })
            .collect();
        let mut purges = 0;
        while purging && started.elapsed() < RUN {
            std::thread::sleep(Duration::from_millis(500));
            state
                .cache
                .purge(Selector::Key("elsewhere/other.jpg".into()))
                .unwrap();
            purges += 1;
        }
        let served: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
        let counts = state.metrics.counts();
        let cached = state.cache.stats().entries;
        println!(
            "  {}: {served} requests, {} renders, {cached} cached ({} not), {} originals \
             fetched",
            if purging {
                format!("{purges} purges")
            } else {
                "no purge  ".to_owned()
            },
            counts.renders,
            counts.renders.saturating_sub(cached),
            counts.fetches
        );
        let _ = stop.send(());
        runtime.block_on(server).unwrap().unwrap();
    }
}

/// 10,000 distinct sizes of one photo's renders (6 kB each, as a 200x200 JPEG) through a cache
/// bounded to 40 MB: `du` of the folder against the bound.
fn du_against_the_bound(work: &Path) {
    const MAX: u64 = 40_000_000;
    println!("\n== 10,000 distinct sizes through a cache of max_bytes {MAX}");
    let dir = work.join("du");
    let db = Database::open(&dir.join("data")).unwrap();
    let metrics = Arc::new(ross::telemetry::Metrics::new());
    let cache = Cache::open(&dir.join("cache"), MAX, 0, &db, metrics.clone()).unwrap();
    let body = vec![7u8; VARIANT_BYTES];
    for i in 0..10_000u32 {
        let path = format!("/{}/{}/crop/shop/photo.jpg", 50 + i % 100, 50 + i / 100);
        put_variant(&cache, &path, "1.0.0", &body);
    }
    let du = Command::new("du")
        .args(["-s", "--block-size=1"])
        .arg(dir.join("cache"))
        .output()
        .unwrap();
    let du: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let stats = cache.stats();
    println!(
        "du {du} bytes: {:.3} of max_bytes; the cache's own count {:.3} of du; the file \
         lengths (what the bound counted before) {:.3} of du; {} entries kept, {} evicted",
        du as f64 / MAX as f64,
        stats.disk_bytes as f64 / du as f64,
        stats.bytes as f64 / du as f64,
        stats.entries,
        metrics.counts().evicted_entries
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
    let resize = modes.get("resize").unwrap().spec.version.clone();
    cache.adopt_mode_version("crop", &version).unwrap();
    cache.adopt_mode_version("resize", &resize).unwrap();
    while cache.stats().purges_running > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let cache = Arc::new(cache);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (cache, version, resize) = (cache.clone(), version.clone(), resize.clone());
            std::thread::spawn(move || {
                let body = vec![7u8; VARIANT_BYTES];
                for i in (t..entries).step_by(4) {
                    let version = if i.is_multiple_of(2) {
                        &version
                    } else {
                        &resize
                    };
                    put_variant(&cache, &variant_path(i), version, &body);
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
        let answer = get(port, path).map(|(status, text)| {
            let head = text
                .split("\r\n\r\n")
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            (status, head)
        });
        if let Ok((status, head)) = &answer {
            if *status == 200 && head.contains(&want.to_ascii_lowercase()) {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ross did not answer {path} with {want}: {answer:?}"
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

/// Keep-alive clients asking for cached variants, spread over the whole index (the `crop`
/// ones only, if asked), for [`RUN`].
fn hit_run(port: u16, entries: u32, crop_only: bool) -> HitRun {
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
                    let pick = if crop_only { i & !1 } else { i } as u32;
                    let t = Instant::now();
                    write!(
                        writer,
                        "GET {} HTTP/1.1\r\nHost: b\r\n\r\n",
                        variant_path(pick)
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
                    assert!(hit, "not a cache hit: {}", variant_path(pick));
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
