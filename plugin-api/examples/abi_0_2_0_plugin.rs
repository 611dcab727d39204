//! Test fixture: a plugin as every plugin built against plugin ABI 0.2.0 is (this line's
//! types, and a root module that ends at `takes_alpha`: no `fits_within`). Its mode resizes
//! into the box, but it cannot say so: the host must load it and decode for it as covering
//! the box, as for every plugin built before 0.2.1.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

// For its macros only: the root module is built of this line's types.
#[path = "support/abi_0_1.rs"]
#[macro_use]
mod abi;

use abi_stable::std_types::{RResult, RStr, RVec};
use plugin_api::{DecodeNeed, ImageBuf, ImageView, ModeInfo, RenderError, TargetSize};

root_module!(
    "0.2.0",
    decode_need: extern "C" fn(mode: RStr<'_>, target: TargetSize) -> DecodeNeed,
    takes_alpha: extern "C" fn(mode: RStr<'_>) -> bool,
);

extern "C" fn modes() -> RResult<RVec<ModeInfo>, RenderError> {
    RResult::ROk(RVec::from(vec![ModeInfo {
        name: "abi020".into(),
        version: "0.2.0".into(),
        description: "The source fitted in the box (built against ABI 0.2.0).".into(),
    }]))
}

extern "C" fn render(
    _mode: RStr<'_>,
    source: ImageView<'_>,
    target: TargetSize,
) -> RResult<ImageBuf, RenderError> {
    let scale = (f64::from(target.width) / f64::from(source.width))
        .min(f64::from(target.height) / f64::from(source.height));
    let side = |n: u32| ((f64::from(n) * scale).round() as u32).max(1);
    let (width, height) = (side(source.width), side(source.height));
    // Nearest pixel, as the fixtures of 0.1 do; the host hands this line RGB only.
    let bytes = source.format.bytes_per_pixel();
    let mut pixels = Vec::with_capacity(width as usize * height as usize * bytes);
    for y in 0..height {
        let row = source.row(y * source.height / height);
        for x in 0..width {
            let at = (x * source.width / width) as usize * bytes;
            pixels.extend_from_slice(&row[at..at + bytes]);
        }
    }
    match ImageBuf::from_vec(pixels, width, height, source.format) {
        Ok(image) => RResult::ROk(image),
        Err(e) => RResult::RErr(e),
    }
}

extern "C" fn decode_need(_mode: RStr<'_>, target: TargetSize) -> DecodeNeed {
    DecodeNeed::cover(target)
}

extern "C" fn takes_alpha(_mode: RStr<'_>) -> bool {
    false
}

export!(modes, render, decode_need, takes_alpha);
