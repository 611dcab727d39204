//! Decoding as browsers show files: colour profiles, orientation in every format, what
//! libjpeg decodes with a warning, GIF colour tables, and the error of decoding in rows.

use image::imageops;
use image::RgbImage;
use lcms2::{CIExyY, CIExyYTRIPLE, Intent, PixelFormat, Profile, ToneCurve, Transform};
use plugin_kit::geometry::{cover, fit};

use super::decode::{decode, decode_for, DecodeError, Decoded, WarningKind};
use super::shown::DecodeBox;
use super::testing::*;

const LIMIT: u64 = 100_000_000;

/// The corpus photo as sRGB pixels of exactly `width` x `height`.
fn photo(width: u32, height: u32) -> Vec<u8> {
    let bytes = corpus_file("photos/GreenMeadow.jpg");
    let decoded = decode(&bytes, &[(width, height).into()], LIMIT).unwrap();
    shown(&decoded, (width, height))
}

fn xy(x: f64, y: f64) -> CIExyY {
    CIExyY { x, y, Y: 1.0 }
}

/// Adobe RGB (1998): wider greens, gamma 563/256.
fn adobe_rgb() -> Profile {
    let gamma = ToneCurve::new(563.0 / 256.0);
    let primaries = CIExyYTRIPLE {
        Red: xy(0.64, 0.33),
        Green: xy(0.21, 0.71),
        Blue: xy(0.15, 0.06),
    };
    Profile::new_rgb(&xy(0.3127, 0.3290), &primaries, &[&gamma, &gamma, &gamma]).unwrap()
}

/// Display P3, as recent phones tag their photos: P3 primaries, sRGB's curve.
fn display_p3() -> Profile {
    let curve =
        ToneCurve::new_parametric(4, &[2.4, 1.0 / 1.055, 0.055 / 1.055, 1.0 / 12.92, 0.04045])
            .unwrap();
    let primaries = CIExyYTRIPLE {
        Red: xy(0.680, 0.320),
        Green: xy(0.265, 0.690),
        Blue: xy(0.150, 0.060),
    };
    Profile::new_rgb(&xy(0.3127, 0.3290), &primaries, &[&curve, &curve, &curve]).unwrap()
}

/// sRGB `pixels` expressed in `profile`'s space (what a colour-managed studio writes).
fn into_space(pixels: &[u8], profile: &Profile) -> Vec<u8> {
    let transform: Transform<u8, u8> = Transform::new(
        &Profile::new_srgb(),
        PixelFormat::RGB_8,
        profile,
        PixelFormat::RGB_8,
        Intent::Perceptual,
    )
    .unwrap();
    let mut out = vec![0; pixels.len()];
    transform.transform_pixels(pixels, &mut out);
    out
}

fn pixels_of(bytes: &[u8]) -> Decoded {
    decode(bytes, &[], LIMIT).unwrap()
}

/// A CMYK output profile, written by hand (ICC v2, one `A2B0` lut8 of 2 grid points), that
/// shows paper as white and any ink as black in proportion: L* = 100 (1-c)(1-m)(1-y)(1-k).
fn grey_cmyk_profile() -> Vec<u8> {
    let mut lut = b"mft1\0\0\0\0".to_vec();
    lut.extend_from_slice(&[4, 3, 2, 0]);
    for i in 0..9 {
        let v: u32 = if i % 4 == 0 { 0x0001_0000 } else { 0 };
        lut.extend_from_slice(&v.to_be_bytes());
    }
    for _ in 0..4 {
        lut.extend((0..=255u8).collect::<Vec<_>>());
    }
    for corner in 0..16 {
        let l = if corner == 0 { 255 } else { 0 };
        lut.extend_from_slice(&[l, 128, 128]);
    }
    for _ in 0..3 {
        lut.extend((0..=255u8).collect::<Vec<_>>());
    }
    let size = 144 + lut.len();
    let mut icc = vec![0u8; 128];
    icc[0..4].copy_from_slice(&(size as u32).to_be_bytes());
    icc[8..12].copy_from_slice(&0x0210_0000u32.to_be_bytes());
    icc[12..16].copy_from_slice(b"prtr");
    icc[16..20].copy_from_slice(b"CMYK");
    icc[20..24].copy_from_slice(b"Lab ");
    icc[36..40].copy_from_slice(b"acsp");
    for (i, v) in [0.9642f64, 1.0, 0.8249].iter().enumerate() {
        let fixed = (v * 65536.0).round() as u32;
        icc[68 + i * 4..72 + i * 4].copy_from_slice(&fixed.to_be_bytes());
    }
    icc.extend_from_slice(&1u32.to_be_bytes());
    icc.extend_from_slice(b"A2B0");
    icc.extend_from_slice(&144u32.to_be_bytes());
    icc.extend_from_slice(&(lut.len() as u32).to_be_bytes());
    icc.extend(lut);
    icc
}

#[test]
fn wide_gamut_sources_come_out_in_srgb_in_every_format() {
    let (w, h) = (240, 160);
    let srgb = photo(w, h);
    for (name, profile) in [("Adobe RGB", adobe_rgb()), ("Display P3", display_p3())] {
        let wide = into_space(&srgb, &profile);
        let icc = profile.icc().unwrap();
        let jpeg_plain = jpeg(&srgb, w, h, turbojpeg::PixelFormat::RGB);
        let jpeg_wide = jpeg(&wide, w, h, turbojpeg::PixelFormat::RGB);
        let cases = [
            ("JPEG", with_icc(&jpeg_wide, 2, &icc), jpeg_plain, jpeg_wide),
            (
                "PNG",
                png(&wide, w, h, &[iccp(&icc)]),
                png(&srgb, w, h, &[]),
                png(&wide, w, h, &[]),
            ),
            (
                "WebP",
                webp(&wide, w, h, &[(b"ICCP", &icc)], &[]),
                webp(&srgb, w, h, &[], &[]),
                webp(&wide, w, h, &[], &[]),
            ),
        ];
        for (format, tagged, reference, untagged) in cases {
            let decoding = decode_for(&tagged, &[], LIMIT).unwrap();
            assert!(
                decoding.warnings.is_empty(),
                "{name} {format}: {:?}",
                decoding.warnings
            );
            let reference = pixels_of(&reference);
            let converted = mean_error(&decoding.image.pixels, &reference.pixels);
            let unconverted = mean_error(&pixels_of(&untagged).pixels, &reference.pixels);
            assert!(
                converted <= 2.5 && unconverted >= 4.0,
                "{name} {format}: mean error {converted:.2} converted, {unconverted:.2} shown as sRGB"
            );
        }
    }
}

#[test]
fn srgb_profiles_change_nothing() {
    let (w, h) = (64, 48);
    let srgb = photo(w, h);
    let plain = png(&srgb, w, h, &[]);
    let mut v2 = Profile::new_srgb();
    v2.set_version(2.1);
    for profile in [Profile::new_srgb().icc().unwrap(), v2.icc().unwrap()] {
        let tagged = decode_for(&png(&srgb, w, h, &[iccp(&profile)]), &[], LIMIT).unwrap();
        assert!(tagged.warnings.is_empty());
        assert_eq!(tagged.image.pixels, pixels_of(&plain).pixels);
    }
}

/// 64x32 CMYK: the left half bare paper, the right half full cyan (stored inverted, as
/// Adobe's JPEGs are: 255 is no ink).
fn cmyk_halves() -> Vec<u8> {
    let mut pixels = Vec::new();
    for _ in 0..32 {
        for x in 0..64 {
            pixels.extend_from_slice(if x < 32 {
                &[255, 255, 255, 255]
            } else {
                &[0, 255, 255, 255]
            });
        }
    }
    jpeg(&pixels, 64, 32, turbojpeg::PixelFormat::CMYK)
}

fn pixel(image: &Decoded, x: u32, y: u32) -> [u8; 3] {
    let at = ((y * image.width + x) * 3) as usize;
    [image.pixels[at], image.pixels[at + 1], image.pixels[at + 2]]
}

#[test]
fn cmyk_goes_through_its_profile_and_without_one_is_converted_as_before() {
    let plain = cmyk_halves();
    let untagged = pixels_of(&plain);
    let [r, g, b] = pixel(&untagged, 48, 16);
    assert!(
        r < 20 && g > 235 && b > 235,
        "cyan ink shows cyan: {r} {g} {b}"
    );
    let tagged = decode_for(&with_icc(&plain, 2, &grey_cmyk_profile()), &[], LIMIT).unwrap();
    assert!(tagged.warnings.is_empty(), "{:?}", tagged.warnings);
    let paper = pixel(&tagged.image, 16, 16);
    let ink = pixel(&tagged.image, 48, 16);
    assert!(
        paper.iter().all(|&c| c > 245),
        "paper through the profile: {paper:?}"
    );
    assert!(
        ink.iter().all(|&c| c < 20),
        "ink through the profile: {ink:?}"
    );
}

#[test]
fn broken_oversized_and_mismatched_profiles_are_ignored_with_a_warning() {
    let (w, h) = (64, 48);
    let srgb = photo(w, h);
    let plain_jpeg = jpeg(&srgb, w, h, turbojpeg::PixelFormat::RGB);
    let expected = pixels_of(&plain_jpeg).pixels;
    let broken = with_icc(&plain_jpeg, 2, &[0x5A; 300]);
    let oversized = with_icc(&plain_jpeg, 2, &vec![0; super::MAX_PROFILE_BYTES + 1]);
    let cmyk_on_rgb = with_icc(&plain_jpeg, 2, &grey_cmyk_profile());
    for (what, file) in [
        ("broken", broken),
        ("oversized", oversized),
        ("CMYK on RGB", cmyk_on_rgb),
    ] {
        let decoding = decode_for(&file, &[], LIMIT).unwrap();
        assert_eq!(decoding.image.pixels, expected, "{what}: shown untagged");
        assert!(
            matches!(&decoding.warnings[..], [w] if w.kind == WarningKind::Profile),
            "{what}: {:?}",
            decoding.warnings
        );
    }
    // A PNG whose iCCP inflates far past the limit (a 64 kB chunk of 64 MB) is stopped at
    // the limit.
    let bomb = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0; 64 << 20], 9);
    let mut data = b"bomb\0\0".to_vec();
    data.extend(bomb);
    let file = png(&srgb, w, h, &[png_chunk(b"iCCP", &data)]);
    let decoding = decode_for(&file, &[], LIMIT).unwrap();
    assert_eq!(
        decoding.image.pixels,
        pixels_of(&png(&srgb, w, h, &[])).pixels
    );
    assert_eq!(decoding.warnings.len(), 1);
}

/// `upright` stored so that EXIF orientation `tag` shows it upright.
fn stored_for(upright: &RgbImage, tag: u16) -> RgbImage {
    match tag {
        3 => imageops::rotate180(upright),
        6 => imageops::rotate270(upright),
        8 => imageops::rotate90(upright),
        _ => upright.clone(),
    }
}

#[test]
fn orientation_is_applied_in_every_format_browsers_read_it_in() {
    let upright = RgbImage::from_raw(90, 60, photo(90, 60)).unwrap();
    for tag in [3, 6, 8] {
        let stored = stored_for(&upright, tag);
        let (w, h) = stored.dimensions();
        let pixels = stored.as_raw();
        let bare = exif(tag);
        let mut prefixed = b"Exif\0\0".to_vec();
        prefixed.extend_from_slice(&bare);
        let files = [
            ("PNG eXIf", png(pixels, w, h, &[png_chunk(b"eXIf", &bare)])),
            (
                "PNG eXIf with the JPEG prefix",
                png(pixels, w, h, &[png_chunk(b"eXIf", &prefixed)]),
            ),
            (
                "WebP EXIF after the image",
                webp(pixels, w, h, &[], &[(b"EXIF", &bare)]),
            ),
            (
                "WebP EXIF before the image",
                webp(pixels, w, h, &[(b"EXIF", &bare)], &[]),
            ),
            (
                "WebP EXIF with the JPEG prefix",
                webp(pixels, w, h, &[], &[(b"EXIF", &prefixed)]),
            ),
            (
                "JPEG APP1",
                with_segment(
                    &jpeg(pixels, w, h, turbojpeg::PixelFormat::RGB),
                    2,
                    0xE1,
                    &prefixed,
                ),
            ),
        ];
        for (what, file) in files {
            let out = pixels_of(&file);
            assert_eq!(
                (out.width, out.height),
                (90, 60),
                "{what}, orientation {tag}"
            );
            let error = mean_error(&out.pixels, upright.as_raw());
            // Lossy coding costs a few levels; a wrong turn costs tens.
            assert!(
                error < 8.0,
                "{what}, orientation {tag}: mean error {error:.1}"
            );
        }
    }
}

#[test]
fn what_libjpeg_decodes_with_a_warning_renders_and_a_cut_file_does_not() {
    let (w, h) = (96, 64);
    let srgb = photo(w, h);
    let plain = jpeg(&srgb, w, h, turbojpeg::PixelFormat::RGB);
    let expected = pixels_of(&plain).pixels;
    // Stray bytes before a marker (here the quantisation tables).
    let dqt = segment_at(&plain, 0xDB);
    let mut junk = plain[..dqt].to_vec();
    junk.extend_from_slice(&[0, 0, 0, 0]);
    junk.extend_from_slice(&plain[dqt..]);
    let decoding = decode_for(&junk, &[(48, 32).into()], LIMIT).unwrap();
    assert!(
        matches!(&decoding.warnings[..], [w] if w.kind == WarningKind::Jpeg
            && w.detail.contains("extraneous bytes")),
        "{:?}",
        decoding.warnings
    );
    assert_eq!(pixels_of(&junk).pixels, expected);
    // Stray bytes before an APP1 with an orientation: libjpeg skips them, and so does ross.
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(exif(6));
    let app0_end = segment_end(&plain, 2);
    let turned = with_segment(&plain, app0_end, 0xE1, &app1);
    let mut junk_then_exif = turned[..app0_end].to_vec();
    junk_then_exif.extend_from_slice(&[0x12, 0x34]);
    junk_then_exif.extend_from_slice(&turned[app0_end..]);
    let out = pixels_of(&junk_then_exif);
    assert_eq!(
        (out.width, out.height),
        (h, w),
        "the orientation after stray bytes"
    );
    // A truncated APP14 (Adobe) segment.
    let app14 = with_segment(&plain, 2, 0xEE, b"Adobe");
    assert_eq!(pixels_of(&app14).pixels, expected);
    // The ICC profile in an APP2 segment after the frame header is still the profile.
    let wide = jpeg(
        &into_space(&srgb, &adobe_rgb()),
        w,
        h,
        turbojpeg::PixelFormat::RGB,
    );
    let icc = adobe_rgb().icc().unwrap();
    let sof = segment_at(&wide, 0xC0);
    let before = pixels_of(&with_icc(&wide, 2, &icc)).pixels;
    let after = pixels_of(&with_icc(&wide, segment_end(&wide, sof), &icc)).pixels;
    assert_eq!(after, before);
    let error = mean_error(&after, &expected);
    // Converted: JPEG coding in another space costs a few levels (unconverted, about 12).
    assert!(
        error < 4.0,
        "the profile after the frame header: mean error {error:.2}"
    );
    // A file cut short is not served (its missing rows would be grey).
    assert!(matches!(
        decode(&corpus_file("bad/truncated.jpg"), &[], LIMIT),
        Err(DecodeError::Malformed { .. })
    ));
}

/// A 4x2 GIF (two colours, red and blue, in a local table and no global one); with
/// `no_table`, the frame has no table at all.
fn gif_without_global_table(no_table: bool) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = ::gif::Encoder::new(&mut out, 4, 2, &[]).unwrap();
        let frame = ::gif::Frame {
            width: 4,
            height: 2,
            buffer: std::borrow::Cow::Owned(vec![0, 0, 1, 1, 0, 0, 1, 1]),
            palette: Some(vec![255, 0, 0, 0, 0, 255]),
            ..Default::default()
        };
        encoder.write_frame(&frame).unwrap();
    }
    if out[10] & 0x80 != 0 {
        // The encoder wrote a global table all the same: take it out.
        let table = 3 << ((out[10] & 7) + 1);
        out[10] &= !0x87;
        out.drain(13..13 + table);
    }
    if no_table {
        let mut at = 13;
        while out[at] == 0x21 {
            at += 2;
            while out[at] != 0 {
                at += usize::from(out[at]) + 1;
            }
            at += 1;
        }
        assert_eq!(out[at], 0x2C);
        let flags = out[at + 9];
        let table = 3 << ((flags & 7) + 1);
        out[at + 9] = flags & !0x87;
        out.drain(at + 10..at + 10 + table);
    }
    out
}

#[test]
fn gifs_without_a_global_colour_table_render_as_browsers_show_them() {
    let local = pixels_of(&gif_without_global_table(false));
    assert_eq!(pixel(&local, 0, 0), [255, 0, 0]);
    assert_eq!(pixel(&local, 3, 1), [0, 0, 255]);
    // No table anywhere: Chromium draws the frame in opaque black.
    let none = pixels_of(&gif_without_global_table(true));
    assert!(!none.alpha);
    assert!(none.pixels.iter().all(|&c| c == 0));
}

#[test]
fn a_large_gif_screen_costs_its_cells_not_its_pixels() {
    // 7000x7000 screen, one 1x1 frame at (3000, 3000): 43 bytes.
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&7000u16.to_le_bytes());
    gif.extend_from_slice(&7000u16.to_le_bytes());
    gif.extend_from_slice(&[0xF0, 0, 0, 255, 255, 255, 0, 0, 0, 0x2C]);
    for v in [3000u16, 3000, 1, 1] {
        gif.extend_from_slice(&v.to_le_bytes());
    }
    gif.extend_from_slice(&[0, 2, 2, 0x4C, 0x01, 0, 0x3B]);
    let started = std::time::Instant::now();
    let decoding = decode_for(&gif, &[(300, 300).into()], LIMIT).unwrap();
    let took = started.elapsed();
    let image = decoding.image;
    assert!(decoding.reduced);
    assert_eq!((image.width, image.height), (1000, 1000));
    assert!(image.alpha, "the screen outside the frame is transparent");
    assert!(took.as_millis() < 500, "took {took:?}");
}

/// The largest mean error rows averaged into cells (or libwebp's scaler) add against a full
/// decode, shown at the size asked for, for a crop and a fit.
const MAX_ROW_ERROR: f64 = 0.5;

/// Corpus sources, and large ones made from a photo: 8- and 16-bit, interlaced, with alpha.
fn row_sources() -> Vec<(String, Vec<u8>)> {
    let mut sources: Vec<(String, Vec<u8>)> = [
        "png/DJI-FC6310-16bit_srgb8_v4_krita.png",
        "png/cvo9xd_keong_macan_grayscale.png",
        "png/tmshre_riaphotographs_alpha.png",
        "png/traffic_light.gif",
        "webp/vnc-d.webp",
        "webp/symbolic-d.webp",
    ]
    .iter()
    .map(|p| (p.to_string(), corpus_file(p)))
    .collect();
    let full = decode(&corpus_file("photos/GreenMeadow.jpg"), &[], LIMIT).unwrap();
    let (w, h) = (full.width, full.height);
    let mut interlaced = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut interlaced, w, h);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Sixteen);
        encoder.set_compression(png::Compression::Fastest);
        let mut info = encoder.write_header().unwrap();
        let mut samples = Vec::with_capacity(full.pixels.len() / 3 * 8);
        for (i, p) in full.pixels.chunks_exact(3).enumerate() {
            let alpha = if (i as u32 % w) < w / 4 { 128 } else { 255 };
            for c in [p[0], p[1], p[2], alpha] {
                samples.extend_from_slice(&[c, c]);
            }
        }
        info.write_image_data(&samples).unwrap();
    }
    sources.push(("GreenMeadow as 16-bit RGBA PNG".into(), interlaced));
    sources.push((
        "GreenMeadow as 8-bit PNG".into(),
        png(&full.pixels, w, h, &[]),
    ));
    sources
}

/// The worst error a reduced decode of each of `sources` adds against its full decode, shown
/// at the boxes' sizes (a crop and a fit each), and how many decodes were reduced.
fn worst_reduction_error(sources: Vec<(String, Vec<u8>)>) -> ((f64, String), usize) {
    let boxes = [(72, 72), (150, 150), (300, 300), (400, 300), (640, 480)];
    let mut worst = (0.0, String::new());
    let mut reduced_any = 0;
    for (name, bytes) in sources {
        let full = decode(&bytes, &[], LIMIT).unwrap();
        for target in boxes {
            let reduced = decode_for(&bytes, &[target.into()], LIMIT).unwrap();
            if !reduced.reduced {
                continue;
            }
            reduced_any += 1;
            let size = (full.width, full.height);
            for out in [cover(size, target), fit(size, target)] {
                let error = mean_error(&shown(&full, out), &shown(&reduced.image, out));
                if error > worst.0 {
                    worst = (error, format!("{name} at {}x{}", out.0, out.1));
                }
            }
        }
    }
    (worst, reduced_any)
}

#[test]
fn rows_averaged_in_cells_stay_within_the_error_bound() {
    let (worst, reduced) = worst_reduction_error(row_sources());
    // For scale: what JPEG's DCT scaling (ross's reduction until now) adds on a photo.
    let (dct, _) = worst_reduction_error(vec![(
        "GreenMeadow.jpg".into(),
        corpus_file("photos/GreenMeadow.jpg"),
    )]);
    println!(
        "rows in cells: worst mean error {:.3} ({}); JPEG's DCT scaling: {:.3} ({})",
        worst.0, worst.1, dct.0, dct.1
    );
    assert!(reduced >= 10, "too few reduced decodes: {reduced}");
    assert!(
        worst.0 <= MAX_ROW_ERROR,
        "mean error {:.3} for {}",
        worst.0,
        worst.1
    );
}

/// `rgb` (8-bit) in each PNG colour type and depth ross must read: grey, grey and alpha, RGB,
/// RGBA, at 8 and 16 bits (alpha a ramp across the image).
/// A PNG layout's name, its IHDR colour type, depth and bytes a pixel, and the samples.
type PngLayout = (&'static str, (u8, u8, usize), Vec<u8>);

fn png_layouts(rgb: &[u8], width: u32) -> Vec<PngLayout> {
    let pixels: Vec<(usize, &[u8])> = rgb.chunks_exact(3).enumerate().collect();
    let alpha = |i: usize| (i % width as usize * 255 / width as usize) as u8;
    let grey =
        |p: &[u8]| ((u32::from(p[0]) * 3 + u32::from(p[1]) * 6 + u32::from(p[2])) / 10) as u8;
    let build = |f: &dyn Fn(usize, &[u8]) -> Vec<u8>, wide: bool| -> Vec<u8> {
        pixels
            .iter()
            .flat_map(|&(i, p)| f(i, p))
            .flat_map(|v| if wide { vec![v, v / 3] } else { vec![v] })
            .collect()
    };
    vec![
        ("grey 8", (0, 8, 1), build(&|_, p| vec![grey(p)], false)),
        (
            "grey+alpha 8",
            (4, 8, 2),
            build(&|i, p| vec![grey(p), alpha(i)], false),
        ),
        ("RGB 8", (2, 8, 3), build(&|_, p| p.to_vec(), false)),
        ("RGB 16", (2, 16, 6), build(&|_, p| p.to_vec(), true)),
        (
            "RGBA 8",
            (6, 8, 4),
            build(&|i, p| vec![p[0], p[1], p[2], alpha(i)], false),
        ),
        (
            "RGBA 16",
            (6, 16, 8),
            build(&|i, p| vec![p[0], p[1], p[2], alpha(i)], true),
        ),
    ]
}

#[test]
fn interlaced_pngs_decode_as_their_plain_twins_whole_and_reduced() {
    // Odd sizes leave passes short or empty; the large one is reduced.
    for (w, h, boxes) in [
        (37, 23, vec![]),
        (5, 3, vec![]),
        (1, 1, vec![]),
        (960, 720, vec![DecodeBox::cover(100, 100)]),
    ] {
        let rgb = photo(w, h);
        for (name, layout, samples) in png_layouts(&rgb, w) {
            let plain = png_raw(&samples, (w, h), layout, false);
            let adam7 = png_raw(&samples, (w, h), layout, true);
            let expected = decode_for(&plain, &boxes, LIMIT).unwrap();
            let got = decode_for(&adam7, &boxes, LIMIT).unwrap();
            assert_eq!(got.reduced, !boxes.is_empty(), "{name} {w}x{h}");
            assert_eq!(
                (got.image.width, got.image.height, got.image.alpha),
                (
                    expected.image.width,
                    expected.image.height,
                    expected.image.alpha
                ),
                "{name} {w}x{h}"
            );
            assert!(
                got.image.pixels == expected.image.pixels,
                "{name} {w}x{h}: the interlaced decode differs"
            );
        }
    }
}

#[test]
fn damage_is_judged_by_the_file_not_by_libjpegs_first_message() {
    let (w, h) = (192, 128);
    let plain = jpeg(&photo(w, h), w, h, turbojpeg::PixelFormat::RGB);
    let sos = segment_at(&plain, 0xDA);
    let data = segment_end(&plain, sos);
    // A stray restart marker in the middle of the entropy-coded data: libjpeg warns
    // ("premature end of data segment"), resynchronises, and it renders.
    let mut corrupt = plain.clone();
    let middle = data + (plain.len() - data) / 2;
    corrupt[middle..middle + 2].copy_from_slice(&[0xFF, 0xD3]);
    let decoding = decode_for(&corrupt, &[], LIMIT).unwrap();
    assert!(
        decoding
            .warnings
            .iter()
            .any(|w| w.kind == WarningKind::Jpeg),
        "{:?}",
        decoding.warnings
    );
    // Stray bytes early (libjpeg's first message) and the file cut in its scan: refused.
    let dqt = segment_at(&plain, 0xDB);
    let mut junk = plain[..dqt].to_vec();
    junk.extend_from_slice(&[0, 0]);
    junk.extend_from_slice(&plain[dqt..middle]);
    assert!(matches!(
        decode(&junk, &[], LIMIT),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn mismatched_and_empty_sources_are_handled() {
    // A grey profile on a colour source is ignored (it would turn the photo grey).
    let grey = lcms2::Profile::new_gray(&xy(0.3457, 0.3585), &ToneCurve::new(2.2))
        .unwrap()
        .icc()
        .unwrap();
    let (w, h) = (48, 32);
    let rgb = photo(w, h);
    let decoding = decode_for(&png(&rgb, w, h, &[iccp(&grey)]), &[], LIMIT).unwrap();
    assert_eq!(
        decoding.image.pixels,
        pixels_of(&png(&rgb, w, h, &[])).pixels
    );
    assert!(matches!(&decoding.warnings[..], [w] if w.kind == WarningKind::Profile));
    // On a greyscale source it applies: gamma 2.2 against sRGB's curve moves mid-greys.
    let samples: Vec<u8> = (0..=255u8).collect();
    let grey_png = |extra: &[Vec<u8>]| {
        let mut file = png_raw(&samples, (256, 1), (0, 8, 1), false);
        let at = 33; // after the signature and IHDR
        for chunk in extra.iter().rev() {
            file.splice(at..at, chunk.iter().copied());
        }
        file
    };
    let tagged = decode_for(&grey_png(&[iccp(&grey)]), &[], LIMIT).unwrap();
    assert!(tagged.warnings.is_empty(), "{:?}", tagged.warnings);
    let plain = pixels_of(&grey_png(&[]));
    assert!(mean_error(&tagged.image.pixels, &plain.pixels) > 0.5);
    // A GIF whose data stops in its second row shows its first; an empty screen is refused.
    let gif = gif_without_global_table(false);
    let whole = pixels_of(&gif);
    assert!(!whole.alpha);
    let mut empty = gif.clone();
    empty[6..10].fill(0);
    let end = empty.iter().rposition(|&b| b == 0x2C).unwrap();
    empty[end + 5..end + 9].fill(0);
    assert!(matches!(
        decode(&empty, &[], LIMIT),
        Err(DecodeError::Malformed { .. })
    ));
}

/// Regression: an animated WebP's orientation was applied twice (by the `image` crate's
/// decoder, then again), so a 90-degree turn came out as 180.
#[test]
fn an_animated_webp_is_turned_once() {
    // 40x20, blue left half, red right, EXIF orientation 6; written by Pillow.
    let bytes = include_bytes!("testdata/animated-orientation-6.webp");
    let image = pixels_of(bytes);
    assert_eq!((image.width, image.height), (20, 40));
    let [r, _, b] = pixel(&image, 10, 5);
    assert!(b > 150 && r < 100, "the blue half is on top: {r} {b}");
}
