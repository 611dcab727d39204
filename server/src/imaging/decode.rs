//! Decoding to upright 8-bit RGB: the one pixel format the host hands to plugins.
//!
//! Header dimensions are checked against the pixel limit before any pixel is decoded. EXIF
//! orientation is applied, CMYK and greyscale become RGB, 16-bit becomes 8-bit, palettes are
//! expanded and transparency is flattened onto white.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader};

use super::jpeg;
use super::sniff::{sniff, Format};

/// Why bytes could not become pixels.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are empty or in no format ross decodes.
    #[error("not an image in a supported format (JPEG, PNG, GIF, WebP)")]
    UnsupportedFormat,
    /// The format was recognised but the data is broken.
    #[error("the {format:?} data cannot be decoded: {reason}")]
    Malformed {
        /// The sniffed format.
        format: Format,
        /// The decoder's complaint.
        reason: String,
    },
    /// The header declares more pixels than `limits.max_source_pixels`.
    #[error("the image is {width}x{height}, more than the {limit} pixels allowed")]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The configured limit.
        limit: u64,
    },
}

/// Upright, tightly packed RGB8 pixels.
#[derive(Debug)]
pub struct Decoded {
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
}

/// Decodes `bytes`. With `shrink_to`, the decoder may return a smaller image, but never one
/// that no longer covers that size (used for JPEG's DCT scaling, the dominant speed-up).
pub fn decode(
    bytes: &[u8],
    shrink_to: Option<(u32, u32)>,
    max_pixels: u64,
) -> Result<Decoded, DecodeError> {
    match sniff(bytes).ok_or(DecodeError::UnsupportedFormat)? {
        Format::Jpeg => jpeg::decode(bytes, shrink_to, max_pixels),
        other => decode_with_image(bytes, other, max_pixels),
    }
}

pub(super) fn check_pixels(width: u32, height: u32, limit: u64) -> Result<(), DecodeError> {
    if u64::from(width) * u64::from(height) > limit {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            limit,
        });
    }
    Ok(())
}

fn decode_with_image(
    bytes: &[u8],
    format: Format,
    max_pixels: u64,
) -> Result<Decoded, DecodeError> {
    let malformed = |e: image::ImageError| DecodeError::Malformed {
        format,
        reason: e.to_string(),
    };
    let image_format = match format {
        Format::Png => image::ImageFormat::Png,
        Format::Gif => image::ImageFormat::Gif,
        Format::WebP => image::ImageFormat::WebP,
        Format::Jpeg => unreachable!("JPEG has its own decoder"),
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format);
    let mut limits = image::Limits::default();
    // Belt and braces behind the header check: 16-bit RGBA is 8 bytes a pixel.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(malformed)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, max_pixels)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(malformed)?;
    image.apply_orientation(orientation);
    Ok(to_rgb(image))
}

/// RGB8 from any decoded image, flattening transparency onto white.
fn to_rgb(image: DynamicImage) -> Decoded {
    let (width, height) = (image.width(), image.height());
    let pixels = if image.color().has_alpha() {
        flatten_on_white(&image.into_rgba8().into_raw())
    } else {
        image.into_rgb8().into_raw()
    };
    Decoded {
        pixels,
        width,
        height,
    }
}

/// RGBA (straight alpha) composited over opaque white, as RGB.
pub(crate) fn flatten_on_white(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let a = u32::from(px[3]);
        for &c in &px[..3] {
            out.push(((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_becomes_white_and_opaque_stays() {
        assert_eq!(
            flatten_on_white(&[0, 0, 0, 0, 10, 20, 30, 255]),
            vec![255, 255, 255, 10, 20, 30]
        );
        assert_eq!(flatten_on_white(&[0, 0, 0, 128]), vec![127, 127, 127]);
    }

    #[test]
    fn garbage_is_unsupported() {
        assert!(matches!(
            decode(b"hello", None, 1000),
            Err(DecodeError::UnsupportedFormat)
        ));
        assert!(matches!(
            decode(b"", None, 1000),
            Err(DecodeError::UnsupportedFormat)
        ));
    }
}
