//! Isolation fixture: the mode `abort` calls `std::process::abort()` from 100 px wide
//! (SIGABRT), as a failed assertion in C code would.

#[path = "support/misbehaving.rs"]
mod support;

misbehaving_mode!(
    Abort,
    "abort",
    "Aborts the process from 100 px wide.",
    |_| { std::process::abort() }
);
