//! Plugin ABI 0.1.1, frozen: its root module, exactly as plugins built against it have it
//! (`modes`, `render`, `decode_need`; no `takes_alpha`). Its types are the current ones, which
//! have not changed since. See [`crate::v0_1_0`] for why frozen copies exist.
#![allow(missing_docs)] // the current types document every item

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RStr, RVec};
use abi_stable::{declare_root_module_statics, StableAbi};

use crate::{DecodeNeed, ImageBuf, ImageView, ModeInfo, RenderError, TargetSize};

/// The root module of ABI 0.1.1.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModule_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    pub modes: extern "C" fn() -> RResult<RVec<ModeInfo>, RenderError>,
    #[sabi(last_prefix_field)]
    pub render: extern "C" fn(
        mode: RStr<'_>,
        source: ImageView<'_>,
        target: TargetSize,
    ) -> RResult<ImageBuf, RenderError>,
    #[sabi(missing_field(option))]
    pub decode_need: extern "C" fn(mode: RStr<'_>, target: TargetSize) -> DecodeNeed,
}

impl RootModule for PluginModule_Ref {
    declare_root_module_statics! {PluginModule_Ref}
    const BASE_NAME: &'static str = "ross_mode";
    const NAME: &'static str = "ross mode plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.1.1");
}
