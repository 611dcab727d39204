//! The types of plugin ABI 0.1.x (0.1.0 to 0.1.2), written out as plugins built against it
//! have them, for the fixtures that stand for those plugins (each with the root module of its
//! own version): whatever plugin-api's types become, these stay what the plugins hold. Also
//! their one mode: the whole source stretched to the box, nearest pixel, RGB only. The host
//! checks such plugins against its own copy of these types (`plugin_api::legacy`); this one is
//! kept apart on purpose, standing for what was built then.
#![allow(dead_code)]

use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use abi_stable::StableAbi;

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

/// See plugin-api's `DecodeNeed` (ABI 0.1.1 on).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeNeed {
    pub full_size: bool,
    pub width: u32,
    pub height: u32,
}

/// The root module of ABI `$version`: `modes` and `render`, and the optional entry points
/// listed after them (the fields that version appended), with everything but the entry
/// points the same in every 0.1.x version.
#[macro_export]
macro_rules! root_module {
    ($version:literal $(, $field:ident: $ty:ty)* $(,)?) => {
        // The accessor abi_stable generates for an optional field is `unsafe` inside.
        #[allow(unsafe_code)]
        mod root {
            use super::*;
            use abi_stable::library::RootModule;
            use abi_stable::sabi_types::VersionStrings;
            use abi_stable::std_types::RStr;
            use abi_stable::{declare_root_module_statics, StableAbi};

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
                $(
                    #[sabi(missing_field(option))]
                    pub $field: $ty,
                )*
            }

            impl RootModule for PluginModule_Ref {
                declare_root_module_statics! {PluginModule_Ref}
                const BASE_NAME: &'static str = "ross_mode";
                const NAME: &'static str = "ross mode plugin";
                const VERSION_STRINGS: VersionStrings = VersionStrings::new($version);
            }
        }
        use root::{PluginModule, PluginModule_Ref};
    };
}

/// The library's root module, exported with the entry points given (`name` or
/// `name: function`).
#[macro_export]
macro_rules! export {
    ($($field:ident $(: $value:expr)?),* $(,)?) => {
        #[abi_stable::export_root_module]
        pub fn instantiate_root_module() -> PluginModule_Ref {
            use abi_stable::prefix_type::PrefixTypeTrait;
            PluginModule { $($field $(: $value)?),* }.leak_into_prefix()
        }
    };
}

/// The fixtures' mode: `source` stretched to `target`, nearest pixel; anything but RGB is
/// refused.
pub fn stretch(source: ImageView<'_>, target: TargetSize) -> RResult<ImageBuf, RenderError> {
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

/// The fixtures' list of modes: one, `name`.
pub fn one_mode(
    name: &str,
    version: &str,
    description: &str,
) -> RResult<RVec<ModeInfo>, RenderError> {
    RResult::ROk(RVec::from(vec![ModeInfo {
        name: name.into(),
        version: version.into(),
        description: description.into(),
    }]))
}

/// The fixtures' `render`: [`stretch`], whatever the mode.
pub extern "C" fn render(
    _mode: RStr<'_>,
    source: ImageView<'_>,
    target: TargetSize,
) -> RResult<ImageBuf, RenderError> {
    stretch(source, target)
}

/// A `decode_need` asking for the full size.
pub extern "C" fn full_size(_mode: RStr<'_>, _target: TargetSize) -> DecodeNeed {
    DecodeNeed {
        full_size: true,
        width: 0,
        height: 0,
    }
}

/// A `decode_need` asking for just what covers the box.
pub extern "C" fn cover(_mode: RStr<'_>, target: TargetSize) -> DecodeNeed {
    DecodeNeed {
        full_size: false,
        width: target.width,
        height: target.height,
    }
}

/// A `takes_alpha` saying no.
pub extern "C" fn rgb_only(_mode: RStr<'_>) -> bool {
    false
}
