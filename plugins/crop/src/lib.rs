//! The `crop` mode: exactly the requested size, scaled to cover the box and centre-cropped.
//!
//! Unlike OpenRoss's crop, which chose the side to fit from the source's orientation alone and
//! could leave white bars, this always covers the box.

use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, RenderError, TargetSize};
use plugin_kit::geometry::cover_region;
use plugin_kit::ops;

/// Scale to cover, then centre-crop.
pub struct Crop;

impl Mode for Crop {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "crop",
            version: env!("CARGO_PKG_VERSION"),
            description: "Exactly WxH: scaled to cover the box, then centre-cropped.",
        }
    }

    fn render(&self, src: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        let region = cover_region((src.width, src.height), (target.width, target.height));
        ops::resize_region(src, region, target.width, target.height)
    }

    /// Scaling keeps transparency (resampled with premultiplied alpha).
    fn takes_alpha(&self) -> bool {
        true
    }
}

plugin_api::export_modes!(Crop);

#[cfg(test)]
mod tests {
    use plugin_api::abi_stable::std_types::RStr;
    use plugin_api::{PixelFormat, TargetSize};

    use super::*;

    /// Left half black, right half white, 200x100.
    fn halves() -> ImageBuf {
        let mut px = Vec::new();
        for _ in 0..100 {
            for x in 0..200u32 {
                px.extend_from_slice(&[if x < 100 { 0 } else { 255 }; 3]);
            }
        }
        ImageBuf::from_vec(px, 200, 100, PixelFormat::Rgb8).unwrap()
    }

    fn render(w: u32, h: u32) -> ImageBuf {
        let module = instantiate_root_module();
        let src = halves();
        let target = TargetSize {
            width: w,
            height: h,
        };
        module.render()(RStr::from("crop"), src.view(), target)
            .into_result()
            .unwrap()
    }

    #[test]
    fn exported_module_lists_crop() {
        let modes = instantiate_root_module().modes()().into_result().unwrap();
        assert_eq!(modes.len(), 1);
        assert_eq!(modes[0].name.as_str(), "crop");
    }

    #[test]
    fn exported_module_says_crop_takes_alpha() {
        let takes_alpha = instantiate_root_module().takes_alpha().expect("ABI 0.1.2");
        assert!(takes_alpha(RStr::from("crop")));
        assert!(!takes_alpha(RStr::from("unknown")));
    }

    #[test]
    fn output_is_exactly_the_box_for_any_aspect() {
        for (w, h) in [(50, 50), (400, 100), (100, 400), (1, 1), (600, 300)] {
            let out = render(w, h);
            assert_eq!((out.width, out.height), (w, h));
        }
    }

    #[test]
    fn crop_is_centred_and_covers_without_white_bars() {
        // A tall box over a wide source keeps only the middle, where black meets white.
        let out = render(10, 100);
        let row = out.view().row(50);
        assert!(row[0] < 20, "left edge is black");
        assert!(row[row.len() - 1] > 235, "right edge is white");
        // A wider box than the source: no bar anywhere, the top row is the picture too.
        let out = render(400, 50);
        assert!(out.view().row(0)[0] < 20);
    }
}
