//! Test fixture: a plugin as every plugin built against plugin ABI 0.1.2 is (the last ABI with
//! exhaustive `repr(u8)` enums): the root module of that time (`modes`, `render`,
//! `decode_need`, `takes_alpha`) and its version string, with the types of 0.1.x written out
//! (`support/abi_0_1.rs`), so that it stays what those plugins are whatever plugin-api becomes.
//! The host must load it, honour its decode need (the full size), and hand it RGB, as its
//! `takes_alpha` says no.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

#[path = "support/abi_0_1.rs"]
#[macro_use]
mod abi;

use abi::*;
use abi_stable::std_types::{RResult, RVec};

root_module!(
    "0.1.2",
    decode_need: extern "C" fn(mode: RStr<'_>, target: TargetSize) -> DecodeNeed,
    takes_alpha: extern "C" fn(mode: RStr<'_>) -> bool
);

extern "C" fn modes() -> RResult<RVec<ModeInfo>, RenderError> {
    one_mode(
        "abi012",
        "0.1.2",
        "The whole source stretched to the box (built against ABI 0.1.2).",
    )
}

export!(modes, render, decode_need: full_size, takes_alpha: rgb_only);
