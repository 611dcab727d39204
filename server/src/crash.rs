//! Crash points, for tests that kill ross between two writes and check what a restart makes
//! of the disk and the index.
//!
//! `ROSS_TEST_CRASH_AT=name` (read once) makes the process kill itself with `SIGKILL` the first
//! time it reaches the point `name`: no destructor, flush or clean-up runs, as with
//! `kill -9`. Unset (always, in service) a point costs one load of a value already read.

use std::sync::OnceLock;

/// The variable naming the point to die at.
pub const CRASH_AT: &str = "ROSS_TEST_CRASH_AT";

// A test aid, not a setting: never read from a settings file, never shown.
#[allow(clippy::disallowed_methods)]
fn chosen() -> Option<&'static str> {
    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    CHOSEN
        .get_or_init(|| std::env::var(CRASH_AT).ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// Dies here, at once, if this is the point chosen.
#[allow(unsafe_code)]
pub fn point(name: &str) {
    if chosen() == Some(name) {
        tracing::warn!(point = name, "killed at a crash point ({CRASH_AT})");
        // SAFETY: getpid and kill have no preconditions; SIGKILL ends the process here.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
