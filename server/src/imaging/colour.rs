//! Colour management: pixels that come with an embedded ICC profile are converted to sRGB
//! with Little CMS before a mode sees them, as browsers convert the original for display.
//! Renders are written in sRGB without a profile, in every format.
//!
//! Sources without a profile cost nothing. A profile that describes sRGB (the colorants and
//! tone curves of sRGB, however the file's writer packaged them) is recognised from its tags
//! and costs no transform. Other profiles' transforms are built once per worker thread and
//! kept, a few, keyed by the profile's bytes. A profile that is too large, that Little CMS
//! rejects, or that does not fit the pixels (a CMYK profile on RGB data) is ignored, with a
//! warning the server counts.
//!
//! The conversion runs on the decode's output, at its reduced scale: a few hundred thousand
//! pixels, not the source's millions.

use std::cell::RefCell;
use std::rc::Rc;

use lcms2::{ColorSpaceSignature, Intent, PixelFormat, Profile, Tag, TagSignature, Transform};

use super::decode::{DecodeError, DecodeWarning, Decoded, WarningKind};

/// Profiles larger than this are ignored. Matrix profiles are under 4 kB and printers' LUT
/// profiles a few hundred; this leaves room for the largest real ones.
pub const MAX_PROFILE_BYTES: usize = 4 << 20;

/// Transforms kept per thread (each holds a few hundred kB of tables at most).
const KEPT_TRANSFORMS: usize = 16;

/// Browsers convert with the perceptual intent (which is relative colorimetric for matrix
/// profiles, the common case).
const INTENT: Intent = Intent::Perceptual;

/// What the pixels handed to a conversion are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Samples {
    /// RGB or RGBA (grey sources expanded to RGB), 8 bits.
    Rgb,
    /// CMYK as libjpeg returns Adobe's JPEGs: inverted, 255 is no ink.
    InvertedCmyk,
}

/// A profile's conversion to sRGB, as kept.
enum Conversion {
    /// The profile is sRGB: nothing to do.
    Identity,
    /// RGB to sRGB.
    Rgb(Transform<u8, u8>),
    /// A grey profile (the pixels are grey expanded to RGB: their red channel is read).
    Grey(Transform<u8, u8>),
    /// Inverted CMYK to sRGB.
    Cmyk(Transform<u8, u8>),
    /// Not used, and why.
    Ignored(String),
}

thread_local! {
    /// Conversions built on this thread, most recently used last.
    static KEPT: RefCell<Vec<(Vec<u8>, Samples, Rc<Conversion>)>> = const { RefCell::new(Vec::new()) };
}

/// The conversion of `profile` for `samples`, built or kept.
fn conversion(profile: &[u8], samples: Samples) -> Rc<Conversion> {
    let kept = KEPT.with_borrow_mut(|kept| {
        let at = kept
            .iter()
            .position(|(bytes, s, _)| *s == samples && bytes == profile)?;
        let entry = kept.remove(at);
        let conversion = entry.2.clone();
        kept.push(entry);
        Some(conversion)
    });
    if let Some(conversion) = kept {
        return conversion;
    }
    let built = Rc::new(build(profile, samples));
    KEPT.with_borrow_mut(|kept| {
        if kept.len() >= KEPT_TRANSFORMS {
            kept.remove(0);
        }
        kept.push((profile.to_vec(), samples, built.clone()));
    });
    built
}

fn build(bytes: &[u8], samples: Samples) -> Conversion {
    if bytes.len() > MAX_PROFILE_BYTES {
        return Conversion::Ignored(format!(
            "the profile is {} bytes, more than the {MAX_PROFILE_BYTES} allowed",
            bytes.len()
        ));
    }
    let profile = match Profile::new_icc(bytes) {
        Ok(p) => p,
        Err(e) => return Conversion::Ignored(format!("not a usable ICC profile: {e}")),
    };
    let srgb = Profile::new_srgb();
    let space = profile.color_space();
    let built = match (samples, space) {
        (Samples::Rgb, ColorSpaceSignature::RgbData) => {
            if is_srgb(&profile) {
                return Conversion::Identity;
            }
            Transform::new(
                &profile,
                PixelFormat::RGB_8,
                &srgb,
                PixelFormat::RGB_8,
                INTENT,
            )
            .map(Conversion::Rgb)
        }
        (Samples::Rgb, ColorSpaceSignature::GrayData) => Transform::new(
            &profile,
            PixelFormat::GRAY_8,
            &srgb,
            PixelFormat::RGB_8,
            INTENT,
        )
        .map(Conversion::Grey),
        (Samples::InvertedCmyk, ColorSpaceSignature::CmykData) => Transform::new(
            &profile,
            PixelFormat::CMYK_8_REV,
            &srgb,
            PixelFormat::RGB_8,
            INTENT,
        )
        .map(Conversion::Cmyk),
        (samples, space) => {
            return Conversion::Ignored(format!(
                "a profile for {space:?} does not describe {samples:?} pixels"
            ))
        }
    };
    built.unwrap_or_else(|e| Conversion::Ignored(format!("Little CMS refused the profile: {e}")))
}

/// sRGB's colorants adapted to D50, as profiles store them.
const SRGB_COLORANTS: [(TagSignature, [f64; 3]); 3] = [
    (TagSignature::RedColorantTag, [0.4361, 0.2225, 0.0139]),
    (TagSignature::GreenColorantTag, [0.3851, 0.7169, 0.0971]),
    (TagSignature::BlueColorantTag, [0.1431, 0.0606, 0.7141]),
];

/// sRGB's transfer curve.
fn srgb_curve(v: f32) -> f32 {
    if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

/// Whether `profile` is a matrix profile with sRGB's colorants and curves: what the many
/// packagings of sRGB (IEC 61966-2.1 v2, v4, compact ones) have in common.
fn is_srgb(profile: &Profile) -> bool {
    if profile.has_tag(TagSignature::AToB0Tag) {
        return false; // a LUT would be used, not the matrix
    }
    let colorants = SRGB_COLORANTS.iter().all(|(tag, want)| {
        matches!(profile.read_tag(*tag), Tag::CIEXYZ(xyz)
            if (xyz.X - want[0]).abs() < 0.003
                && (xyz.Y - want[1]).abs() < 0.003
                && (xyz.Z - want[2]).abs() < 0.003)
    });
    let curves = [
        TagSignature::RedTRCTag,
        TagSignature::GreenTRCTag,
        TagSignature::BlueTRCTag,
    ]
    .iter()
    .all(|tag| match profile.read_tag(*tag) {
        Tag::ToneCurve(curve) => (0..=32).all(|i| {
            let v = i as f32 / 32.0;
            (curve.eval(v) - srgb_curve(v)).abs() < 1.0 / 512.0
        }),
        _ => false,
    });
    colorants && curves
}

/// `image` (RGB or RGBA, grey expanded) converted in place from `profile` to sRGB; a profile
/// that cannot be used leaves it as it is, with a warning.
pub(super) fn rgb_to_srgb(
    image: &mut Decoded,
    profile: &[u8],
    warnings: &mut Vec<DecodeWarning>,
) -> Result<(), DecodeError> {
    let conversion = conversion(profile, Samples::Rgb);
    let channels = image.channels();
    let width = image.width as usize;
    match &*conversion {
        Conversion::Identity => {}
        Conversion::Ignored(why) => warnings.push(ignored(why)),
        Conversion::Rgb(transform) => {
            let mut src = row_buffer(width * 3)?;
            let mut out = row_buffer(width * 3)?;
            for row in image.pixels.chunks_exact_mut(width * channels) {
                for (s, p) in src.chunks_exact_mut(3).zip(row.chunks_exact(channels)) {
                    s.copy_from_slice(&p[..3]);
                }
                transform.transform_pixels(&src, &mut out);
                for (p, c) in row.chunks_exact_mut(channels).zip(out.chunks_exact(3)) {
                    p[..3].copy_from_slice(c);
                }
            }
        }
        Conversion::Grey(transform) => {
            let mut grey = row_buffer(width)?;
            let mut rgb = row_buffer(width * 3)?;
            for row in image.pixels.chunks_exact_mut(width * channels) {
                for (g, p) in grey.iter_mut().zip(row.chunks_exact(channels)) {
                    *g = p[0];
                }
                transform.transform_pixels(&grey, &mut rgb);
                for (p, c) in row.chunks_exact_mut(channels).zip(rgb.chunks_exact(3)) {
                    p[..3].copy_from_slice(c);
                }
            }
        }
        Conversion::Cmyk(_) => unreachable!("built for CMYK samples only"),
    }
    Ok(())
}

/// Inverted CMYK pixels converted to sRGB by `profile`, or `None` (with a warning) when the
/// profile cannot be used.
pub(super) fn cmyk_to_srgb(
    cmyk: &[u8],
    profile: &[u8],
    warnings: &mut Vec<DecodeWarning>,
) -> Result<Option<Vec<u8>>, DecodeError> {
    let conversion = conversion(profile, Samples::InvertedCmyk);
    match &*conversion {
        Conversion::Cmyk(transform) => {
            let pixels = cmyk.len() / 4;
            let mut out = super::buffers::zeroed(pixels * 3)?;
            // In rows' worth of pixels, so that Little CMS's buffers stay small.
            for (src, dst) in cmyk.chunks(4 * 4096).zip(out.chunks_mut(3 * 4096)) {
                transform.transform_pixels(src, dst);
            }
            Ok(Some(out))
        }
        Conversion::Ignored(why) => {
            warnings.push(ignored(why));
            Ok(None)
        }
        Conversion::Identity | Conversion::Rgb(_) | Conversion::Grey(_) => {
            unreachable!("built for RGB samples only")
        }
    }
}

fn ignored(why: &str) -> DecodeWarning {
    DecodeWarning {
        kind: WarningKind::Profile,
        detail: format!("ICC profile ignored: {why}"),
    }
}

fn row_buffer(len: usize) -> Result<Vec<u8>, DecodeError> {
    super::buffers::zeroed(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srgb_profiles_are_recognised_and_others_are_not() {
        let srgb = Profile::new_srgb().icc().unwrap();
        let mut image = Decoded::rgb(vec![200, 100, 50], 1, 1);
        let mut warnings = Vec::new();
        rgb_to_srgb(&mut image, &srgb, &mut warnings).unwrap();
        assert!(matches!(*conversion(&srgb, Samples::Rgb), Conversion::Identity));
        assert_eq!(image.pixels, vec![200, 100, 50]);
        assert!(warnings.is_empty());
    }
}
