//! Test fixture: a plugin as every plugin built against plugin ABI 0.1.1 is: the root module of
//! that time (`modes`, `render`, `decode_need`; no `takes_alpha`) and its version string, with
//! the types of 0.1.x written out (`support/abi_0_1.rs`), so that it stays what those plugins
//! are whatever plugin-api becomes. The host must load it, honour its `decode_need` (it asks for
//! the full size) and hand it RGB only, flattening a transparent source even for a format that
//! keeps alpha. Its mode stretches the whole source to the box, nearest pixel, and refuses
//! anything but RGB.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

#[path = "support/abi_0_1.rs"]
#[macro_use]
mod abi;

use abi::*;
use abi_stable::std_types::{RResult, RVec};

root_module!(
    "0.1.1",
    decode_need: extern "C" fn(mode: RStr<'_>, target: TargetSize) -> DecodeNeed
);

extern "C" fn modes() -> RResult<RVec<ModeInfo>, RenderError> {
    one_mode(
        "abi011",
        "0.1.1",
        "The whole source stretched to the box (built against ABI 0.1.1).",
    )
}

export!(modes, render, decode_need: full_size);
