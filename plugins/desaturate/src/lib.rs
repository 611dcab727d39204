//! The `desaturate` mode: the `crop` geometry (exactly the box, scaled to cover and
//! centre-cropped), in greyscale.
//!
//! Grey is the luma of the encoded (gamma) values with the Rec. 601 weights that JPEG and
//! GraphicsMagick use, so a desaturated JPEG has the brightness a viewer expects. The output
//! is one channel: ross encodes it as a greyscale JPEG, a third smaller than RGB.

use plugin_api::TargetSize;
use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, PixelFormat, RenderError};
use plugin_kit::ops;

/// Crop to the box, then greyscale.
pub struct Desaturate;

impl Mode for Desaturate {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "desaturate",
            version: env!("CARGO_PKG_VERSION"),
            description: "Exactly WxH like crop, in greyscale.",
        }
    }

    fn render(&self, src: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        let cropped = ops::crop_to(src, target.width, target.height)?;
        greyscale(cropped.view())
    }
}

/// One grey channel from an RGB or RGBA view (alpha ignored: ross hands modes opaque RGB).
pub fn greyscale(src: ImageView<'_>) -> Result<ImageBuf, RenderError> {
    let bpp = src.format.bytes_per_pixel();
    if src.format == PixelFormat::Gray8 {
        let rows = (0..src.height).flat_map(|y| src.row(y).to_vec()).collect();
        return ImageBuf::from_vec(rows, src.width, src.height, PixelFormat::Gray8);
    }
    let mut grey = Vec::with_capacity(src.width as usize * src.height as usize);
    for y in 0..src.height {
        grey.extend(
            src.row(y)
                .chunks_exact(bpp)
                .map(|p| ops::luma(p[0], p[1], p[2])),
        );
    }
    ImageBuf::from_vec(grey, src.width, src.height, PixelFormat::Gray8)
}

plugin_api::export_modes!(Desaturate);

#[cfg(test)]
mod tests {
    use plugin_kit::testing::{mean, sample, Harness};

    use super::*;

    #[test]
    fn a_photo_becomes_grey_at_exactly_the_box() {
        let plugin = Harness::new(instantiate_root_module());
        assert_eq!(plugin.modes()[0].0, "desaturate");
        let photo = plugin_kit::testing::load_image(&sample("ladybird.jpg"));
        let out = plugin.render("desaturate", &photo, 200, 300).unwrap();
        assert_eq!(
            (out.width, out.height, out.format),
            (200, 300, PixelFormat::Gray8)
        );
        // The mean grey is the mean luma of the cropped colour picture.
        let colour = ops::crop_to(photo.view(), 200, 300).unwrap();
        let m = mean(&colour);
        let expected = 0.299 * m[0] + 0.587 * m[1] + 0.114 * m[2];
        assert!(
            (mean(&out)[0] - expected).abs() < 1.0,
            "{:?} vs {expected}",
            mean(&out)
        );
    }
}
