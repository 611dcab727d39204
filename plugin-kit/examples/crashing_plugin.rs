//! Isolation fixture: the mode `crash` writes through a null pointer from 100 px wide
//! (SIGSEGV), as a memory bug in a plugin or a C library would.

#[path = "support/misbehaving.rs"]
mod support;

#[allow(unsafe_code)]
fn crash(_: plugin_api::TargetSize) -> Result<plugin_api::ImageBuf, plugin_api::RenderError> {
    let null: *mut u8 = std::ptr::null_mut();
    // SAFETY: none: this is the crash the fixture exists for. `write_volatile` keeps the
    // compiler from reasoning the write away.
    unsafe { std::ptr::write_volatile(null, 1) };
    Err(plugin_api::RenderError::invalid_input(
        "survived a null write",
    ))
}

misbehaving_mode!(
    Crash,
    "crash",
    "Writes through a null pointer from 100 px wide.",
    crash
);
