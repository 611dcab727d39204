//! Test fixture: a plugin as every plugin built before plugin ABI 0.1.1 is, with the root
//! module and types of that time (no `decode_need` field) and the version string it carried
//! (0.1.0, then the workspace's), written out (`support/abi_0_1.rs`) so that it stays what
//! those plugins are whatever plugin-api becomes. The host must load
//! it, serve its mode, and decode for it as for any mode that does not say (just covering the
//! box). Its mode stretches the whole source to the box, nearest pixel.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

#[path = "support/abi_0_1.rs"]
#[macro_use]
mod abi;

use abi::*;
use abi_stable::std_types::{RResult, RVec};

root_module!("0.1.0");

extern "C" fn modes() -> RResult<RVec<ModeInfo>, RenderError> {
    one_mode(
        "legacy",
        "0.1.0",
        "The whole source stretched to the box (built before ABI 0.1.1).",
    )
}

export!(modes, render);
