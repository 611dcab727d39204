use crate::util::TestServer;

/// Every file in `bad/` gets its SPEC status, a JSON error, and the server keeps serving.
#[tokio::test]
async fn bad_files_get_their_status_and_the_server_keeps_serving() {
    let server = TestServer::builder().start().await;
    for (file, status, code) in [
        ("truncated.jpg", 415, "undecodable-image"),
        ("not_an_image.jpg", 415, "unsupported-format"),
        ("empty.jpg", 415, "unsupported-format"),
        ("bomb_20000x20000.png", 413, "source-too-many-pixels"),
    ] {
        for mode in ["crop", "resize", "resizecomp"] {
            let r = server.get(&format!("/300/300/{mode}/bad/{file}")).await;
            assert_eq!(r.status, status, "{mode} {file}: {}", r.text());
            assert_eq!(r.json()["error"]["code"], code, "{file}");
            assert_eq!(r.header("cache-control"), "no-store");
        }
        assert_eq!(
            server.get("/300/300/crop/photos/Storm.jpg").await.status,
            200
        );
    }
    // Nothing was cached for the failures: the one entry is Storm's.
    assert!(!server.cache_dir().join("jpeg/300/300/crop/bad").exists());
    assert_eq!(server.state.cache.stats().entries, 1);
}

/// A source over `limits.max_source_bytes` is refused before being read whole.
#[tokio::test]
async fn oversized_source_is_413() {
    let server = TestServer::builder()
        .set("ROSS__LIMITS__MAX_SOURCE_BYTES", "100000")
        .start()
        .await;
    let r = server.get("/300/300/crop/photos/Dune.jpg").await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (413, Some("source-too-large"))
    );
    assert_eq!(
        server
            .get("/300/300/crop/photos/FreshFlower.jpg")
            .await
            .status,
        200
    );
}

/// The pixel limit applies to every format, from the header.
#[tokio::test]
async fn pixel_limit_applies_before_decoding() {
    let server = TestServer::builder()
        .set("ROSS__LIMITS__MAX_SOURCE_PIXELS", "1000000")
        .start()
        .await;
    for key in ["photos/Dune.jpg", "webp/symbolic-d.webp"] {
        let r = server.get(&format!("/300/300/crop/{key}")).await;
        assert_eq!(r.status, 413, "{key}");
    }
    assert_eq!(
        server
            .get("/300/300/crop/exif-orientation/orientation_1.jpg")
            .await
            .status,
        200
    );
}
