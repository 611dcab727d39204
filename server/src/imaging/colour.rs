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

/// The intent browsers convert with: perceptual, from the `A2B0` table when the profile has
/// one (skcms and qcms read it first); a matrix profile is read through its matrix and
/// curves as they are, which is relative colorimetric (Little CMS's perceptual intent would
/// add v4's black point scaling, and lose its fast matrix-shaper path).
fn intent(profile: &Profile) -> Intent {
    if profile.has_tag(TagSignature::AToB0Tag) {
        Intent::Perceptual
    } else {
        Intent::RelativeColorimetric
    }
}

/// What the pixels handed to a conversion are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Samples {
    /// RGB or RGBA, 8 bits, from a colour source.
    Rgb,
    /// RGB or RGBA, 8 bits, from a greyscale source (expanded: red, green and blue equal).
    Grey,
    /// CMYK as libjpeg returns Adobe's JPEGs: inverted, 255 is no ink.
    InvertedCmyk,
}

/// A profile's conversion to sRGB, as kept.
enum Conversion {
    /// The profile is sRGB: nothing to do.
    Identity,
    /// RGB to sRGB through a matrix profile's curves and matrix (ross's own arithmetic).
    Matrix(Box<MatrixShaper>),
    /// RGB to sRGB through Little CMS (profiles with tables).
    Rgb(Transform<u8, u8>),
    /// A grey profile (the pixels are grey expanded to RGB: their red channel is read).
    Grey(Transform<u8, u8>),
    /// Inverted CMYK to sRGB.
    Cmyk(Transform<u8, u8>),
    /// Not used, and why.
    Ignored(String),
}

/// A profile's hash and length, the samples it converts and its conversion.
type KeptConversion = (u64, usize, Samples, Rc<Conversion>);

thread_local! {
    /// Conversions built on this thread, most recently used last.
    static KEPT: RefCell<Vec<KeptConversion>> = const { RefCell::new(Vec::new()) };
    /// Keys of this thread's hashes, random: no file can be made to collide with another.
    static HASHER: std::hash::RandomState = std::hash::RandomState::new();
}

/// The conversion of `profile` for `samples`, built or kept (keyed by the profile's hash and
/// length, so the cache holds no profile's bytes; a profile over the size limit is neither
/// read nor kept).
fn conversion(profile: &[u8], samples: Samples) -> Rc<Conversion> {
    if profile.len() > MAX_PROFILE_BYTES {
        return Rc::new(Conversion::Ignored(format!(
            "the profile is {} bytes, more than the {MAX_PROFILE_BYTES} allowed",
            profile.len()
        )));
    }
    let hash = HASHER.with(|h| std::hash::BuildHasher::hash_one(h, profile));
    let key = (hash, profile.len(), samples);
    let kept = KEPT.with_borrow_mut(|kept| {
        let at = kept.iter().position(|e| (e.0, e.1, e.2) == key)?;
        let entry = kept.remove(at);
        let conversion = entry.3.clone();
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
        kept.push((key.0, key.1, key.2, built.clone()));
    });
    built
}

fn build(bytes: &[u8], samples: Samples) -> Conversion {
    let profile = match Profile::new_icc(bytes) {
        Ok(p) => p,
        Err(e) => return Conversion::Ignored(format!("not a usable ICC profile: {e}")),
    };
    let srgb = Profile::new_srgb();
    let space = profile.color_space();
    let intent = intent(&profile);
    let built = match (samples, space) {
        // An RGB profile on a greyscale source describes its (equal) channels as well.
        (Samples::Rgb | Samples::Grey, ColorSpaceSignature::RgbData) => {
            if is_srgb(&profile) {
                return Conversion::Identity;
            }
            if let Some(shaper) = MatrixShaper::of(&profile) {
                return Conversion::Matrix(Box::new(shaper));
            }
            Transform::new(
                &profile,
                PixelFormat::RGB_8,
                &srgb,
                PixelFormat::RGB_8,
                intent,
            )
            .map(Conversion::Rgb)
        }
        (Samples::Grey, ColorSpaceSignature::GrayData) => Transform::new(
            &profile,
            PixelFormat::GRAY_8,
            &srgb,
            PixelFormat::RGB_8,
            intent,
        )
        .map(Conversion::Grey),
        (Samples::InvertedCmyk, ColorSpaceSignature::CmykData) => Transform::new(
            &profile,
            PixelFormat::CMYK_8_REV,
            &srgb,
            PixelFormat::RGB_8,
            intent,
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

/// Linear light in fixed point: 1.0 is this (the tables' steps: about a fifth of a level near
/// black, where sRGB's curve is steepest).
const ONE: i32 = 1 << 14;

/// A matrix profile's conversion to sRGB, done here: Little CMS builds a 3D table for these
/// (10 ns a pixel measured, a quarter of a 300x300 render), while the exact arithmetic is
/// three table reads, a 3x3 matrix in fixed point and three table reads (within one level
/// of Little CMS, as the tests check).
struct MatrixShaper {
    /// Each channel's curve, to linear light (`ONE` is 1.0).
    to_linear: [[i32; 256]; 3],
    /// The profile's linear RGB to linear sRGB (both through XYZ D50), `ONE` is 1.0.
    matrix: [[i32; 3]; 3],
    /// Linear light (0..=`ONE`) to sRGB's 8-bit values.
    encode: Box<[u8; ONE as usize + 1]>,
}

impl MatrixShaper {
    /// The conversion of a profile made only of colorants and curves (no tables), unless its
    /// numbers are beyond what real profiles hold (Little CMS converts those).
    fn of(profile: &Profile) -> Option<MatrixShaper> {
        if profile.has_tag(TagSignature::AToB0Tag) {
            return None; // browsers read the table
        }
        let colorant = |p: &Profile, tag| match p.read_tag(tag) {
            Tag::CIEXYZ(xyz) => Some([xyz.X, xyz.Y, xyz.Z]),
            _ => None,
        };
        let tags = [
            TagSignature::RedColorantTag,
            TagSignature::GreenColorantTag,
            TagSignature::BlueColorantTag,
        ];
        // Columns: each primary's XYZ.
        let columns = |p: &Profile| -> Option<[[f64; 3]; 3]> {
            let [r, g, b] = tags.map(|t| colorant(p, t));
            let (r, g, b) = (r?, g?, b?);
            Some([[r[0], g[0], b[0]], [r[1], g[1], b[1]], [r[2], g[2], b[2]]])
        };
        let source = columns(profile)?;
        let srgb = columns(&Profile::new_srgb())?;
        let matrix = multiply(&invert(&srgb)?, &source);
        // Real profiles' rows sum to about 3 at most (ProPhoto's); past 4 the fixed-point sums
        // could overflow.
        if matrix
            .iter()
            .any(|row| row.iter().map(|v| v.abs()).sum::<f64>() > 4.0)
        {
            return None;
        }
        let mut to_linear = [[0i32; 256]; 3];
        for (table, tag) in to_linear.iter_mut().zip([
            TagSignature::RedTRCTag,
            TagSignature::GreenTRCTag,
            TagSignature::BlueTRCTag,
        ]) {
            let Tag::ToneCurve(curve) = profile.read_tag(tag) else {
                return None;
            };
            for (i, v) in table.iter_mut().enumerate() {
                *v = (curve.eval(i as f32 / 255.0).clamp(0.0, 1.0) * ONE as f32).round() as i32;
            }
        }
        let mut encode = Box::new([0u8; ONE as usize + 1]);
        for (i, e) in encode.iter_mut().enumerate() {
            let v = i as f64 / f64::from(ONE);
            let s = if v <= 0.003_130_8 {
                v * 12.92
            } else {
                1.055 * v.powf(1.0 / 2.4) - 0.055
            };
            *e = (s * 255.0).round().clamp(0.0, 255.0) as u8;
        }
        Some(MatrixShaper {
            to_linear,
            matrix: matrix.map(|row| row.map(|v| (v * f64::from(ONE)).round() as i32)),
            encode,
        })
    }

    /// Converts the RGB at the start of `px` in place.
    #[inline]
    fn convert(&self, px: &mut [u8]) {
        let r = self.to_linear[0][usize::from(px[0])];
        let g = self.to_linear[1][usize::from(px[1])];
        let b = self.to_linear[2][usize::from(px[2])];
        for (out, m) in px.iter_mut().zip(&self.matrix) {
            let v = (m[0] * r + m[1] * g + m[2] * b + ONE / 2) >> 14;
            *out = self.encode[v.clamp(0, ONE) as usize];
        }
    }

    /// Converts every pixel of `pixels` (`channels` bytes each: RGB, or RGBA).
    fn convert_all(&self, pixels: &mut [u8], channels: usize) {
        if channels == 3 {
            pixels.chunks_exact_mut(3).for_each(|px| self.convert(px));
        } else {
            pixels.chunks_exact_mut(4).for_each(|px| self.convert(px));
        }
    }
}

fn multiply(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

fn invert(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det.abs() < 1e-12 {
        return None;
    }
    let c =
        |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    Some([
        [
            c(1, 1, 2, 2) / det,
            -c(0, 1, 2, 2) / det,
            c(0, 1, 1, 2) / det,
        ],
        [
            -c(1, 0, 2, 2) / det,
            c(0, 0, 2, 2) / det,
            -c(0, 0, 1, 2) / det,
        ],
        [
            c(1, 0, 2, 1) / det,
            -c(0, 0, 2, 1) / det,
            c(0, 0, 1, 1) / det,
        ],
    ])
}

/// `image` (RGB or RGBA, grey expanded) converted in place from `profile` to sRGB; a profile
/// that cannot be used leaves it as it is, with a warning.
pub(super) fn rgb_to_srgb(
    image: &mut Decoded,
    profile: &[u8],
    samples: Samples,
    warnings: &mut Vec<DecodeWarning>,
) -> Result<(), DecodeError> {
    let conversion = conversion(profile, samples);
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
        Conversion::Matrix(shaper) => shaper.convert_all(&mut image.pixels, channels),
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
        Conversion::Identity | Conversion::Matrix(_) | Conversion::Rgb(_) | Conversion::Grey(_) => {
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
    use lcms2::{CIExyY, CIExyYTRIPLE, ToneCurve};

    fn adobe_rgb() -> Profile {
        let xy = |x, y| CIExyY { x, y, Y: 1.0 };
        let gamma = ToneCurve::new(563.0 / 256.0);
        let primaries = CIExyYTRIPLE {
            Red: xy(0.64, 0.33),
            Green: xy(0.21, 0.71),
            Blue: xy(0.15, 0.06),
        };
        Profile::new_rgb(&xy(0.3127, 0.3290), &primaries, &[&gamma, &gamma, &gamma]).unwrap()
    }

    /// Every 8-bit RGB value a 17-step grid reaches, and then some.
    fn samples() -> Vec<u8> {
        let mut out = Vec::new();
        for r in (0..=255u32).step_by(15) {
            for g in (0..=255u32).step_by(15) {
                for b in (0..=255u32).step_by(15) {
                    out.extend_from_slice(&[r as u8, g as u8, b as u8]);
                }
            }
        }
        out.extend((0..=255u8).flat_map(|v| [v, v, v]));
        out
    }

    #[test]
    fn matrix_profiles_convert_within_a_level_of_little_cms() {
        let profile = adobe_rgb();
        let shaper = MatrixShaper::of(&profile).expect("a matrix profile");
        let reference: Transform<u8, u8> = Transform::new(
            &profile,
            PixelFormat::RGB_8,
            &Profile::new_srgb(),
            PixelFormat::RGB_8,
            Intent::RelativeColorimetric,
        )
        .unwrap();
        let input = samples();
        let mut expected = vec![0; input.len()];
        reference.transform_pixels(&input, &mut expected);
        let mut ours = input.clone();
        shaper.convert_all(&mut ours, 3);
        let worst = ours
            .iter()
            .zip(&expected)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "differs from Little CMS by up to {worst} levels"
        );
    }

    /// Prints the conversion's cost per pixel (`cargo test --release -p ross
    /// conversion_speed -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn conversion_speed() {
        let adobe = adobe_rgb().icc().unwrap();
        let pixels: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut image = Decoded::rgb(pixels, 1000, 1000);
        let mut warnings = Vec::new();
        rgb_to_srgb(&mut image, &adobe, Samples::Rgb, &mut warnings).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..10 {
            rgb_to_srgb(&mut image, &adobe, Samples::Rgb, &mut warnings).unwrap();
        }
        println!(
            "{:.2} ns a pixel",
            started.elapsed().as_nanos() as f64 / 1e7
        );
    }

    #[test]
    fn srgb_profiles_are_recognised_and_others_are_not() {
        let srgb = Profile::new_srgb().icc().unwrap();
        let mut image = Decoded::rgb(vec![200, 100, 50], 1, 1);
        let mut warnings = Vec::new();
        rgb_to_srgb(&mut image, &srgb, Samples::Rgb, &mut warnings).unwrap();
        assert!(matches!(
            *conversion(&srgb, Samples::Rgb),
            Conversion::Identity
        ));
        assert_eq!(image.pixels, vec![200, 100, 50]);
        assert!(warnings.is_empty());
    }
}
