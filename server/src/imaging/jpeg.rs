//! JPEG decoding with DCT-domain downscaling: when the render needs far fewer pixels than the
//! source has, the IDCT produces the image at 1/2, 1/4 or 1/8 size directly, which is most of
//! ross's speed on photos (see `docs/performance.md`).

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};
use jpeg_decoder::{Decoder, PixelFormat};
use plugin_api::geometry::cover;

use super::decode::{check_pixels, DecodeError, Decoded};
use super::sniff::Format;

fn malformed(e: jpeg_decoder::Error) -> DecodeError {
    DecodeError::Malformed { format: Format::Jpeg, reason: e.to_string() }
}

/// True for orientations that swap width and height.
fn swaps_sides(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// The smallest IDCT scale (in eighths) whose output still covers `need` on both sides.
fn dct_eighths(src: (u32, u32), need: (u32, u32)) -> u32 {
    [1, 2, 4, 8]
        .into_iter()
        .find(|k| (src.0 * k).div_ceil(8) >= need.0 && (src.1 * k).div_ceil(8) >= need.1)
        .unwrap_or(8)
}

pub(super) fn decode(
    bytes: &[u8],
    shrink_to: Option<(u32, u32)>,
    max_pixels: u64,
) -> Result<Decoded, DecodeError> {
    let mut decoder = Decoder::new(bytes);
    decoder.read_info().map_err(malformed)?;
    let info = decoder.info().ok_or_else(|| DecodeError::Malformed {
        format: Format::Jpeg,
        reason: "no frame header".into(),
    })?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    check_pixels(w, h, max_pixels)?;
    let orientation = decoder
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    if let Some(target) = shrink_to {
        let target = if swaps_sides(orientation) { (target.1, target.0) } else { target };
        let k = dct_eighths((w, h), cover((w, h), target));
        if k < 8 {
            let request = ((w * k).div_ceil(8), (h * k).div_ceil(8));
            decoder.scale(request.0 as u16, request.1 as u16).map_err(malformed)?;
        }
    }
    let data = decoder.decode().map_err(malformed)?;
    let info = decoder.info().expect("decoded frame has info");
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let pixels = match info.pixel_format {
        PixelFormat::RGB24 => data,
        PixelFormat::L8 => data.iter().flat_map(|&v| [v, v, v]).collect(),
        // Big-endian 16-bit grey: the high byte is the 8-bit value.
        PixelFormat::L16 => data.chunks_exact(2).flat_map(|v| [v[0], v[0], v[0]]).collect(),
        PixelFormat::CMYK32 => cmyk_to_rgb(&data),
    };
    let expected = width as usize * height as usize * 3;
    if pixels.len() != expected {
        return Err(DecodeError::Malformed {
            format: Format::Jpeg,
            reason: format!("decoded {} bytes for {width}x{height}", pixels.len()),
        });
    }
    if orientation == Orientation::NoTransforms {
        return Ok(Decoded { pixels, width, height });
    }
    let buffer = RgbImage::from_raw(width, height, pixels).expect("size checked above");
    let mut image = DynamicImage::ImageRgb8(buffer);
    image.apply_orientation(orientation);
    let (width, height) = (image.width(), image.height());
    Ok(Decoded { pixels: image.into_rgb8().into_raw(), width, height })
}

/// CMYK (ink amounts; jpeg-decoder has already undone Adobe's inversion) to RGB.
///
/// Without an ICC profile the usual conversion multiplies: `R = (1 - C)(1 - K)`. That is right
/// when the writer took the grey component out of C, M and Y before putting it in K
/// (undercolour removal). Converters that skip that step, GraphicsMagick's `-colorspace CMYK`
/// among them, write K = min(C, M, Y) and leave C, M and Y whole: there K repeats what C, M
/// and Y already say, and multiplying darkens every colour twice (by 34 levels on average for
/// the corpus's CMYK photo). When K is redundant like that for (nearly) every pixel, ross
/// inverts C, M and Y alone, which restores the RGB the file was made from.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let pixels = cmyk.len() / 4;
    let redundant_k = cmyk
        .chunks_exact(4)
        .filter(|p| p[3].abs_diff(p[0].min(p[1]).min(p[2])) <= 2)
        .count();
    let k_is_redundant = pixels > 0 && redundant_k as f64 >= pixels as f64 * 0.99;
    let mut out = Vec::with_capacity(pixels * 3);
    for px in cmyk.chunks_exact(4) {
        let k = if k_is_redundant { 255 } else { 255 - u32::from(px[3]) };
        for &c in &px[..3] {
            out.push(((255 - u32::from(c)) * k / 255) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_with_undercolour_removal_multiplies_in_black() {
        // Mid grey printed with black ink only, and a pure cyan: K differs from min(C, M, Y).
        let rgb = cmyk_to_rgb(&[0, 0, 0, 128, 255, 0, 0, 0]);
        assert_eq!(rgb, vec![127, 127, 127, 0, 255, 255]);
    }

    #[test]
    fn cmyk_with_redundant_black_inverts_cmy_only() {
        // K = min(C, M, Y) everywhere (no undercolour removal): K adds nothing.
        let rgb = cmyk_to_rgb(&[133, 76, 181, 76, 10, 20, 30, 10]);
        assert_eq!(rgb, vec![122, 179, 74, 245, 235, 225]);
    }

    #[test]
    fn dct_scale_never_drops_below_cover() {
        assert_eq!(dct_eighths((2560, 1920), (400, 300)), 2); // 640x480
        assert_eq!(dct_eighths((2560, 1920), (2560, 1920)), 8);
        assert_eq!(dct_eighths((2400, 1350), (534, 300)), 2);
        assert_eq!(dct_eighths((800, 800), (100, 100)), 1);
        assert_eq!(dct_eighths((800, 800), (101, 101)), 2);
    }
}
