//! Encoding what a plugin returned, with no metadata written: baseline JPEG (libjpeg-turbo),
//! WebP (libwebp) or AVIF (libavif with libaom). Why these encoders and settings:
//! docs/formats.md.

use plugin_api::{ImageView, PixelFormat};
use ross_config::{OutputFormat, OutputSettings};
use turbojpeg::{Compressor, Image, Subsamp};

use super::avif::encode_avif;
use super::buffers::{self, Layout};

/// The encoder refused the image.
#[derive(Debug, Clone, thiserror::Error)]
#[error("encoding failed: {0}")]
pub struct EncodeError(String);

impl EncodeError {
    pub(super) fn new(message: impl Into<String>) -> EncodeError {
        EncodeError(message.into())
    }
}

/// Encodes `image` as `format` with the qualities of `output`.
pub fn encode(
    image: ImageView<'_>,
    format: OutputFormat,
    output: &OutputSettings,
) -> Result<Vec<u8>, EncodeError> {
    match format {
        OutputFormat::Jpeg => encode_jpeg(image, output.jpeg_quality),
        OutputFormat::Webp => {
            let (pixels, channels) = packed(image)?;
            let layout = if channels == 4 {
                webp::PixelLayout::Rgba
            } else {
                webp::PixelLayout::Rgb
            };
            let encoder = webp::Encoder::new(&pixels, layout, image.width, image.height);
            let mut config =
                webp::WebPConfig::new().map_err(|()| EncodeError::new("WebP: no configuration"))?;
            config.quality = f32::from(output.webp_quality);
            config.method = WEBP_METHOD;
            let encoded = encoder
                .encode_advanced(&config)
                .map_err(|e| EncodeError::new(format!("WebP: {e:?}")))?;
            Ok(encoded.to_vec())
        }
        OutputFormat::Avif => {
            let (pixels, channels) = packed(image)?;
            let stride = image.width as usize * channels as usize;
            encode_avif(
                &pixels,
                image.width,
                image.height,
                stride,
                channels,
                output.avif_quality,
                output.avif_speed,
            )
        }
    }
}

/// libwebp's effort, 0 (fastest) to 6. Measured against its default 4 (docs/formats.md): 2.3x
/// faster to encode, 2% larger, one SSIMULACRA2 point lower at the same quality setting.
const WEBP_METHOD: i32 = 2;

/// The rows of `image` back to back as RGB, or RGBA when some pixel is not opaque, and the
/// channels per pixel: what the WebP and AVIF encoders take.
fn packed(image: ImageView<'_>) -> Result<(Vec<u8>, u32), EncodeError> {
    let no_memory = |e| EncodeError::new(format!("packing the pixels: {e}"));
    let (w, h) = (image.width as usize, image.height as usize);
    let mut rows =
        buffers::with_capacity(w * h * image.format.bytes_per_pixel()).map_err(no_memory)?;
    for y in 0..image.height {
        rows.extend_from_slice(image.row(y));
    }
    match image.format {
        PixelFormat::Rgb8 => Ok((rows, 3)),
        PixelFormat::Gray8 => Ok((buffers::to_rgb(rows, Layout::L8).map_err(no_memory)?, 3)),
        PixelFormat::Rgba8 if rows.chunks_exact(4).all(|px| px[3] == 255) => {
            Ok((buffers::to_rgb(rows, Layout::Rgba8).map_err(no_memory)?, 3))
        }
        PixelFormat::Rgba8 => Ok((rows, 4)),
        other => Err(unknown(other)),
    }
}

/// A format this build does not know: never one a render returns, as the output check
/// refuses it first.
fn unknown(format: PixelFormat) -> EncodeError {
    EncodeError::new(format!("cannot encode pixel format {format:?}"))
}

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
        other => return Err(unknown(other)),
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
