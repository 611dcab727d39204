//! Test fixture: a plugin of an older ABI (0.1.1, of the closed line 0.1: fewer root-module
//! fields than the server) whose one appended entry point disagrees with the server's
//! (`decode_need` returns a number, not a `DecodeNeed`). Only the check with the roles swapped
//! sees it (abi_stable's own direction fails on the field count alone): the host must refuse
//! it, not call it.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

#[path = "support/abi_0_1.rs"]
#[macro_use]
mod abi;

use abi::*;
use abi_stable::std_types::{RResult, RVec};

root_module!(
    "0.1.1",
    decode_need: extern "C" fn(mode: RStr<'_>, target: TargetSize) -> u64,
);

extern "C" fn modes() -> RResult<RVec<ModeInfo>, RenderError> {
    one_mode("wrongfield", "0.1.1", "Never served.")
}

extern "C" fn decode_need(_mode: abi_stable::std_types::RStr<'_>, _target: TargetSize) -> u64 {
    std::process::abort()
}

export!(modes, render, decode_need);
