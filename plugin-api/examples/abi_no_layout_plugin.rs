//! Test fixture: a plugin exported without its layout (`#[unsafe_no_layout_constant]`), which
//! makes abi_stable skip every layout check silently. The host must refuse it: nothing of it
//! could be checked.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

#[path = "support/abi_0_1.rs"]
#[macro_use]
mod abi;

use abi::*;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RResult, RVec};

root_module!("0.1.0");

extern "C" fn modes() -> RResult<RVec<ModeInfo>, RenderError> {
    one_mode("nolayout", "0.1.0", "Never served.")
}

#[abi_stable::export_root_module]
#[unsafe_no_layout_constant]
pub fn instantiate_root_module() -> PluginModule_Ref {
    PluginModule { modes, render }.leak_into_prefix()
}
