//! What a render costs through a render worker against the same render in this process: the
//! price of isolation. Each photo of `../shared/corpus/photos` is cropped to 300x300 (decode,
//! plugin, JPEG encode) one at a time, median of 15, in-process (`ross::render::render_bytes`)
//! and through one `ross worker` (the original sent through its socket, the JPEG read back);
//! then the socket's share alone (the same original sent for a job the worker refuses at
//! once), a page's four sizes of one original with and without the worker's decode reuse,
//! and how long a stalled render's slot takes to come back (the worker killed at the timeout,
//! a fresh one started, a render made).
//!
//! `cargo bench -p ross --bench workers` after
//! `cargo build --release --workspace --examples`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_api::TargetSize;
use ross::render::{render_bytes, InProcessModes, Shape};
use ross::worker::pool::{JobFiles, JobOutcome, Worker};
use ross::worker::protocol::{PluginToLoad, RenderJob, Sent, WorkerSettings};
use ross::worker::Spawner;
use ross_config::OutputFormat;

const RUNS: usize = 15;
const SIZES: [(u32, u32); 4] = [(300, 300), (1024, 768), (72, 72), (200, 250)];

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn settings(decoded_bytes: u64) -> WorkerSettings {
    let defaults = ross_config::Settings::default();
    WorkerSettings {
        max_source_pixels: defaults.limits.max_source_pixels,
        memory_bytes: defaults.limits.worker_memory_bytes,
        decoded_bytes,
        output: defaults.output,
        max_copy_bytes: 0,
        sandbox: true,
    }
}

/// A job for `key` at `size`, decoding for that size alone (as `render_bytes` does), or for
/// the largest of a page's sizes with `page`.
fn job_for(key: &str, mode: &str, (width, height): (u32, u32), page: bool) -> RenderJob {
    RenderJob {
        key: key.to_owned(),
        epoch: 0,
        mode: mode.to_owned(),
        width,
        height,
        format: OutputFormat::Jpeg,
        // A page's sizes, asked for of the crop mode.
        shapes: if page {
            SIZES
                .iter()
                .map(|&(width, height)| Shape {
                    mode: "crop".into(),
                    width,
                    height,
                })
                .collect()
        } else {
            Vec::new()
        },
        copy: false,
    }
}

fn job(key: &str, mode: &str, size: (u32, u32)) -> RenderJob {
    job_for(key, mode, size, false)
}

fn page_job(key: &str, size: (u32, u32)) -> RenderJob {
    job_for(key, "crop", size, true)
}

async fn start(spawner: &Spawner, plugins: &[PathBuf], decoded_bytes: u64) -> Worker {
    let plugins: Vec<PluginToLoad> = plugins
        .iter()
        .map(|p| PluginToLoad {
            file: p.clone(),
            copy: p.clone(),
        })
        .collect();
    let (worker, reports, _) =
        Worker::start(spawner, 1, &settings(decoded_bytes), &plugins, 64 << 20)
            .await
            .expect("a worker starts");
    for r in reports {
        r.result.expect("the plugin loads");
    }
    worker
}

async fn render(worker: &mut Worker, job: &RenderJob, original: Option<&[u8]>) -> JobOutcome {
    let sent = if original.is_some() {
        Sent::Original
    } else {
        Sent::Nothing
    };
    worker
        .render(
            job,
            sent,
            original.unwrap_or_default(),
            JobFiles::default(),
            Duration::from_secs(30),
        )
        .await
        .expect("the worker lives")
        .0
}

fn main() {
    let build = support::build_dir();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/photos");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    photos.sort();
    let crop_file = build.join("libcrop.so");
    let stall_file = build.join("examples/libstalling_plugin.so");
    assert!(stall_file.exists(), "build with --examples first");
    let modes = InProcessModes::load_dir(&build);
    let crop = modes.get("crop").unwrap();
    let output = ross_config::Settings::default().output;
    let stats = ross::telemetry::Metrics::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Workers are `ross worker`: this benchmark's binary is not `ross`.
    ross::worker::use_program(build.join("ross"));
    let spawner = Spawner::new().unwrap();
    runtime.block_on(async {
        let mut worker = start(&spawner, std::slice::from_ref(&crop_file), 0).await;
        println!("== crop 300x300, one at a time, median of {RUNS}, ms");
        println!(
            "{:<22} {:>10} {:>10} {:>8} {:>12}",
            "photo", "in-process", "worker", "ratio", "socket only"
        );
        let target = TargetSize {
            width: 300,
            height: 300,
        };
        let (mut sum_in, mut sum_worker, mut sum_socket) = (0.0, 0.0, 0.0);
        for (n, photo) in photos.iter().enumerate() {
            let bytes = std::fs::read(photo).unwrap();
            let timed = |f: &mut dyn FnMut()| {
                let started = Instant::now();
                f();
                started.elapsed().as_secs_f64() * 1e3
            };
            // Interleaved, so that the machine's noise falls on both alike.
            let (mut inside, mut through, mut socket) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..RUNS {
                inside.push(timed(&mut || {
                    render_bytes(&bytes, crop, target, u64::MAX, OutputFormat::Jpeg, &output, &stats)
                        .unwrap();
                }));
                // A new key each time: nothing kept from the last run.
                let key = format!("{n}-{i}");
                let started = Instant::now();
                let outcome = render(&mut worker, &job(&key, "crop", (300, 300)), Some(&bytes)).await;
                through.push(started.elapsed().as_secs_f64() * 1e3);
                assert!(matches!(outcome, JobOutcome::Rendered { .. }));
                // The same original for a mode the worker does not have: sent, read whole,
                // refused at once.
                let started = Instant::now();
                let outcome = render(&mut worker, &job(&key, "nosuchmode", (300, 300)), Some(&bytes)).await;
                socket.push(started.elapsed().as_secs_f64() * 1e3);
                assert!(matches!(outcome, JobOutcome::Failed(_)));
            }
            let inside = median(inside);
            let (through, socket) = (median(through), median(socket));
            let name = photo.file_name().unwrap().to_string_lossy();
            println!(
                "{name:<22} {inside:>10.2} {through:>10.2} {:>7.3}x {socket:>12.3}",
                through / inside
            );
            sum_in += inside;
            sum_worker += through;
            sum_socket += socket;
        }
        let n = photos.len() as f64;
        println!(
            "{:<22} {:>10.2} {:>10.2} {:>7.3}x {:>12.3}   (target: worker within 1.05x)",
            "mean",
            sum_in / n,
            sum_worker / n,
            sum_worker / sum_in,
            sum_socket / n
        );

        println!(
            "== a page's four sizes of one original through one worker, ms per original, mean \
             of the photos"
        );
        let mut kept = start(&spawner, std::slice::from_ref(&crop_file), 256 << 20).await;
        let (mut alone_sum, mut shared_sum) = (0.0, 0.0);
        for (n, photo) in photos.iter().enumerate() {
            let bytes = std::fs::read(photo).unwrap();
            let (mut alone, mut shared) = (Vec::new(), Vec::new());
            for run in 0..3 {
                let started = Instant::now();
                for (s, size) in SIZES.iter().enumerate() {
                    let key = format!("alone-{n}-{run}-{s}");
                    render(&mut worker, &job(&key, "crop", *size), Some(&bytes)).await;
                }
                alone.push(started.elapsed().as_secs_f64() * 1e3);
                let key = format!("shared-{n}-{run}");
                let started = Instant::now();
                for (s, size) in SIZES.iter().enumerate() {
                    // The first size decodes; the next are sent without the original.
                    let original = (s == 0).then_some(&bytes[..]);
                    match render(&mut kept, &page_job(&key, *size), original).await {
                        JobOutcome::Rendered { .. } => {}
                        JobOutcome::NeedOriginal { .. } => {
                            render(&mut kept, &page_job(&key, *size), Some(&bytes)).await;
                        }
                        JobOutcome::Failed(e) => panic!("{e:?}"),
                    }
                }
                shared.push(started.elapsed().as_secs_f64() * 1e3);
            }
            alone_sum += median(alone);
            shared_sum += median(shared);
        }
        // The mean over the photos of each one's median, as `--bench render` reports.
        let (alone, shared) = (alone_sum / n, shared_sum / n);
        println!("  each size decoded on its own      {alone:>8.2}");
        println!(
            "  one decode kept by the worker     {shared:>8.2}   {:.2}x the rate without reuse, target >= 2x",
            alone / shared
        );

        println!("== a stalled render's slot: killed at the timeout, a fresh worker, a render");
        let plugins = [crop_file.clone(), stall_file.clone()];
        let mut stalled = start(&spawner, &plugins, 0).await;
        let bytes = Arc::new(std::fs::read(&photos[0]).unwrap());
        let timeout = Duration::from_millis(500);
        let started = Instant::now();
        let failed = stalled
            .render(
                &job("stall", "stall", (300, 300)),
                Sent::Original,
                &bytes,
                JobFiles::default(),
                timeout,
            )
            .await;
        let killed_after = started.elapsed();
        assert!(failed.is_err());
        let back = Instant::now();
        let mut fresh = start(&spawner, &plugins, 0).await;
        let started_in = back.elapsed();
        render(&mut fresh, &job("after", "crop", (300, 300)), Some(&bytes)).await;
        let rendered_in = back.elapsed();
        println!(
            "  killed {:.0} ms after a {} ms timeout; a fresh worker ready in {:.1} ms, its first \
             render done {:.1} ms after the kill",
            killed_after.as_secs_f64() * 1e3,
            timeout.as_millis(),
            started_in.as_secs_f64() * 1e3,
            rendered_in.as_secs_f64() * 1e3
        );
    });
}
