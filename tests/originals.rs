use crate::util::{corpus, TestServer};

#[tokio::test]
async fn originals_are_served_unchanged_with_their_true_type() {
    let server = TestServer::builder().start().await;
    for (key, mime) in [
        ("photos/Dune.jpg", "image/jpeg"),
        ("png/g04n2c08.png", "image/png"),
        ("png/traffic_light.gif", "image/gif"),
        ("webp/vnc-d.webp", "image/webp"),
    ] {
        let r = server.get(&format!("/{key}")).await;
        assert_eq!((r.status, r.header("content-type")), (200, mime), "{key}");
        assert_eq!(r.body, std::fs::read(corpus().join(key)).unwrap(), "{key}");
    }
    let r = server.get("/bad/not_an_image.jpg").await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (415, Some("unsupported-format"))
    );
    assert_eq!(server.get("/photos/nope.jpg").await.status, 404);
}

#[tokio::test]
async fn originals_can_be_switched_off() {
    let server = TestServer::builder()
        .set("ROSS__SERVE_ORIGINALS", "false")
        .start()
        .await;
    let r = server.get("/photos/Dune.jpg").await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("originals-disabled"))
    );
}
