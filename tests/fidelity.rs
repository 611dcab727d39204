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
