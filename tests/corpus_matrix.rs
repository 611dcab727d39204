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
