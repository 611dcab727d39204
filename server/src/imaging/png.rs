//! PNG, row by row: every bit depth and colour type, interlaced or not, through the `png`
//! crate's row reader into [`Reducer`]'s cells, so that a 6800x6800 16-bit source shown at
//! 300x300 holds a few rows and the cells, not 370 MB of samples.
//!
//! The chunks before the image data are read here first: `iCCP` (the profile, inflated up to
//! [`MAX_PROFILE_BYTES`]: a small file whose profile inflates to a gigabyte stays harmless)
//! and `eXIf` (orientation). The `png` crate is told to skip the profile and text chunks
//! itself.

use std::io::Cursor;

use image::metadata::Orientation;

use super::buffers::{self, Layout};
use super::colour::MAX_PROFILE_BYTES;
use super::decode::{
    apply_profile, check_pixels, exif_orientation, max_alloc, DecodeError, DecodeWarning, Decoded,
    WarningKind,
};
use super::reduce::{adam7_rows, factor, largest_shown, Reducer};
use super::shown::DecodeBox;
use super::sniff::Format;

/// What the chunks before the image data say.
#[derive(Debug, Default)]
struct Ancillary {
    /// The `iCCP` chunk's compressed profile.
    profile: Option<Vec<u8>>,
    /// The `eXIf` chunk.
    exif: Option<Vec<u8>>,
}

/// Walks the chunks up to the first `IDAT`; a broken chunk ends the walk (the decoder reports
/// the damage).
fn ancillary(bytes: &[u8]) -> Ancillary {
    let mut found = Ancillary::default();
    let mut at = 8;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        let Some(data) = bytes.get(at + 8..(at + 8).saturating_add(len)) else {
            break;
        };
        match kind {
            b"IDAT" => break,
            b"iCCP" if found.profile.is_none() => {
                // name, NUL, compression method, zlib stream
                if let Some(nul) = data.iter().position(|&b| b == 0) {
                    found.profile = data.get(nul + 2..).map(<[u8]>::to_vec);
                }
            }
            b"eXIf" if found.exif.is_none() => found.exif = Some(data.to_vec()),
            _ => {}
        }
        at += 12 + len;
    }
    found
}

fn malformed(e: png::DecodingError, max_pixels: u64) -> DecodeError {
    match e {
        png::DecodingError::LimitsExceeded => DecodeError::OutOfMemory {
            bytes: usize::try_from(max_alloc(max_pixels)).unwrap_or(usize::MAX),
        },
        e => DecodeError::Malformed {
            format: Format::Png,
            reason: e.to_string(),
        },
    }
}

/// Decodes a PNG for `shrink_to` (see [`super::decode`]); returns the pixels and whether
/// they were reduced.
pub(super) fn decode(
    bytes: &[u8],
    shrink_to: &[DecodeBox],
    max_pixels: u64,
    warnings: &mut Vec<DecodeWarning>,
) -> Result<(Decoded, bool), DecodeError> {
    let malformed = |e| malformed(e, max_pixels);
    // The row reader needs a few rows; the limit is for the chunks it keeps.
    let limits = png::Limits {
        bytes: usize::try_from(max_alloc(max_pixels)).unwrap_or(usize::MAX),
    };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    decoder.set_ignore_iccp_chunk(true);
    decoder.set_ignore_text_chunk(true);
    // Palettes and low bit depths to 8 bits, tRNS to alpha, 16 bits to 8.
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let header = decoder.read_header_info().map_err(malformed)?;
    let (width, height, interlaced) = (header.width, header.height, header.interlaced);
    check_pixels(Format::Png, width, height, max_pixels)?;
    let found = ancillary(bytes);
    let orientation = found
        .exif
        .as_deref()
        .and_then(exif_orientation)
        .unwrap_or(Orientation::NoTransforms);
    let profile = found.profile.and_then(|compressed| {
        match miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(
            &compressed,
            MAX_PROFILE_BYTES,
        ) {
            Ok(profile) => Some(profile),
            Err(e) => {
                warnings.push(DecodeWarning {
                    kind: WarningKind::Profile,
                    detail: format!(
                        "ICC profile ignored: the iCCP chunk does not inflate to at most \
                         {MAX_PROFILE_BYTES} bytes ({:?})",
                        e.status
                    ),
                });
                None
            }
        }
    });
    let mut reader = decoder.read_info().map_err(malformed)?;
    let layout = match reader.output_color_type().0 {
        png::ColorType::Grayscale => Layout::L8,
        png::ColorType::GrayscaleAlpha => Layout::La8,
        png::ColorType::Rgb => Layout::Rgb8,
        png::ColorType::Rgba => Layout::Rgba8,
        png::ColorType::Indexed => {
            return Err(DecodeError::Malformed {
                format: Format::Png,
                reason: "the palette was not expanded".into(),
            })
        }
    };
    let k = factor(
        (width, height),
        largest_shown((width, height), shrink_to, orientation),
    );
    let mut reducer = Reducer::new(width, height, k, !interlaced)?;
    if interlaced {
        for (y, x0, dx) in adam7_rows(width, height) {
            let row = reader
                .next_row()
                .map_err(malformed)?
                .ok_or_else(truncated)?;
            reducer.add(y, x0, dx, row.data(), layout);
        }
    } else {
        for y in 0..height {
            let row = reader
                .next_row()
                .map_err(malformed)?
                .ok_or_else(truncated)?;
            reducer.add(y, 0, 1, row.data(), layout);
        }
    }
    let mut image = reducer.finish()?;
    let grey = matches!(layout, Layout::L8 | Layout::La8);
    apply_profile(&mut image, profile.as_deref(), grey, warnings)?;
    Ok((buffers::orient(image, orientation)?, k > 1))
}

fn truncated() -> DecodeError {
    DecodeError::Malformed {
        format: Format::Png,
        reason: "the image data ends before the last row".into(),
    }
}
