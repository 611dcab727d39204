//! WebP through libwebp (the library ross already links to encode), decoding straight to the
//! reduced size with libwebp's own scaler: a lossy 4096x4096 wallpaper shown at 300x300 costs
//! a few rows of state and the output, not 64 MB. Animated files keep the `image` crate's
//! decoder, which composites the first frame at full size.
//!
//! The RIFF chunks are read here for what libwebp's simple decoder does not apply: `ICCP`
//! (converted to sRGB) and `EXIF` (orientation, with or without JPEG's `Exif\0\0` prefix,
//! before or after the image data).

use image::metadata::Orientation;

use super::buffers;
use super::decode::{
    apply_profile, check_pixels, decode_with_image, exif_orientation, DecodeError, DecodeWarning,
    Decoded,
};
use super::reduce::{factor, largest_shown};
use super::shown::DecodeBox;
use super::sniff::Format;

/// What the RIFF chunks besides the image data say.
#[derive(Debug, Default)]
struct Chunks<'a> {
    profile: Option<&'a [u8]>,
    exif: Option<&'a [u8]>,
    animated: bool,
}

/// Walks the RIFF chunks; a broken chunk ends the walk (libwebp reports the damage).
fn chunks(bytes: &[u8]) -> Chunks<'_> {
    let mut found = Chunks::default();
    let mut at = 12;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let Some(data) = bytes.get(at + 8..(at + 8).saturating_add(len)) else {
            break;
        };
        match &head[..4] {
            b"ICCP" => found.profile = found.profile.or(Some(data)),
            b"EXIF" => found.exif = found.exif.or(Some(data)),
            b"ANIM" | b"ANMF" => found.animated = true,
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    found
}

fn malformed(reason: impl ToString) -> DecodeError {
    DecodeError::Malformed {
        format: Format::WebP,
        reason: reason.to_string(),
    }
}

/// Decodes a WebP for `shrink_to` (see [`super::decode`]); returns the pixels and whether
/// they were reduced.
pub(super) fn decode(
    bytes: &[u8],
    shrink_to: &[DecodeBox],
    max_pixels: u64,
    warnings: &mut Vec<DecodeWarning>,
) -> Result<(Decoded, bool), DecodeError> {
    let found = chunks(bytes);
    let orientation = found
        .exif
        .and_then(exif_orientation)
        .unwrap_or(Orientation::NoTransforms);
    let features = features(bytes)?;
    let (mut image, reduced) = if found.animated || features.animated {
        let image = decode_with_image(bytes, Format::WebP, max_pixels)?;
        (image, false)
    } else {
        let (width, height) = features.size;
        check_pixels(Format::WebP, width, height, max_pixels)?;
        let k = factor(
            (width, height),
            largest_shown((width, height), shrink_to, orientation),
        );
        let size = (width.div_ceil(k), height.div_ceil(k));
        (decode_scaled(bytes, features, size)?, k > 1)
    };
    apply_profile(&mut image, found.profile, false, warnings)?;
    Ok((buffers::orient(image, orientation)?, reduced))
}

#[derive(Debug, Clone, Copy)]
struct Features {
    size: (u32, u32),
    alpha: bool,
    animated: bool,
}

#[allow(unsafe_code)]
fn features(bytes: &[u8]) -> Result<Features, DecodeError> {
    let mut features = std::mem::MaybeUninit::<libwebp_sys::WebPBitstreamFeatures>::zeroed();
    // SAFETY: libwebp reads `bytes` within its length and fills `features`.
    let status =
        unsafe { libwebp_sys::WebPGetFeatures(bytes.as_ptr(), bytes.len(), features.as_mut_ptr()) };
    if status != libwebp_sys::VP8StatusCode::VP8_STATUS_OK {
        return Err(malformed(format!(
            "libwebp cannot read the header ({status:?})"
        )));
    }
    // SAFETY: initialised by the successful call.
    let features = unsafe { features.assume_init() };
    let side = |v: i32| u32::try_from(v).map_err(|_| malformed("negative size"));
    Ok(Features {
        size: (side(features.width)?, side(features.height)?),
        alpha: features.has_alpha != 0,
        animated: features.has_animation != 0,
    })
}

/// The still image decoded by libwebp at `size` (its full size or smaller), into a buffer
/// allocated here.
#[allow(unsafe_code)]
fn decode_scaled(
    bytes: &[u8],
    features: Features,
    size: (u32, u32),
) -> Result<Decoded, DecodeError> {
    let channels = if features.alpha { 4 } else { 3 };
    let stride = size.0 as usize * channels;
    let mut pixels = buffers::zeroed(stride * size.1 as usize)?;
    let mut config = libwebp_sys::WebPDecoderConfig::new()
        .map_err(|()| malformed("libwebp's decoder version does not match"))?;
    let scaled = size != features.size;
    config.options.use_scaling = i32::from(scaled);
    config.options.scaled_width = size.0 as i32;
    config.options.scaled_height = size.1 as i32;
    config.output.colorspace = if features.alpha {
        libwebp_sys::WEBP_CSP_MODE::MODE_RGBA
    } else {
        libwebp_sys::WEBP_CSP_MODE::MODE_RGB
    };
    config.output.is_external_memory = 1;
    config.output.u.RGBA = libwebp_sys::WebPRGBABuffer {
        rgba: pixels.as_mut_ptr(),
        stride: i32::try_from(stride).map_err(|_| malformed("too wide"))?,
        size: pixels.len(),
    };
    // SAFETY: libwebp writes only within the external buffer described above, which outlives
    // the call; `WebPFreeDecBuffer` frees nothing of ours (external memory).
    let status = unsafe {
        let status = libwebp_sys::WebPDecode(bytes.as_ptr(), bytes.len(), &mut config);
        libwebp_sys::WebPFreeDecBuffer(&mut config.output);
        status
    };
    match status {
        libwebp_sys::VP8StatusCode::VP8_STATUS_OK => {}
        // libwebp's own buffers (a lossless image's whole canvas) did not fit.
        libwebp_sys::VP8StatusCode::VP8_STATUS_OUT_OF_MEMORY => {
            return Err(DecodeError::OutOfMemory {
                bytes: features.size.0 as usize * features.size.1 as usize * 4,
            })
        }
        status => {
            return Err(malformed(format!(
                "libwebp cannot decode the image ({status:?})"
            )))
        }
    }
    let layout = if features.alpha {
        buffers::Layout::Rgba8
    } else {
        buffers::Layout::Rgb8
    };
    buffers::upright_layout(pixels, layout, size.0, size.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_found_before_and_after_the_image_and_odd_sizes_are_padded() {
        let mut file = b"RIFF\0\0\0\0WEBPVP8X".to_vec();
        file.extend_from_slice(&10u32.to_le_bytes());
        file.extend_from_slice(&[0; 10]);
        file.extend_from_slice(b"ICCP");
        file.extend_from_slice(&3u32.to_le_bytes());
        file.extend_from_slice(b"abc\0");
        file.extend_from_slice(b"VP8 ");
        file.extend_from_slice(&2u32.to_le_bytes());
        file.extend_from_slice(&[1, 2]);
        file.extend_from_slice(b"EXIF");
        file.extend_from_slice(&4u32.to_le_bytes());
        file.extend_from_slice(b"II*\0");
        let found = chunks(&file);
        assert_eq!(found.profile, Some(&b"abc"[..]));
        assert_eq!(found.exif, Some(&b"II*\0"[..]));
        assert!(!found.animated);
    }
}
