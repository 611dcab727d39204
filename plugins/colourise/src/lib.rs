//! The `colourise` mode: the `crop` geometry (exactly the box, scaled to cover and
//! centre-cropped) with a sepia tint.
//!
//! Each pixel's luma is mapped onto a three-stop tone curve: black, the sepia tone in the
//! middle, white at the top. Unlike the common sepia matrix, which pushes every highlight to
//! the same flat yellow, this keeps the whole tonal range and leaves white backgrounds white.

use plugin_api::TargetSize;
use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, PixelFormat, RenderError};
use plugin_kit::ops;

/// The tone at mid-grey: a warm brown.
pub const SEPIA: [u8; 3] = [162, 128, 92];

/// Crop to the box, then tint.
pub struct Colourise;

impl Mode for Colourise {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "colourise",
            version: env!("CARGO_PKG_VERSION"),
            description: "Exactly WxH like crop, tinted sepia.",
        }
    }

    fn render(&self, src: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        let cropped = ops::crop_to(src, target.width, target.height)?;
        Ok(tint(cropped.view(), SEPIA))
    }
}

/// `src` (RGB or RGBA; alpha dropped) mapped through black → `tone` → white by luma.
pub fn tint(src: ImageView<'_>, tone: [u8; 3]) -> ImageBuf {
    let curve: Vec<[u8; 3]> = (0..=255u32)
        .map(|y| {
            let stop = |c: u8| {
                let c = u32::from(c);
                let v = if y <= 128 {
                    c * y / 128
                } else {
                    c + (255 - c) * (y - 128) / 127
                };
                v.min(255) as u8
            };
            [stop(tone[0]), stop(tone[1]), stop(tone[2])]
        })
        .collect();
    let bpp = src.format.bytes_per_pixel();
    let mut out = Vec::with_capacity(src.width as usize * src.height as usize * 3);
    for y in 0..src.height {
        for p in src.row(y).chunks_exact(bpp) {
            let l = if bpp >= 3 {
                ops::luma(p[0], p[1], p[2])
            } else {
                p[0]
            };
            out.extend_from_slice(&curve[usize::from(l)]);
        }
    }
    ImageBuf::from_vec(out, src.width, src.height, PixelFormat::Rgb8)
        .expect("a packed RGB buffer of the view's size")
}

plugin_api::export_modes!(Colourise);

#[cfg(test)]
mod tests {
    use plugin_kit::testing::{mean, sample, Harness};

    use super::*;

    #[test]
    fn the_curve_keeps_black_white_and_the_tone() {
        let px = [0, 0, 0, 255, 255, 255, 128, 128, 128];
        let view = ImageView::new(&px, 3, 1, PixelFormat::Rgb8).unwrap();
        let out = tint(view, SEPIA);
        assert_eq!(&out.pixels[..], &[0, 0, 0, 255, 255, 255, 162, 128, 92]);
    }

    #[test]
    fn a_photo_turns_warm_at_exactly_the_box() {
        let plugin = Harness::new(instantiate_root_module());
        let out = plugin
            .render_file("colourise", &sample("storm.jpg"), 300, 200)
            .unwrap();
        assert_eq!((out.width, out.height), (300, 200));
        let m = mean(&out);
        assert!(m[0] > m[1] && m[1] > m[2], "not sepia: {m:?}");
    }
}
