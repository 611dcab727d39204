//! Output formats: bytes, encode and render time, and perceptual quality of WebP and AVIF
//! against JPEG, at 300x300 and 1024x768 crops of every corpus photo, in one run on one
//! thread. Run with `cargo bench -p ross --bench formats` after a release build of the
//! workspace (or `scripts/bench`).
//!
//! Quality is SSIMULACRA2 against the render before encoding (the plugin's pixels): 90 and
//! above is visually lossless, about 70 high quality, 50 medium. The first table sweeps each
//! encoder's quality setting, to choose `output.webp_quality` and `output.avif_quality`
//! where they score as JPEG does at `output.jpeg_quality`; the second gives the defaults'
//! bytes and times as ratios against JPEG.

use std::path::{Path, PathBuf};
use std::time::Instant;

use plugin_api::{ImageView, PixelFormat, TargetSize};
use ross::cache::OutputFormat;
use ross::imaging::{decode, decode_avif, encode, encode_avif_with, AvifEncoder, Rows};
use ross::render::render_bytes;
use ross::render::InProcessModes;
use ross_config::OutputSettings;
use ssimulacra2::{compute_frame_ssimulacra2, ColorPrimaries, Rgb, TransferCharacteristic};

const SIZES: [(u32, u32); 2] = [(300, 300), (1024, 768)];
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median milliseconds of `RUNS` calls of `f`, and its last result.
fn timed<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut last = f();
    let times = (0..RUNS)
        .map(|_| {
            let t0 = Instant::now();
            last = std::hint::black_box(f());
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (median(times), last)
}

/// An encoded image back to RGB rows.
fn decoded_rgb(bytes: &[u8]) -> (Vec<u8>, u32, u32) {
    if bytes.get(4..12) == Some(b"ftypavif") {
        let (rgba, w, h) = decode_avif(bytes).expect("AVIF decodes");
        let rgb = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        return (rgb, w, h);
    }
    let image = image::load_from_memory(bytes).expect("decodes").into_rgb8();
    let (w, h) = image.dimensions();
    (image.into_raw(), w, h)
}

fn srgb(pixels: &[u8], w: u32, h: u32) -> Rgb {
    let data = pixels
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]].map(|c| f32::from(c) / 255.0))
        .collect();
    Rgb::new(
        data,
        w as usize,
        h as usize,
        TransferCharacteristic::SRGB,
        ColorPrimaries::BT709,
    )
    .expect("a valid image")
}

/// One photo's render at one size before encoding: RGB rows.
struct Rendered {
    pixels: Vec<u8>,
    width: u32,
    height: u32,
}

impl Rendered {
    fn view(&self) -> ImageView<'_> {
        ImageView::new(&self.pixels, self.width, self.height, PixelFormat::Rgb8).unwrap()
    }

    /// Bytes, encode milliseconds and SSIMULACRA2 score of this render as `format` (AVIF
    /// with `rav1e` instead of libaom when asked).
    fn encode(
        &self,
        format: OutputFormat,
        output: &OutputSettings,
        rav1e: bool,
    ) -> (usize, f64, f64) {
        let rows = Rows {
            pixels: &self.pixels,
            width: self.width,
            height: self.height,
            stride: self.width as usize * 3,
            channels: 3,
        };
        let (ms, bytes) = timed(|| {
            if rav1e {
                encode_avif_with(
                    AvifEncoder::Rav1e,
                    &rows,
                    output.avif_quality,
                    output.avif_speed,
                )
            } else {
                encode(self.view(), format, output)
            }
            .expect("encodes")
        });
        let (back, w, h) = decoded_rgb(&bytes);
        let score = compute_frame_ssimulacra2(
            srgb(&self.pixels, self.width, self.height),
            srgb(&back, w, h),
        )
        .expect("scores");
        (bytes.len(), ms, score)
    }
}

/// A setting of the sweep.
struct Setting {
    label: String,
    format: OutputFormat,
    output: OutputSettings,
    /// AVIF by rav1e rather than libaom.
    rav1e: bool,
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
    let registry = InProcessModes::load_dir(&root.join("target/release"));
    let crop = registry
        .get("crop")
        .expect("the crop mode is not built: run cargo build --release --workspace first");
    let defaults = ross_config::Settings::default().output;
    let stats = ross::telemetry::Metrics::new();

    // Every photo rendered (not encoded) at each size, once.
    let mut renders: Vec<Vec<Rendered>> = Vec::new();
    for &(width, height) in &SIZES {
        let target = TargetSize { width, height };
        let boxes: Vec<_> = crop.decode_box(target).into_iter().collect();
        renders.push(
            photos
                .iter()
                .map(|p| {
                    let decoded = decode(&std::fs::read(p).unwrap(), &boxes, u64::MAX).unwrap();
                    let view = ImageView::new(
                        &decoded.pixels,
                        decoded.width,
                        decoded.height,
                        PixelFormat::Rgb8,
                    )
                    .unwrap();
                    let out = crop.render(view, target).unwrap();
                    let v = out.view();
                    let mut pixels = Vec::new();
                    for y in 0..v.height {
                        pixels.extend_from_slice(v.row(y));
                    }
                    Rendered {
                        pixels,
                        width: v.width,
                        height: v.height,
                    }
                })
                .collect(),
        );
    }

    let with = |f: &dyn Fn(&mut OutputSettings)| {
        let mut o = defaults.clone();
        f(&mut o);
        o
    };
    let mut sweep = vec![Setting {
        label: format!("jpeg q{}", defaults.jpeg_quality),
        format: OutputFormat::Jpeg,
        output: defaults.clone(),
        rav1e: false,
    }];
    for q in [80u8, 85, 90, 93] {
        sweep.push(Setting {
            label: format!("webp q{q}"),
            format: OutputFormat::Webp,
            output: with(&|o| o.webp_quality = q),
            rav1e: false,
        });
    }
    for q in [60u8, 70, 75, 80, 85] {
        sweep.push(Setting {
            label: format!("avif q{q} speed {}", defaults.avif_speed),
            format: OutputFormat::Avif,
            output: with(&|o| o.avif_quality = q),
            rav1e: false,
        });
    }
    for speed in [6u8, 8, 9, 10] {
        sweep.push(Setting {
            label: format!("avif q{} speed {speed}", defaults.avif_quality),
            format: OutputFormat::Avif,
            output: with(&|o| o.avif_speed = speed),
            rav1e: false,
        });
    }
    // The other AV1 encoder libavif has here: rav1e, as the pure-Rust `ravif` uses.
    for (q, speed) in [(defaults.avif_quality, 10u8), (85, 10)] {
        sweep.push(Setting {
            label: format!("avif rav1e q{q} speed {speed}"),
            format: OutputFormat::Avif,
            output: with(&|o| {
                o.avif_quality = q;
                o.avif_speed = speed;
            }),
            rav1e: true,
        });
    }

    println!(
        "formats benchmark: {} photos, crop at {}, one thread; SSIMULACRA2 against the \
         render before encoding (higher is better), means over the photos",
        photos.len(),
        SIZES.map(|(w, h)| format!("{w}x{h}")).join(" and ")
    );
    println!(
        "{:<22} {:>14} {:>9} {:>10} {:>16} {:>9} {:>10}",
        "setting", "300x300 score", "KiB", "encode ms", "1024x768 score", "KiB", "encode ms"
    );
    for s in &sweep {
        let mut cells = Vec::new();
        for per_size in &renders {
            let n = per_size.len() as f64;
            let (mut bytes, mut ms, mut score) = (0.0, 0.0, 0.0);
            for r in per_size {
                let (b, t, q) = r.encode(s.format, &s.output, s.rav1e);
                bytes += b as f64;
                ms += t;
                score += q;
            }
            cells.push((score / n, bytes / n / 1024.0, ms / n));
        }
        println!(
            "{:<22} {:>14.1} {:>9.1} {:>10.2} {:>16.1} {:>9.1} {:>10.2}",
            s.label, cells[0].0, cells[0].1, cells[0].2, cells[1].0, cells[1].1, cells[1].2
        );
    }

    // The defaults, whole renders (decode, crop, encode) as the server runs them.
    println!(
        "== defaults (jpeg q{}, webp q{}, avif q{} speed {}): whole renders, ratios against JPEG",
        defaults.jpeg_quality, defaults.webp_quality, defaults.avif_quality, defaults.avif_speed
    );
    println!(
        "{:<10} {:<6} {:>9} {:>12} {:>11} {:>13} {:>7}",
        "size", "format", "KiB", "bytes/JPEG", "render ms", "render/JPEG", "score"
    );
    let mut avif_300 = None;
    for (i, &(width, height)) in SIZES.iter().enumerate() {
        let target = TargetSize { width, height };
        let mut jpeg = (0.0, 0.0);
        for format in [OutputFormat::Jpeg, OutputFormat::Webp, OutputFormat::Avif] {
            let (mut bytes, mut ms, mut score) = (0.0, 0.0, 0.0);
            for (photo, rendered) in photos.iter().zip(&renders[i]) {
                let source = std::fs::read(photo).unwrap();
                let (t, _) = timed(|| {
                    render_bytes(&source, crop, target, u64::MAX, format, &defaults, &stats)
                        .expect("renders")
                });
                let (b, _, q) = rendered.encode(format, &defaults, false);
                bytes += b as f64;
                ms += t;
                score += q;
            }
            let n = photos.len() as f64;
            if format == OutputFormat::Jpeg {
                jpeg = (bytes, ms);
            }
            if format == OutputFormat::Avif && i == 0 {
                avif_300 = Some(ms / jpeg.1);
            }
            println!(
                "{:<10} {:<6} {:>9.1} {:>12.2} {:>11.2} {:>13.2} {:>7.1}",
                format!("{width}x{height}"),
                format.as_str(),
                bytes / n / 1024.0,
                bytes / jpeg.0,
                ms / n,
                ms / jpeg.1,
                score / n
            );
        }
    }
    let ratio = avif_300.expect("measured");
    println!(
        "AVIF render at 300x300: {ratio:.2}x the JPEG render (budget {AVIF_BUDGET}x): {}",
        if ratio <= AVIF_BUDGET {
            "within"
        } else {
            "OVER BUDGET"
        }
    );
}

/// What an AVIF render at 300x300 may cost against the JPEG one (docs/formats.md).
const AVIF_BUDGET: f64 = 1.5;
