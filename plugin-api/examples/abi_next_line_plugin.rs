//! Test fixture: a plugin built against a later line of the ABI (0.3.0), with the root module
//! of 0.1.0 otherwise. abi_stable alone would take it (it refuses only a lower minor): the
//! host must refuse it, naming both versions, since nothing of a later line is known to it.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

#[path = "support/abi_0_1.rs"]
#[macro_use]
mod abi;

use abi::*;
use abi_stable::std_types::{RResult, RVec};

root_module!("0.3.0");

extern "C" fn modes() -> RResult<RVec<ModeInfo>, RenderError> {
    one_mode("nextline", "0.3.0", "Never served.")
}

export!(modes, render);
