use std::sync::Arc;

use crate::util::{good_corpus_keys, TestServer};

const SIZES: [(u32, u32); 5] = [(300, 300), (400, 100), (100, 400), (72, 72), (1000, 1000)];
const MODES: [&str; 3] = ["crop", "resize", "resizecomp"];

/// Every good corpus file x every mode x sizes from thumbnails to enlargement and extreme
/// aspect ratios: 200, JPEG, and the exact (crop, resizecomp) or fitted (resize) size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_file_renders_in_every_mode_and_size() {
    let server = Arc::new(TestServer::builder().start().await);
    let keys = good_corpus_keys();
    assert!(keys.len() >= 30, "corpus looks incomplete: {keys:?}");
    let mut tasks = Vec::new();
    for key in keys {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for mode in MODES {
                for (w, h) in SIZES {
                    let r = server.get(&format!("/{w}/{h}/{mode}/{key}")).await;
                    if r.status != 200 || r.header("content-type") != "image/jpeg" {
                        failures.push(format!("{mode} {w}x{h} {key}: {} {}", r.status, r.text()));
                        continue;
                    }
                    assert!(r.body.starts_with(&[0xFF, 0xD8, 0xFF]), "not a JPEG");
                    let (ow, oh) = r.image().dimensions();
                    let ok = if mode == "resize" {
                        ow <= w && oh <= h && (ow == w || oh == h)
                    } else {
                        (ow, oh) == (w, h)
                    };
                    if !ok {
                        failures.push(format!("{mode} {w}x{h} {key}: got {ow}x{oh}"));
                    }
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The largest size the default limits allow enlarges a small image to exactly the box.
#[tokio::test]
async fn enlarges_to_the_largest_allowed_size() {
    let server = TestServer::builder().start().await;
    let r = server.get("/2000/2000/crop/png/g04n2c08.png").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.image().dimensions(), (2000, 2000));
    let r = server
        .get("/2000/2000/resize/exif-orientation/orientation_6.jpg")
        .await;
    assert_eq!(r.image().dimensions(), (2000, 1333));
}

/// The bundled user modes over every kind of input (baseline, progressive, CMYK, greyscale,
/// EXIF-rotated JPEG; 16-bit, palette and alpha PNG; GIF; WebP) at three shapes: exactly the
/// box, in the colours each promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_modes_render_every_kind_of_input_at_exactly_the_box() {
    let server = TestServer::builder().start().await;
    let keys = [
        "photos/Dune.jpg",
        "jpeg-variants/flower_420_progr.jpg",
        "jpeg-variants/greenmeadow_cmyk.jpg",
        "jpeg-variants/flower_gray.jpg",
        "exif-orientation/orientation_6.jpg",
        "png/DJI-FC6310-16bit_srgb8_v4_krita.png",
        "png/g04n2c08.png",
        "png/tmshre_riaphotographs_alpha.png",
        "png/traffic_light.gif",
        "webp/vnc-d.webp",
    ];
    let mut failures = Vec::new();
    for key in keys {
        for mode in ["desaturate", "colourise", "blur", "trimresize"] {
            for (w, h) in [(300, 300), (400, 100), (72, 200)] {
                let r = server.get(&format!("/{w}/{h}/{mode}/{key}")).await;
                if r.status != 200 {
                    failures.push(format!("{mode} {w}x{h} {key}: {} {}", r.status, r.text()));
                    continue;
                }
                let img = r.image();
                if img.dimensions() != (w, h) {
                    failures.push(format!("{mode} {w}x{h} {key}: {:?}", img.dimensions()));
                }
                let grey = img
                    .pixels()
                    .all(|p| p[0].abs_diff(p[1]) <= 3 && p[1].abs_diff(p[2]) <= 3);
                if mode == "desaturate" && !grey {
                    failures.push(format!("{mode} {w}x{h} {key}: not grey"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
