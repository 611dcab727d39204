//! Load benchmark: ross against thumbor 7.8 (cold renders) and against nginx serving the same
//! file (cache hits), with wrk, on this machine, in one run, so the ratios hold on a noisy
//! shared machine. Run with `scripts/bench-load` (it installs wrk, nginx and thumbor first).
//!
//! - Cold renders: two connections, distinct URLs only (each wrk thread takes its own share
//!   of them, so ross's single flight never merges two), cropping the photos of
//!   `../shared/corpus/photos` near 300x300. thumbor: file loader on the same folder, no
//!   storage, no result storage, `ENGINE_THREADPOOL_SIZE = 2`, `QUALITY = 90`.
//! - Cache hits: one cached variant, asked for over and over by 32 connections: ross alone,
//!   and nginx with `sendfile on` serving the same file from ross's cache folder, with one
//!   worker per core (ross's runtime has a thread per core: the same machine for both).
//! - Like for like: thumbor keeps nothing decoded between requests and logs errors only, and
//!   nginx runs with `access_log off`; ross runs with `cache.decoded_bytes = 0` and
//!   `log.access = false` for those two comparisons.
//! - ross against its own limit: the same crops rendered in this process, one at a time; the
//!   server's limit is that rate times the cores.
//! - Several sizes of one original (the default whitelist's four, in quick succession, two
//!   clients on distinct originals): ross with `cache.decoded_bytes` at its default against
//!   ross with it at 0.

mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plugin_api::TargetSize;
use ross::render::render_bytes;
use ross::render::InProcessModes;
use support::{build_dir, free_port, get, start_thumbor, wait_for, Running};

/// How long each measured run lasts.
const RUN: Duration = Duration::from_secs(20);

/// What wrk measured.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// The wrk script for distinct crops near 300x300: thread `id` of 2 takes URL numbers id,
/// id + 2, id + 4...; `format` is a Lua format of width, height and photo.
fn distinct_crops_script(file: &Path, format: &str, photos: &[String]) -> PathBuf {
    let list = photos
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let script = format!(
        r#"local photos = {{ {list} }}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  n = 0
end
function request()
  local i = n * 2 + id
  n = n + 1
  local photo = photos[(i % #photos) + 1]
  local k = math.floor(i / #photos)
  local w = 270 + (k % 61)
  local h = 270 + (math.floor(k / 61) % 61)
  return wrk.format("GET", string.format("{format}", w, h, photo))
end
"#
    );
    std::fs::write(file, script).unwrap();
    file.to_owned()
}

/// Runs wrk and reads its figures.
fn wrk(url: &str, connections: u32, script: Option<&Path>) -> Figures {
    let mut cmd = Command::new("wrk");
    cmd.arg("-t2")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", RUN.as_secs()))
        .arg("--timeout")
        .arg("10s")
        .arg("--latency");
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk is installed (scripts/bench-load)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let duration = |v: &str| -> f64 {
        let (number, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap());
        let n: f64 = number.parse().unwrap();
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            other => panic!("wrk unit {other}"),
        }
    };
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .flat_map(|l| l.split(|c: char| !c.is_ascii_digit()))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    Figures {
        rate: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no rate in wrk's output:\n{text}")),
        p50_ms: duration(field("50%").unwrap()),
        p99_ms: duration(field("99%").unwrap()),
        errors,
    }
}

fn print(name: &str, f: Figures) {
    println!(
        "  {name:<34} {:>9.1} req/s   p50 {:>8.2} ms   p99 {:>8.2} ms   errors {}",
        f.rate, f.p50_ms, f.p99_ms, f.errors
    );
}

fn main() {
    let build = build_dir();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpus = root.join("../shared/corpus");
    let thumbor = root.join("target/bench-env/bin/thumbor");
    assert!(
        thumbor.exists(),
        "thumbor is not installed: run scripts/bench-load"
    );
    let mut photos: Vec<String> = std::fs::read_dir(corpus.join("photos"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    photos.sort();
    let work = tempfile::tempdir().unwrap();

    // ross, on its defaults but for the whitelist (every size), rendering to a new cache,
    // like for like with thumbor and nginx (see above).
    let ross_port = free_port();
    let _ross = start_ross(
        ross_port,
        &corpus.join("photos"),
        &work.path().join("main"),
        &[
            ("ROSS__WHITELIST__ENABLED", "false"),
            ("ROSS__CACHE__DECODED_BYTES", "0"),
            ("ROSS__LOG__ACCESS", "false"),
        ],
    );

    // thumbor 7.8 on the same photos.
    let (_thumbor, thumbor_port) =
        start_thumbor(&thumbor, work.path(), &corpus.join("photos"), None);
    // Both warmed up on URLs outside the measured ones (sizes under 270).
    for photo in &photos {
        assert_eq!(
            get(ross_port, &format!("/200/200/crop/{photo}")).unwrap().0,
            200
        );
        assert_eq!(
            get(thumbor_port, &format!("/unsafe/200x200/{photo}"))
                .unwrap()
                .0,
            200
        );
    }

    println!(
        "== cold renders: wrk, 2 connections, {} s each, distinct crops near 300x300 of {} photos",
        RUN.as_secs(),
        photos.len()
    );
    let ross_script =
        distinct_crops_script(&work.path().join("ross.lua"), "/%d/%d/crop/%s", &photos);
    let thumbor_script = distinct_crops_script(
        &work.path().join("thumbor.lua"),
        "/unsafe/%dx%d/%s",
        &photos,
    );
    let ross_cold = wrk(
        &format!("http://127.0.0.1:{ross_port}"),
        2,
        Some(&ross_script),
    );
    print("ross", ross_cold);
    let thumbor_cold = wrk(
        &format!("http://127.0.0.1:{thumbor_port}"),
        2,
        Some(&thumbor_script),
    );
    print("thumbor 7.8", thumbor_cold);

    // Hits: one cached variant; nginx serves the same file from the cache folder.
    let hit = format!("/300/300/crop/{}", photos[0]);
    assert_eq!(get(ross_port, &hit).unwrap().0, 200);
    let file = work
        .path()
        .join("main/cache/jpeg/300/300/crop")
        .join(&photos[0]);
    assert!(file.exists(), "{} is not cached", file.display());
    let nginx_port = free_port();
    let nginx_dir = work.path().join("nginx");
    std::fs::create_dir_all(nginx_dir.join("tmp")).unwrap();
    #[allow(unsafe_code)] // geteuid has no preconditions
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;"
    } else {
        ""
    };
    let d = nginx_dir.display();
    std::fs::write(
        nginx_dir.join("nginx.conf"),
        format!(
            "{user} daemon off; worker_processes {workers}; pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;\n\
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
             uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             server {{ listen 127.0.0.1:{nginx_port}; root {};\n\
             location / {{ default_type image/jpeg; try_files /jpeg$uri =404; }} }} }}\n",
            work.path().join("main/cache").display(),
            workers = cores(),
        ),
    )
    .unwrap();
    let _nginx = Running(
        Command::new("nginx")
            .arg("-c")
            .arg(nginx_dir.join("nginx.conf"))
            .arg("-p")
            .arg(&nginx_dir)
            // A group of its own: dropping it kills the workers with the master.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (scripts/bench-load)"),
    );
    wait_for(nginx_port, &hit, "nginx");
    println!(
        "== cache hits: wrk, 32 connections, {} s each, {hit}",
        RUN.as_secs()
    );
    let ross_hits = wrk(&format!("http://127.0.0.1:{ross_port}{hit}"), 32, None);
    print("ross", ross_hits);
    let nginx_hits = wrk(&format!("http://127.0.0.1:{nginx_port}{hit}"), 32, None);
    print("nginx static (sendfile)", nginx_hits);
    let hyper_port = bare_hyper(std::fs::read(&file).unwrap().into());
    let hyper_hits = wrk(&format!("http://127.0.0.1:{hyper_port}{hit}"), 32, None);
    print("hyper alone, same bytes from memory", hyper_hits);

    let (limit, naive) = in_process_limit(&build, &corpus.join("photos"), &photos);
    println!(
        "== ross's own limit: the same crops rendered in this process, {} threads at once",
        cores()
    );
    println!("  {:<34} {limit:>9.1} req/s", "in-process limit");
    println!(
        "  {:<34} {naive:>9.1} req/s",
        format!("one at a time x {} cores", cores())
    );

    let (alone, shared) = several_sizes(&corpus.join("photos"), &photos, work.path());

    println!("== ratios (same run)");
    println!(
        "  cold renders, ross / thumbor:      {:.2}x the rate, p99 {:.2}x   (target >= 4x)",
        ross_cold.rate / thumbor_cold.rate,
        ross_cold.p99_ms / thumbor_cold.p99_ms
    );
    println!(
        "  cold renders, ross / its limit:    {:.2} (one at a time x cores: {:.2})   (target >= 0.9)",
        ross_cold.rate / limit,
        ross_cold.rate / naive
    );
    println!(
        "  cache hits, ross / nginx:          {:.2}x the rate, p99 {:.2}x   (target >= 0.9x)",
        ross_hits.rate / nginx_hits.rate,
        ross_hits.p99_ms / nginx_hits.p99_ms
    );
    println!(
        "  cache hits, ross / hyper alone:    {:.2}x the rate (the HTTP stack's own limit here)",
        ross_hits.rate / hyper_hits.rate
    );
    println!(
        "  several sizes, reuse / no reuse:   {:.2}x the rate                (target >= 2x)",
        alone / shared
    );
}

/// A server with ross's HTTP stack and nothing else (hyper 1 on a tokio runtime with a worker
/// per core, no routing, no cache lookup, no logging) answering every request with `body`
/// and headers like ross's: the ceiling of ross's cache hits on this machine. Runs until the
/// benchmark exits.
fn bare_hyper(body: bytes::Bytes) -> u16 {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores())
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let body = body.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let body = body.clone();
                        async move {
                            hyper::Response::builder()
                                .header("Content-Type", "image/jpeg")
                                .header("Cache-Control", "public, max-age=604800")
                                .header("ETag", "\"6745d1f2-77a3\"")
                                .header("Last-Modified", "Tue, 26 Nov 2026 00:00:00 GMT")
                                .header("X-Cache", "HIT")
                                .body(http_body_util::Full::new(body))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    port
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Starts ross on `port` serving `media`, with its data and cache under `dir`.
fn start_ross(port: u16, media: &Path, dir: &Path, env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(build_dir().join("ross"));
    cmd.arg("serve")
        .env("ROSS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("ROSS__SOURCE__ROOT", media)
        .env("ROSS__DATA_DIR", dir.join("data"))
        .env("ROSS__CACHE__DIR", dir.join("cache"))
        .env("ROSS__PLUGINS__DIR", build_dir())
        .env("ROSS__LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let running = Running(cmd.spawn().unwrap());
    wait_for(port, "/health", "ross");
    running
}

/// The rate ross's CPU allows for the cold workload's crops: each photo cropped at a few of
/// the sizes the wrk script asks for, rendered in this process on one thread per core at once
/// (what the cores give together, memory and caches shared), and one at a time times the
/// cores (the issue's reckoning, which assumes the cores add up). Returns both, in renders
/// a second.
fn in_process_limit(build: &Path, media: &Path, photos: &[String]) -> (f64, f64) {
    let registry = InProcessModes::load_dir(build);
    let mode = registry.get("crop").expect("crop is built");
    let stats = ross::telemetry::Metrics::new();
    let jobs: Vec<(Vec<u8>, TargetSize)> = photos
        .iter()
        .flat_map(|photo| {
            let bytes = std::fs::read(media.join(photo)).unwrap();
            [(270, 270), (300, 285), (330, 300), (285, 330)]
                .map(|(width, height)| (bytes.clone(), TargetSize { width, height }))
        })
        .collect();
    let render_all = || {
        for (bytes, target) in &jobs {
            render_bytes(bytes, mode, *target, u64::MAX, JPEG, &OUTPUT, &stats).unwrap();
        }
    };
    render_all(); // warm-up
    let mut single = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        render_all();
        single.push(jobs.len() as f64 / t0.elapsed().as_secs_f64());
    }
    single.sort_by(f64::total_cmp);
    let mut parallel = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..cores() {
                scope.spawn(render_all);
            }
        });
        parallel.push((jobs.len() * cores()) as f64 / t0.elapsed().as_secs_f64());
    }
    parallel.sort_by(f64::total_cmp);
    (parallel[1], single[1] * cores() as f64)
}

/// Each of `COPIES` copies of every photo asked for at the default whitelist's four sizes in
/// quick succession by two clients (each its own originals), against ross with the decoded
/// originals kept and ross without. Returns the seconds each took.
fn several_sizes(photos_dir: &Path, photos: &[String], work: &Path) -> (f64, f64) {
    const COPIES: usize = 8;
    const SIZES: [&str; 4] = ["300/300", "1024/768", "72/72", "200/250"];
    let media = work.join("several");
    std::fs::create_dir_all(&media).unwrap();
    let mut keys = Vec::new();
    for copy in 0..COPIES {
        for photo in photos {
            let key = format!("{copy}-{photo}");
            std::fs::copy(photos_dir.join(photo), media.join(&key)).unwrap();
            keys.push(key);
        }
    }
    let run = |name: &str, env: &[(&str, &str)]| {
        let port = free_port();
        let _ross = start_ross(port, &media, &work.join(name), env);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for client in 0..2 {
                let keys = &keys;
                scope.spawn(move || {
                    for key in keys.iter().skip(client).step_by(2) {
                        for size in SIZES {
                            let (status, _) = get(port, &format!("/{size}/crop/{key}")).unwrap();
                            assert_eq!(status, 200, "{size} {key}");
                        }
                    }
                });
            }
        });
        started.elapsed().as_secs_f64()
    };
    let quiet = [("ROSS__LOG__ACCESS", "false")];
    let alone = run(
        "several-alone",
        &[quiet[0], ("ROSS__CACHE__DECODED_BYTES", "0")],
    );
    let shared = run("several-shared", &quiet);
    let originals = keys.len() as f64;
    println!(
        "== several sizes of one original: {} originals x {} sizes ({}), 2 clients",
        keys.len(),
        SIZES.len(),
        SIZES.join(", ")
    );
    println!(
        "  {:<34} {:>9.1} originals/s",
        "ross, each size decoded alone",
        originals / alone
    );
    println!(
        "  {:<34} {:>9.1} originals/s",
        "ross, one decode shared",
        originals / shared
    );
    (alone, shared)
}

/// Encoding as the server's defaults: baseline JPEG at quality 90.
const JPEG: ross::cache::OutputFormat = ross::cache::OutputFormat::Jpeg;

/// The default output settings, made once (not inside the timed renders).
static OUTPUT: std::sync::LazyLock<ross_config::OutputSettings> =
    std::sync::LazyLock::new(|| ross_config::Settings::default().output);
