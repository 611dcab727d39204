//! Test fixture: a plugin as every plugin built against plugin ABI 0.1.1 is: the root module of
//! that time (`modes`, `render`, `decode_need`; no `takes_alpha`) and its version string,
//! written out here rather than with `plugin_api::v0_1_1` so that it stays what those plugins
//! are whatever the frozen copy becomes. Its types are plugin-api's own (unchanged since
//! 0.1.1). The host must load it, honour its `decode_need` (it asks for the full size) and hand
//! it RGB only, flattening a transparent source even for a format that keeps alpha. Its mode
//! stretches the whole source to the box, nearest pixel, and refuses anything but RGB.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RStr, RVec};
use abi_stable::{declare_root_module_statics, StableAbi};
use plugin_api::{
    DecodeNeed, ImageBuf, ImageView, ModeInfo, PixelFormat, RenderError, RenderErrorKind,
    TargetSize,
};

// The accessor abi_stable generates for the optional `decode_need` field is `unsafe` inside.
#[allow(unsafe_code)]
mod root {
    use super::*;

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
}
use root::{PluginModule, PluginModule_Ref};

extern "C" fn modes() -> RResult<RVec<ModeInfo>, RenderError> {
    RResult::ROk(RVec::from(vec![ModeInfo {
        name: "abi011".into(),
        version: "0.1.1".into(),
        description: "The whole source stretched to the box (built against ABI 0.1.1).".into(),
    }]))
}

extern "C" fn render(
    _mode: RStr<'_>,
    source: ImageView<'_>,
    target: TargetSize,
) -> RResult<ImageBuf, RenderError> {
    if source.format != PixelFormat::Rgb8 || target.width == 0 || target.height == 0 {
        return RResult::RErr(RenderError::new(RenderErrorKind::Unsupported, "RGB only"));
    }
    let (w, h) = (target.width as usize, target.height as usize);
    let mut pixels = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let sy = y * source.height as usize / h;
        for x in 0..w {
            let sx = x * source.width as usize / w;
            let at = sy * source.stride as usize + sx * 3;
            pixels.extend_from_slice(&source.pixels.as_slice()[at..at + 3]);
        }
    }
    match ImageBuf::from_vec(pixels, target.width, target.height, PixelFormat::Rgb8) {
        Ok(buf) => RResult::ROk(buf),
        Err(e) => RResult::RErr(e),
    }
}

extern "C" fn decode_need(_mode: RStr<'_>, _target: TargetSize) -> DecodeNeed {
    DecodeNeed::full_size()
}

#[abi_stable::export_root_module]
pub fn instantiate_root_module() -> PluginModule_Ref {
    PluginModule {
        modes,
        render,
        decode_need,
    }
    .leak_into_prefix()
}
