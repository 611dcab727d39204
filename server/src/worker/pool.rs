//! The server's side of render workers: starting them, handing them jobs with a deadline,
//! telling how one ended, and keeping a pool of them per plugin generation.
//!
//! - **Starting.** Every worker is started from one thread that lives as long as the server
//!   ([`Spawner`]), so the kernel's parent-death signal, which follows the starting thread,
//!   kills workers only when the server goes. A worker gets a Unix socket as its standard
//!   input (whose first message hands it a Unix datagram socket for the files of its jobs:
//!   reduced copies to read and to write), an empty environment (no credentials) and a pipe as its standard
//!   error, whose lines are logged and whose last lines tell an allocation failure from other
//!   aborts.
//! - **Jobs.** A job has [`WorkerPool::render_timeout`] from when the worker gets it; past
//!   that the worker is killed (`SIGKILL`) and replaced. A worker that dies, or answers
//!   something that is not the protocol, fails only the job it was doing.
//! - **Pool.** At most `limits.max_concurrent_renders` jobs run at once (the caller holds a
//!   render slot), so as many workers are kept idle for the current generation; a worker of
//!   an older generation finishes its job and exits. A job for the original a worker decoded
//!   last goes to that worker when it is idle, so a page's sizes share one decode.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::protocol::{
    self, FileRole, LoadReport, PluginToLoad, RenderJob, Reply, Request, SandboxReport, Sent,
    Stage, Timings, WireError, WorkerSettings,
};
use crate::error::{AppError, ErrorCode};
use crate::telemetry::{Count, Metrics};

/// How long a new worker may take to load its plugins, sandbox itself and test-render its
/// modes before it is killed as hung.
pub const START_LIMIT: Duration = Duration::from_secs(5);

/// Send buffer of each end of a worker's socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// Lines of a worker's standard error kept to explain its end.
const TAIL_LINES: usize = 8;

/// The program started as a worker, when not this executable (set once by tests that run the
/// server inside a test binary).
static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Starts workers from `program` (`ross`) instead of this process's executable: for a server
/// run inside another program, such as a test binary. The first call wins.
pub fn use_program(program: PathBuf) {
    let _ = PROGRAM.set(program);
}

/// Set by the `ross` binary's `main`: only then is this executable one that runs
/// `ross worker`. Another program embedding the server must name the `ross` binary with
/// [`use_program`]: started as a worker, it would run its own `main` again, which would start
/// workers of its own, and so on.
static THIS_IS_ROSS: AtomicBool = AtomicBool::new(false);

/// Says that this executable is `ross` (its `main` calls this first).
pub fn this_executable_is_ross() {
    THIS_IS_ROSS.store(true, Ordering::SeqCst);
}

/// This process's own executable, by the kernel's link to it: the file it was started from
/// even once a package upgrade has replaced or removed the file at its path, so a worker is
/// always the same build as its server.
const THIS_EXECUTABLE: &str = "/proc/self/exe";

/// A started worker: its process, its socket and its file channel (the server's ends).
type Spawned = (Child, UnixStream, UnixDatagram);

type SpawnOrder = oneshot::Sender<io::Result<Spawned>>;

/// Starts worker processes, all from one long-lived thread.
pub struct Spawner {
    orders: Mutex<mpsc::Sender<SpawnOrder>>,
    next_id: AtomicU64,
}

impl Spawner {
    /// Starts the spawning thread, for workers run from this executable (or the program
    /// given to [`use_program`]).
    pub fn new() -> io::Result<Arc<Spawner>> {
        let program = match PROGRAM.get() {
            Some(program) => program.clone(),
            None if THIS_IS_ROSS.load(Ordering::SeqCst) => PathBuf::from(THIS_EXECUTABLE),
            None => {
                return Err(io::Error::other(
                    "this program is not ross: name the ross binary that runs render workers \
                     with ross::worker::use_program",
                ))
            }
        };
        Spawner::with_program(program)
    }

    /// Starts the spawning thread, for workers run from `program`.
    pub fn with_program(program: PathBuf) -> io::Result<Arc<Spawner>> {
        let (tx, rx) = mpsc::channel::<SpawnOrder>();
        std::thread::Builder::new()
            .name("worker-spawner".into())
            .spawn(move || {
                for order in rx {
                    let _ = order.send(spawn(&program));
                }
            })?;
        Ok(Arc::new(Spawner {
            orders: Mutex::new(tx),
            next_id: AtomicU64::new(1),
        }))
    }

    async fn spawn(&self) -> io::Result<Spawned> {
        let (tx, rx) = oneshot::channel();
        self.orders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(tx)
            .map_err(|_| io::Error::other("the worker spawner has stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the worker spawner has stopped"))?
    }
}

/// One `ross worker` process, started on the spawning thread.
fn spawn(program: &std::path::Path) -> io::Result<Spawned> {
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = UnixStream::pair()?;
    let (files, their_files) = UnixDatagram::pair()?;
    // Room for an original in one write, and for an encoded image in one answer: fewer
    // wake-ups of either side per job (the kernel caps these at net.core.wmem_max).
    socket2::SockRef::from(&ours).set_send_buffer_size(SOCKET_BUFFER)?;
    socket2::SockRef::from(&theirs).set_send_buffer_size(SOCKET_BUFFER)?;
    let child = Command::new(program)
        .arg0("ross")
        .arg("worker")
        .arg("--server")
        .arg(std::process::id().to_string())
        .process_group(0)
        .env_clear()
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // The first thing on its socket: its end of the file channel.
    protocol::send_file(&ours, FileRole::Channel, their_files.as_fd())?;
    Ok((child, ours, files))
}

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Its job ran past the render timeout; it was killed.
    Timeout,
    /// It died: a signal (SIGSEGV, SIGABRT...) or an exit.
    Crashed,
    /// It ran out of memory: an allocation over its limit failed, or the kernel killed it.
    OutOfMemory,
}

/// A job that cost its worker.
#[derive(Debug, Clone)]
pub struct JobFailure {
    /// What happened.
    pub failure: Failure,
    /// The stage it happened in.
    pub stage: Stage,
    /// How the worker ended, for the log: its pid, the signal or exit code, its last words.
    pub detail: String,
}

impl JobFailure {
    /// The response for a request whose render in `mode` ended so.
    pub fn to_app_error(&self, mode: &str) -> AppError {
        let detail = format!(
            "mode {mode}: worker {} in {}: {}",
            match self.failure {
                Failure::Timeout => "killed after the render timeout",
                Failure::Crashed => "crashed",
                Failure::OutOfMemory => "ran out of memory",
            },
            self.stage.as_str(),
            self.detail
        );
        match self.failure {
            Failure::Timeout => AppError::of(ErrorCode::RenderTimeout).detailed(detail),
            Failure::Crashed => AppError::of(ErrorCode::RenderCrashed).detailed(detail),
            Failure::OutOfMemory => AppError::of(ErrorCode::OutOfMemory).detailed(detail),
        }
    }
}

/// A job's answer.
#[derive(Debug)]
pub enum JobOutcome {
    /// The encoded image.
    Rendered {
        /// The bytes.
        encoded: Vec<u8>,
        /// Time per stage.
        timings: Timings,
        /// What the decode got past (counted by the pool).
        warnings: Vec<crate::imaging::DecodeWarning>,
        /// The length of the reduced copy the worker wrote to the file the job came with,
        /// if it wrote one.
        copy: Option<u64>,
    },
    /// The worker holds no pixels that serve: send the job again with the original.
    NeedOriginal {
        /// Why the reduced copy sent is not a copy at all (to be dropped); `None` for one
        /// that is only too small.
        unusable: Option<String>,
    },
    /// The job failed (a bad file, a mode's error); the worker lives on.
    Failed(AppError),
}

/// The files a job comes with, for the worker to read or write (by descriptor: the server
/// opens them, the sandboxed worker cannot).
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFiles<'a> {
    /// The reduced copy sent ([`Sent::Copy`]).
    pub copy_to_read: Option<BorrowedFd<'a>>,
    /// The file for a reduced copy of the decode ([`RenderJob::copy`]).
    pub copy_to_write: Option<BorrowedFd<'a>>,
}

/// The server's handle on one worker process. Dropping it kills the process.
pub struct Worker {
    id: u64,
    generation: u64,
    pid: u32,
    child: Option<Child>,
    /// Answers, buffered: a frame's head, header and blob in as few reads as arrived.
    reader: tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    /// Its file channel: descriptors are sent on it without waiting.
    files: UnixDatagram,
    stderr: Option<tokio::task::JoinHandle<Vec<String>>>,
    stage: Stage,
    max_reply: usize,
    /// Jobs rendered so far.
    jobs: u64,
}

impl Worker {
    /// Starts a worker of `generation` loading `plugins`, and waits for it to say what it
    /// loaded. `Err` when it cannot be started, cannot sandbox itself, or dies or hangs
    /// first.
    pub async fn start(
        spawner: &Spawner,
        generation: u64,
        settings: &WorkerSettings,
        plugins: &[PluginToLoad],
        max_reply: usize,
    ) -> Result<(Worker, Vec<LoadReport>, SandboxReport), String> {
        let (mut child, socket, files) = spawner
            .spawn()
            .await
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let pid = child.id();
        let stderr = child.stderr.take().map(|pipe| {
            let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe.into());
            tokio::spawn(log_stderr(pid, pipe))
        });
        let socket = socket
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(socket));
        let socket = match socket {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                reap(child);
                return Err(format!("cannot use a worker's socket: {e}"));
            }
        };
        let (reader, writer) = socket.into_split();
        let mut worker = Worker {
            id: spawner.next_id.fetch_add(1, Ordering::Relaxed),
            generation,
            pid,
            child: Some(child),
            reader: tokio::io::BufReader::with_capacity(64 << 10, reader),
            writer,
            files,
            stderr,
            stage: Stage::Render,
            max_reply,
            jobs: 0,
        };
        let init = Request::Init {
            settings: settings.clone(),
            plugins: plugins.to_vec(),
        };
        let hello = tokio::time::timeout(START_LIMIT, async {
            protocol::send(&mut worker.writer, &init, &[]).await?;
            protocol::receive::<Reply>(&mut worker.reader, 0).await
        })
        .await;
        match hello {
            Ok(Ok((Reply::Ready { plugins, sandbox }, _))) => match sandbox {
                Ok(sandbox) => Ok((worker, plugins, sandbox)),
                Err(e) => Err(format!("the worker could not enter its sandbox: {e}")),
            },
            Ok(Ok((other, _))) => Err(format!("the worker answered {other:?} to Init")),
            Ok(Err(_)) => Err(worker.ended().await.detail),
            Err(_) => {
                worker.kill();
                Err(format!(
                    "it did not finish within {} s (a plugin that hangs while loading or \
                     test-rendering)",
                    START_LIMIT.as_secs()
                ))
            }
        }
    }

    /// Runs `job` with `blob` (what `sent` says it is) and `files`, killing the worker if it
    /// has not answered within `budget`.
    pub async fn render(
        &mut self,
        job: &RenderJob,
        sent: Sent,
        blob: &[u8],
        files: JobFiles<'_>,
        budget: Duration,
    ) -> Result<(JobOutcome, bool), JobFailure> {
        // The job begins in the mode's code (its decode need), then decodes.
        self.stage = Stage::Render;
        self.jobs += 1;
        let request = Request::Render {
            job: job.clone(),
            sent,
        };
        // The files first, in the order the worker takes them; a worker whose channel is full
        // has not taken earlier ones: it breaks the protocol.
        let passed = [
            (FileRole::ReadCopy, files.copy_to_read),
            (FileRole::WriteCopy, files.copy_to_write),
        ]
        .into_iter()
        .filter_map(|(role, file)| file.map(|f| (role, f)))
        .try_for_each(|(role, file)| protocol::send_file(&self.files, role, file));
        if let Err(e) = passed {
            self.kill();
            return Err(self.failure(Failure::Crashed, format!("did not take its files: {e}")));
        }
        let mut copy = None;
        let exchange = tokio::time::timeout(budget, async {
            protocol::send(&mut self.writer, &request, blob).await?;
            loop {
                match protocol::receive::<Reply>(&mut self.reader, self.max_reply).await? {
                    (Reply::Stage(stage), _) => self.stage = stage,
                    (Reply::Copy { bytes }, _) if job.copy && copy.is_none() => copy = Some(bytes),
                    answer => return Ok::<_, io::Error>(answer),
                }
            }
        })
        .await;
        match exchange {
            Ok(Ok((
                Reply::Rendered {
                    timings,
                    kept,
                    warnings,
                },
                encoded,
            ))) => {
                let outcome = JobOutcome::Rendered {
                    encoded,
                    timings,
                    warnings,
                    copy,
                };
                Ok((outcome, kept))
            }
            Ok(Ok((Reply::NeedOriginal { unusable }, _))) => {
                Ok((JobOutcome::NeedOriginal { unusable }, false))
            }
            Ok(Ok((Reply::Failed(error), _))) => {
                Ok((JobOutcome::Failed(AppError::from_wire(error)), false))
            }
            Ok(Ok((other, _))) => {
                self.kill();
                Err(self.failure(Failure::Crashed, format!("answered {other:?} to a job")))
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                self.kill();
                Err(self.failure(Failure::Crashed, format!("broke the protocol: {e}")))
            }
            Ok(Err(_)) => {
                let ended = self.ended().await;
                let failure = if ended.out_of_memory {
                    Failure::OutOfMemory
                } else {
                    Failure::Crashed
                };
                Err(self.failure(failure, ended.detail))
            }
            Err(_) => {
                self.kill();
                let detail = format!("pid {} killed after {} ms", self.pid, budget.as_millis());
                Err(self.failure(Failure::Timeout, detail))
            }
        }
    }

    fn failure(&self, failure: Failure, detail: String) -> JobFailure {
        JobFailure {
            failure,
            stage: self.stage,
            detail,
        }
    }

    /// Kills the process (it is reaped in the background).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            reap(child);
        }
    }

    /// Waits for the process to end (it closed its socket: it is ending) and says how, with
    /// its last lines of standard error.
    async fn ended(&mut self) -> Ended {
        let Some(child) = self.child.take() else {
            return Ended {
                detail: format!("pid {} was killed", self.pid),
                out_of_memory: false,
            };
        };
        let status = tokio::task::spawn_blocking(move || wait_briefly(child))
            .await
            .ok()
            .flatten();
        let tail = match self.stderr.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        // Rust's allocation failure handler (the server's, or a plugin's own copy) says this
        // before it aborts: the worker's address space limit was reached. (A SIGKILL from
        // elsewhere, the kernel's OOM killer or an operator, is a crash: the worker's own
        // limit is met by failed allocations, not by signals.)
        let out_of_memory = tail.iter().any(|l| l.starts_with("memory allocation of"));
        let how = match status {
            Some(status) => describe(status),
            None => "did not exit".to_owned(),
        };
        let last = tail
            .last()
            .map(|l| format!("; last words: {l}"))
            .unwrap_or_default();
        Ended {
            detail: format!("pid {} {how}{last}", self.pid),
            out_of_memory,
        }
    }
}

/// How a worker that closed its socket ended.
struct Ended {
    detail: String,
    out_of_memory: bool,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits up to a second for `child`, killing it if it has not ended by then.
fn wait_briefly(mut child: Child) -> Option<ExitStatus> {
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                return child.wait().ok();
            }
        }
    }
}

/// Reaps `child` on a thread of its own, so no worker is left a zombie.
fn reap(mut child: Child) {
    let _ = std::thread::Builder::new()
        .name("worker-reaper".into())
        .spawn(move || child.wait());
}

/// "killed by signal 11 (SIGSEGV)", "exited with code 1".
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.signal(), status.code()) {
        (Some(libc::SIGKILL), _) => {
            "was killed by signal 9 (SIGKILL: the kernel's OOM killer, or an operator)".to_owned()
        }
        (Some(signal), _) => format!("was killed by signal {signal} ({})", signal_name(signal)),
        (None, Some(code)) => format!("exited with code {code}"),
        (None, None) => "ended".to_owned(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTRAP => "SIGTRAP",
        _ => "signal",
    }
}

/// The longest line of a worker's standard error kept; the rest of a longer line is dropped.
const LINE_LIMIT: usize = 4096;
/// Lines of one worker's standard error logged; later ones only count (a worker that writes
/// without end cannot grow the server or flood its log).
const LINES_LOGGED: usize = 200;

/// Logs a worker's standard error line by line, bounded; returns its last lines once it
/// closes.
async fn log_stderr(pid: u32, pipe: io::Result<tokio::net::unix::pipe::Receiver>) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let Ok(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
    let mut line = Vec::with_capacity(256);
    let mut logged = 0usize;
    let mut dropped = 0usize;
    let mut chunk = [0u8; 4096];
    let mut finish = |line: &mut Vec<u8>, tail: &mut std::collections::VecDeque<String>| {
        let text = String::from_utf8_lossy(line).into_owned();
        line.clear();
        if logged < LINES_LOGGED {
            tracing::warn!(worker = pid, "{text}");
            logged += 1;
        } else {
            dropped += 1;
        }
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text);
    };
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &chunk[..n] {
            if byte == b'\n' {
                finish(&mut line, &mut tail);
            } else if line.len() < LINE_LIMIT {
                line.push(byte);
            }
        }
    }
    if !line.is_empty() {
        finish(&mut line, &mut tail);
    }
    if dropped > 0 {
        tracing::warn!(
            worker = pid,
            dropped,
            "more lines of this worker's standard error were not logged"
        );
    }
    tail.into()
}

/// What the plugin generation a worker serves needs to start one.
#[derive(Debug, Clone)]
pub struct GenerationPlan {
    /// The generation's id.
    pub id: u64,
    /// Its plugin copies.
    pub plugins: Vec<PluginToLoad>,
}

/// Idle render workers and what starting more takes.
pub struct WorkerPool {
    spawner: Arc<Spawner>,
    settings: WorkerSettings,
    size: usize,
    render_timeout: Duration,
    max_reply: usize,
    idle: Mutex<Vec<Worker>>,
    current: AtomicU64,
    /// Which worker holds the pixels of which original, fetched in which epoch, since when.
    holders: Mutex<HashMap<String, (u64, u64, Instant)>>,
    can_start: AtomicBool,
    /// Workers out on a lease now, or being started for one.
    leased: std::sync::atomic::AtomicUsize,
    /// Workers being started to wait idle.
    starting: std::sync::atomic::AtomicUsize,
    sandbox: Mutex<Option<SandboxReport>>,
    /// Where starts, losses and decode warnings are counted.
    metrics: Arc<Metrics>,
}

/// The longest wait between two tries to start a worker after failures.
const RETRY_LIMIT: Duration = Duration::from_secs(30);

/// Jobs a worker renders before it is replaced: bounds how long a file that took over a
/// decoder (and so its worker) could see or answer the jobs that follow it.
pub const JOBS_PER_WORKER: u64 = 1000;

/// Holders remembered at most; older entries go first when there are more.
const HOLDERS_KEPT: usize = 10_000;

impl WorkerPool {
    /// A pool of `size` workers started by `spawner` with `settings`, each job bounded by
    /// `render_timeout`, each answer by `max_reply` bytes.
    pub fn new(
        spawner: Arc<Spawner>,
        settings: WorkerSettings,
        size: usize,
        render_timeout: Duration,
        max_reply: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<WorkerPool> {
        Arc::new(WorkerPool {
            spawner,
            settings,
            size: size.max(1),
            render_timeout,
            max_reply,
            idle: Mutex::default(),
            current: AtomicU64::new(0),
            holders: Mutex::default(),
            can_start: AtomicBool::new(true),
            leased: std::sync::atomic::AtomicUsize::new(0),
            starting: std::sync::atomic::AtomicUsize::new(0),
            sandbox: Mutex::default(),
            metrics,
        })
    }

    /// How long a job may run before its worker is killed.
    pub fn render_timeout(&self) -> Duration {
        self.render_timeout
    }

    /// Whether the last worker started did start (`/ready`).
    pub fn can_start(&self) -> bool {
        self.can_start.load(Ordering::Relaxed)
    }

    /// The sandbox the last worker started entered.
    pub fn sandbox(&self) -> Option<SandboxReport> {
        self.sandbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Workers idle now.
    pub fn idle(&self) -> usize {
        self.lock_idle().len()
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `plan` the generation new workers serve: idle workers of other generations exit,
    /// and workers of this one are started in the background until `size` are idle.
    pub fn serve_generation(self: &Arc<Self>, plan: Arc<GenerationPlan>) {
        let retired: Vec<Worker> = {
            let mut idle = self.lock_idle();
            // Stored under the lock that put_back checks it under: no worker of an older
            // generation is put back after the drain.
            self.current.store(plan.id, Ordering::SeqCst);
            let (keep, retire) = idle.drain(..).partition(|w| w.generation == plan.id);
            *idle = keep;
            retire
        };
        drop(retired);
        let pool = self.clone();
        tokio::spawn(async move { pool.replenish(&plan).await });
    }

    /// Starts workers of `plan` until as many are idle or leased as renders run at once. A
    /// start that fails is tried again, waiting twice as long each time (up to
    /// [`RETRY_LIMIT`]), so that a node whose workers could not start (`/ready` 503) comes
    /// back by itself once they can.
    async fn replenish(&self, plan: &GenerationPlan) {
        let mut wait = Duration::from_millis(250);
        loop {
            let live = self.idle()
                + self.leased.load(Ordering::SeqCst)
                + self.starting.load(Ordering::SeqCst);
            if self.current.load(Ordering::SeqCst) != plan.id || live >= self.size {
                return;
            }
            self.starting.fetch_add(1, Ordering::SeqCst);
            let started = self.start(plan).await;
            self.starting.fetch_sub(1, Ordering::SeqCst);
            match started {
                Ok(worker) => {
                    wait = Duration::from_millis(250);
                    self.put_back(worker);
                }
                Err(e) => {
                    // No request carries this failure: logged here, once per try.
                    tracing::error!(
                        error = e.detail.as_deref().unwrap_or(&e.message),
                        retry_in_ms = wait.as_millis() as u64,
                        "cannot start a render worker"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_LIMIT);
                }
            }
        }
    }

    async fn start(&self, plan: &GenerationPlan) -> Result<Worker, AppError> {
        let started = Worker::start(
            &self.spawner,
            plan.id,
            &self.settings,
            &plan.plugins,
            self.max_reply,
        )
        .await;
        match started {
            Ok((worker, reports, sandbox)) => {
                self.can_start.store(true, Ordering::Relaxed);
                let mut known = self.sandbox.lock().unwrap_or_else(|e| e.into_inner());
                if known.as_ref() != Some(&sandbox) {
                    match &sandbox.note {
                        Some(note) => tracing::warn!("render worker sandbox: {note}"),
                        None => tracing::info!(
                            landlock_abi = sandbox.landlock_abi,
                            "render workers sandboxed: seccomp allowlist, Landlock, no new privileges"
                        ),
                    }
                    *known = Some(sandbox);
                }
                drop(known);
                self.metrics.count(Count::WorkerStarted);
                for report in reports {
                    if let Err(e) = report.result {
                        // Checked when the generation was made: a plugin that fails now
                        // fails in this worker only (its modes answer unknown-mode).
                        tracing::error!(error = %e, "a worker could not load a plugin");
                    }
                }
                Ok(worker)
            }
            Err(e) => {
                self.can_start.store(false, Ordering::Relaxed);
                self.metrics.count(Count::WorkerStartFailed);
                // Logged once, with the request it failed: the observer's line has the cause.
                Err(AppError::of(ErrorCode::RenderFailed)
                    .detailed(format_args!("cannot start a render worker: {e}")))
            }
        }
    }

    /// Keeps `worker` idle if it serves the current generation; when as many are idle as
    /// renders run at once, the one idle longest makes room (the one back from a job holds
    /// the latest decode).
    fn put_back(&self, worker: Worker) {
        if worker.jobs >= JOBS_PER_WORKER {
            // Retired: a worker lives for a bounded number of jobs (see the security model).
            return;
        }
        let mut idle = self.lock_idle();
        if worker.generation != self.current.load(Ordering::SeqCst) {
            return;
        }
        let surplus = (idle.len() >= self.size).then(|| idle.remove(0));
        idle.push(worker);
        drop(idle);
        drop(surplus);
    }

    /// The worker that holds pixels of `key` decoded in `epoch`, if one does (then the
    /// original need not be fetched or sent when that worker takes the job: it asks for the
    /// original if they do not serve).
    fn holder(&self, key: &str, epoch: u64) -> Option<u64> {
        let holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        holders
            .get(key)
            .filter(|&&(_, e, at)| e == epoch && at.elapsed() < crate::recent::KEPT_FOR)
            .map(|&(id, _, _)| id)
    }

    /// Whether a worker holds pixels of `key` decoded in `epoch`.
    pub fn holds(&self, key: &str, epoch: u64) -> bool {
        self.holder(key, epoch).is_some()
    }

    /// A worker of `plan`'s generation for a job on `key`: the idle one holding its pixels if
    /// any, else any idle one, else a new one.
    pub async fn checkout(
        self: &Arc<Self>,
        plan: &Arc<GenerationPlan>,
        key: &str,
        epoch: u64,
    ) -> Result<Lease, AppError> {
        let holder = self.holder(key, epoch);
        let found = {
            let mut idle = self.lock_idle();
            let at = idle
                .iter()
                .position(|w| Some(w.id) == holder && w.generation == plan.id)
                .or_else(|| idle.iter().position(|w| w.generation == plan.id));
            at.map(|i| idle.swap_remove(i))
        };
        let holds = found.as_ref().is_some_and(|w| Some(w.id) == holder);
        self.leased.fetch_add(1, Ordering::SeqCst);
        let worker = match found {
            Some(worker) => worker,
            None => match self.start(plan).await {
                Ok(worker) => worker,
                Err(e) => {
                    self.leased.fetch_sub(1, Ordering::SeqCst);
                    return Err(e);
                }
            },
        };
        Ok(Lease {
            pool: self.clone(),
            worker: Some(worker),
            plan: plan.clone(),
            holds,
        })
    }

    fn note_holder(&self, key: &str, epoch: u64, worker: u64) {
        let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        if holders.len() >= HOLDERS_KEPT {
            holders.retain(|_, (_, _, at)| at.elapsed() < crate::recent::KEPT_FOR);
            if holders.len() >= HOLDERS_KEPT {
                holders.clear();
            }
        }
        holders.insert(key.to_owned(), (worker, epoch, Instant::now()));
    }

    fn count(&self, failure: Failure) {
        self.metrics.count(match failure {
            Failure::Timeout => Count::WorkerTimeout,
            Failure::Crashed => Count::WorkerCrash,
            Failure::OutOfMemory => Count::WorkerOutOfMemory,
        });
    }
}

/// A worker taken from the pool for one request; it goes back when dropped, unless it failed
/// or its generation was replaced meanwhile (then it exits, and a replacement is started).
pub struct Lease {
    pool: Arc<WorkerPool>,
    worker: Option<Worker>,
    plan: Arc<GenerationPlan>,
    /// Whether this worker holds pixels of the job's original.
    pub holds: bool,
}

impl Lease {
    /// Runs `job` on this worker with `blob`, what `sent` says it is (nothing when
    /// [`Lease::holds`]), and `files`.
    pub async fn render(
        &mut self,
        job: &RenderJob,
        sent: Sent,
        blob: &[u8],
        files: JobFiles<'_>,
    ) -> Result<JobOutcome, JobFailure> {
        let Some(worker) = self.worker.as_mut() else {
            return Err(JobFailure {
                failure: Failure::Crashed,
                stage: Stage::Decode,
                detail: "the worker was lost by an earlier job".into(),
            });
        };
        match worker
            .render(job, sent, blob, files, self.pool.render_timeout)
            .await
        {
            Ok((outcome, kept)) => {
                if kept {
                    self.pool.note_holder(&job.key, job.epoch, worker.id);
                }
                if let JobOutcome::Rendered { warnings, .. } = &outcome {
                    for warning in warnings {
                        tracing::debug!(
                            key = %job.key, kind = warning.kind.as_str(),
                            "decoded past a warning: {}", warning.detail
                        );
                        self.pool.metrics.decode_warning(warning.kind.as_str());
                    }
                }
                Ok(outcome)
            }
            Err(failure) => {
                self.pool.count(failure.failure);
                tracing::warn!(
                    mode = %job.mode, key = %job.key, stage = failure.stage.as_str(),
                    "render worker lost: {}", failure.detail
                );
                self.worker = None;
                self.pool.leased.fetch_sub(1, Ordering::SeqCst);
                // A fresh worker takes the slot, in the background.
                let pool = self.pool.clone();
                let plan = self.plan.clone();
                tokio::spawn(async move { pool.replenish(&plan).await });
                Err(failure)
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.pool.leased.fetch_sub(1, Ordering::SeqCst);
            self.pool.put_back(worker);
        }
    }
}

/// Starts a worker with `plugins` only to learn what they provide (each plugin opened, checked
/// and test-rendered inside the sandbox), then stops it.
pub async fn probe(
    spawner: &Spawner,
    settings: &WorkerSettings,
    plugins: &[PluginToLoad],
) -> Result<(Vec<LoadReport>, SandboxReport), String> {
    let (worker, reports, sandbox) = Worker::start(spawner, 0, settings, plugins, 0).await?;
    drop(worker);
    Ok((reports, sandbox))
}

impl From<&AppError> for WireError {
    /// The wire form of `error`.
    fn from(error: &AppError) -> WireError {
        WireError {
            status: error.status().as_u16(),
            code: error.code.as_str().to_owned(),
            message: error.message.clone(),
            retry_after: error.retry_after,
            detail: error.detail.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WorkerSettings {
        WorkerSettings {
            max_source_pixels: 1_000_000,
            memory_bytes: 1 << 30,
            decoded_bytes: 0,
            output: ross_config::Settings::default().output,
            max_copy_bytes: 0,
            sandbox: true,
        }
    }

    /// A pool whose workers cannot start says so (`/ready` is 503 then), and a request for a
    /// worker fails with an internal error rather than hanging.
    #[tokio::test]
    async fn a_pool_whose_workers_cannot_start_is_not_ready() {
        let spawner = Spawner::with_program("/nonexistent/ross".into()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let pool = WorkerPool::new(
            spawner,
            settings(),
            2,
            Duration::from_secs(1),
            1 << 20,
            metrics.clone(),
        );
        assert!(pool.can_start());
        let plan = Arc::new(GenerationPlan {
            id: 1,
            plugins: Vec::new(),
        });
        let refused = pool.checkout(&plan, "a.jpg", 0).await.err().unwrap();
        assert_eq!(refused.code, ErrorCode::RenderFailed);
        assert!(!pool.can_start());
        assert_eq!(metrics.counts().worker_start_failures, 1);
    }
}
