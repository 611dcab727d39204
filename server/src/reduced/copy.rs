//! A reduced copy's bytes: the pixels of a decoded original, reduced for the largest size it
//! is asked for ([`make`]), with the box they serve, in a file the server stores without
//! reading and a worker reads back instead of decoding the original again.
//!
//! The layout (little-endian): [`MAGIC`], width and height (`u32`), channels (`u8`, 3 or 4),
//! codec (`u8`, 0: raw pixels), flags (`u8`, 1: the box served is one the image is fitted
//! within, else one it covers), a reserved byte (0), the box served (`u32` width and height;
//! both 0: any box, the pixels are full size), the payload's length (`u64`), a CRC-32 of all
//! of that and the payload (`u32`), then the payload. A file cut short or damaged anywhere
//! fails its check and is never used: a server killed while writing one, or a disk that tore
//! it, costs a decode of the original, not a wrong picture.
//!
//! Raw pixels, because reading them back is a copy. Measured on the corpus photos resampled to
//! 1500 px across, per copy of 4.6 MB: raw, a
//! copy of 0.14 ms and a checksum of 0.08 ms; LZ4 (`lz4_flex`), 80% of the bytes for 1.5 ms
//! to read back; QOI, 46% of the bytes for 6.9 ms, most of what a JPEG decode of the original
//! costs. The tier's bound is what pays for raw pixels.

use crate::imaging::{DecodeBox, Decoded, Pixels};
use crate::render::DecodedSource;

/// The first bytes of every copy (the last one is the layout's version).
///
/// Version 2 added the flags byte (a box fitted within): a build that knows only version 1
/// refuses these copies (and decodes the original) rather than take a fitted box for a
/// covered one. Copies of version 1 are read as covering their box.
pub const MAGIC: &[u8; 8] = b"ROSSRPX\x02";

/// The first bytes of a copy of version 1 (no flags).
const MAGIC_V1: &[u8; 8] = b"ROSSRPX\x01";

/// Bytes before the payload.
pub const HEADER: usize = 40;

/// Where the checksum is: it covers the bytes before it and the payload.
const CRC_AT: usize = 36;

/// Raw pixels, row by row.
const RAW: u8 = 0;

/// The box served is one the image is fitted within (else covers).
const FITTED: u8 = 1;

/// Why bytes are not a usable copy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// Not a copy, a layout this version does not know, or damaged (cut short, torn).
    #[error("not an intact reduced copy: {0}")]
    Damaged(&'static str),
    /// More pixels than `limits.max_source_pixels` allows.
    #[error("the copy's {0} pixels are over the limit")]
    TooLarge(u64),
}

/// The copy of `decoded`, decoded for `boxes` (the job's need and the sizes asked for lately):
/// the pixels as they are, so that every render from the copy is the very render from the
/// original decoded for the same sizes. They are already reduced: a JPEG at the DCT scale,
/// a WebP by libwebp's scaler, a PNG or GIF into cells, each to no less than the largest box
/// shows it. (Resampling them further was measured: it saves few bytes on JPEG, and a copy
/// whose sides are rounded to whole pixels is a slightly different shape, which moves a small
/// crop by a fraction of a pixel: up to 14 levels of mean error on a 72x72 crop of a detailed
/// photo.) `Err(decoded)` when there is to be no copy: no box (a full-size need, which nothing
/// smaller serves), or a copy over `max_bytes`.
pub fn make(
    decoded: DecodedSource,
    boxes: &[DecodeBox],
    max_bytes: u64,
) -> Result<DecodedSource, DecodedSource> {
    if boxes.is_empty() || HEADER as u64 + decoded.image.pixels.len() as u64 > max_bytes {
        return Err(decoded);
    }
    Ok(decoded)
}

/// The header of a copy of `image`, serving boxes up to `good_up_to` (`None`: any); the
/// pixels follow it.
pub fn head(image: &Decoded, good_up_to: Option<DecodeBox>) -> [u8; HEADER] {
    let (good_w, good_h, fit) = good_up_to.map_or((0, 0, false), |b| (b.width, b.height, b.fit));
    let mut out = [0u8; HEADER];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&image.width.to_le_bytes());
    out[12..16].copy_from_slice(&image.height.to_le_bytes());
    out[16] = image.channels() as u8;
    out[17] = RAW;
    out[18] = if fit { FITTED } else { 0 };
    out[20..24].copy_from_slice(&good_w.to_le_bytes());
    out[24..28].copy_from_slice(&good_h.to_le_bytes());
    out[28..CRC_AT].copy_from_slice(&(image.pixels.len() as u64).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[..CRC_AT]);
    crc.update(&image.pixels);
    out[CRC_AT..].copy_from_slice(&crc.finalize().to_le_bytes());
    out
}

/// The bytes of a copy of `image` (see [`head`]).
pub fn encode(image: &Decoded, good_up_to: Option<DecodeBox>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + image.pixels.len());
    out.extend_from_slice(&head(image, good_up_to));
    out.extend_from_slice(&image.pixels);
    out
}

/// What a copy's header says, checked for shape (not the checksum: see [`decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyHeader {
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
    /// RGBA (else RGB).
    pub alpha: bool,
    /// The largest box served; `None`: any.
    pub good_up_to: Option<DecodeBox>,
}

/// Reads the header of `bytes`.
pub fn header(bytes: &[u8]) -> Result<CopyHeader, CopyError> {
    if bytes.len() < HEADER || !(&bytes[..8] == MAGIC || &bytes[..8] == MAGIC_V1) {
        return Err(CopyError::Damaged("no copy header"));
    }
    let flags = if &bytes[..8] == MAGIC { FITTED } else { 0 };
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let (width, height) = (u32_at(8), u32_at(12));
    let channels = bytes[16];
    let known = bytes[18] & !flags == 0 && bytes[19] == 0;
    if bytes[17] != RAW || !known || !(channels == 3 || channels == 4) || width == 0 || height == 0
    {
        return Err(CopyError::Damaged("an unknown layout"));
    }
    let payload = u64::from_le_bytes(bytes[28..36].try_into().expect("8 bytes"));
    let expected = u64::from(width) * u64::from(height) * u64::from(channels);
    if payload != expected || payload != (bytes.len() - HEADER) as u64 {
        return Err(CopyError::Damaged("its length"));
    }
    let good = (u32_at(20), u32_at(24));
    Ok(CopyHeader {
        width,
        height,
        alpha: channels == 4,
        good_up_to: (good != (0, 0)).then_some(DecodeBox {
            width: good.0,
            height: good.1,
            fit: bytes[18] & FITTED != 0,
        }),
    })
}

/// Checks `bytes` whole: its header's shape and its checksum.
pub fn verify(bytes: &[u8]) -> Result<CopyHeader, CopyError> {
    let header = header(bytes)?;
    let stored = u32::from_le_bytes(bytes[CRC_AT..HEADER].try_into().expect("4 bytes"));
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..CRC_AT]);
    crc.update(&bytes[HEADER..]);
    if crc.finalize() != stored {
        return Err(CopyError::Damaged("its checksum"));
    }
    Ok(header)
}

/// The pixels of the copy `buf[at..]`, checked whole; at most `max_pixels` of them. They stay
/// where they are in `buf`.
pub fn decode(buf: Vec<u8>, at: usize, max_pixels: u64) -> Result<DecodedSource, CopyError> {
    let header = verify(buf.get(at..).unwrap_or_default())?;
    let pixels = u64::from(header.width) * u64::from(header.height);
    if pixels > max_pixels {
        return Err(CopyError::TooLarge(pixels));
    }
    Ok(DecodedSource {
        image: Decoded {
            pixels: Pixels::within(buf, at + HEADER),
            width: header.width,
            height: header.height,
            alpha: header.alpha,
        },
        good_up_to: header.good_up_to,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(width: u32, height: u32, good_up_to: Option<DecodeBox>) -> DecodedSource {
        let pixels = (0..width * height * 3).map(|i| (i % 251) as u8).collect();
        DecodedSource {
            image: Decoded::rgb(pixels, width, height),
            good_up_to,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn a_copy_reads_back_as_written() {
        let original = source(40, 30, Some(DecodeBox::cover(20, 20)));
        let bytes = encode(&original.image, original.good_up_to);
        assert_eq!(bytes.len(), HEADER + 40 * 30 * 3);
        let read = decode(bytes, 0, u64::MAX).unwrap();
        assert_eq!(read.image.pixels, original.image.pixels);
        assert_eq!((read.image.width, read.image.height), (40, 30));
        assert_eq!(read.good_up_to, Some(DecodeBox::cover(20, 20)));
        let whole = decode(encode(&original.image, None), 0, u64::MAX).unwrap();
        assert_eq!(whole.good_up_to, None);
        // Read into a buffer at an offset (where an aligned read put it): used there.
        let mut placed = vec![9u8; 100];
        placed.extend_from_slice(&encode(&original.image, None));
        let read = decode(placed, 100, u64::MAX).unwrap();
        assert_eq!(read.image.pixels, original.image.pixels);
        let within = Some(DecodeBox::fit(20, 20));
        assert_eq!(
            decode(encode(&original.image, within), 0, u64::MAX)
                .unwrap()
                .good_up_to,
            within
        );
    }

    #[test]
    fn copies_of_version_1_read_as_covering_their_box() {
        let original = source(40, 30, None);
        let v1 = |flags: u8| {
            let mut bytes = encode(&original.image, Some(DecodeBox::cover(20, 20)));
            bytes[..8].copy_from_slice(MAGIC_V1);
            bytes[18] = flags;
            // The checksum covers the header.
            let mut crc = crc32fast::Hasher::new();
            crc.update(&bytes[..CRC_AT]);
            crc.update(&bytes[HEADER..]);
            bytes[CRC_AT..HEADER].copy_from_slice(&crc.finalize().to_le_bytes());
            bytes
        };
        let read = decode(v1(0), 0, u64::MAX).unwrap();
        assert_eq!(read.good_up_to, Some(DecodeBox::cover(20, 20)));
        // Version 1 had no flags: one set is not a copy it wrote.
        assert!(decode(v1(FITTED), 0, u64::MAX).is_err());
    }

    #[test]
    fn a_copy_cut_short_or_damaged_anywhere_is_refused() {
        let bytes = encode(&source(40, 30, None).image, None);
        for cut in [0, 8, HEADER - 1, HEADER, bytes.len() - 1] {
            assert!(
                decode(bytes[..cut].to_vec(), 0, u64::MAX).is_err(),
                "cut at {cut}"
            );
        }
        for at in [9, 20, 30, CRC_AT, HEADER, bytes.len() / 2, bytes.len() - 1] {
            let mut torn = bytes.clone();
            torn[at] ^= 0x40;
            assert!(decode(torn, 0, u64::MAX).is_err(), "flipped at {at}");
        }
        assert_eq!(
            decode(bytes, 0, 1000).unwrap_err(),
            CopyError::TooLarge(40 * 30)
        );
    }

    #[test]
    fn copies_are_the_decode_itself_within_the_bound() {
        let size = |d: &DecodedSource| (d.image.width, d.image.height, d.good_up_to);
        let within = DecodeBox::fit(800, 1000);
        let served = Some(within);
        // A JPEG decoded at the DCT scale for the boxes: kept as decoded, serving what the
        // decode served.
        let copy = make(source(1500, 1000, served), &[within], u64::MAX).unwrap();
        assert_eq!(size(&copy), (1500, 1000, served));
        // A small original decoded whole serves any box.
        let copy = make(
            source(820, 560, None),
            &[DecodeBox::cover(800, 500)],
            u64::MAX,
        )
        .unwrap();
        assert_eq!(size(&copy), (820, 560, None));
        // A full-size need, or a copy over the bound: none.
        assert!(make(source(820, 560, None), &[], u64::MAX).is_err());
        let bound = (HEADER + 1500 * 1000 * 3) as u64;
        assert!(make(source(1500, 1000, served), &[within], bound).is_ok());
        let over = make(source(1500, 1000, served), &[within], bound - 1);
        assert_eq!(over.map_err(|d| d.image.width).unwrap_err(), 1500);
    }
}
