//! Catalog-trace benchmark: a shop's traffic replayed, from cold, against ross and against
//! thumbor 7.8 with its file result storage, with the same clients; the figure is server CPU
//! time (user + system, of the server and every process under it) per request, as a ratio.
//! Run with `scripts/bench-trace` (it installs thumbor into `target/bench-env` first).
//!
//! - The catalog: [`ORIGINALS`] JPEGs made from `../shared/corpus/photos` with a fixed seed,
//!   each a crop of a corpus photo (60-100% of each side) scaled to a long side of 800-3000
//!   px, quality 75-95, a third progressive. Made once into `target/bench-catalog/` (about a
//!   minute and a half), and reused.
//! - The trace: [`VIEWS`] page views with a fixed seed, each picking an original by Zipf
//!   popularity (exponent [`ZIPF`]) and asking for 1-3 of the six page sizes of [`PAGE`],
//!   in order, on [`CLIENTS`] keep-alive connections (view i on client i mod 4).
//! - ross: its defaults, the six sizes whitelisted, `log.access = false` (thumbor logs
//!   errors only); thumbor: file loader on the catalog, file result storage,
//!   `ENGINE_THREADPOOL_SIZE = 2`, `QUALITY = 90`. Crops are thumbor's plain `WxH` (a
//!   centred fill), resizes its `fit-in`.
//! - ross's misses are split into those that decoded an original and those that rendered
//!   from pixels decoded before, from its own metrics.
//!
//! Options: `--ross-only` (no thumbor), `--ross-env KEY=VALUE` (repeatable; a setting for
//! ross, e.g. `ROSS__CACHE__DECODED_BYTES=0`), `--rounds N` (1 to 9: ross then thumbor N
//! times, each from cold, and the median of the rounds' ratios: on a shared machine one
//! round can be 15% off).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{build_dir, free_port, get, start_thumbor, wait_for, Running};

/// Originals in the catalog.
const ORIGINALS: usize = 400;
/// Page views in the trace.
const VIEWS: usize = 2_500;
/// The seed of the catalog and of the trace.
const SEED: u64 = 25;
/// The Zipf exponent of originals' popularity.
const ZIPF: f64 = 0.9;
/// Keep-alive clients replaying the trace.
const CLIENTS: usize = 4;
/// The page sizes: width, height, ross mode (crops and fits).
const PAGE: [(u32, u32, &str); 6] = [
    (72, 72, "crop"),
    (200, 250, "crop"),
    (300, 300, "crop"),
    (400, 500, "crop"),
    (800, 1000, "resize"),
    (1024, 768, "resize"),
];

/// SplitMix64: a fixed seed gives the same catalog and trace on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below(u64::from(hi - lo + 1)) as u32
    }
}

/// The catalog's folder, made if it is not there yet; its keys.
fn catalog(root: &Path, photos_dir: &Path) -> (PathBuf, Vec<String>) {
    let dir = root.join(format!("target/bench-catalog/seed-{SEED}-{ORIGINALS}"));
    let keys: Vec<String> = (0..ORIGINALS).map(|i| format!("p/{i:03}.jpg")).collect();
    let done = dir.join("complete");
    if done.exists() {
        return (dir, keys);
    }
    let mut photos: Vec<PathBuf> = std::fs::read_dir(photos_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    photos.sort();
    let decoded: Vec<image::RgbImage> = photos
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            let img: turbojpeg::Image<Vec<u8>> =
                turbojpeg::decompress(&bytes, turbojpeg::PixelFormat::RGB).unwrap();
            image::RgbImage::from_raw(img.width as u32, img.height as u32, img.pixels).unwrap()
        })
        .collect();
    println!(
        "== making the catalog: {ORIGINALS} originals from {} photos into {} (once)",
        photos.len(),
        dir.display()
    );
    let started = Instant::now();
    std::fs::create_dir_all(dir.join("p")).unwrap();
    let mut rng = Rng(SEED);
    let mut bytes_total = 0u64;
    for key in &keys {
        let photo = &decoded[rng.below(decoded.len() as u64) as usize];
        let (pw, ph) = photo.dimensions();
        let cw = pw * rng.between(60, 100) / 100;
        let ch = ph * rng.between(60, 100) / 100;
        let x = rng.between(0, pw - cw);
        let y = rng.between(0, ph - ch);
        let long = rng.between(800, 3000);
        let scale = f64::from(long) / f64::from(cw.max(ch));
        let w = (f64::from(cw) * scale).round().max(1.0) as u32;
        let h = (f64::from(ch) * scale).round().max(1.0) as u32;
        let crop = image::imageops::crop_imm(photo, x, y, cw, ch).to_image();
        let scaled = image::imageops::resize(&crop, w, h, image::imageops::FilterType::Triangle);
        let mut compressor = turbojpeg::Compressor::new().unwrap();
        compressor.set_quality(rng.between(75, 95) as i32).unwrap();
        compressor.set_subsamp(turbojpeg::Subsamp::Sub2x2).unwrap();
        compressor.set_progressive(rng.below(3) == 0).unwrap();
        let jpeg = compressor
            .compress_to_vec(turbojpeg::Image {
                pixels: scaled.as_raw().as_slice(),
                width: w as usize,
                pitch: w as usize * 3,
                height: h as usize,
                format: turbojpeg::PixelFormat::RGB,
            })
            .unwrap();
        bytes_total += jpeg.len() as u64;
        std::fs::write(dir.join(key), jpeg).unwrap();
    }
    std::fs::write(&done, format!("{bytes_total}\n")).unwrap();
    println!(
        "  made in {:.0} s, {} MiB",
        started.elapsed().as_secs_f64(),
        bytes_total >> 20
    );
    (dir, keys)
}

/// One request of the trace: an original and a page size (an index into [`PAGE`]).
#[derive(Debug, Clone, Copy)]
struct Ask {
    original: usize,
    size: usize,
}

/// The trace: per client, its requests in order.
fn trace() -> Vec<Vec<Ask>> {
    let mut rng = Rng(SEED ^ 0x7261_6365);
    // Popularity rank to original: shuffled, so that the popular ones are of every size.
    let mut by_rank: Vec<usize> = (0..ORIGINALS).collect();
    for i in (1..by_rank.len()).rev() {
        by_rank.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let weights: Vec<f64> = (1..=ORIGINALS)
        .map(|r| 1.0 / (r as f64).powf(ZIPF))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(ORIGINALS);
    let mut sum = 0.0;
    for w in &weights {
        sum += w / total;
        cumulative.push(sum);
    }
    let mut clients = vec![Vec::new(); CLIENTS];
    for view in 0..VIEWS {
        let u = rng.unit();
        let rank = cumulative.partition_point(|&c| c < u).min(ORIGINALS - 1);
        let original = by_rank[rank];
        let mut sizes: Vec<usize> = (0..PAGE.len()).collect();
        let count = rng.between(1, 3) as usize;
        for i in 0..count {
            let j = i + rng.below((PAGE.len() - i) as u64) as usize;
            sizes.swap(i, j);
            clients[view % CLIENTS].push(Ask {
                original,
                size: sizes[i],
            });
        }
    }
    clients
}

/// Clock ticks a second, as `/proc/*/stat` counts CPU time.
fn ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Fields of `/proc/{pid}/stat` after the command name: (parent, own CPU ticks, reaped
/// children's CPU ticks).
fn stat(pid: u32) -> Option<(u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    Some((n(1)? as u32, n(11)? + n(12)?, n(13)? + n(14)?))
}

/// CPU seconds of `root` and every process under it (living ones, and those reaped).
fn tree_cpu(root: u32, tick: f64) -> f64 {
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some((parent, _, _)) = stat(pid) {
            parents.entry(parent).or_default().push(pid);
        }
    }
    let mut ticks = 0;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        if let Some((_, own, reaped)) = stat(pid) {
            ticks += own + reaped;
        }
        todo.extend(parents.get(&pid).into_iter().flatten());
    }
    ticks as f64 / tick
}

/// One keep-alive connection: sends a GET, reads the whole response; the status.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn get(&mut self, path: &str) -> u16 {
        // One write: a request split in two waits for the server's delayed ACK.
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: image/jpeg\r\n\r\n");
        self.writer.write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = None;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<u64>().ok();
                }
            }
        }
        let length = length.unwrap_or_else(|| panic!("no Content-Length for {path}"));
        std::io::copy(&mut (&mut self.reader).take(length), &mut std::io::sink()).unwrap();
        status
    }
}

/// What one replay measured.
struct Replay {
    requests: usize,
    cpu_s: f64,
    wall_s: f64,
}

impl Replay {
    fn ms_per_request(&self) -> f64 {
        self.cpu_s * 1000.0 / self.requests as f64
    }
}

/// Replays `trace` on `port` (paths from `path`), measuring the CPU of `pid`'s tree.
fn replay(
    pid: u32,
    port: u16,
    trace: &[Vec<Ask>],
    keys: &[String],
    path: &(dyn Fn(&Ask, &str) -> String + Sync),
) -> Replay {
    let tick = ticks_per_second();
    let before = tree_cpu(pid, tick);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for asks in trace {
            scope.spawn(move || {
                let mut client = Client::connect(port);
                for ask in asks {
                    let path = path(ask, &keys[ask.original]);
                    assert_eq!(client.get(&path), 200, "{path}");
                }
            });
        }
    });
    let wall_s = started.elapsed().as_secs_f64();
    // Work a response left behind (a cache write after the answer) is counted too.
    std::thread::sleep(Duration::from_millis(500));
    Replay {
        requests: trace.iter().map(Vec::len).sum(),
        cpu_s: tree_cpu(pid, tick) - before,
        wall_s,
    }
}

/// Reads `name` (with its labels, as printed) from a Prometheus text page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ross_only = args.iter().any(|a| a == "--ross-only");
    let ross_env: Vec<(String, String)> = args
        .windows(2)
        .filter(|w| w[0] == "--ross-env")
        .map(|w| {
            let (k, v) = w[1].split_once('=').expect("--ross-env KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let rounds: usize = args
        .windows(2)
        .find(|w| w[0] == "--rounds")
        .map_or(1, |w| w[1].parse().expect("--rounds N"));
    assert!((1..=9).contains(&rounds), "--rounds is 1 to 9");
    let build = build_dir();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpus = root.join("../shared/corpus");
    let (media, keys) = catalog(&root, &corpus.join("photos"));
    let trace = trace();
    let requests: usize = trace.iter().map(Vec::len).sum();
    let mut variants = std::collections::HashSet::new();
    let mut originals = std::collections::HashSet::new();
    for ask in trace.iter().flatten() {
        variants.insert((ask.original, ask.size));
        originals.insert(ask.original);
    }
    println!(
        "== trace: {VIEWS} page views, {requests} requests, {} distinct variants of {} originals, {CLIENTS} clients, from cold",
        variants.len(),
        originals.len()
    );
    let thumbor = root.join("target/bench-env/bin/thumbor");
    assert!(
        ross_only || thumbor.exists(),
        "thumbor is not installed: run scripts/bench-trace"
    );
    let round = Round {
        build: &build,
        media: &media,
        keys: &keys,
        trace: &trace,
    };
    let mut ratios = Vec::new();
    for n in 1..=rounds {
        if rounds > 1 {
            println!("== round {n} of {rounds}");
        }
        let ross = round.ross(&ross_env);
        if ross_only {
            continue;
        }
        let thumbor = round.thumbor(&thumbor);
        let ratio = thumbor / ross;
        println!("== ratio (same run)");
        println!("  server CPU per request, thumbor / ross: {ratio:.2}x   (target >= 6x)");
        ratios.push(ratio);
    }
    if ratios.len() > 1 {
        ratios.sort_by(f64::total_cmp);
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
        println!(
            "== median of {} rounds: {:.2}x   (each: {})",
            ratios.len(),
            ratios[ratios.len() / 2],
            listed.join(", ")
        );
    }
}

/// What every round replays.
struct Round<'a> {
    build: &'a Path,
    media: &'a Path,
    keys: &'a [String],
    trace: &'a [Vec<Ask>],
}

impl Round<'_> {
    /// Replays the trace against a new ross from cold (with `env` set) and prints what it
    /// took; returns its CPU per request in milliseconds.
    fn ross(&self, env: &[(String, String)]) -> f64 {
        let work = tempfile::tempdir().unwrap();
        let sizes = PAGE
            .iter()
            .map(|(w, h, _)| format!("{w}x{h}"))
            .collect::<Vec<_>>()
            .join(",");
        let port = free_port();
        let mut cmd = Command::new(self.build.join("ross"));
        cmd.arg("serve")
            .env("ROSS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("ROSS__SOURCE__ROOT", self.media)
            .env("ROSS__DATA_DIR", work.path().join("ross/data"))
            .env("ROSS__CACHE__DIR", work.path().join("ross/cache"))
            .env("ROSS__PLUGINS__DIR", self.build)
            .env("ROSS__WHITELIST__SIZES", &sizes)
            .env("ROSS__LOG__ACCESS", "false")
            .env("ROSS__LOG__FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let ross = Running(cmd.spawn().unwrap());
        wait_for(port, "/health", "ross");
        let ross_path = |ask: &Ask, key: &str| {
            let (w, h, mode) = PAGE[ask.size];
            format!("/{w}/{h}/{mode}/{key}")
        };
        let run = replay(ross.0.id(), port, self.trace, self.keys, &ross_path);
        let page = get(port, "/metrics").unwrap().1;
        let renders = metric(&page, "ross_renders_total");
        let decodes = metric(&page, "ross_stage_ms_count{stage=\"decode\"}");
        let fetches = metric(&page, "ross_source_fetches_total");
        let from_copies = metric(&page, "ross_reduced_renders_total");
        println!(
            "  ross         {:>7.2} ms CPU/request  ({:.1} s CPU, {:.1} s wall)",
            run.ms_per_request(),
            run.cpu_s,
            run.wall_s
        );
        println!(
            "    misses {renders:.0}: {decodes:.0} decoded an original, {:.0} did not ({from_copies:.0} of them read a reduced original back); {fetches:.0} fetches",
            renders - decodes
        );
        for stage in ["fetch", "decode", "render", "encode", "cache_write"] {
            let sum = metric(&page, &format!("ross_stage_ms_sum{{stage=\"{stage}\"}}"));
            let count = metric(&page, &format!("ross_stage_ms_count{{stage=\"{stage}\"}}"));
            println!("    {stage:<12} {:>8.1} s in {count:.0}", sum / 1000.0);
        }
        let copies = metric(&page, "ross_reduced_originals");
        if copies > 0.0 {
            println!(
                "    reduced originals: {copies:.0}, {:.0} MiB on disk",
                metric(&page, "ross_reduced_originals_disk_bytes") / f64::from(1 << 20)
            );
        }
        run.ms_per_request()
    }

    /// Replays the trace against a new thumbor (`program`) from cold and prints what it took;
    /// returns its CPU per request in milliseconds.
    fn thumbor(&self, program: &Path) -> f64 {
        let work = tempfile::tempdir().unwrap();
        let results = work.path().join("thumbor-results");
        let (thumbor_server, thumbor_port) =
            start_thumbor(program, work.path(), self.media, Some(&results));
        let thumbor_path = |ask: &Ask, key: &str| {
            let (w, h, mode) = PAGE[ask.size];
            let fit = if mode == "resize" { "fit-in/" } else { "" };
            format!("/unsafe/{fit}{w}x{h}/{key}")
        };
        let run = replay(
            thumbor_server.0.id(),
            thumbor_port,
            self.trace,
            self.keys,
            &thumbor_path,
        );
        println!(
            "  thumbor 7.8  {:>7.2} ms CPU/request  ({:.1} s CPU, {:.1} s wall)",
            run.ms_per_request(),
            run.cpu_s,
            run.wall_s
        );
        run.ms_per_request()
    }
}
