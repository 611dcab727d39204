//! Pixel operations modes are built from: SIMD resampling (fast_image_resize, Lanczos3),
//! white canvases and pasting. They work on any [`PixelFormat`].

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{Filter, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::geometry::Region;
use plugin_api::{ImageBuf, ImageView, PixelFormat, RenderError, RenderErrorKind};

fn pixel_type(format: PixelFormat) -> Result<PixelType, RenderError> {
    match format {
        PixelFormat::Rgb8 => Ok(PixelType::U8x3),
        PixelFormat::Rgba8 => Ok(PixelType::U8x4),
        PixelFormat::Gray8 => Ok(PixelType::U8),
        other => Err(RenderError::new(
            RenderErrorKind::Unsupported,
            format!("cannot resample pixel format {other:?}"),
        )),
    }
}

thread_local! {
    /// One resizer per thread, kept from render to render: its buffer for the pass between
    /// the horizontal and the vertical one (megabytes for a large output) is allocated and
    /// zeroed once, not on every render. The results are the same.
    static RESIZER: std::cell::RefCell<Resizer> = std::cell::RefCell::new(Resizer::new());
}

/// Lanczos3, as `FilterType::Lanczos3` computes it but with one sine a tap instead of two:
/// sinc(x)·sinc(x/3) = 3·s²·(3 − 4·s²) / (π·x)² with s = sin(πx/3), since
/// sin(πx) = 3s − 4s³. The weights differ from fast_image_resize's by at most 1e-15, far below
/// the fixed-point step they are rounded to, so the renders are the same (a test compares
/// them); the sines were 3% of a render worker's time.
fn lanczos3() -> FilterType {
    fn weight(x: f64) -> f64 {
        if x == 0.0 {
            return 1.0;
        }
        if !(-3.0..3.0).contains(&x) {
            return 0.0;
        }
        let s = (std::f64::consts::PI * x / 3.0).sin();
        let px = std::f64::consts::PI * x;
        3.0 * s * s * (3.0 - 4.0 * s * s) / (px * px)
    }
    FilterType::Custom(Filter::new("Lanczos3", weight, 3.0).expect("a positive support"))
}

/// The largest buffers a thread's resizer keeps between renders.
const KEEP_BUFFERS_UP_TO: usize = 16 << 20;

/// Tightly packed copy of the pixels, borrowed when they already are packed.
fn packed<'a>(src: &ImageView<'a>) -> std::borrow::Cow<'a, [u8]> {
    if src.is_packed() {
        let len = src.width as usize * src.height as usize * src.format.bytes_per_pixel();
        std::borrow::Cow::Borrowed(&src.pixels.as_slice()[..len])
    } else {
        std::borrow::Cow::Owned((0..src.height).flat_map(|y| src.row(y)).copied().collect())
    }
}

/// Scales the whole of `src` to exactly `width` x `height`.
pub fn resize(src: ImageView<'_>, width: u32, height: u32) -> Result<ImageBuf, RenderError> {
    let whole = Region {
        left: 0.0,
        top: 0.0,
        width: f64::from(src.width),
        height: f64::from(src.height),
    };
    resize_region(src, whole, width, height)
}

/// Scales `region` of `src` to exactly `width` x `height`.
pub fn resize_region(
    src: ImageView<'_>,
    region: Region,
    width: u32,
    height: u32,
) -> Result<ImageBuf, RenderError> {
    src.validate()?;
    if width == 0 || height == 0 {
        return Err(RenderError::invalid_input(
            "cannot resize to a zero dimension",
        ));
    }
    let data = packed(&src);
    let pt = pixel_type(src.format)?;
    let from = ImageRef::new(src.width, src.height, &data, pt)
        .map_err(|e| RenderError::invalid_input(format!("source buffer: {e}")))?;
    let mut to = Image::new(width, height, pt);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(lanczos3()))
        .crop(region.left, region.top, region.width, region.height);
    RESIZER
        .with_borrow_mut(|resizer| {
            let resized = resizer.resize(&from, &mut to, &options);
            // A resample of a very large source leaves a large buffer: not kept.
            if resizer.size_of_internal_buffers() > KEEP_BUFFERS_UP_TO {
                resizer.reset_internal_buffers();
            }
            resized
        })
        .map_err(|e| RenderError::failed(format!("resize failed: {e}")))?;
    ImageBuf::from_vec(to.into_vec(), width, height, src.format)
}

/// Copies `src` onto `dst` with its top-left corner at (`x`, `y`), clipping at the edges.
/// Both must have the same pixel format.
pub fn paste(dst: &mut ImageBuf, src: ImageView<'_>, x: u32, y: u32) -> Result<(), RenderError> {
    if dst.format != src.format {
        return Err(RenderError::invalid_input(
            "paste between different pixel formats",
        ));
    }
    let bpp = src.format.bytes_per_pixel();
    let cols = src.width.min(dst.width.saturating_sub(x)) as usize;
    let stride = dst.stride as usize;
    let out = dst.pixels.as_mut_slice();
    for row in 0..src.height.min(dst.height.saturating_sub(y)) {
        let from = &src.row(row)[..cols * bpp];
        let start = (y + row) as usize * stride + x as usize * bpp;
        out[start..start + cols * bpp].copy_from_slice(from);
    }
    Ok(())
}

/// Rec. 601 luma of one RGB pixel (the weights JPEG and GraphicsMagick use), in 0..=255.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    // 0.299, 0.587, 0.114 in 16-bit fixed point (sum 65536), rounded.
    let y = 19595 * u32::from(r) + 38470 * u32::from(g) + 7471 * u32::from(b);
    ((y + 32768) >> 16) as u8
}

/// Exactly `width` x `height`: `src` scaled to cover the box and centre-cropped (the `crop`
/// mode's geometry).
pub fn crop_to(src: ImageView<'_>, width: u32, height: u32) -> Result<ImageBuf, RenderError> {
    let region = crate::geometry::cover_region((src.width, src.height), (width, height));
    resize_region(src, region, width, height)
}

/// `src` centred on an opaque white `width` x `height` canvas (offsets rounded down).
pub fn centre_on_white(
    src: ImageView<'_>,
    width: u32,
    height: u32,
) -> Result<ImageBuf, RenderError> {
    let mut canvas = ImageBuf::filled(width, height, src.format, src.format.white());
    let x = crate::geometry::centre(width, src.width);
    let y = crate::geometry::centre(height, src.height);
    paste(&mut canvas, src, x, y)?;
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Noise-like pixels: every weight's rounding matters.
    fn busy(w: u32, h: u32) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..w * h * 3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect()
    }

    #[test]
    fn lanczos3_with_one_sine_resamples_as_the_library_s_own() {
        let (w, h) = (613, 409);
        let px = busy(w, h);
        let from = ImageRef::new(w, h, &px, PixelType::U8x3).unwrap();
        for (tw, th, crop) in [
            (72, 72, (100.5, 0.0, 409.0, 409.0)),
            (200, 250, (80.25, 0.0, 327.2, 409.0)),
            (300, 200, (0.0, 0.0, 613.0, 409.0)),
            (1000, 667, (0.0, 0.0, 613.0, 409.0)),
            (517, 401, (3.0, 1.5, 600.0, 400.0)),
        ] {
            let resized = |filter: FilterType| {
                let mut to = Image::new(tw, th, PixelType::U8x3);
                let options = ResizeOptions::new()
                    .resize_alg(ResizeAlg::Convolution(filter))
                    .crop(crop.0, crop.1, crop.2, crop.3);
                Resizer::new().resize(&from, &mut to, &options).unwrap();
                to.into_vec()
            };
            assert!(
                resized(lanczos3()) == resized(FilterType::Lanczos3),
                "{tw}x{th} from {crop:?}"
            );
        }
    }

    fn gradient(w: u32, h: u32) -> ImageBuf {
        let mut px = Vec::new();
        for y in 0..h {
            for x in 0..w {
                px.extend_from_slice(&[(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 0]);
            }
        }
        ImageBuf::from_vec(px, w, h, PixelFormat::Rgb8).unwrap()
    }

    #[test]
    fn luma_weights_match_jpeg() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
    }

    #[test]
    fn resize_gives_exact_size() {
        let src = gradient(64, 32);
        let out = resize(src.view(), 17, 9).unwrap();
        assert_eq!(
            (out.width, out.height, out.pixels.len()),
            (17, 9, 17 * 9 * 3)
        );
    }

    #[test]
    fn resize_handles_padded_rows() {
        let mut px = vec![0u8; 10 * 4 * 3];
        px.iter_mut()
            .enumerate()
            .for_each(|(i, p)| *p = (i % 7) as u8);
        let view = ImageView {
            pixels: px.as_slice().into(),
            width: 3,
            height: 4,
            stride: 30,
            format: PixelFormat::Rgb8,
        };
        let out = resize(view, 6, 8).unwrap();
        assert_eq!((out.width, out.height), (6, 8));
    }

    #[test]
    fn centre_on_white_puts_spare_pixel_right_and_bottom() {
        let src = ImageBuf::filled(1, 1, PixelFormat::Gray8, &[0]);
        let out = centre_on_white(src.view(), 4, 4).unwrap();
        let dark: Vec<usize> = (0..16).filter(|i| out.pixels[*i] == 0).collect();
        assert_eq!(dark, vec![4 + 1], "pixel at (1, 1)");
    }

    #[test]
    fn zero_sizes_are_errors_not_panics() {
        let src = gradient(4, 4);
        assert!(resize(src.view(), 0, 3).is_err());
        assert!(ImageView::new(&[0; 3], 2, 2, PixelFormat::Rgb8).is_err());
    }
}
