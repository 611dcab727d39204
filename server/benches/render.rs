//! Render benchmark: every photo in `../shared/corpus/photos` in each built-in mode at
//! 300x300, in-process and single-threaded (decode, render, encode: the whole CPU cost of a
//! cache miss), against `vipsthumbnail` on the same files in one batch, in the same run.
//!
//! Run: `cargo build --release --workspace && cargo bench -p ross --bench render`
//! (or `scripts/bench`). Figures are ratios against vips measured alongside, because the
//! machines are shared and absolute times drift.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use plugin_api::TargetSize;
use ross::pipeline::render_bytes;
use ross::plugins::ModeRegistry;

const MODES: [&str; 3] = ["crop", "resize", "resizecomp"];
const RUNS: usize = 9;
const VIPS_BATCHES: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time (user + system) used by finished child processes so far.
fn children_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer we own.
    #[allow(unsafe_code)]
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn vips_batch(photos: &[PathBuf], out: &Path, threads: Option<&str>) -> Option<(f64, f64)> {
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..VIPS_BATCHES {
        let mut cmd = Command::new("vipsthumbnail");
        cmd.args(["-s", "300x300", "-o"])
            .arg(format!("{}/%s.jpg[Q=90]", out.display()));
        cmd.args(photos);
        if let Some(n) = threads {
            cmd.env("VIPS_CONCURRENCY", n);
        }
        let cpu0 = children_cpu();
        let t0 = Instant::now();
        let status = cmd.status().ok()?;
        let wall = t0.elapsed();
        if !status.success() {
            return None;
        }
        walls.push(ms(wall) / photos.len() as f64);
        cpus.push(ms(children_cpu() - cpu0) / photos.len() as f64);
    }
    Some((median(walls), median(cpus)))
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let photos_dir = root.join("../shared/corpus/photos");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&photos_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", photos_dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    photos.sort();
    let plugins = root.join("target/release");
    let data = tempfile::tempdir().unwrap();
    let registry = ModeRegistry::load_dir(&plugins, data.path());
    for mode in MODES {
        assert!(
            registry.get(mode).is_some(),
            "mode {mode} is not built in {}: run cargo build --release --workspace first",
            plugins.display()
        );
    }
    let target = TargetSize {
        width: 300,
        height: 300,
    };
    println!(
        "ross render benchmark: {} photos, 300x300, JPEG q90",
        photos.len()
    );
    println!("per image, median of {RUNS} single-threaded in-process runs (decode+render+encode):");
    println!(
        "{:<20} {:>9} {:>10} {:>10} {:>11}",
        "photo", "KiB", "crop ms", "resize ms", "resizecomp"
    );
    let mut totals = [0.0f64; 3];
    let stats = ross::stats::Stats::default();
    for photo in &photos {
        let bytes = std::fs::read(photo).unwrap();
        let mut row = Vec::new();
        for (i, name) in MODES.iter().enumerate() {
            let mode = registry.get(name).unwrap();
            let run =
                || render_bytes(&bytes, &mode, target, 50_000_000, 90, &stats).expect("renders");
            run();
            let times: Vec<f64> = (0..RUNS)
                .map(|_| {
                    let t0 = Instant::now();
                    std::hint::black_box(run());
                    ms(t0.elapsed())
                })
                .collect();
            let m = median(times);
            totals[i] += m;
            row.push(m);
        }
        let name = photo.file_name().unwrap().to_string_lossy();
        println!(
            "{:<20} {:>9} {:>10.2} {:>10.2} {:>11.2}",
            name,
            bytes.len() / 1024,
            row[0],
            row[1],
            row[2]
        );
    }
    let n = photos.len() as f64;
    let means: Vec<f64> = totals.iter().map(|t| t / n).collect();
    println!(
        "{:<20} {:>9} {:>10.2} {:>10.2} {:>11.2}",
        "mean", "", means[0], means[1], means[2]
    );

    let out = tempfile::tempdir().unwrap();
    let Some((wall, cpu)) = vips_batch(&photos, out.path(), None) else {
        println!("vipsthumbnail not available (apt-get install libvips-tools): no comparison");
        return;
    };
    let single = vips_batch(&photos, out.path(), Some("1"));
    println!(
        "vipsthumbnail, one batch of {} files, -s 300x300 Q=90, median of {VIPS_BATCHES} batches:",
        photos.len()
    );
    println!("  default threads: {wall:.2} ms/image wall, {cpu:.2} ms/image CPU");
    if let Some((w1, c1)) = single {
        println!("  VIPS_CONCURRENCY=1: {w1:.2} ms/image wall, {c1:.2} ms/image CPU");
    }
    println!("ratio (vipsthumbnail wall per image / ross per image), target >= 4x:");
    for (name, m) in MODES.iter().zip(&means) {
        let verdict = if wall / m >= 4.0 {
            "ok"
        } else {
            "BELOW TARGET"
        };
        println!(
            "  {name:<11} {:>5.1}x  (CPU: {:>5.1}x)  {verdict}",
            wall / m,
            cpu / m
        );
    }
}
