//! Pixel buffers allocated fallibly. A decoded source can be hundreds of megabytes (up to
//! `limits.max_source_pixels` x 4 bytes); Rust's default is to abort the whole process when an
//! allocation fails, so every buffer of the decode path is reserved with `try_reserve` and a
//! failure is an error for that request ([`DecodeError::OutOfMemory`], 503) instead.

use image::metadata::Orientation;

use super::decode::{DecodeError, Decoded};

/// A zeroed buffer of `len` bytes, or `OutOfMemory`.
pub(crate) fn zeroed(len: usize) -> Result<Vec<u8>, DecodeError> {
    let mut buf = with_capacity(len)?;
    buf.resize(len, 0);
    Ok(buf)
}

/// An empty buffer with room for `len` bytes, or `OutOfMemory`.
pub(crate) fn with_capacity(len: usize) -> Result<Vec<u8>, DecodeError> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(len)
        .map_err(|_| DecodeError::OutOfMemory { bytes: len })?;
    Ok(buf)
}

/// The channel layouts decoders hand over, to be made RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Grey.
    L8,
    /// Grey and alpha.
    La8,
    /// Red, green, blue.
    Rgb8,
    /// Red, green, blue and straight alpha.
    Rgba8,
}

impl Layout {
    /// Bytes per pixel.
    pub(crate) fn channels(self) -> usize {
        match self {
            Layout::L8 => 1,
            Layout::La8 => 2,
            Layout::Rgb8 => 3,
            Layout::Rgba8 => 4,
        }
    }
}

/// RGB from `pixels` in `layout`, with transparency flattened onto white. RGB input is
/// returned as it is, without a copy.
pub(crate) fn to_rgb(pixels: Vec<u8>, layout: Layout) -> Result<Vec<u8>, DecodeError> {
    let over_white = |c: u8, a: u8| {
        let (c, a) = (u32::from(c), u32::from(a));
        ((c * a + 255 * (255 - a) + 127) / 255) as u8
    };
    let count = pixels.len() / layout.channels();
    if layout == Layout::Rgb8 {
        return Ok(pixels);
    }
    let mut out = with_capacity(count * 3)?;
    match layout {
        Layout::L8 => {
            for &l in &pixels {
                out.extend_from_slice(&[l, l, l]);
            }
        }
        Layout::La8 => {
            for px in pixels.chunks_exact(2) {
                let l = over_white(px[0], px[1]);
                out.extend_from_slice(&[l, l, l]);
            }
        }
        Layout::Rgba8 => {
            for px in pixels.chunks_exact(4) {
                out.extend_from_slice(&[
                    over_white(px[0], px[3]),
                    over_white(px[1], px[3]),
                    over_white(px[2], px[3]),
                ]);
            }
        }
        Layout::Rgb8 => unreachable!("returned above"),
    }
    Ok(out)
}

/// Decoded pixels in `layout`: RGB, or RGBA when some pixel is not opaque (grey expanded;
/// transparency kept, to be flattened where the output has none).
pub(crate) fn upright_layout(
    pixels: Vec<u8>,
    layout: Layout,
    width: u32,
    height: u32,
) -> Result<Decoded, DecodeError> {
    let opaque = match layout {
        Layout::La8 => pixels.chunks_exact(2).all(|p| p[1] == 255),
        Layout::Rgba8 => pixels.chunks_exact(4).all(|p| p[3] == 255),
        Layout::L8 | Layout::Rgb8 => true,
    };
    if opaque {
        return Ok(Decoded::rgb(to_rgb(pixels, layout)?, width, height));
    }
    let pixels = if layout == Layout::La8 {
        let mut rgba = with_capacity(pixels.len() * 2)?;
        for p in pixels.chunks_exact(2) {
            rgba.extend_from_slice(&[p[0], p[0], p[0], p[1]]);
        }
        rgba
    } else {
        pixels
    };
    Ok(Decoded {
        pixels: pixels.into(),
        width,
        height,
        alpha: true,
    })
}

/// `image` turned upright by EXIF `orientation` (a new buffer unless it is already upright).
pub(crate) fn orient(image: Decoded, orientation: Orientation) -> Result<Decoded, DecodeError> {
    use Orientation::*;
    if orientation == NoTransforms {
        return Ok(image);
    }
    let (w, h) = (image.width as usize, image.height as usize);
    let swaps = matches!(
        orientation,
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH
    );
    let (out_w, out_h) = if swaps { (h, w) } else { (w, h) };
    let n = image.channels();
    let mut out = zeroed(w * h * n)?;
    for y in 0..h {
        let row = &image.pixels[y * w * n..(y + 1) * w * n];
        for (x, px) in row.chunks_exact(n).enumerate() {
            // Where source pixel (x, y) lands.
            let (dx, dy) = match orientation {
                NoTransforms => (x, y),
                FlipHorizontal => (w - 1 - x, y),
                Rotate180 => (w - 1 - x, h - 1 - y),
                FlipVertical => (x, h - 1 - y),
                Rotate90FlipH => (y, x),
                Rotate90 => (h - 1 - y, x),
                Rotate270FlipH => (h - 1 - y, w - 1 - x),
                Rotate270 => (y, w - 1 - x),
            };
            let at = (dy * out_w + dx) * n;
            out[at..at + n].copy_from_slice(px);
        }
    }
    Ok(Decoded {
        pixels: out.into(),
        width: out_w as u32,
        height: out_h as u32,
        alpha: image.alpha,
    })
}

#[cfg(test)]
mod tests {
    use image::{DynamicImage, RgbImage};

    use super::*;

    #[test]
    fn every_orientation_matches_the_image_crate() {
        let (w, h) = (5u32, 3u32);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        for n in 1..=8 {
            let orientation = Orientation::from_exif(n).unwrap();
            let mut expected =
                DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, pixels.clone()).unwrap());
            expected.apply_orientation(orientation);
            let got = orient(Decoded::rgb(pixels.clone(), w, h), orientation).unwrap();
            assert_eq!(
                (got.width, got.height),
                (expected.width(), expected.height()),
                "orientation {n}"
            );
            assert_eq!(
                got.pixels,
                expected.into_rgb8().into_raw(),
                "orientation {n}"
            );
        }
    }

    #[test]
    fn layouts_become_rgb_over_white() {
        assert_eq!(to_rgb(vec![9], Layout::L8).unwrap(), vec![9, 9, 9]);
        assert_eq!(
            to_rgb(vec![0, 0, 200, 255], Layout::La8).unwrap(),
            vec![255, 255, 255, 200, 200, 200]
        );
        assert_eq!(
            to_rgb(
                vec![0, 0, 0, 0, 10, 20, 30, 255, 0, 0, 0, 128],
                Layout::Rgba8
            )
            .unwrap(),
            vec![255, 255, 255, 10, 20, 30, 127, 127, 127]
        );
        assert_eq!(to_rgb(vec![1, 2, 3], Layout::Rgb8).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn an_impossible_buffer_is_an_error_not_an_abort() {
        assert!(matches!(
            zeroed(usize::MAX / 2),
            Err(DecodeError::OutOfMemory { .. })
        ));
    }
}
