//! The `resizecomp` mode: `resize`, then centred on a white canvas of exactly the box
//! (offsets rounded down: a spare pixel goes right or bottom).

use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, RenderError, TargetSize};
use plugin_kit::geometry::fit;
use plugin_kit::ops;

/// Fit inside the box, then pad with white to the box.
pub struct ResizeComp;

impl Mode for ResizeComp {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "resizecomp",
            version: env!("CARGO_PKG_VERSION"),
            description: "Exactly WxH: fitted inside the box and centred on white.",
        }
    }

    fn render(&self, src: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        let (w, h) = fit((src.width, src.height), (target.width, target.height));
        let fitted = ops::resize(src, w, h)?;
        ops::centre_on_white(fitted.view(), target.width, target.height)
    }

    /// The source is shown fitted in the box (the rest is white): decoded only that large.
    fn fits_within(&self) -> bool {
        true
    }
}

plugin_api::export_modes!(ResizeComp);

#[cfg(test)]
mod tests {
    use plugin_api::abi_stable::std_types::RStr;
    use plugin_api::PixelFormat;

    use super::*;

    fn render(src: (u32, u32), w: u32, h: u32) -> ImageBuf {
        let img = ImageBuf::filled(src.0, src.1, PixelFormat::Rgb8, &[0, 0, 0]);
        let target = TargetSize {
            width: w,
            height: h,
        };
        let module = instantiate_root_module();
        module.render()(RStr::from("resizecomp"), img.view(), target)
            .into_result()
            .unwrap()
    }

    fn is_white(out: &ImageBuf, x: u32, y: u32) -> bool {
        let i = (y * out.stride + x * 3) as usize;
        out.pixels[i..i + 3].iter().all(|v| *v > 240)
    }

    #[test]
    fn exported_module_says_resizecomp_fits_within_the_box() {
        let fits_within = instantiate_root_module().fits_within().expect("ABI 0.2.1");
        assert!(fits_within(RStr::from("resizecomp")));
    }

    #[test]
    fn pads_to_the_exact_box_like_openross() {
        // OpenRoss's golden: 1440x1086 at 200x200 sits at y offset 24, 151 rows tall.
        let out = render((1440, 1086), 200, 200);
        assert_eq!((out.width, out.height), (200, 200));
        assert!(is_white(&out, 100, 23));
        assert!(!is_white(&out, 100, 24));
        assert!(!is_white(&out, 100, 24 + 150));
        assert!(is_white(&out, 100, 24 + 151));
    }

    #[test]
    fn extreme_boxes_are_exact() {
        for (w, h) in [(400, 100), (100, 400), (1, 1)] {
            let out = render((640, 480), w, h);
            assert_eq!((out.width, out.height), (w, h));
        }
    }
}
