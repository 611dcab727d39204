//! Test fixture: a plugin as every plugin built before plugin ABI 0.1.1 is, with the root
//! module and types of that time (no `decode_need` field) and the version string it carried
//! (0.1.0, then the workspace's). Written out here rather than with `plugin_api::v0_1_0` so
//! that it stays what those plugins are whatever the frozen copies become. The host must load
//! it, serve its mode, and decode for it as for any mode that does not say (just covering the
//! box). Its mode stretches the whole source to the box, nearest pixel.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, StableAbi};

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Rgb8 = 0,
    Rgba8 = 1,
    Gray8 = 2,
}

#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct ImageView<'a> {
    pub pixels: RSlice<'a, u8>,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub format: PixelFormat,
}

#[repr(C)]
#[derive(StableAbi)]
pub struct ImageBuf {
    pub pixels: RVec<u8>,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub format: PixelFormat,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSize {
    pub width: u32,
    pub height: u32,
}

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderErrorKind {
    InvalidInput = 0,
    Unsupported = 1,
    Panicked = 2,
    Failed = 3,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    pub kind: RenderErrorKind,
    pub message: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ModeInfo {
    pub name: RString,
    pub version: RString,
    pub description: RString,
}

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
}

impl RootModule for PluginModule_Ref {
    declare_root_module_statics! {PluginModule_Ref}
    const BASE_NAME: &'static str = "ross_mode";
    const NAME: &'static str = "ross mode plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.1.0");
}

extern "C" fn modes() -> RResult<RVec<ModeInfo>, RenderError> {
    RResult::ROk(RVec::from(vec![ModeInfo {
        name: "legacy".into(),
        version: "0.1.0".into(),
        description: "The whole source stretched to the box (built before ABI 0.1.1).".into(),
    }]))
}

extern "C" fn render(
    _mode: RStr<'_>,
    source: ImageView<'_>,
    target: TargetSize,
) -> RResult<ImageBuf, RenderError> {
    if source.format != PixelFormat::Rgb8 || target.width == 0 || target.height == 0 {
        return RResult::RErr(RenderError {
            kind: RenderErrorKind::Unsupported,
            message: "RGB only".into(),
        });
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
    RResult::ROk(ImageBuf {
        pixels: pixels.into(),
        width: target.width,
        height: target.height,
        stride: target.width * 3,
        format: PixelFormat::Rgb8,
    })
}

#[abi_stable::export_root_module]
pub fn instantiate_root_module() -> PluginModule_Ref {
    PluginModule { modes, render }.leak_into_prefix()
}
