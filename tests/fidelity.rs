use crate::util::{corpus, mae, TestServer};

/// Each `orientation_N.jpg` must come out upright, like `upright_reference.jpg`.
#[tokio::test]
async fn exif_orientations_render_upright() {
    let server = TestServer::builder().start().await;
    for (mode, w, h) in [
        ("crop", 200, 200),
        ("resize", 300, 300),
        ("resizecomp", 150, 300),
    ] {
        let reference = server
            .get(&format!(
                "/{w}/{h}/{mode}/exif-orientation/upright_reference.jpg"
            ))
            .await;
        let reference = reference.image();
        for n in 1..=8 {
            let r = server
                .get(&format!(
                    "/{w}/{h}/{mode}/exif-orientation/orientation_{n}.jpg"
                ))
                .await;
            assert_eq!(r.status, 200);
            let out = r.image();
            assert_eq!(
                out.dimensions(),
                reference.dimensions(),
                "{mode} orientation {n}"
            );
            let err = mae(&out, &reference);
            assert!(err < 6.0, "{mode} orientation {n}: mean error {err:.1}");
        }
    }
}

/// The CMYK JPEG was converted from `photos/GreenMeadow.jpg`; its colours must match.
#[tokio::test]
async fn cmyk_colours_match_the_rgb_original() {
    let server = TestServer::builder().start().await;
    let rgb = server
        .get("/300/300/crop/photos/GreenMeadow.jpg")
        .await
        .image();
    let cmyk = server
        .get("/300/300/crop/jpeg-variants/greenmeadow_cmyk.jpg")
        .await
        .image();
    let err = mae(&rgb, &cmyk);
    assert!(
        err < 12.0,
        "CMYK differs from its RGB original by {err:.1} per channel"
    );
    // And not by accident: an inverted or unconverted image is far off.
    let inverted = image::RgbImage::from_fn(300, 300, |x, y| {
        let p = rgb.get_pixel(x, y).0;
        image::Rgb([255 - p[0], 255 - p[1], 255 - p[2]])
    });
    assert!(mae(&inverted, &cmyk) > 40.0);
}

/// Greyscale sources stay grey, and match their colour siblings' luminance.
#[tokio::test]
async fn greyscale_jpeg_and_png_become_grey_rgb() {
    let server = TestServer::builder().start().await;
    for key in [
        "jpeg-variants/flower_gray.jpg",
        "png/cvo9xd_keong_macan_grayscale.png",
    ] {
        let out = server.get(&format!("/200/200/crop/{key}")).await.image();
        let spread = out
            .pixels()
            .map(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap());
        assert!(spread.max().unwrap() <= 4, "{key} is not grey");
    }
}

/// Chroma subsampling and progressive coding must not change the picture.
#[tokio::test]
async fn jpeg_variants_agree_with_each_other() {
    let server = TestServer::builder().start().await;
    let base = server
        .get("/300/200/crop/jpeg-variants/flower_444.jpg")
        .await
        .image();
    for v in ["flower_420.jpg", "flower_420_progr.jpg", "flower_422.jpg"] {
        let out = server
            .get(&format!("/300/200/crop/jpeg-variants/{v}"))
            .await
            .image();
        let err = mae(&base, &out);
        assert!(err < 4.0, "{v} differs from 4:4:4 by {err:.1}");
    }
}

/// Transparent pixels become white, not black.
#[tokio::test]
async fn transparency_is_flattened_onto_white() {
    let server = TestServer::builder().start().await;
    let out = server
        .get("/100/100/resize/png/tmshre_riaphotographs_alpha.png")
        .await
        .image();
    // The photo's corners are transparent.
    let corner = out.get_pixel(0, 0).0;
    assert!(
        corner.iter().all(|c| *c > 240),
        "corner is {corner:?}, not white"
    );
}

/// OpenRoss's own goldens: same sizes and placement as GraphicsMagick gave, within a small
/// error (the resampling filters differ, so bytes never match).
#[tokio::test]
async fn openross_goldens_match() {
    let server = TestServer::builder().start().await;
    for (mode, size) in [
        ("crop", (200, 200)),
        ("resize", (200, 151)),
        ("resizecomp", (200, 200)),
    ] {
        let out = server
            .get(&format!("/200/200/{mode}/openross/test-in.jpeg"))
            .await
            .image();
        let path = corpus().join(format!("openross/test-reference-{mode}.jpeg"));
        let reference = image::open(path).unwrap().into_rgb8();
        assert_eq!(out.dimensions(), size, "{mode}");
        let err = mae(&out, &reference);
        // GraphicsMagick's `scale` averages boxes; ross resamples with Lanczos3, which keeps
        // the chart's fine lines sharper. Measured: about 9 (crop, resize) and 7 (resizecomp).
        assert!(
            err < 10.0,
            "{mode}: mean error {err:.1} against OpenRoss's reference"
        );
    }
    // resizecomp: picture from y = 24, white above and below.
    let out = server
        .get("/200/200/resizecomp/openross/test-in.jpeg")
        .await
        .image();
    assert!(out.get_pixel(100, 20).0.iter().all(|c| *c > 245));
    assert!(out.get_pixel(100, 180).0.iter().all(|c| *c > 245));
}

/// A 6800x6800 16-bit RGBA PNG (a flat sky with a band of gradient), written row by row.
fn write_big_png(path: &std::path::Path) {
    let (w, h) = (6800u32, 6800u32);
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut encoder = png::Encoder::new(file, w, h);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Sixteen);
    encoder.set_compression(png::Compression::Fastest);
    let mut writer = encoder.write_header().unwrap();
    let mut stream = writer.stream_writer().unwrap();
    let mut row = vec![0u8; w as usize * 8];
    for y in 0..h {
        for x in 0..w {
            let band = (2900..3900).contains(&y);
            let px = if band {
                [(x * 255 / w) as u8, (y % 256) as u8, 120, 255]
            } else {
                [90, 140, 200, 255]
            };
            let at = x as usize * 8;
            for (i, c) in px.iter().enumerate() {
                row[at + i * 2] = *c;
                row[at + i * 2 + 1] = *c;
            }
        }
        std::io::Write::write_all(&mut stream, &row).unwrap();
    }
    stream.finish().unwrap();
}

/// A 43-byte GIF whose logical screen is 7000x7000, with one pixel at (3000, 3000).
fn big_screen_gif() -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&7000u16.to_le_bytes());
    gif.extend_from_slice(&7000u16.to_le_bytes());
    gif.extend_from_slice(&[0xF0, 0, 0, 255, 255, 255, 0, 0, 0, 0x2C]);
    for v in [3000u16, 3000, 1, 1] {
        gif.extend_from_slice(&v.to_le_bytes());
    }
    gif.extend_from_slice(&[0, 2, 2, 0x4C, 0x01, 0, 0x3B]);
    gif
}

/// The worker's peak memory for issue 20's two canvases, rendered at 300x300: under 150 MiB
/// above its peak after a small render (decoded whole, they raised it by 655 and 546 MiB).
/// A JPEG with stray bytes before a marker renders and its libjpeg warning is counted.
#[test]
fn large_canvases_render_in_rows_and_warnings_are_counted() {
    use crate::isolation::{children, children_settled};
    use crate::process::{http_get, Ross};
    use std::time::Duration;

    let media = tempfile::tempdir().unwrap();
    write_big_png(&media.path().join("big16.png"));
    std::fs::write(media.path().join("bigscreen.gif"), big_screen_gif()).unwrap();
    let jpeg = std::fs::read(corpus().join("photos/Dune.jpg")).unwrap();
    // Stray bytes after the APP segments, before the next marker.
    let mut at = 2;
    while (0xE0..=0xEF).contains(&jpeg[at + 1]) {
        at += 2 + usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
    }
    let mut junk = jpeg[..at].to_vec();
    junk.extend_from_slice(&[0, 0, 0, 0]);
    junk.extend_from_slice(&jpeg[at..]);
    std::fs::write(media.path().join("junk.jpg"), junk).unwrap();
    std::fs::copy(
        corpus().join("png/g04n2c08.png"),
        media.path().join("small.png"),
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__SOURCE__ROOT", media.path().to_str().unwrap()),
            ("ROSS__LIMITS__MAX_CONCURRENT_RENDERS", "1"),
        ],
    );
    let get = |path: &str| http_get(ross.port, path, Duration::from_secs(60)).unwrap();
    let (status, body) = get("/300/300/crop/small.png");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let workers = children_settled(ross.child.id(), 1);
    assert_eq!(workers.len(), 1, "one worker: {workers:?}");
    let peak = || crate::util::status_kib_of(workers[0], "VmHWM:");
    let before = peak();
    for name in ["big16.png", "bigscreen.gif"] {
        let (status, body) = get(&format!("/300/300/crop/{name}"));
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&body));
        assert_eq!(image::load_from_memory(&body).unwrap().width(), 300);
    }
    assert_eq!(
        children(ross.child.id()),
        workers,
        "the same worker rendered both"
    );
    let grew = (peak() - before) / 1024;
    println!("the worker's peak grew by {grew} MiB for the two canvases");
    assert!(grew < 150, "the worker's peak grew by {grew} MiB");

    assert_eq!(get("/300/300/crop/junk.jpg").0, 200);
    let (_, metrics) = get("/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("ross_decode_warnings_total{kind=\"jpeg\"} 1"),
        "{metrics}"
    );
}
