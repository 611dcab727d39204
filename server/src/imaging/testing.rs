//! Helpers for the imaging tests: corpus files, the resampler modes use, errors, and files
//! built by hand with what real writers put in them (ICC profiles, EXIF, odd segments).

use plugin_api::ImageView;

use super::decode::Decoded;

/// A file of the shared corpus.
pub(super) fn corpus_file(path: &str) -> Vec<u8> {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    std::fs::read(corpus.join(path)).unwrap()
}

/// `decoded` (flattened onto white) scaled to `size` with the resampler modes use.
pub(super) fn shown(decoded: &Decoded, size: (u32, u32)) -> Vec<u8> {
    let flat = decoded.flattened().unwrap();
    let view = ImageView::new(
        &flat.pixels,
        flat.width,
        flat.height,
        plugin_api::PixelFormat::Rgb8,
    )
    .unwrap();
    let out = plugin_kit::ops::resize(view, size.0, size.1).unwrap();
    out.view().pixels.as_slice().to_vec()
}

/// Mean absolute difference per channel value.
pub(super) fn mean_error(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.len() as f64
}

/// CRC-32 (ISO-HDLC), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG chunk.
pub(super) fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// An 8-bit RGB PNG of `pixels` with `extra` chunks before the image data.
pub(super) fn png(pixels: &[u8], width: u32, height: u32, extra: &[Vec<u8>]) -> Vec<u8> {
    let mut plain = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut plain, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(pixels).unwrap();
    }
    // Signature and IHDR (8 + 25 bytes), then the extra chunks, then the rest.
    let mut out = plain[..33].to_vec();
    for chunk in extra {
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&plain[33..]);
    out
}

/// A PNG `iCCP` chunk holding `profile`.
pub(super) fn iccp(profile: &[u8]) -> Vec<u8> {
    let mut data = b"icc\0\0".to_vec();
    data.extend(miniz_oxide::deflate::compress_to_vec_zlib(profile, 6));
    png_chunk(b"iCCP", &data)
}

/// A RIFF chunk.
fn riff_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_vec();
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// A lossy WebP (libwebp) of RGB `pixels` in the extended format, with `before` chunks ahead
/// of the image data and `after` chunks behind it (`ICCP`, `EXIF`).
pub(super) fn webp(
    pixels: &[u8],
    width: u32,
    height: u32,
    before: &[(&[u8; 4], &[u8])],
    after: &[(&[u8; 4], &[u8])],
) -> Vec<u8> {
    let simple = ::webp::Encoder::from_rgb(pixels, width, height)
        .encode(95.0)
        .to_vec();
    let mut flags = 0u8;
    for (kind, _) in before.iter().chain(after) {
        flags |= match *kind {
            b"ICCP" => 0x20,
            b"EXIF" => 0x08,
            _ => 0,
        };
    }
    let mut vp8x = vec![flags, 0, 0, 0];
    vp8x.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend(riff_chunk(b"VP8X", &vp8x));
    for (kind, data) in before {
        body.extend(riff_chunk(kind, data));
    }
    body.extend_from_slice(&simple[12..]); // the simple file's VP8 chunk
    for (kind, data) in after {
        body.extend(riff_chunk(kind, data));
    }
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend(body);
    file
}

/// A baseline JPEG (libjpeg-turbo, quality 95) of `pixels` in `format` (RGB or CMYK).
pub(super) fn jpeg(
    pixels: &[u8],
    width: u32,
    height: u32,
    format: turbojpeg::PixelFormat,
) -> Vec<u8> {
    let image = turbojpeg::Image {
        pixels,
        width: width as usize,
        pitch: width as usize * format.size(),
        height: height as usize,
        format,
    };
    let subsamp = if format == turbojpeg::PixelFormat::CMYK {
        turbojpeg::Subsamp::None
    } else {
        turbojpeg::Subsamp::Sub2x2
    };
    turbojpeg::compress(image, 95, subsamp).unwrap().to_vec()
}

/// `jpeg` with `segment` (marker and payload) inserted at `at` (2: right after SOI).
pub(super) fn with_segment(jpeg: &[u8], at: usize, marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..at].to_vec();
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&jpeg[at..]);
    out
}

/// `profile` as the APP2 segments a JPEG carries it in (64 kB at most each), inserted at `at`.
pub(super) fn with_icc(jpeg: &[u8], at: usize, profile: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = profile.chunks(65_519).collect();
    let mut out = jpeg.to_vec();
    for (i, part) in parts.iter().enumerate().rev() {
        let mut payload = b"ICC_PROFILE\0".to_vec();
        payload.extend_from_slice(&[i as u8 + 1, parts.len() as u8]);
        payload.extend_from_slice(part);
        out = with_segment(&out, at, 0xE2, &payload);
    }
    out
}

/// Where the segment with `marker` begins in `jpeg`.
pub(super) fn segment_at(jpeg: &[u8], marker: u8) -> usize {
    jpeg.windows(2).position(|w| w == [0xFF, marker]).unwrap()
}

/// The end of the segment that begins at `at`.
pub(super) fn segment_end(jpeg: &[u8], at: usize) -> usize {
    at + 2 + usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]))
}

/// A TIFF block whose only entry is Orientation = `value`, little-endian.
pub(super) fn exif(value: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&u32::from(value).to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff
}

/// A PNG of `samples` (rows of `width` pixels of `bytes_per_pixel` bytes, in `colour_type` and
/// `depth` as IHDR names them), unfiltered, interlaced with Adam7 when `interlaced`.
pub(super) fn png_raw(
    samples: &[u8],
    (width, height): (u32, u32),
    (colour_type, depth, bytes_per_pixel): (u8, u8, usize),
    interlaced: bool,
) -> Vec<u8> {
    // Adam7's passes: first column, first row, column step, row step (the PNG specification).
    let passes: &[(u32, u32, u32, u32)] = if interlaced {
        &[
            (0, 0, 8, 8),
            (4, 0, 8, 8),
            (0, 4, 4, 8),
            (2, 0, 4, 4),
            (0, 2, 2, 4),
            (1, 0, 2, 2),
            (0, 1, 1, 2),
        ]
    } else {
        &[(0, 0, 1, 1)]
    };
    let mut raw = Vec::new();
    for &(x0, y0, dx, dy) in passes {
        if x0 >= width || y0 >= height {
            continue; // an empty pass has no rows, not even filter bytes
        }
        for y in (y0..height).step_by(dy as usize) {
            raw.push(0); // filter: none
            for x in (x0..width).step_by(dx as usize) {
                let at = (y as usize * width as usize + x as usize) * bytes_per_pixel;
                raw.extend_from_slice(&samples[at..at + bytes_per_pixel]);
            }
        }
    }
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour_type, 0, 0, u8::from(interlaced)]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend(png_chunk(
        b"IDAT",
        &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 1),
    ));
    out.extend(png_chunk(b"IEND", &[]));
    out
}
