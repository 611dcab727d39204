//! AVIF encoding: libavif with libaom, through the shim in `native/avif.c` (compiled against
//! the installed libavif's own header by `build.rs`).

use std::ffi::{c_char, c_int, CStr};

use super::encode::EncodeError;

#[allow(unsafe_code)]
unsafe extern "C" {
    fn ross_avif_encode(
        pixels: *const u8,
        width: u32,
        height: u32,
        stride: u32,
        channels: u32,
        codec: c_int,
        quantizer: c_int,
        speed: c_int,
        threads: c_int,
        out: *mut *mut u8,
        out_len: *mut usize,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn ross_avif_free(data: *mut u8, len: usize);
    fn ross_avif_decode(
        data: *const u8,
        len: usize,
        pixels: *mut *mut u8,
        width: *mut u32,
        height: *mut u32,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn ross_avif_free_pixels(pixels: *mut u8);
}

/// libavif's own mapping of quality (1..=100) to AV1's quantizer (63..=0).
pub fn quantizer(quality: u8) -> u8 {
    let q = u32::from(quality.clamp(1, 100));
    (((100 - q) * 63 + 50) / 100) as u8
}

/// The AV1 encoders libavif can use here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvifEncoder {
    /// libaom: what ross uses (docs/formats.md).
    Aom,
    /// rav1e (the encoder of the pure-Rust `ravif` too), for the benchmark's comparison.
    Rav1e,
}

/// Encodes `height` rows of `width` RGB (`channels` 3) or RGBA (4) pixels, `stride` bytes
/// apart, as AVIF (4:2:0, full range) at `quality` and `speed` (0..=10) with libaom, on the
/// calling thread only.
pub fn encode_avif(
    pixels: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    channels: u32,
    quality: u8,
    speed: u8,
) -> Result<Vec<u8>, EncodeError> {
    let rows = Rows {
        pixels,
        width,
        height,
        stride,
        channels,
    };
    encode_avif_with(AvifEncoder::Aom, &rows, quality, speed)
}

/// Pixel rows as `encode_avif` takes them.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The pixels.
    pub pixels: &'a [u8],
    /// Pixels across.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Bytes per pixel: 3 (RGB) or 4 (RGBA).
    pub channels: u32,
}

/// `encode_avif` with a choice of encoder.
pub fn encode_avif_with(
    encoder: AvifEncoder,
    rows: &Rows<'_>,
    quality: u8,
    speed: u8,
) -> Result<Vec<u8>, EncodeError> {
    let Rows {
        pixels,
        width,
        height,
        stride,
        channels,
    } = *rows;
    let row = width as usize * channels as usize;
    let needed = stride * (height as usize).saturating_sub(1) + row;
    if !(channels == 3 || channels == 4) || stride < row || pixels.len() < needed {
        return Err(EncodeError::new(
            "AVIF: the pixel buffer does not match its size",
        ));
    }
    let stride = u32::try_from(stride).map_err(|_| EncodeError::new("AVIF: rows too long"))?;
    let mut out: *mut u8 = std::ptr::null_mut();
    let mut out_len = 0usize;
    let mut error = [0 as c_char; 256];
    // SAFETY: `pixels` holds `height` rows of `width * channels` bytes, `stride` apart
    // (checked above), and is only read; `out`, `out_len` and `error` are valid for writes,
    // `error` for `error.len()` bytes, which the shim terminates.
    #[allow(unsafe_code)]
    let result = unsafe {
        ross_avif_encode(
            pixels.as_ptr(),
            width,
            height,
            stride,
            channels,
            c_int::from(encoder == AvifEncoder::Rav1e),
            c_int::from(quantizer(quality)),
            c_int::from(speed.min(10)),
            1,
            &mut out,
            &mut out_len,
            error.as_mut_ptr(),
            error.len(),
        )
    };
    if result != 0 || out.is_null() {
        // SAFETY: the shim wrote a NUL-terminated message into `error` (zeroed before).
        #[allow(unsafe_code)]
        let message = unsafe { CStr::from_ptr(error.as_ptr()) };
        return Err(EncodeError::new(format!(
            "AVIF: {}",
            message.to_string_lossy()
        )));
    }
    // SAFETY: on success the shim returned libavif's buffer of `out_len` bytes, freed once,
    // right after the copy.
    #[allow(unsafe_code)]
    let encoded = unsafe {
        let bytes = std::slice::from_raw_parts(out, out_len).to_vec();
        ross_avif_free(out, out_len);
        bytes
    };
    Ok(encoded)
}

/// An AVIF file's pixels as RGBA rows, with its width and height. For the tests and
/// benchmarks, which compare renders across formats; ross does not take AVIF sources.
pub fn decode_avif(data: &[u8]) -> Result<(Vec<u8>, u32, u32), EncodeError> {
    let mut pixels: *mut u8 = std::ptr::null_mut();
    let (mut width, mut height) = (0u32, 0u32);
    let mut error = [0 as c_char; 256];
    // SAFETY: `data` is read for `data.len()` bytes; the out-pointers are valid for writes.
    #[allow(unsafe_code)]
    let result = unsafe {
        ross_avif_decode(
            data.as_ptr(),
            data.len(),
            &mut pixels,
            &mut width,
            &mut height,
            error.as_mut_ptr(),
            error.len(),
        )
    };
    if result != 0 || pixels.is_null() {
        // SAFETY: the shim wrote a NUL-terminated message into the zeroed `error`.
        #[allow(unsafe_code)]
        let message = unsafe { CStr::from_ptr(error.as_ptr()) };
        return Err(EncodeError::new(format!(
            "AVIF: {}",
            message.to_string_lossy()
        )));
    }
    let len = width as usize * height as usize * 4;
    // SAFETY: on success the shim returned `width * height` RGBA pixels back to back, freed
    // once, right after the copy.
    #[allow(unsafe_code)]
    let rgba = unsafe {
        let copy = std::slice::from_raw_parts(pixels, len).to_vec();
        ross_avif_free_pixels(pixels);
        copy
    };
    Ok((rgba, width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_maps_as_libavif_does() {
        assert_eq!(quantizer(100), 0);
        assert_eq!(quantizer(1), 62);
        assert_eq!(quantizer(60), 25);
        assert_eq!(quantizer(0), 62, "clamped");
    }

    #[test]
    fn encodes_rgb_and_rgba_and_refuses_a_short_buffer() {
        let (w, h) = (33u32, 17u32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let avif = encode_avif(&rgb, w, h, w as usize * 3, 3, 60, 9).unwrap();
        assert_eq!(&avif[4..12], b"ftypavif");
        let rgba: Vec<u8> = (0..w * h * 4).map(|i| (i % 253) as u8).collect();
        let avif = encode_avif(&rgba, w, h, w as usize * 4, 4, 60, 9).unwrap();
        assert_eq!(&avif[4..12], b"ftypavif");
        let (back, bw, bh) = decode_avif(&avif).unwrap();
        assert_eq!((bw, bh, back.len()), (w, h, (w * h * 4) as usize));
        let alpha_error = back
            .chunks_exact(4)
            .zip(rgba.chunks_exact(4))
            .map(|(a, b)| i32::from(a[3]).abs_diff(i32::from(b[3])))
            .max()
            .unwrap();
        assert!(alpha_error < 40, "alpha kept: worst {alpha_error}");
        assert!(decode_avif(b"not an avif").is_err());
        assert!(encode_avif(&rgb[..10], w, h, w as usize * 3, 3, 60, 9).is_err());
    }
}
