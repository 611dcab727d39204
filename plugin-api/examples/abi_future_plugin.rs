//! Test fixture: a plugin built against a later ABI of the closed line 0.1 than any released
//! (0.1.9, with an entry point appended that this server does not know). abi_stable takes a
//! library with more root-module fields than the host's: the host must load it, serve its mode
//! and never call what it does not know.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

#[path = "support/abi_0_1.rs"]
#[macro_use]
mod abi;

use abi::*;
use abi_stable::std_types::{RResult, RVec};

root_module!(
    "0.1.9",
    decode_need: extern "C" fn(mode: RStr<'_>, target: TargetSize) -> DecodeNeed,
    takes_alpha: extern "C" fn(mode: RStr<'_>) -> bool,
    unknown_to_the_server: extern "C" fn() -> u32,
);

extern "C" fn modes() -> RResult<RVec<ModeInfo>, RenderError> {
    one_mode(
        "future",
        "0.1.9",
        "The whole source stretched to the box (a newer ABI).",
    )
}

extern "C" fn unknown_to_the_server() -> u32 {
    std::process::abort()
}

export!(modes, render, decode_need: cover, takes_alpha: rgb_only, unknown_to_the_server);
