use image::{RgbImage, RgbaImage};

use crate::util::TestServer;

const CHROMIUM: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";

/// A body decoded to RGBA, whatever the format (AVIF through ross's own libavif).
fn rgba(body: &[u8]) -> RgbaImage {
    if body.get(4..12) == Some(b"ftypavif") {
        let (rgba, w, h) = ross::imaging::decode_avif(body).expect("decodes");
        return RgbaImage::from_raw(w, h, rgba).unwrap();
    }
    image::load_from_memory(body).expect("decodes").into_rgba8()
}

/// A body as shown on white.
fn rgb(body: &[u8]) -> RgbImage {
    let image = rgba(body);
    let over_white = |c: u8, a: u8| {
        let (c, a) = (u32::from(c), u32::from(a));
        ((c * a + 255 * (255 - a) + 127) / 255) as u8
    };
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let [r, g, b, a] = image.get_pixel(x, y).0;
        image::Rgb([over_white(r, a), over_white(g, a), over_white(b, a)])
    })
}

fn mean_abs_error(a: &RgbImage, b: &RgbImage) -> f64 {
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// Every mode, from a JPEG photo, a PNG with alpha, a greyscale PNG and a greyscale JPEG, in
/// every format: the right type, `Vary: Accept`, the same size as the JPEG render and, shown
/// on white, the same picture within a small error (the encoders differ, the pixels they start
/// from do not). Transparency is kept exactly by the modes that take it (crop, resize) and
/// never by the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_in_every_format_matches_its_jpeg_render() {
    let server = TestServer::builder()
        .set("ROSS__OUTPUT__FORMATS", "avif,webp,jpeg")
        .start()
        .await;
    let modes: Vec<String> = server
        .state
        .modes
        .modes()
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert!(modes.len() >= 7, "{modes:?}");
    let sources = [
        "photos/Dune.jpg",
        "png/tmshre_riaphotographs_alpha.png",
        "png/cvo9xd_keong_macan_grayscale.png",
        "jpeg-variants/flower_gray.jpg",
    ];
    let mut worst = 0f64;
    for key in sources {
        for mode in &modes {
            let path = format!("/240/160/{mode}/{key}");
            let get = |accept: &'static str| {
                let req = server.client().get(&path).header("Accept", accept);
                server.request(req)
            };
            let jpeg = get("*/*").await;
            assert_eq!(jpeg.status, 200, "{path}: {}", jpeg.text());
            assert_eq!(jpeg.header("content-type"), "image/jpeg");
            let reference = rgb(&jpeg.body);
            for (accept, media_type, magic) in [
                (CHROMIUM, "image/avif", &b"ftypavif"[..]),
                ("image/webp", "image/webp", &b"WEBP"[..]),
            ] {
                let r = get(accept).await;
                assert_eq!(r.status, 200, "{path} {media_type}: {}", r.text());
                assert_eq!(r.header("content-type"), media_type, "{path}");
                assert_eq!(r.header("vary"), "Accept", "{path}");
                let at = if media_type == "image/avif" { 4 } else { 8 };
                assert_eq!(&r.body[at..at + magic.len()], magic, "{path} {media_type}");
                let transparent = rgba(&r.body).pixels().any(|p| p.0[3] < 128);
                let keeps = key.contains("alpha") && (mode == "crop" || mode == "resize");
                assert_eq!(transparent, keeps, "{path} {media_type}: transparency");
                let got = rgb(&r.body);
                assert_eq!(
                    got.dimensions(),
                    reference.dimensions(),
                    "{path} {media_type}"
                );
                let error = mean_abs_error(&got, &reference);
                assert!(
                    error < 6.0,
                    "{path} {media_type}: mean error {error:.2} against JPEG"
                );
                worst = worst.max(error);
            }
        }
    }
    eprintln!("worst mean error against the JPEG render: {worst:.2}");
}

/// With the default `output.formats`, a browser that takes AVIF still gets JPEG, with no
/// `Vary` (the answer does not depend on `Accept`).
#[tokio::test]
async fn by_default_every_client_gets_jpeg_without_vary() {
    let server = TestServer::builder().start().await;
    let req = server
        .client()
        .get("/200/200/crop/photos/Dune.jpg")
        .header("Accept", CHROMIUM);
    let r = server.request(req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "image/jpeg");
    assert_eq!(r.header("vary"), "");
}

/// One cache file per format, each with its own ETag; a conditional request is answered per
/// format (a WebP ETag does not validate the JPEG), hits and misses alike carry `Vary`, and a
/// purge of the key removes every format.
#[tokio::test]
async fn each_format_is_cached_and_validated_on_its_own() {
    let server = TestServer::builder()
        .set("ROSS__OUTPUT__FORMATS", "webp,jpeg")
        .start()
        .await;
    let path = "/200/150/crop/photos/Wood.jpg";
    let get = |accept: &'static str, etag: Option<String>| {
        let mut req = server.client().get(path).header("Accept", accept);
        if let Some(tag) = etag {
            req = req.header("If-None-Match", tag);
        }
        server.request(req)
    };
    let webp = get("image/webp", None).await;
    let jpeg = get("image/jpeg", None).await;
    assert_eq!(webp.header("x-cache"), "MISS");
    assert_eq!(
        jpeg.header("x-cache"),
        "MISS",
        "the JPEG is a render of its own"
    );
    assert_ne!(webp.header("etag"), jpeg.header("etag"));
    let webp_tag = webp.header("etag").to_owned();
    let again = get("image/webp", Some(webp_tag.clone())).await;
    assert_eq!(again.status, 304);
    assert_eq!(again.header("vary"), "Accept");
    let other = get("*/*", Some(webp_tag)).await;
    assert_eq!(other.status, 200, "a WebP ETag validated the JPEG");
    assert_eq!(other.header("x-cache"), "HIT");
    assert_eq!(other.header("vary"), "Accept");
    for format in ["webp", "jpeg"] {
        assert!(server
            .cache_dir()
            .join(format)
            .join("200/150/crop/photos/Wood.jpg")
            .is_file());
    }
    let purged = server
        .admin("POST", "/purge", r#"{"key": "photos/Wood.jpg"}"#)
        .await;
    assert!(purged.status < 300, "{}", purged.text());
    server.settled().await;
    for format in ["webp", "jpeg"] {
        let file = server
            .cache_dir()
            .join(format)
            .join("200/150/crop/photos/Wood.jpg");
        assert!(!file.exists(), "{format} not purged");
    }
}

/// A render wider than WebP's 16,383 pixels is served in the next configured format, not a
/// 500 from the WebP encoder.
#[tokio::test]
async fn renders_too_wide_for_webp_fall_back_to_jpeg() {
    let server = TestServer::builder()
        .set("ROSS__OUTPUT__FORMATS", "webp,jpeg")
        .set("ROSS__LIMITS__MAX_WIDTH", "20000")
        .start()
        .await;
    let request = |path: &str| server.client().get(path).header("Accept", CHROMIUM);
    // resizecomp: exactly the box, the picture itself small.
    let wide = server
        .request(request("/17000/10/resizecomp/photos/Dune.jpg"))
        .await;
    assert_eq!(wide.status, 200, "{}", wide.text());
    assert_eq!(wide.header("content-type"), "image/jpeg");
    assert_eq!(wide.header("vary"), "Accept");
    let narrow = server
        .request(request("/16000/10/resizecomp/photos/Dune.jpg"))
        .await;
    assert_eq!(narrow.header("content-type"), "image/webp");
}
