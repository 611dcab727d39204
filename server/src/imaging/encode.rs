//! Baseline JPEG encoding of what a plugin returned, with no metadata written.

use jpeg_encoder::{ColorType, Encoder};
use plugin_api::{ImageView, PixelFormat};

use super::decode::flatten_on_white;

/// The encoder refused the image.
#[derive(Debug, Clone, thiserror::Error)]
#[error("JPEG encoding failed: {0}")]
pub struct EncodeError(String);

/// Encodes `image` as baseline JPEG at `quality`; transparency is flattened onto white.
pub fn encode_jpeg(image: ImageView<'_>, quality: u8) -> Result<Vec<u8>, EncodeError> {
    let (w, h) = (image.width, image.height);
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(EncodeError(format!("{w}x{h} is larger than JPEG allows")));
    };
    let packed: Vec<u8>;
    let rows: &[u8] = if image.is_packed() {
        &image.pixels.as_slice()[..w as usize * h as usize * image.format.bytes_per_pixel()]
    } else {
        packed = (0..h).flat_map(|y| image.row(y)).copied().collect();
        &packed
    };
    let flattened: Vec<u8>;
    let (data, color) = match image.format {
        PixelFormat::Rgb8 => (rows, ColorType::Rgb),
        PixelFormat::Gray8 => (rows, ColorType::Luma),
        PixelFormat::Rgba8 => {
            flattened = flatten_on_white(rows);
            (flattened.as_slice(), ColorType::Rgb)
        }
    };
    let mut out = Vec::with_capacity(data.len() / 8 + 1024);
    Encoder::new(&mut out, quality)
        .encode(data, w16, h16, color)
        .map_err(|e| EncodeError(e.to_string()))?;
    Ok(out)
}
