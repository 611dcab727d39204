//! The closed line 0.1 of the ABI (0.1.0 to 0.1.x), as its plugins hold it: the same types as
//! today's but for [`PixelFormat`] and [`RenderErrorKind`], which were exhaustive `repr(u8)`
//! enums, and a root module that ends at `takes_alpha` (0.1.2). abi_stable never accepts a
//! struct for an enum, so a plugin of that line is checked against these types; the host then
//! reads it through today's, which the assertions below prove are the same in memory (the
//! same size, alignment and field offsets, and each enum value the same byte). Nothing here
//! ever changes: it is what plugins built before 0.2.0 are.
//!
//! A host hands such a plugin only the formats of 0.1 (its enum has no other value: anything
//! else would be undefined behaviour in the plugin), which [`crate::host::Plugin`] enforces.
//!
//! The test fixtures of that line (`examples/support/abi_0_1.rs`) write the same types out
//! again on purpose, standing for plugins built then: a slip here would not be copied there.

use std::mem::{align_of, offset_of, size_of};

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, StableAbi};

/// 0.1's pixel format: an exhaustive enum.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// See [`crate::PixelFormat::Rgb8`].
    Rgb8 = 0,
    /// See [`crate::PixelFormat::Rgba8`].
    Rgba8 = 1,
    /// See [`crate::PixelFormat::Gray8`].
    Gray8 = 2,
}

/// 0.1's error kind: an exhaustive enum.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderErrorKind {
    /// See [`crate::RenderErrorKind::InvalidInput`].
    InvalidInput = 0,
    /// See [`crate::RenderErrorKind::Unsupported`].
    Unsupported = 1,
    /// See [`crate::RenderErrorKind::Panicked`].
    Panicked = 2,
    /// See [`crate::RenderErrorKind::Failed`].
    Failed = 3,
}

/// 0.1's [`crate::TargetSize`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSize {
    /// See [`crate::TargetSize::width`].
    pub width: u32,
    /// See [`crate::TargetSize::height`].
    pub height: u32,
}

/// 0.1's [`crate::DecodeNeed`] (0.1.1 on).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeNeed {
    /// See [`crate::DecodeNeed::full_size`].
    pub full_size: bool,
    /// See [`crate::DecodeNeed::width`].
    pub width: u32,
    /// See [`crate::DecodeNeed::height`].
    pub height: u32,
}

/// 0.1's [`crate::ModeInfo`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ModeInfo {
    /// See [`crate::ModeInfo::name`].
    pub name: RString,
    /// See [`crate::ModeInfo::version`].
    pub version: RString,
    /// See [`crate::ModeInfo::description`].
    pub description: RString,
}

/// 0.1's [`crate::ImageView`].
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct ImageView<'a> {
    /// See [`crate::ImageView::pixels`].
    pub pixels: RSlice<'a, u8>,
    /// See [`crate::ImageView::width`].
    pub width: u32,
    /// See [`crate::ImageView::height`].
    pub height: u32,
    /// See [`crate::ImageView::stride`].
    pub stride: u32,
    /// See [`crate::ImageView::format`].
    pub format: PixelFormat,
}

/// 0.1's [`crate::ImageBuf`].
#[repr(C)]
#[derive(StableAbi)]
pub struct ImageBuf {
    /// See [`crate::ImageBuf::pixels`].
    pub pixels: RVec<u8>,
    /// See [`crate::ImageBuf::width`].
    pub width: u32,
    /// See [`crate::ImageBuf::height`].
    pub height: u32,
    /// See [`crate::ImageBuf::stride`].
    pub stride: u32,
    /// See [`crate::ImageBuf::format`].
    pub format: PixelFormat,
}

/// 0.1's [`crate::RenderError`].
#[repr(C)]
#[derive(StableAbi)]
pub struct RenderError {
    /// See [`crate::RenderError::kind`].
    pub kind: RenderErrorKind,
    /// See [`crate::RenderError::message`].
    pub message: RString,
}

/// 0.1's root module, as of its last version (0.1.2): a plugin of 0.1.0 or 0.1.1 has fewer
/// fields, one of a later 0.1 more, and both pass the host's check in one direction or the
/// other.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModule_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// See [`crate::PluginModule::modes`].
    pub modes: extern "C" fn() -> RResult<RVec<ModeInfo>, RenderError>,
    /// See [`crate::PluginModule::render`].
    #[sabi(last_prefix_field)]
    pub render: extern "C" fn(
        mode: RStr<'_>,
        source: ImageView<'_>,
        target: TargetSize,
    ) -> RResult<ImageBuf, RenderError>,
    /// See [`crate::PluginModule::decode_need`].
    #[sabi(missing_field(option))]
    pub decode_need: extern "C" fn(mode: RStr<'_>, target: TargetSize) -> DecodeNeed,
    /// See [`crate::PluginModule::takes_alpha`].
    #[sabi(missing_field(option))]
    pub takes_alpha: extern "C" fn(mode: RStr<'_>) -> bool,
}

impl RootModule for PluginModule_Ref {
    declare_root_module_statics! {PluginModule_Ref}
    const BASE_NAME: &'static str = "ross_mode";
    const NAME: &'static str = "ross mode plugin";
    /// The line's last version: the host checks a 0.1 plugin's layout against this module,
    /// whatever its patch.
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.1.2");
}

/// Every type here is today's in memory.
const _: () = {
    macro_rules! same {
        ($old:ty, $new:ty $(, $field:ident)*) => {
            assert!(size_of::<$old>() == size_of::<$new>());
            assert!(align_of::<$old>() == align_of::<$new>());
            $(assert!(offset_of!($old, $field) == offset_of!($new, $field));)*
        };
    }
    same!(PixelFormat, crate::PixelFormat);
    same!(RenderErrorKind, crate::RenderErrorKind);
    same!(
        ImageView<'static>,
        crate::ImageView<'static>,
        pixels,
        width,
        height,
        stride,
        format
    );
    same!(
        ImageBuf,
        crate::ImageBuf,
        pixels,
        width,
        height,
        stride,
        format
    );
    same!(RenderError, crate::RenderError, kind, message);
    same!(TargetSize, crate::TargetSize, width, height);
    same!(DecodeNeed, crate::DecodeNeed, full_size, width, height);
    same!(ModeInfo, crate::ModeInfo, name, version, description);
    // Today's root module has entry points appended (0.2.1: `fits_within`): the prefix (the
    // offsets) is compared, and a new field is read only from plugins of line 0.2
    // (`host::Plugin`), since a plugin of 0.1 may have a field of its own in that place.
    assert!(size_of::<PluginModule>() <= size_of::<crate::PluginModule>());
    assert!(align_of::<PluginModule>() == align_of::<crate::PluginModule>());
    assert!(offset_of!(PluginModule, modes) == offset_of!(crate::PluginModule, modes));
    assert!(offset_of!(PluginModule, render) == offset_of!(crate::PluginModule, render));
    assert!(offset_of!(PluginModule, decode_need) == offset_of!(crate::PluginModule, decode_need));
    assert!(offset_of!(PluginModule, takes_alpha) == offset_of!(crate::PluginModule, takes_alpha));
    assert!(PixelFormat::Rgb8 as u8 == crate::PixelFormat::Rgb8.raw());
    assert!(PixelFormat::Rgba8 as u8 == crate::PixelFormat::Rgba8.raw());
    assert!(PixelFormat::Gray8 as u8 == crate::PixelFormat::Gray8.raw());
    assert!(RenderErrorKind::InvalidInput as u8 == crate::RenderErrorKind::InvalidInput.raw());
    assert!(RenderErrorKind::Unsupported as u8 == crate::RenderErrorKind::Unsupported.raw());
    assert!(RenderErrorKind::Panicked as u8 == crate::RenderErrorKind::Panicked.raw());
    assert!(RenderErrorKind::Failed as u8 == crate::RenderErrorKind::Failed.raw());
};
