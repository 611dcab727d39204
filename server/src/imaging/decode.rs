//! Decoding to upright 8-bit sRGB: the one pixel format the host hands to plugins.
//!
//! Header dimensions are checked against the pixel limit before any pixel is decoded. Every
//! format is decoded at a reduced size when the render needs fewer pixels (JPEG in the DCT
//! domain, WebP by libwebp's scaler, PNG and GIF row by row into [`reduce`]'s cells). Embedded
//! ICC profiles are applied ([`colour`]), EXIF orientation is applied (JPEG APP1, WebP `EXIF`,
//! PNG `eXIf`), CMYK and greyscale become RGB, 16-bit becomes 8-bit and palettes are expanded;
//! transparency is kept as RGBA (flattened onto white where the output has none). Every
//! pixel buffer is allocated fallibly ([`buffers`]): a decode the memory cannot hold fails,
//! it does not abort.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{ColorType, ImageDecoder, ImageReader};

use super::buffers::{self, Layout};
use super::shown::DecodeBox;
use super::sniff::{sniff, Format};
use super::{colour, gif, jpeg, png, webp};

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
    /// A buffer the image needs could not be allocated now (the machine, or the process's
    /// memory limit, is short of memory); another time it may be.
    #[error("no memory for a buffer of {bytes} bytes")]
    OutOfMemory {
        /// The size asked for.
        bytes: usize,
    },
}

/// What a warning is about, as counted in `ross_decode_warnings_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// libjpeg-turbo decoded the file with a warning (damaged or non-conforming data).
    Jpeg,
    /// An embedded ICC profile was ignored (too large, unreadable, or not for these pixels).
    Profile,
}

impl WarningKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            WarningKind::Jpeg => "jpeg",
            WarningKind::Profile => "profile",
        }
    }
}

/// Something a decode got past: the image was served, but not quite as its file says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecodeWarning {
    /// What it is about.
    pub kind: WarningKind,
    /// The decoder's words.
    pub detail: String,
}

/// A decode's pixels and what it noticed.
#[derive(Debug, Clone)]
pub struct Decoding {
    /// Upright sRGB pixels.
    pub image: Decoded,
    /// Whether the pixels are fewer than the source's (reduced for the boxes asked for).
    pub reduced: bool,
    /// What the decoder got past.
    pub warnings: Vec<DecodeWarning>,
}

/// Pixel bytes: a buffer, and where in it the pixels begin. That is 0, except for a reduced
/// copy read back into the buffer its file was read into (past its header and the gap that
/// aligned the read): its pixels are used where they were read, not moved.
#[derive(Clone, Default)]
pub struct Pixels {
    buf: Vec<u8>,
    start: usize,
}

impl Pixels {
    /// The bytes of `buf` from `start` on.
    pub fn within(buf: Vec<u8>, start: usize) -> Pixels {
        assert!(start <= buf.len(), "the pixels are within the buffer");
        Pixels { buf, start }
    }

    /// The bytes, as a buffer of their own (moved to its start if they are not there).
    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.drain(..self.start);
        self.buf
    }
}

impl From<Vec<u8>> for Pixels {
    fn from(buf: Vec<u8>) -> Pixels {
        Pixels { buf, start: 0 }
    }
}

impl std::ops::Deref for Pixels {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl std::ops::DerefMut for Pixels {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }
}

impl PartialEq for Pixels {
    fn eq(&self, other: &Pixels) -> bool {
        **self == **other
    }
}

impl Eq for Pixels {}

impl PartialEq<Vec<u8>> for Pixels {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == other[..]
    }
}

impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pixels({} bytes)", self.len())
    }
}

/// Upright, tightly packed pixels: RGB8, or RGBA8 when the source has transparency.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// `width * height * 3` bytes (RGB), or `* 4` (RGBA, straight alpha) when `alpha`.
    pub pixels: Pixels,
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
    /// Whether some pixel is not opaque (the pixels are then RGBA).
    pub alpha: bool,
}

impl Decoded {
    /// Opaque RGB pixels.
    pub fn rgb(pixels: Vec<u8>, width: u32, height: u32) -> Decoded {
        Decoded {
            pixels: pixels.into(),
            width,
            height,
            alpha: false,
        }
    }

    /// Width and height.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Bytes per pixel: 3, or 4 with alpha.
    pub fn channels(&self) -> usize {
        if self.alpha {
            4
        } else {
            3
        }
    }

    /// These pixels without transparency: flattened onto white (a copy) when they have some.
    pub fn flattened(&self) -> Result<std::borrow::Cow<'_, Decoded>, DecodeError> {
        if !self.alpha {
            return Ok(std::borrow::Cow::Borrowed(self));
        }
        let mut rgba = buffers::with_capacity(self.pixels.len())?;
        rgba.extend_from_slice(&self.pixels);
        let rgb = buffers::to_rgb(rgba, Layout::Rgba8)?;
        Ok(std::borrow::Cow::Owned(Decoded::rgb(
            rgb,
            self.width,
            self.height,
        )))
    }
}

/// Decodes `bytes`. With boxes in `shrink_to`, the decoder may return a smaller image, but
/// never one smaller than any of them shows it (JPEG's DCT scaling, WebP's scaler, PNG and GIF
/// rows averaged in cells); with none, the image is full size.
pub fn decode(
    bytes: &[u8],
    shrink_to: &[DecodeBox],
    max_pixels: u64,
) -> Result<Decoded, DecodeError> {
    decode_for(bytes, shrink_to, max_pixels).map(|d| d.image)
}

/// [`decode`], with whether the image was reduced and the warnings the decode got past.
pub fn decode_for(
    bytes: &[u8],
    shrink_to: &[DecodeBox],
    max_pixels: u64,
) -> Result<Decoding, DecodeError> {
    let mut warnings = Vec::new();
    let (image, reduced) = match sniff(bytes).ok_or(DecodeError::UnsupportedFormat)? {
        Format::Jpeg => jpeg::decode(bytes, shrink_to, max_pixels, &mut warnings)?,
        Format::Png => png::decode(bytes, shrink_to, max_pixels, &mut warnings)?,
        Format::Gif => gif::decode(bytes, shrink_to, max_pixels)?,
        Format::WebP => webp::decode(bytes, shrink_to, max_pixels, &mut warnings)?,
    };
    Ok(Decoding {
        image,
        reduced,
        warnings,
    })
}

/// [`decode`], but a JPEG with every scan decoded (no trimming of progressive scans): for
/// benchmarks, as libjpeg-turbo's own cost at the same scale.
pub fn decode_every_scan(
    bytes: &[u8],
    shrink_to: &[DecodeBox],
    max_pixels: u64,
) -> Result<Decoded, DecodeError> {
    match sniff(bytes).ok_or(DecodeError::UnsupportedFormat)? {
        Format::Jpeg => {
            jpeg::decode_every_scan(bytes, shrink_to, max_pixels, &mut Vec::new()).map(|d| d.0)
        }
        _ => decode(bytes, shrink_to, max_pixels),
    }
}

/// Applies an embedded ICC profile, if any, to RGB(A) pixels (from a greyscale source when
/// `grey`: a grey profile fits only those).
pub(super) fn apply_profile(
    image: &mut Decoded,
    profile: Option<&[u8]>,
    grey: bool,
    warnings: &mut Vec<DecodeWarning>,
) -> Result<(), DecodeError> {
    let samples = if grey {
        colour::Samples::Grey
    } else {
        colour::Samples::Rgb
    };
    match profile {
        Some(profile) => colour::rgb_to_srgb(image, profile, samples, warnings),
        None => Ok(()),
    }
}

/// Checks a header's size: not empty, and within the pixel limit.
pub(super) fn check_pixels(
    format: Format,
    width: u32,
    height: u32,
    limit: u64,
) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Malformed {
            format,
            reason: format!("the image is {width}x{height}"),
        });
    }
    if u64::from(width) * u64::from(height) > limit {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            limit,
        });
    }
    Ok(())
}

/// The most a decoder may allocate: 16-bit RGBA is 8 bytes a pixel, plus room for the rest.
pub(super) fn max_alloc(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(8).saturating_add(64 << 20)
}

/// The orientation an EXIF block gives. Browsers read it with or without JPEG's
/// `Exif\0\0` prefix, which several writers keep in a WebP `EXIF` chunk or a PNG `eXIf`
/// chunk (the formats' own rule is a bare TIFF header).
pub(super) fn exif_orientation(exif: &[u8]) -> Option<Orientation> {
    Orientation::from_exif_chunk(exif.strip_prefix(b"Exif\0\0").unwrap_or(exif))
}

/// An animated WebP's first frame, composited, through the `image` crate's decoder, into a
/// buffer that ross allocates (fallibly) itself, at full size and as stored (the caller
/// applies the orientation).
pub(super) fn decode_with_image(
    bytes: &[u8],
    format: Format,
    max_pixels: u64,
) -> Result<Decoded, DecodeError> {
    let malformed = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => DecodeError::OutOfMemory {
            bytes: usize::try_from(max_alloc(max_pixels)).unwrap_or(usize::MAX),
        },
        e => DecodeError::Malformed {
            format,
            reason: e.to_string(),
        },
    };
    let image_format = match format {
        Format::Gif => image::ImageFormat::Gif,
        Format::WebP => image::ImageFormat::WebP,
        Format::Png | Format::Jpeg => image::ImageFormat::Png,
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_alloc(max_pixels));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(malformed)?;
    let (width, height) = decoder.dimensions();
    check_pixels(format, width, height, max_pixels)?;
    let layout = match decoder.color_type() {
        ColorType::L8 => Layout::L8,
        ColorType::La8 => Layout::La8,
        ColorType::Rgb8 => Layout::Rgb8,
        ColorType::Rgba8 => Layout::Rgba8,
        other => {
            return Err(DecodeError::Malformed {
                format,
                reason: format!("{other:?} pixels are not supported"),
            })
        }
    };
    let size = usize::try_from(decoder.total_bytes()).unwrap_or(usize::MAX);
    let mut pixels = buffers::zeroed(size)?;
    decoder.read_image(&mut pixels).map_err(malformed)?;
    buffers::upright_layout(pixels, layout, width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_unsupported() {
        assert!(matches!(
            decode(b"hello", &[], 1000),
            Err(DecodeError::UnsupportedFormat)
        ));
        assert!(matches!(
            decode(b"", &[], 1000),
            Err(DecodeError::UnsupportedFormat)
        ));
    }
}
