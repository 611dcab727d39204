//! The `trimresize` mode, OpenRoss's fourth mode: trim the uniform border, shrink (never
//! enlarge) to fit the box, and centre on white at exactly the requested size.
//!
//! The border colour is the top-left pixel's; a pixel belongs to the border while every
//! channel is within [`TOLERANCE`] of it. OpenRoss trimmed with GraphicsMagick's `trim()` at
//! fuzz 0, which a JPEG's compression noise around a white background usually defeats; a
//! small tolerance trims what a person sees as a uniform border. An image that is all border
//! is kept whole.

use plugin_api::{DecodeNeed, ImageBuf, ImageView, Mode, ModeDescriptor, RenderError, TargetSize};
use plugin_kit::geometry::{fit, Region};
use plugin_kit::ops;

/// Largest per-channel difference from the border colour still counted as border (about 6%).
pub const TOLERANCE: u8 = 16;

/// Trim, shrink only, centre on white.
pub struct TrimResize;

impl Mode for TrimResize {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "trimresize",
            version: env!("CARGO_PKG_VERSION"),
            description: "Exactly WxH: uniform border trimmed, shrunk to fit (never enlarged), \
                          centred on white.",
        }
    }

    fn render(&self, src: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        let (x, y, w, h) = content_box(src, TOLERANCE);
        let (tw, th) = (target.width, target.height);
        let content = if w > tw || h > th {
            let (fw, fh) = fit((w, h), (tw, th));
            let region = Region {
                left: f64::from(x),
                top: f64::from(y),
                width: f64::from(w),
                height: f64::from(h),
            };
            ops::resize_region(src, region, fw, fh)?
        } else {
            copy_box(src, x, y, w, h)
        };
        ops::centre_on_white(content.view(), tw, th)
    }

    /// The whole source: how large the content is, and so how far it may be shrunk, is known
    /// only once the border is found. A decode shrunk to cover the box would show a 1200 px
    /// object in a 2400 px JPEG at half the size its PNG gives.
    fn decode_need(&self, _target: TargetSize) -> DecodeNeed {
        DecodeNeed::full_size()
    }
}

/// The smallest box `(x, y, width, height)` holding every pixel that differs from the
/// top-left pixel by more than `tolerance` in some channel; the whole image if there is none.
pub fn content_box(src: ImageView<'_>, tolerance: u8) -> (u32, u32, u32, u32) {
    let bpp = src.format.bytes_per_pixel();
    let border = src.row(0)[..bpp].to_vec();
    let differs = |px: &[u8]| {
        px.iter()
            .zip(&border)
            .any(|(a, b)| a.abs_diff(*b) > tolerance)
    };
    let (mut left, mut right, mut top, mut bottom) = (u32::MAX, 0, u32::MAX, 0);
    for y in 0..src.height {
        let row = src.row(y);
        let first = row.chunks_exact(bpp).position(&differs);
        if let Some(first) = first {
            let last = row.chunks_exact(bpp).rposition(&differs).unwrap_or(first);
            left = left.min(first as u32);
            right = right.max(last as u32);
            top = top.min(y);
            bottom = y;
        }
    }
    if left == u32::MAX {
        return (0, 0, src.width, src.height);
    }
    (left, top, right - left + 1, bottom - top + 1)
}

/// A packed copy of part of `src`.
fn copy_box(src: ImageView<'_>, x: u32, y: u32, w: u32, h: u32) -> ImageBuf {
    let bpp = src.format.bytes_per_pixel();
    let (from, to) = (x as usize * bpp, (x + w) as usize * bpp);
    let pixels: Vec<u8> = (y..y + h)
        .flat_map(|row| src.row(row)[from..to].to_vec())
        .collect();
    ImageBuf::from_vec(pixels, w, h, src.format).expect("a packed buffer of the box's size")
}

plugin_api::export_modes!(TrimResize);

#[cfg(test)]
mod tests {
    use plugin_api::PixelFormat;
    use plugin_kit::testing::{sample, Harness};

    use super::*;

    /// A `w` x `h` grey canvas holding a red `bw` x `bh` block at (`bx`, `by`), with a little
    /// noise in the grey, as JPEG leaves it.
    fn framed(w: u32, h: u32, bx: u32, by: u32, bw: u32, bh: u32) -> ImageBuf {
        let mut px = Vec::new();
        for y in 0..h {
            for x in 0..w {
                if (bx..bx + bw).contains(&x) && (by..by + bh).contains(&y) {
                    px.extend_from_slice(&[200, 30, 30]);
                } else {
                    let noise = ((x * 7 + y * 3) % 5) as u8;
                    px.extend_from_slice(&[120 + noise, 120, 120 - noise]);
                }
            }
        }
        ImageBuf::from_vec(px, w, h, PixelFormat::Rgb8).unwrap()
    }

    #[test]
    fn finds_the_content_inside_a_noisy_border() {
        let img = framed(100, 80, 30, 10, 20, 50);
        assert_eq!(content_box(img.view(), TOLERANCE), (30, 10, 20, 50));
        let flat = ImageBuf::filled(9, 7, PixelFormat::Rgb8, &[5, 5, 5]);
        assert_eq!(content_box(flat.view(), TOLERANCE), (0, 0, 9, 7));
    }

    #[test]
    fn small_content_is_centred_unscaled_on_white() {
        let plugin = Harness::new(instantiate_root_module());
        let img = framed(100, 80, 30, 10, 20, 50);
        let out = plugin.render("trimresize", &img, 60, 70).unwrap();
        assert_eq!((out.width, out.height), (60, 70));
        let v = out.view();
        // The 20x50 block sits at (20, 10); white around it.
        assert_eq!(&v.row(10)[20 * 3..20 * 3 + 3], &[200, 30, 30]);
        assert_eq!(&v.row(59)[39 * 3..39 * 3 + 3], &[200, 30, 30]);
        assert_eq!(&v.row(9)[20 * 3..20 * 3 + 3], &[255, 255, 255]);
        assert_eq!(&v.row(10)[19 * 3..19 * 3 + 3], &[255, 255, 255]);
    }

    #[test]
    fn large_content_is_shrunk_to_fit() {
        let plugin = Harness::new(instantiate_root_module());
        let img = framed(400, 300, 50, 50, 300, 150);
        let out = plugin.render("trimresize", &img, 100, 100).unwrap();
        assert_eq!((out.width, out.height), (100, 100));
        // 300x150 fits as 100x50, centred: rows 25..75 red, rows above white.
        assert!(out.view().row(50)[0] > 150 && out.view().row(50)[1] < 80);
        assert_eq!(&out.view().row(10)[..3], &[255, 255, 255]);
    }

    #[test]
    fn a_photo_renders_at_exactly_the_box() {
        let plugin = Harness::new(instantiate_root_module());
        let out = plugin
            .render_file("trimresize", &sample("transparent.png"), 200, 250)
            .unwrap();
        assert_eq!((out.width, out.height), (200, 250));
    }
}
