//! Test fixture: a plugin built against a newer ABI of this server's line (0.2.9, with the
//! types of this line and an entry point appended that this server does not know). The host
//! must load it, serve its mode and never call what it does not know.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

// For its macros only: the root module is built of this line's types.
#[path = "support/abi_0_1.rs"]
#[macro_use]
mod abi;

use abi_stable::std_types::{RResult, RStr, RVec};
use plugin_api::{DecodeNeed, ImageBuf, ImageView, ModeInfo, PixelFormat, RenderError, TargetSize};

root_module!(
    "0.2.9",
    decode_need: extern "C" fn(mode: RStr<'_>, target: TargetSize) -> DecodeNeed,
    takes_alpha: extern "C" fn(mode: RStr<'_>) -> bool,
    fits_within: extern "C" fn(mode: RStr<'_>) -> bool,
    unknown_to_the_server: extern "C" fn() -> u32,
);

extern "C" fn modes() -> RResult<RVec<ModeInfo>, RenderError> {
    RResult::ROk(RVec::from(vec![ModeInfo {
        name: "nextpatch".into(),
        version: "0.2.9".into(),
        description: "The box in one colour (a newer ABI of the server's line).".into(),
    }]))
}

extern "C" fn render(
    _mode: RStr<'_>,
    _source: ImageView<'_>,
    target: TargetSize,
) -> RResult<ImageBuf, RenderError> {
    let blue = ImageBuf::filled(
        target.width,
        target.height,
        PixelFormat::Rgb8,
        &[0, 64, 255],
    );
    RResult::ROk(blue)
}

extern "C" fn decode_need(_mode: RStr<'_>, target: TargetSize) -> DecodeNeed {
    DecodeNeed::cover(target)
}

extern "C" fn takes_alpha(_mode: RStr<'_>) -> bool {
    false
}

extern "C" fn fits_within(_mode: RStr<'_>) -> bool {
    false
}

extern "C" fn unknown_to_the_server() -> u32 {
    std::process::abort()
}

export!(
    modes,
    render,
    decode_need,
    takes_alpha,
    fits_within,
    unknown_to_the_server
);
