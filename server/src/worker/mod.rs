//! Render workers: the processes that decode originals, run the modes' plugins and encode,
//! so that a plugin or a decoder that hangs, crashes, or takes all memory costs its own request
//! and never the server (see `ARCHITECTURE.md`, "Process model").
//!
//! - `protocol`: the messages and their framing over a worker's socket;
//! - `process`: the worker itself (`ross worker`, a hidden subcommand);
//! - `sandbox`: the limits, Landlock rules and seccomp filter a worker enters;
//! - `pool`: the server's side: starting, timing, replacing and pooling workers.

pub mod pool;
pub mod process;
pub mod protocol;
pub mod sandbox;

pub use pool::{probe, this_executable_is_ross, use_program, Lease, Spawner, WorkerPool};
