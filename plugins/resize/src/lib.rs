//! The `resize` mode: fit inside the box with the aspect ratio kept, one side equal to the box.
//! Smaller images are enlarged, as OpenRoss did.

use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, RenderError, TargetSize};
use plugin_kit::geometry::fit;
use plugin_kit::ops;

/// Fit inside the box.
pub struct Resize;

impl Mode for Resize {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "resize",
            version: env!("CARGO_PKG_VERSION"),
            description: "Fits inside WxH with the aspect ratio kept; enlarges small images.",
        }
    }

    fn render(&self, src: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        let (w, h) = fit((src.width, src.height), (target.width, target.height));
        ops::resize(src, w, h)
    }

    /// Scaling keeps transparency (resampled with premultiplied alpha).
    fn takes_alpha(&self) -> bool {
        true
    }

    /// The source is shown fitted in the box: decoded only that large.
    fn fits_within(&self) -> bool {
        true
    }
}

plugin_api::export_modes!(Resize);

#[cfg(test)]
mod tests {
    use plugin_api::abi_stable::std_types::RStr;
    use plugin_api::PixelFormat;

    use super::*;

    fn render(src: (u32, u32), w: u32, h: u32) -> ImageBuf {
        let img = ImageBuf::filled(src.0, src.1, PixelFormat::Rgb8, &[10, 20, 30]);
        let target = TargetSize {
            width: w,
            height: h,
        };
        let module = instantiate_root_module();
        module.render()(RStr::from("resize"), img.view(), target)
            .into_result()
            .unwrap()
    }

    #[test]
    fn exported_module_says_resize_fits_within_the_box() {
        let fits_within = instantiate_root_module().fits_within().expect("ABI 0.2.1");
        assert!(fits_within(RStr::from("resize")));
        assert!(!fits_within(RStr::from("unknown")));
    }

    #[test]
    fn fits_inside_with_one_side_equal() {
        assert_eq!(dims(render((1440, 1086), 200, 200)), (200, 151));
        assert_eq!(dims(render((1440, 1086), 400, 100)), (133, 100));
        assert_eq!(dims(render((1440, 1086), 100, 400)), (100, 75));
    }

    #[test]
    fn enlarges_small_images() {
        assert_eq!(dims(render((50, 25), 400, 400)), (400, 200));
    }

    #[test]
    fn keeps_colours() {
        let out = render((64, 64), 16, 16);
        assert!(out.pixels.chunks(3).all(|p| p == [10, 20, 30]));
    }

    fn dims(b: ImageBuf) -> (u32, u32) {
        (b.width, b.height)
    }
}
