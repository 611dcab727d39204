//! The `blur` mode: the `crop` geometry (exactly the box, scaled to cover and centre-cropped),
//! then a gaussian blur whose strength follows the output size, so every size of a variant
//! looks equally soft (a blurred placeholder, a background).
//!
//! Sigma is 2% of the longer side (6 px at 300x300), at least 1 px. The blur is separable
//! (rows, then columns) and clamps at the edges, so the border does not darken.

use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, RenderError, TargetSize};
use plugin_kit::ops;

/// Crop to the box, then blur.
pub struct Blur;

impl Mode for Blur {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "blur",
            version: env!("CARGO_PKG_VERSION"),
            description: "Exactly WxH like crop, with a gaussian blur of 2% of the longer side.",
        }
    }

    fn render(&self, src: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        let cropped = ops::crop_to(src, target.width, target.height)?;
        Ok(gaussian(cropped.view(), sigma_for(target)))
    }
}

/// The blur radius for an output size.
pub fn sigma_for(target: TargetSize) -> f32 {
    (target.width.max(target.height) as f32 * 0.02).max(1.0)
}

/// Normalised gaussian weights for offsets `-r..=r`, `r = ceil(3 sigma)`.
fn kernel(sigma: f32) -> Vec<f32> {
    let radius = (sigma * 3.0).ceil() as i32;
    let weights: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

/// `src` blurred with a gaussian of `sigma` pixels; same size and format, packed rows.
pub fn gaussian(src: ImageView<'_>, sigma: f32) -> ImageBuf {
    let (w, h) = (src.width as usize, src.height as usize);
    let bpp = src.format.bytes_per_pixel();
    let k = kernel(sigma);
    let r = (k.len() / 2) as isize;
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    // Rows into f32, then columns back into u8.
    let mut rows = vec![0f32; w * h * bpp];
    for y in 0..h {
        let line = src.row(y as u32);
        for x in 0..w {
            for c in 0..bpp {
                let mut acc = 0f32;
                for (j, weight) in k.iter().enumerate() {
                    let sx = clamp(x as isize + j as isize - r, w);
                    acc += weight * f32::from(line[sx * bpp + c]);
                }
                rows[(y * w + x) * bpp + c] = acc;
            }
        }
    }
    let mut out = vec![0u8; w * h * bpp];
    let mut acc = vec![0f32; w * bpp];
    for y in 0..h {
        acc.fill(0.0);
        for (j, weight) in k.iter().enumerate() {
            let sy = clamp(y as isize + j as isize - r, h);
            for (a, v) in acc.iter_mut().zip(&rows[sy * w * bpp..(sy + 1) * w * bpp]) {
                *a += weight * v;
            }
        }
        for (o, a) in out[y * w * bpp..(y + 1) * w * bpp].iter_mut().zip(&acc) {
            *o = a.round().clamp(0.0, 255.0) as u8;
        }
    }
    ImageBuf::from_vec(out, src.width, src.height, src.format)
        .expect("a packed buffer of the view's size")
}

plugin_api::export_modes!(Blur);

#[cfg(test)]
mod tests {
    use plugin_api::PixelFormat;
    use plugin_kit::testing::{mean, sample, Harness};

    use super::*;

    /// Sum of absolute differences between horizontal neighbours: high for sharp images.
    fn sharpness(img: &ImageBuf) -> f64 {
        let v = img.view();
        let mut total = 0u64;
        for y in 0..img.height {
            let row = v.row(y);
            for x in 3..row.len() {
                total += u64::from(row[x].abs_diff(row[x - 3]));
            }
        }
        total as f64 / f64::from(img.width * img.height)
    }

    #[test]
    fn kernel_is_normalised_and_flat_images_stay_flat() {
        let k = kernel(2.5);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(k.len(), 2 * 8 + 1);
        let flat = ImageBuf::filled(20, 10, PixelFormat::Rgb8, &[10, 200, 30]);
        let out = gaussian(flat.view(), 3.0);
        assert!(out.pixels.chunks(3).all(|p| p == [10, 200, 30]));
    }

    #[test]
    fn a_photo_is_softer_with_the_same_colours() {
        let plugin = Harness::new(instantiate_root_module());
        let photo = plugin_kit::testing::load_image(&sample("flower.jpg"));
        let sharp = ops::crop_to(photo.view(), 300, 300).unwrap();
        let out = plugin.render("blur", &photo, 300, 300).unwrap();
        assert_eq!((out.width, out.height), (300, 300));
        assert!(sharpness(&out) < sharpness(&sharp) / 2.0);
        for (a, b) in mean(&out).iter().zip(mean(&sharp)) {
            assert!((a - b).abs() < 2.0, "colours shifted");
        }
    }
}
