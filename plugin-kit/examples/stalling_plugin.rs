//! Isolation fixture: the mode `stall` never returns from a render from 100 px wide (a busy
//! loop, so it holds a core as a runaway plugin would). Only killing its worker ends it.

#[path = "support/misbehaving.rs"]
mod support;

misbehaving_mode!(
    Stall,
    "stall",
    "Never returns from 100 px wide.",
    |_| loop {
        std::hint::spin_loop();
    }
);
