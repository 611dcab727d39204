//! JPEG decoding with libjpeg-turbo, shrinking in the DCT domain: when the render needs far
//! fewer pixels than the source has, the IDCT produces the image at 1/2, 1/4 or 1/8 size
//! directly. EXIF orientation is read from the APP1 segment here, since libjpeg-turbo does not
//! interpret it; the ICC profile is the one libjpeg assembles from the APP2 segments.
//!
//! What libjpeg decodes with a warning (stray bytes before a marker, a bad segment it skips,
//! corrupt entropy data it resynchronises past) is served, as browsers show it, with the
//! warning reported; a file that ends inside its image data is not (its missing part would be
//! served grey).

use image::metadata::Orientation;
use turbojpeg::raw;

use super::buffers;
use super::colour;
use super::decode::{check_pixels, DecodeError, DecodeWarning, Decoded, WarningKind};
use super::reduce::largest_shown;
use super::scans;
use super::shown::DecodeBox;
use super::sniff::Format;
use super::turbo::{Decompressor, Trouble};

/// Progressive JPEGs can hold thousands of tiny scans, each a full pass over the image: a cheap
/// way to burn CPU (a crafted 134 kB file cost 1.8 s a render under the old cap of 500).
/// Real encoders write about 10 (libjpeg's default script), mozjpeg's optimised scripts a few
/// more; 64 leaves room for any of them.
pub(super) const MAX_SCANS: u32 = 64;

fn malformed(reason: impl ToString) -> DecodeError {
    DecodeError::Malformed {
        format: Format::Jpeg,
        reason: reason.to_string(),
    }
}

/// Where the marker at or after `at` begins (its last `0xFF`), reading as libjpeg does: bytes
/// that are not a marker are skipped (libjpeg warns of "extraneous bytes"), any number of
/// fill bytes may precede the marker code, and `0xFF 0x00` is not a marker.
pub(super) fn marker_at(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let mut ff = at + memchr::memchr(0xFF, bytes.get(at..)?)?;
        while bytes.get(ff + 1) == Some(&0xFF) {
            ff += 1;
        }
        if *bytes.get(ff + 1)? != 0 {
            return Some(ff);
        }
        at = ff + 2;
    }
}

/// The smallest IDCT scale (in eighths) whose output still covers `need` on both sides.
fn dct_eighths(src: (u32, u32), need: (u32, u32)) -> u32 {
    [1, 2, 4, 8]
        .into_iter()
        .find(|k| (src.0 * k).div_ceil(8) >= need.0 && (src.1 * k).div_ceil(8) >= need.1)
        .unwrap_or(8)
}

/// The EXIF orientation from the first APP1 segment that has one. Walks the marker segments
/// up to the first scan as libjpeg does (APP segments may follow the frame header); anything
/// malformed just means "no orientation".
fn exif_orientation(bytes: &[u8]) -> Orientation {
    let mut at = 2; // after SOI
    while let Some(ff) = marker_at(bytes, at) {
        let marker = bytes[ff + 1];
        match marker {
            0xDA | 0xD9 => break, // start of scan, end of image
            0xD0..=0xD7 | 0x01 => {
                at = ff + 2; // no length
                continue;
            }
            _ => {}
        }
        let Some(len) = bytes.get(ff + 2..ff + 4) else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let Some(segment) = bytes.get(ff + 4..(ff + 2 + len).max(ff + 4)) else {
            break;
        };
        if marker == 0xE1 {
            if let Some(tiff) = segment.strip_prefix(b"Exif\0\0") {
                if let Some(o) = Orientation::from_exif_chunk(tiff) {
                    return o;
                }
            }
        }
        at = ff + 2 + len.max(2);
    }
    Orientation::NoTransforms
}

/// Whether the file ends inside a scan's data: cut short (libjpeg would serve the missing part
/// grey). Read from the file's structure, not libjpeg's message, which names only the first
/// of its warnings. A file that lacks only its final EOI marker looks the same, and is
/// refused too.
fn cut_short(bytes: &[u8]) -> bool {
    let mut at = 2;
    while let Some(ff) = marker_at(bytes, at) {
        let marker = bytes[ff + 1];
        match marker {
            0xD9 => return false, // end of image
            0xD0..=0xD7 | 0x01 => {
                at = ff + 2;
                continue;
            }
            _ => {}
        }
        let Some(len) = bytes.get(ff + 2..ff + 4) else {
            return true;
        };
        let end = ff + 2 + usize::from(u16::from_be_bytes([len[0], len[1]])).max(2);
        if end > bytes.len() {
            return true;
        }
        at = if marker == 0xDA {
            let next = scans::entropy_end(bytes, end);
            if next >= bytes.len() {
                return true;
            }
            next
        } else {
            end
        };
    }
    true
}

pub(super) fn decode(
    bytes: &[u8],
    shrink_to: &[DecodeBox],
    max_pixels: u64,
    warnings: &mut Vec<DecodeWarning>,
) -> Result<(Decoded, bool), DecodeError> {
    decode_trimmed(bytes, shrink_to, max_pixels, Some(scans::POLICY), warnings)
}

/// [`decode`] with every scan decoded: what libjpeg-turbo alone costs at the same scale
/// (the benchmark's reference).
pub(super) fn decode_every_scan(
    bytes: &[u8],
    shrink_to: &[DecodeBox],
    max_pixels: u64,
    warnings: &mut Vec<DecodeWarning>,
) -> Result<(Decoded, bool), DecodeError> {
    decode_trimmed(bytes, shrink_to, max_pixels, None, warnings)
}

fn warned(warnings: &mut Vec<DecodeWarning>, detail: String) {
    tracing::debug!(warning = %detail, "decoded a JPEG past a libjpeg warning");
    if !warnings.iter().any(|w| w.detail == detail) {
        warnings.push(DecodeWarning {
            kind: WarningKind::Jpeg,
            detail,
        });
    }
}

/// [`decode`], with the scans that cannot matter at the shrunken size dropped by `trim`'s
/// rule first (progressive files only; see [`scans`]).
fn decode_trimmed(
    bytes: &[u8],
    shrink_to: &[DecodeBox],
    max_pixels: u64,
    trim: Option<scans::Policy>,
    warnings: &mut Vec<DecodeWarning>,
) -> Result<(Decoded, bool), DecodeError> {
    let mut decompressor = Decompressor::new().map_err(malformed)?;
    let (header, warning) = decompressor.read_header(bytes).map_err(malformed)?;
    if let Some(w) = warning {
        if cut_short(bytes) {
            return Err(malformed(w));
        }
        warned(warnings, w);
    }
    let (w, h) = (header.width, header.height);
    check_pixels(Format::Jpeg, w, h, max_pixels)?;
    let profile = decompressor.icc_profile();
    decompressor
        .set(raw::TJPARAM_TJPARAM_SCANLIMIT, MAX_SCANS as i32)
        .map_err(|t| malformed(format!("{t:?}")))?;
    let orientation = exif_orientation(bytes);
    let mut eighths = 8;
    let mut trimmed = None;
    // The largest size the image is to be shown at (covers keep the source's shape).
    let shown = largest_shown((w, h), shrink_to, orientation);
    if let (Some(shown), false) = (shown, header.lossless) {
        eighths = dct_eighths((w, h), shown);
        trimmed = trim.and_then(|policy| scans::trim(bytes, (w, h), eighths, shown, policy));
    }
    let bytes = trimmed.as_deref().unwrap_or(bytes);
    decompressor
        .set_scale(eighths)
        .map_err(|t| malformed(format!("{t:?}")))?;
    let (width, height) = (
        (w as usize * eighths as usize).div_ceil(8),
        (h as usize * eighths as usize).div_ceil(8),
    );
    let cmyk = [raw::TJCS_TJCS_CMYK, raw::TJCS_TJCS_YCCK]
        .iter()
        .any(|&cs| header.colorspace == cs as i32);
    let (format, channels) = if cmyk {
        (raw::TJPF_TJPF_CMYK, 4)
    } else {
        (raw::TJPF_TJPF_RGB, 3)
    };
    let mut pixels = buffers::zeroed(width * height * channels)?;
    match decompressor.decompress(bytes, &mut pixels, width * channels, height, format) {
        Ok(()) => {}
        Err(Trouble::Warning(w)) if !cut_short(bytes) => warned(warnings, w),
        Err(Trouble::Warning(e) | Trouble::Fatal(e)) => return Err(malformed(e)),
    }
    let mut decoded = if cmyk {
        let converted = match &profile {
            Some(profile) => colour::cmyk_to_srgb(&pixels, profile, warnings)?,
            None => None,
        };
        match converted {
            Some(rgb) => Decoded::rgb(rgb, width as u32, height as u32),
            None => Decoded::rgb(cmyk_to_rgb(&pixels)?, width as u32, height as u32),
        }
    } else {
        let mut decoded = Decoded::rgb(pixels, width as u32, height as u32);
        let grey = header.colorspace == raw::TJCS_TJCS_GRAY as i32;
        super::decode::apply_profile(&mut decoded, profile.as_deref(), grey, warnings)?;
        decoded
    };
    decoded = buffers::orient(decoded, orientation)?;
    Ok((decoded, eighths < 8))
}

/// CMYK as libjpeg-turbo returns it (Adobe convention: 255 is no ink) to RGB.
///
/// Without an ICC profile the usual conversion multiplies: `R = (1 - C)(1 - K)`. That is right
/// when the writer took the grey component out of C, M and Y before putting it in K
/// (undercolour removal). Converters that skip that step, GraphicsMagick's `-colorspace CMYK`
/// among them, write K = min(C, M, Y) and leave C, M and Y whole: there K repeats what C, M
/// and Y already say, and multiplying darkens every colour twice (by 34 levels on average for
/// the corpus's CMYK photo). When K is redundant like that for (nearly) every pixel, ross
/// inverts C, M and Y alone, which restores the RGB the file was made from.
fn cmyk_to_rgb(cmyk: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let pixels = cmyk.len() / 4;
    // In inverted values, K = min(C, M, Y) of ink reads K' = max(C', M', Y').
    let redundant_k = cmyk
        .chunks_exact(4)
        .filter(|p| p[3].abs_diff(p[0].max(p[1]).max(p[2])) <= 2)
        .count();
    let k_is_redundant = pixels > 0 && redundant_k as f64 >= pixels as f64 * 0.99;
    let mut out = buffers::with_capacity(pixels * 3)?;
    for px in cmyk.chunks_exact(4) {
        let k = if k_is_redundant {
            255
        } else {
            u32::from(px[3])
        };
        for &c in &px[..3] {
            out.push((u32::from(c) * k / 255) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{corpus_file, mean_error, shown};
    use super::*;
    use plugin_kit::geometry::{cover, fit};

    /// Every progressive JPEG of the corpus.
    const PROGRESSIVE: [&str; 4] = [
        "photos/Elephants.jpg",
        "photos/FreshFlower.jpg",
        "photos/GreenMeadow.jpg",
        "jpeg-variants/flower_420_progr.jpg",
    ];

    /// Boxes the whitelist of a shop typically holds, from thumbnails to product pages.
    const BOXES: [(u32, u32); 7] = [
        (72, 72),
        (100, 100),
        (150, 150),
        (300, 300),
        (400, 300),
        (640, 480),
        (1024, 768),
    ];

    /// The largest mean error a trimmed decode adds, over every progressive file and box,
    /// shown both covering the box (crop) and fitting in it (resize).
    fn worst_error(policy: scans::Policy) -> (f64, String) {
        let mut worst = (0.0, String::new());
        for path in PROGRESSIVE {
            let bytes = corpus_file(path);
            for target in BOXES {
                let full =
                    decode_trimmed(&bytes, &[target.into()], u64::MAX, None, &mut Vec::new())
                        .unwrap()
                        .0;
                let trimmed = decode_trimmed(
                    &bytes,
                    &[target.into()],
                    u64::MAX,
                    Some(policy),
                    &mut Vec::new(),
                )
                .unwrap()
                .0;
                assert_eq!((full.width, full.height), (trimmed.width, trimmed.height));
                let size = (full.width, full.height);
                for out in [cover(size, target), fit(size, target)] {
                    let error = mean_error(&shown(&full, out), &shown(&trimmed, out));
                    if error > worst.0 {
                        worst = (error, format!("{path} at {}x{}", out.0, out.1));
                    }
                }
            }
        }
        worst
    }

    #[test]
    fn trimmed_decodes_stay_within_the_error_bound() {
        let (error, at) = worst_error(scans::POLICY);
        assert!(
            error <= scans::MAX_MEAN_ERROR,
            "mean error {error:.3} for {at}"
        );
    }

    #[test]
    fn one_eighth_trims_exactly() {
        let bytes = corpus_file("photos/Elephants.jpg");
        let full = decode_trimmed(
            &bytes,
            &[(200, 100).into()],
            u64::MAX,
            None,
            &mut Vec::new(),
        )
        .unwrap()
        .0;
        let trimmed = decode(&bytes, &[(200, 100).into()], u64::MAX, &mut Vec::new())
            .unwrap()
            .0;
        assert_eq!(full.width, 240);
        assert!(full.pixels == trimmed.pixels);
    }

    /// Writes the trimmed files ross decodes for 300x300 and 150x150 crops of every progressive
    /// photo to
    /// `target/trimmed/`, named `{photo}-{side}-{eighths}.jpg` (`cargo test --release -p ross
    /// write_trimmed_files -- --ignored`), to
    /// measure them with other decoders (docs/performance.md: block smoothing on and off).
    #[test]
    #[ignore]
    fn write_trimmed_files() {
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/trimmed");
        std::fs::create_dir_all(&out).unwrap();
        for path in PROGRESSIVE {
            let bytes = corpus_file(path);
            let mut d = Decompressor::new().unwrap();
            let (header, _) = d.read_header(&bytes).unwrap();
            let full = (header.width, header.height);
            for side in [300, 150] {
                let shown = cover(full, (side, side));
                let eighths = dct_eighths(full, shown);
                let stem = std::path::Path::new(path).file_stem().unwrap();
                let name = format!("{}-{side}-{eighths}.jpg", stem.to_string_lossy());
                if let Some(trimmed) = scans::trim(&bytes, full, eighths, shown, scans::POLICY) {
                    std::fs::write(out.join(&name), trimmed).unwrap();
                    println!("{name}: {side}x{side} at {eighths}/8");
                }
            }
        }
    }

    /// Prints the error and decode time of a range of policies (`cargo test --release -p ross
    /// trim_policy_sweep -- --ignored --nocapture`); how [`scans::POLICY`] was chosen.
    #[test]
    #[ignore]
    fn trim_policy_sweep() {
        let time = |bytes: &[u8], target: (u32, u32), policy| {
            let started = std::time::Instant::now();
            for _ in 0..5 {
                decode_trimmed(bytes, &[target.into()], u64::MAX, policy, &mut Vec::new()).unwrap();
            }
            started.elapsed().as_secs_f64() * 1000.0 / 5.0
        };
        let timed = |policy: Option<scans::Policy>| {
            let mut all = 0.0;
            let mut at_300 = Vec::new();
            for path in PROGRESSIVE {
                let bytes = corpus_file(path);
                for target in BOXES {
                    let ms = time(&bytes, target, policy);
                    all += ms;
                    if target == (300, 300) {
                        at_300.push(format!("{ms:.1}"));
                    }
                }
            }
            format!("{all:.0} ms in all, at 300x300 {}", at_300.join(" / "))
        };
        println!("files: {}", PROGRESSIVE.join(" / "));
        println!("untrimmed: {}", timed(None));
        for exact_below in [0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.75, 1.0, f64::INFINITY] {
            let policy = scans::Policy { exact_below };
            let (error, at) = worst_error(policy);
            println!(
                "exact_below {exact_below}: {}, worst mean error {error:.3} ({at})",
                timed(Some(policy))
            );
        }
    }

    #[test]
    fn cmyk_with_undercolour_removal_multiplies_in_black() {
        // Mid grey printed with black ink only, and a pure cyan (inverted values).
        let rgb = cmyk_to_rgb(&[255, 255, 255, 127, 0, 255, 255, 255]).unwrap();
        assert_eq!(rgb, vec![127, 127, 127, 0, 255, 255]);
    }

    #[test]
    fn cmyk_with_redundant_black_inverts_cmy_only() {
        // K = min(C, M, Y) everywhere (no undercolour removal): K adds nothing.
        let rgb = cmyk_to_rgb(&[122, 179, 74, 179, 245, 235, 225, 245]).unwrap();
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

    #[test]
    fn exif_orientation_is_found_or_defaults() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
        for n in 1..=8u8 {
            let path = corpus.join(format!("exif-orientation/orientation_{n}.jpg"));
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(exif_orientation(&bytes).to_exif(), n);
        }
        assert_eq!(
            exif_orientation(&[0xFF, 0xD8, 0xFF]),
            Orientation::NoTransforms
        );
        assert_eq!(
            exif_orientation(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF]),
            Orientation::NoTransforms
        );
    }
}
