//! Baseline JPEG encoding (libjpeg-turbo) of what a plugin returned, with no metadata written.

use plugin_api::{ImageView, PixelFormat};
use turbojpeg::{Compressor, Image, Subsamp};

use super::buffers::{self, Layout};

/// The encoder refused the image.
#[derive(Debug, Clone, thiserror::Error)]
#[error("JPEG encoding failed: {0}")]
pub struct EncodeError(String);

/// Encodes `image` as baseline JPEG at `quality` with 4:2:0 chroma (what browsers and CDNs
/// expect of thumbnails); transparency is flattened onto white.
pub fn encode_jpeg(image: ImageView<'_>, quality: u8) -> Result<Vec<u8>, EncodeError> {
    let err = |e: turbojpeg::Error| EncodeError(e.to_string());
    let flattened: Vec<u8>;
    let (pixels, pitch, format) = match image.format {
        PixelFormat::Rgb8 => (
            image.pixels.as_slice(),
            image.stride,
            turbojpeg::PixelFormat::RGB,
        ),
        PixelFormat::Gray8 => (
            image.pixels.as_slice(),
            image.stride,
            turbojpeg::PixelFormat::GRAY,
        ),
        PixelFormat::Rgba8 => {
            let no_memory = |e| EncodeError(format!("flattening the alpha channel: {e}"));
            let mut rows = buffers::with_capacity(image.width as usize * image.height as usize * 4)
                .map_err(no_memory)?;
            for y in 0..image.height {
                rows.extend_from_slice(image.row(y));
            }
            flattened = buffers::to_rgb(rows, Layout::Rgba8).map_err(no_memory)?;
            (
                flattened.as_slice(),
                image.width * 3,
                turbojpeg::PixelFormat::RGB,
            )
        }
    };
    let mut compressor = Compressor::new().map_err(err)?;
    compressor.set_quality(i32::from(quality)).map_err(err)?;
    let subsamp = if format == turbojpeg::PixelFormat::GRAY {
        Subsamp::Gray
    } else {
        Subsamp::Sub2x2
    };
    compressor.set_subsamp(subsamp).map_err(err)?;
    let input = Image {
        pixels,
        width: image.width as usize,
        pitch: pitch as usize,
        height: image.height as usize,
        format,
    };
    compressor.compress_to_vec(input).map_err(err)
}
