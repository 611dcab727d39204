//! The render worker's side: `ross worker`, started by the server with a Unix socket as its
//! standard input, on which it first gets a second one, for files. It loads the plugin copies it
//! is told to, test-renders their modes, enters its sandbox, says what it loaded, then renders
//! one job at a time until the socket closes. It keeps the pixels of the originals it decoded
//! in the last minute (its share of `cache.decoded_bytes`), so the next sizes of an original
//! sent to it skip the decode, and it reads and writes reduced copies in the files the server
//! hands it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_api::TargetSize;

use super::protocol::{
    read_frame, receive_file, write_frame, FileRole, LoadReport, ModeSpec, RenderJob, Reply,
    Request, Sent, Stage, WireError, WorkerSettings,
};
use super::sandbox;
use crate::error::AppError;
use crate::imaging::DecodeBox;
use crate::plugins::ModeCode;
use crate::reduced::{copy, direct};
use crate::render::{decode_boxes, render_decoded, DecodedSource, Shape};

/// How long decoded pixels are kept after their decode, as the server keeps originals.
const KEPT_FOR: Duration = crate::recent::KEPT_FOR;

/// Runs a worker for the server whose process id is `server`, on standard input; returns
/// when the server closes the socket.
pub fn main(server: u32) -> ExitCode {
    die_with_parent(server);
    first_to_go_when_memory_runs_out();
    keep_freed_memory();
    let socket = match std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(UnixStream::from)
    {
        Ok(socket) => socket,
        Err(e) => {
            eprintln!("ross worker: standard input is not the server's socket: {e}");
            return ExitCode::from(2);
        }
    };
    let files = match receive_file(&socket, FileRole::Channel) {
        Ok(files) => UnixDatagram::from(files),
        Err(e) => {
            eprintln!("ross worker: the server did not send its file channel first: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(socket, files) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ross worker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Asks the kernel to kill this process when the server's thread that started it ends (the
/// server starts workers from one thread that lives as long as it does), so that no worker,
/// however stuck, outlives a server killed with `kill -9`.
#[allow(unsafe_code)]
fn die_with_parent(server: u32) {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // The server may have died before the call: then this process was adopted by another.
    // (Compared with the server's id, not with 1: a server may be process 1 of a container.)
    if std::os::unix::process::parent_id() != server {
        std::process::exit(1);
    }
}

/// When the machine (or the service's cgroup) runs out of memory, the kernel kills a worker
/// (its render fails) rather than the server.
fn first_to_go_when_memory_runs_out() {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", b"1000") {
        eprintln!("ross worker: cannot raise its OOM score: {e}");
    }
}

/// A worker does the same few large allocations job after job (the original, the decoded
/// pixels, the mode's output): glibc's defaults give buffers over 128 KiB back to the kernel
/// when freed, and every job then faults them in again, zeroed. Buffers up to 32 MiB come
/// from the heap instead, and up to 64 MiB of freed heap is kept: measured in
/// `--bench workers`, this is most of what a render costs in a worker beyond the same render
/// in-process. Bounded all the same by the worker's address space limit.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator tunables; called before this process allocates
    // anything large.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// The largest original the server sends (`limits.max_source_bytes`, bounded by its own
/// hard limit) plus room; the worker reads no more.
const MAX_ORIGINAL: usize = 1 << 30;

fn serve(socket: UnixStream, files: UnixDatagram) -> std::io::Result<()> {
    // Jobs, buffered: a job's head and header in one read (an original larger than the
    // buffer is read straight into its own room).
    let mut input = std::io::BufReader::with_capacity(64 << 10, socket.try_clone()?);
    let mut output = BufWriter::with_capacity(64 << 10, socket);
    let (Request::Init { settings, plugins }, _) = read_frame::<Request>(&mut input, 0)? else {
        return Err(std::io::Error::other("the first message was not Init"));
    };
    // Libraries are opened before the sandbox (the dynamic linker reads files); their code
    // runs only inside it, the test renders included.
    let opened: Vec<_> = plugins
        .iter()
        .map(|p| ModeCode::open(&p.copy, &p.file))
        .collect();
    // A copy is written in whole blocks: the largest one allowed, rounded up.
    let copy_file_bytes =
        settings.max_copy_bytes.div_ceil(direct::ALIGN as u64) * direct::ALIGN as u64;
    let sandbox = if settings.sandbox {
        sandbox::enter(settings.memory_bytes, copy_file_bytes)
    } else {
        Ok(Default::default())
    };
    let sandboxed = sandbox.is_ok();
    let mut modes: HashMap<String, ModeCode> = HashMap::new();
    let mut reports = Vec::new();
    for (plugin, codes) in plugins.into_iter().zip(opened) {
        let result = codes.and_then(|codes| {
            if sandboxed {
                codes.iter().try_for_each(ModeCode::test)?;
            }
            Ok(codes)
        });
        let result = result.map(|codes| {
            let specs: Vec<ModeSpec> = codes.iter().map(|c| c.spec.clone()).collect();
            for code in codes {
                modes.entry(code.name.clone()).or_insert(code);
            }
            specs
        });
        reports.push(LoadReport {
            file: plugin.file,
            result,
        });
    }
    write_frame(
        &mut output,
        &Reply::Ready {
            plugins: reports,
            sandbox,
        },
        &[],
    )?;
    if !sandboxed {
        return Err(std::io::Error::other("could not enter the sandbox"));
    }
    let mut worker = Worker {
        modes,
        files,
        io: direct::Aligned::new(),
        shape_boxes: HashMap::new(),
        kept: Kept::new(settings.decoded_bytes),
        settings,
    };
    loop {
        let (request, original) = match read_frame::<Request>(&mut input, MAX_ORIGINAL) {
            Ok(frame) => frame,
            // The server closed the socket: done.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let Request::Render { job, sent } = request else {
            return Err(std::io::Error::other("Init sent twice"));
        };
        worker.job(&job, sent, original, &mut output)?;
    }
}

struct Worker {
    modes: HashMap<String, ModeCode>,
    /// The file channel: the reduced copies to read and to write come on it.
    files: UnixDatagram,
    /// The aligned buffer copies are read and written through.
    io: direct::Aligned,
    /// The decode box of each shape asked for, by its mode's code.
    shape_boxes: HashMap<Shape, Option<DecodeBox>>,
    kept: Kept,
    settings: WorkerSettings,
}

/// Shapes whose decode box a worker remembers (the server sends at most 4,096 at once).
const MAX_SHAPE_BOXES: usize = 8192;

impl Worker {
    /// Renders `job` from what the server sent (`blob`, as `sent` says) or from pixels kept,
    /// and answers it.
    fn job(
        &mut self,
        job: &RenderJob,
        sent: Sent,
        blob: Vec<u8>,
        output: &mut impl Write,
    ) -> std::io::Result<()> {
        // Taken first, whatever the job's fate: the channel stays in step with the jobs.
        let to_read = match sent {
            Sent::Copy => Some(File::from(receive_file(&self.files, FileRole::ReadCopy)?)),
            _ => None,
        };
        let to_write = match job.copy {
            true => Some(File::from(receive_file(&self.files, FileRole::WriteCopy)?)),
            false => None,
        };
        let Some(mode) = self.modes.get(&job.mode) else {
            let error = AppError::unknown_mode(&job.mode);
            return write_frame(output, &Reply::Failed(WireError::from(&error)), &[]);
        };
        let target = TargetSize {
            width: job.width,
            height: job.height,
        };
        let (modes, shape_boxes) = (&self.modes, &mut self.shape_boxes);
        let (need, boxes) = decode_boxes(mode, target, &job.shapes, |shape| {
            // Each plugin is asked once per shape in this worker's life (its code is fixed).
            if let Some(known) = shape_boxes.get(shape) {
                return *known;
            }
            let code = modes.get(&shape.mode)?;
            let found = code.decode_box(TargetSize {
                width: shape.width,
                height: shape.height,
            });
            if shape_boxes.len() < MAX_SHAPE_BOXES {
                shape_boxes.insert(shape.clone(), found);
            }
            found
        });
        let mut decode_us = None;
        let mut copy_us = None;
        let mut kept = false;
        let pixels = match self
            .kept
            .get(&job.key, job.epoch)
            .filter(|p| p.serves(need))
        {
            Some(pixels) => pixels,
            None => match sent {
                Sent::Nothing => return need_original(output, None),
                Sent::Copy => {
                    let Some(file) = &to_read else {
                        return Err(std::io::Error::other("a copy was sent without its file"));
                    };
                    let started = Instant::now();
                    let max_pixels = self.settings.max_source_pixels;
                    let longest = copy::HEADER as u64 + max_pixels.saturating_mul(4);
                    let read = direct::read(file, longest)
                        .map(|(buf, at)| copy::decode(buf, at, max_pixels));
                    match read {
                        Ok(Ok(pixels)) if pixels.serves(need) => {
                            copy_us = Some(started.elapsed().as_micros() as u64);
                            let pixels = Arc::new(pixels);
                            kept = self.kept.keep(&job.key, job.epoch, pixels.clone());
                            pixels
                        }
                        // Too small for this size: the original, then (its decode makes a
                        // larger copy). Out of memory: the copy may be fine.
                        Ok(Ok(_)) => return need_original(output, None),
                        Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {
                            return need_original(output, None)
                        }
                        // Not a copy (cut short, damaged, over the limits), or a file the disk
                        // cannot read: the server drops it.
                        Ok(Err(e)) => return need_original(output, Some(e.to_string())),
                        Err(e) => return need_original(output, Some(e.to_string())),
                    }
                }
                Sent::Original => {
                    // Sent before the decoder runs: a crash from here on is the file's (or the
                    // decoder's), not the mode's.
                    write_frame(output, &Reply::Stage(Stage::Decode), &[])?;
                    let started = Instant::now();
                    let decoded =
                        match DecodedSource::decode(&blob, &boxes, self.settings.max_source_pixels)
                        {
                            Ok(decoded) => decoded,
                            Err(e) => {
                                return write_frame(
                                    output,
                                    &Reply::Failed(WireError::from(&e)),
                                    &[],
                                );
                            }
                        };
                    drop(blob);
                    // With a copy kept for the next sizes, this size renders from it too:
                    // every size of an original is made from the same pixels.
                    let max_copy = self.settings.max_copy_bytes;
                    let written = to_write.as_ref().map(|file| (file, &mut self.io));
                    let decoded = match write_copy(decoded, &boxes, max_copy, written, output)? {
                        Ok(copied) => copied,
                        Err(decoded) => decoded,
                    };
                    decode_us = Some(started.elapsed().as_micros() as u64);
                    let decoded = Arc::new(decoded);
                    kept = self.kept.keep(&job.key, job.epoch, decoded.clone());
                    decoded
                }
            },
        };
        let mut stage_error = None;
        // A job begins in the mode's code (the server counts it so): a render from kept
        // pixels has no stage to report before its encode.
        let mut reported = if decode_us.is_some() {
            Stage::Decode
        } else {
            Stage::Render
        };
        let rendered = render_decoded(
            &pixels.image,
            mode,
            target,
            job.format,
            &self.settings.output,
            &mut |stage: Stage| {
                if stage == reported {
                    return;
                }
                reported = stage;
                // Sent before the stage runs: if it kills the worker, the server knows where.
                if let Err(e) = write_frame(output, &Reply::Stage(stage), &[]) {
                    stage_error.get_or_insert(e);
                }
            },
        );
        if let Some(e) = stage_error {
            return Err(e);
        }
        match rendered {
            Ok((encoded, mut timings)) => {
                timings.decode_us = decode_us;
                timings.copy_us = copy_us;
                let warnings = if decode_us.is_some() {
                    pixels.warnings.clone()
                } else {
                    Vec::new()
                };
                let reply = Reply::Rendered {
                    timings,
                    kept,
                    warnings,
                };
                write_frame(output, &reply, &encoded)
            }
            Err(e) => write_frame(output, &Reply::Failed(WireError::from(&e)), &[]),
        }
    }
}

/// Answers that the job needs the original, and why the copy sent is unusable, if it is.
fn need_original(output: &mut impl Write, unusable: Option<String>) -> std::io::Result<()> {
    write_frame(output, &Reply::NeedOriginal { unusable }, &[])
}

/// Writes a reduced copy of `decoded` to `file` (through the buffer with it), if the job came
/// with one and the sizes allow a copy within `max_bytes`, and tells the server: `Ok` with the
/// copy's pixels, else `Err` with `decoded`. A copy that cannot be written is said on standard
/// error (the server logs it), and the job goes on.
fn write_copy(
    decoded: DecodedSource,
    boxes: &[DecodeBox],
    max_bytes: u64,
    file: Option<(&File, &mut direct::Aligned)>,
    output: &mut impl Write,
) -> std::io::Result<Result<DecodedSource, DecodedSource>> {
    let Some((file, io)) = file else {
        return Ok(Err(decoded));
    };
    let reduced = match copy::make(decoded, boxes, max_bytes) {
        Ok(reduced) => reduced,
        Err(decoded) => return Ok(Err(decoded)),
    };
    let head = copy::head(&reduced.image, reduced.good_up_to);
    match io.write(file, &[&head, &reduced.image.pixels]) {
        Ok(bytes) => write_frame(output, &Reply::Copy { bytes }, &[])?,
        Err(e) => eprintln!("ross worker: cannot write a reduced copy: {e}"),
    }
    Ok(Ok(reduced))
}

/// Decoded originals kept for reuse: a few, least recently used out first, each for
/// [`KEPT_FOR`] at most, within a byte budget.
struct Kept {
    budget: usize,
    entries: Vec<KeptEntry>,
}

struct KeptEntry {
    key: String,
    epoch: u64,
    pixels: Arc<DecodedSource>,
    decoded_at: Instant,
    used_at: Instant,
}

impl Kept {
    fn new(budget: u64) -> Kept {
        Kept {
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
            entries: Vec::new(),
        }
    }

    fn get(&mut self, key: &str, epoch: u64) -> Option<Arc<DecodedSource>> {
        self.entries.retain(|e| e.decoded_at.elapsed() < KEPT_FOR);
        let entry = self.entries.iter_mut().find(|e| e.key == key)?;
        if entry.epoch != epoch {
            return None;
        }
        entry.used_at = Instant::now();
        Some(entry.pixels.clone())
    }

    /// Keeps `pixels` of `key` unless pixels kept already serve a larger box, making room by
    /// dropping the least recently used; returns whether `key` has pixels kept now.
    fn keep(&mut self, key: &str, epoch: u64, pixels: Arc<DecodedSource>) -> bool {
        if pixels.weight() > self.budget {
            return false;
        }
        if let Some(held) = self
            .entries
            .iter()
            .find(|e| e.key == key && e.epoch == epoch)
        {
            let larger = match (held.pixels.good_up_to, pixels.good_up_to) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(held_box), Some(new_box)) => {
                    held.pixels.serves(Some(new_box)) && held_box != new_box
                }
            };
            if larger {
                return true;
            }
        }
        self.entries.retain(|e| e.key != key);
        let mut held: usize = self.entries.iter().map(|e| e.pixels.weight()).sum();
        while held + pixels.weight() > self.budget {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used_at)
                .map(|(i, _)| i)
            else {
                break;
            };
            held -= self.entries.swap_remove(oldest).pixels.weight();
        }
        let now = Instant::now();
        self.entries.push(KeptEntry {
            key: key.to_owned(),
            epoch,
            pixels,
            decoded_at: now,
            used_at: now,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::Decoded;

    fn pixels(width: u32, height: u32, good_up_to: Option<(u32, u32)>) -> Arc<DecodedSource> {
        let good_up_to = good_up_to.map(DecodeBox::from);
        Arc::new(DecodedSource {
            image: Decoded::rgb(vec![0; (width * height * 3) as usize], width, height),
            good_up_to,
            warnings: Vec::new(),
        })
    }

    #[test]
    fn larger_decodes_replace_smaller_ones_not_the_reverse() {
        let mut kept = Kept::new(1 << 24);
        kept.keep("a.jpg", 0, pixels(600, 400, Some((300, 300))));
        assert!(kept
            .get("a.jpg", 0)
            .unwrap()
            .serves(Some(DecodeBox::cover(200, 200))));
        kept.keep("a.jpg", 0, pixels(1200, 800, Some((1024, 768))));
        assert_eq!(kept.get("a.jpg", 0).unwrap().image.width, 1200);
        kept.keep("a.jpg", 0, pixels(300, 200, Some((72, 72))));
        assert_eq!(kept.get("a.jpg", 0).unwrap().image.width, 1200);
    }

    #[test]
    fn pixels_are_used_in_their_epoch_only_and_within_the_budget() {
        let mut kept = Kept::new(600 * 400 * 3 * 2);
        kept.keep("a.jpg", 3, pixels(600, 400, None));
        assert!(kept.get("a.jpg", 2).is_none());
        assert!(kept.get("a.jpg", 3).is_some());
        kept.keep("b.jpg", 3, pixels(600, 400, None));
        kept.get("a.jpg", 3);
        // A third makes room by dropping b, the least recently used.
        kept.keep("c.jpg", 3, pixels(600, 400, None));
        assert!(kept.get("b.jpg", 3).is_none());
        assert!(kept.get("a.jpg", 3).is_some() && kept.get("c.jpg", 3).is_some());
        assert!(!Kept::new(10).keep("d.jpg", 3, pixels(600, 400, None)));
    }
}
