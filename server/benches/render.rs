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
use ross::imaging::{decode, decode_every_scan, DecodeBox};
use ross::render::InProcessModes;
use ross::render::{render_bytes, render_decoded};

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
    let registry = InProcessModes::load_dir(&plugins);
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
    let stats = ross::telemetry::Metrics::new();
    for photo in &photos {
        let bytes = std::fs::read(photo).unwrap();
        let mut row = Vec::new();
        for (i, name) in MODES.iter().enumerate() {
            let mode = registry.get(name).unwrap();
            let run = || {
                render_bytes(&bytes, mode, target, 50_000_000, JPEG, &OUTPUT, &stats)
                    .expect("renders")
            };
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

    compare_with_vips(&photos, &means);
    decode_floor(&photos, &registry);
    several_sizes(&photos, &registry);
    tagged(&photos, &registry);
}

/// `jpeg` with `profile` in APP2 segments right after SOI, as cameras and editors write it.
fn with_icc(jpeg: &[u8], profile: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = profile.chunks(65_519).collect();
    let mut out = jpeg[..2].to_vec();
    for (i, part) in parts.iter().enumerate() {
        out.extend_from_slice(&[0xFF, 0xE2]);
        out.extend_from_slice(&((part.len() + 16) as u16).to_be_bytes());
        out.extend_from_slice(b"ICC_PROFILE\0");
        out.extend_from_slice(&[i as u8 + 1, parts.len() as u8]);
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The cost of colour management: each photo rendered (crop 300x300) as it is, tagged with an
/// Adobe RGB (1998) profile (converted to sRGB with Little CMS at the decode's reduced size),
/// and tagged with an sRGB profile (recognised, nothing converted).
fn tagged(photos: &[PathBuf], registry: &InProcessModes) {
    use lcms2::{CIExyY, CIExyYTRIPLE, Profile, ToneCurve};
    let xy = |x, y| CIExyY { x, y, Y: 1.0 };
    let gamma = ToneCurve::new(563.0 / 256.0);
    let adobe = Profile::new_rgb(
        &xy(0.3127, 0.3290),
        &CIExyYTRIPLE {
            Red: xy(0.64, 0.33),
            Green: xy(0.21, 0.71),
            Blue: xy(0.15, 0.06),
        },
        &[&gamma, &gamma, &gamma],
    )
    .unwrap()
    .icc()
    .unwrap();
    let srgb = Profile::new_srgb().icc().unwrap();
    let mode = registry.get("crop").unwrap();
    let stats = ross::telemetry::Metrics::new();
    let target = TargetSize {
        width: 300,
        height: 300,
    };
    let (mut plain, mut wide, mut same) = (0.0, 0.0, 0.0);
    for photo in photos {
        let bytes = std::fs::read(photo).unwrap();
        let render = |bytes: &[u8]| {
            render_bytes(bytes, mode, target, u64::MAX, JPEG, &OUTPUT, &stats).unwrap()
        };
        let adobe_tagged = with_icc(&bytes, &adobe);
        let srgb_tagged = with_icc(&bytes, &srgb);
        plain += timed(|| render(&bytes));
        wide += timed(|| render(&adobe_tagged));
        same += timed(|| render(&srgb_tagged));
    }
    let n = photos.len() as f64;
    println!(
        "colour management, crop 300x300, ms per photo (mean of {} photos):",
        photos.len()
    );
    println!(
        "  no profile                                   {:>8.2}",
        plain / n
    );
    println!(
        "  Adobe RGB profile, converted to sRGB         {:>8.2}   {:.3}x the untagged time, target <= 1.15x",
        wide / n,
        wide / plain
    );
    println!(
        "  sRGB profile, recognised                     {:>8.2}   {:.3}x",
        same / n,
        same / plain
    );
}

/// Median milliseconds of `RUNS` runs of `run` (after one warm-up).
fn timed<T>(mut run: impl FnMut() -> T) -> f64 {
    std::hint::black_box(run());
    median(
        (0..RUNS)
            .map(|_| {
                let t0 = Instant::now();
                std::hint::black_box(run());
                ms(t0.elapsed())
            })
            .collect(),
    )
}

/// Where a render's time goes, per photo at 300x300 (crop): libjpeg-turbo alone at ross's DCT
/// scale with every scan (the floor of a render from this file at this scale), the same at
/// 1/8 (the IDCT and colour work all but gone: close to entropy decoding alone), ross's decode
/// (progressive scans trimmed) and the whole render.
fn decode_floor(photos: &[PathBuf], registry: &InProcessModes) {
    println!("where the time goes at 300x300 crop, ms per photo (median of {RUNS}):");
    println!(
        "{:<20} {:>11} {:>13} {:>12} {:>12} {:>10} {:>8}",
        "photo", "scale", "libjpeg-turbo", "at 1/8", "ross decode", "render", "floor %"
    );
    let mode = registry.get("crop").unwrap();
    let stats = ross::telemetry::Metrics::new();
    let target = TargetSize {
        width: 300,
        height: 300,
    };
    let boxed = [DecodeBox::cover(300, 300)];
    for photo in photos {
        let bytes = std::fs::read(photo).unwrap();
        let decoded = decode(&bytes, &boxed, u64::MAX).unwrap();
        let full = decode(&bytes, &[], u64::MAX).unwrap();
        let floor = timed(|| decode_every_scan(&bytes, &boxed, u64::MAX).unwrap());
        let eighth =
            timed(|| decode_every_scan(&bytes, &[DecodeBox::cover(1, 1)], u64::MAX).unwrap());
        let ours = timed(|| decode(&bytes, &boxed, u64::MAX).unwrap());
        let render =
            timed(|| render_bytes(&bytes, mode, target, u64::MAX, JPEG, &OUTPUT, &stats).unwrap());
        println!(
            "{:<20} {:>11} {:>13.2} {:>12.2} {:>12.2} {:>10.2} {:>7.0}%",
            photo.file_name().unwrap().to_string_lossy(),
            format!("{}/8", (decoded.width * 8).div_ceil(full.width)),
            floor,
            eighth,
            ours,
            render,
            floor / render * 100.0
        );
    }
}

/// A page's sizes of one original in quick succession (the default whitelist: listing
/// 300x300, product page 1024x768, thumbnails 72x72 and 200x250), rendered three ways: each
/// from its own decode (no reuse), from one decode made for the largest size (ross's rule),
/// and from a decode made for each request, kept and reused while it covers the next.
fn several_sizes(photos: &[PathBuf], registry: &InProcessModes) {
    const SIZES: [(u32, u32); 4] = [(300, 300), (1024, 768), (72, 72), (200, 250)];
    let mode = registry.get("crop").unwrap();
    let stats = ross::telemetry::Metrics::new();
    let target = |(width, height): (u32, u32)| TargetSize { width, height };
    let (mut alone, mut largest, mut growing) = (0.0, 0.0, 0.0);
    for photo in photos {
        let bytes = std::fs::read(photo).unwrap();
        alone += timed(|| {
            for size in SIZES {
                render_bytes(&bytes, mode, target(size), u64::MAX, JPEG, &OUTPUT, &stats).unwrap();
            }
        });
        largest += timed(|| {
            let boxes = SIZES.map(DecodeBox::from);
            let decoded = decode(&bytes, &boxes, u64::MAX).unwrap();
            for size in SIZES {
                let _ = render_decoded(&decoded, mode, target(size), JPEG, &OUTPUT, &mut |_| {})
                    .unwrap();
            }
        });
        growing += timed(|| {
            let mut kept: Option<(ross::imaging::Decoded, (u32, u32))> = None;
            for size in SIZES {
                let covers = kept.as_ref().is_some_and(|(d, made_for)| {
                    let scale = |(w, h): (u32, u32)| {
                        (f64::from(w) / f64::from(d.width)).max(f64::from(h) / f64::from(d.height))
                    };
                    scale(size) <= scale(*made_for)
                });
                if !covers {
                    kept = Some((decode(&bytes, &[size.into()], u64::MAX).unwrap(), size));
                }
                let decoded = &kept.as_ref().unwrap().0;
                let _ = render_decoded(decoded, mode, target(size), JPEG, &OUTPUT, &mut |_| {})
                    .unwrap();
            }
        });
    }
    let n = photos.len() as f64;
    println!(
        "several sizes of one original ({}), ms per original, mean of {} photos:",
        SIZES.map(|(w, h)| format!("{w}x{h}")).join(", "),
        photos.len()
    );
    println!(
        "  each size decoded on its own (no reuse)      {:>8.2}",
        alone / n
    );
    println!(
        "  one decode for the largest size (ross)       {:>8.2}   {:.2}x the rate without reuse, target >= 2x",
        largest / n,
        alone / largest
    );
    println!(
        "  a decode per request, kept while it covers   {:>8.2}   {:.2}x",
        growing / n,
        alone / growing
    );
}

/// vipsthumbnail on the same photos in one batch, against ross's means per mode.
fn compare_with_vips(photos: &[PathBuf], means: &[f64]) {
    let out = tempfile::tempdir().unwrap();
    let Some((wall, cpu)) = vips_batch(photos, out.path(), None) else {
        println!("vipsthumbnail not available (apt-get install libvips-tools): no comparison");
        return;
    };
    let single = vips_batch(photos, out.path(), Some("1"));
    println!(
        "vipsthumbnail, one batch of {} files, -s 300x300 Q=90, median of {VIPS_BATCHES} batches:",
        photos.len()
    );
    println!("  default threads: {wall:.2} ms/image wall, {cpu:.2} ms/image CPU");
    if let Some((w1, c1)) = single {
        println!("  VIPS_CONCURRENCY=1: {w1:.2} ms/image wall, {c1:.2} ms/image CPU");
    }
    println!("ratio (vipsthumbnail wall per image / ross per image), target >= 4x:");
    for (name, m) in MODES.iter().zip(means) {
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

/// Encoding as the server's defaults: baseline JPEG at quality 90.
const JPEG: ross::cache::OutputFormat = ross::cache::OutputFormat::Jpeg;

/// The default output settings, made once (not inside the timed renders).
static OUTPUT: std::sync::LazyLock<ross_config::OutputSettings> =
    std::sync::LazyLock::new(|| ross_config::Settings::default().output);
