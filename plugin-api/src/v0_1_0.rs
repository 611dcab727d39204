//! Plugin ABI 0.1.0, frozen: the root module and every type that crossed the boundary then,
//! exactly as plugins built against it have them.
//!
//! abi_stable accepts a library whose types are *newer* than the host's (a root module with
//! more fields), never older: a host whose root module gained a field, or whose
//! [`crate::PixelFormat`] gained a variant, would refuse every plugin built before. So the host
//! checks a plugin against the current ABI first and, failing that, against these frozen
//! copies, and converts at the boundary (the `From` impls and [`ImageView::from_current`]).
//! Adding a pixel format, an error kind or an entry point later means changing the current
//! types and freezing the ones they replace in a module like this, which keeps every plugin
//! already built loading.
#![allow(missing_docs)] // the current types document every item

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, StableAbi};

/// See [`crate::PixelFormat`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Rgb8 = 0,
    Rgba8 = 1,
    Gray8 = 2,
}

/// See [`crate::ImageView`].
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct ImageView<'a> {
    pub pixels: RSlice<'a, u8>,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub format: PixelFormat,
}

/// See [`crate::ImageBuf`].
#[repr(C)]
#[derive(StableAbi)]
pub struct ImageBuf {
    pub pixels: RVec<u8>,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub format: PixelFormat,
}

/// See [`crate::TargetSize`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSize {
    pub width: u32,
    pub height: u32,
}

/// See [`crate::RenderErrorKind`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderErrorKind {
    InvalidInput = 0,
    Unsupported = 1,
    Panicked = 2,
    Failed = 3,
}

/// See [`crate::RenderError`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct RenderError {
    pub kind: RenderErrorKind,
    pub message: RString,
}

/// See [`crate::ModeInfo`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct ModeInfo {
    pub name: RString,
    pub version: RString,
    pub description: RString,
}

/// The root module of ABI 0.1.0: `modes` and `render`.
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

impl<'a> ImageView<'a> {
    /// The view a 0.1.0 plugin understands, if it knows the format.
    pub fn from_current(view: crate::ImageView<'a>) -> Option<ImageView<'a>> {
        let format = match view.format {
            crate::PixelFormat::Rgb8 => PixelFormat::Rgb8,
            crate::PixelFormat::Rgba8 => PixelFormat::Rgba8,
            crate::PixelFormat::Gray8 => PixelFormat::Gray8,
        };
        Some(ImageView {
            pixels: view.pixels,
            width: view.width,
            height: view.height,
            stride: view.stride,
            format,
        })
    }
}

impl From<crate::TargetSize> for TargetSize {
    fn from(t: crate::TargetSize) -> TargetSize {
        TargetSize {
            width: t.width,
            height: t.height,
        }
    }
}

impl From<PixelFormat> for crate::PixelFormat {
    fn from(f: PixelFormat) -> crate::PixelFormat {
        match f {
            PixelFormat::Rgb8 => crate::PixelFormat::Rgb8,
            PixelFormat::Rgba8 => crate::PixelFormat::Rgba8,
            PixelFormat::Gray8 => crate::PixelFormat::Gray8,
        }
    }
}

impl From<ImageBuf> for crate::ImageBuf {
    fn from(b: ImageBuf) -> crate::ImageBuf {
        crate::ImageBuf {
            pixels: b.pixels,
            width: b.width,
            height: b.height,
            stride: b.stride,
            format: b.format.into(),
        }
    }
}

impl From<RenderError> for crate::RenderError {
    fn from(e: RenderError) -> crate::RenderError {
        let kind = match e.kind {
            RenderErrorKind::InvalidInput => crate::RenderErrorKind::InvalidInput,
            RenderErrorKind::Unsupported => crate::RenderErrorKind::Unsupported,
            RenderErrorKind::Panicked => crate::RenderErrorKind::Panicked,
            RenderErrorKind::Failed => crate::RenderErrorKind::Failed,
        };
        crate::RenderError {
            kind,
            message: e.message,
        }
    }
}

impl From<ModeInfo> for crate::ModeInfo {
    fn from(m: ModeInfo) -> crate::ModeInfo {
        crate::ModeInfo {
            name: m.name,
            version: m.version,
            description: m.description,
        }
    }
}
