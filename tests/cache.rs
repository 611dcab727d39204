use std::sync::Arc;

use poem::http::Method;

use crate::util::{corpus, TestServer};

fn media_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        corpus().join("photos/LadyBird.jpg"),
        dir.path().join("lady.jpg"),
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

/// The second request is a hit served from disk: it works with the source deleted.
#[tokio::test]
async fn hits_are_served_without_the_source() {
    let (_dir, media) = media_copy();
    let server = TestServer::builder().media(&media).start().await;
    let first = server.get("/300/300/crop/lady.jpg").await;
    assert_eq!((first.status, first.header("x-cache")), (200, "MISS"));
    assert!(server
        .cache_dir()
        .join("jpeg/300/300/crop/lady.jpg")
        .is_file());
    std::fs::remove_file(media.join("lady.jpg")).unwrap();
    let second = server.get("/300/300/crop/lady.jpg").await;
    assert_eq!((second.status, second.header("x-cache")), (200, "HIT"));
    assert_eq!(first.body, second.body);
    // Query strings never make a new variant.
    let third = server.get("/300/300/crop/lady.jpg?v=2&width=9").await;
    assert_eq!((third.status, third.header("x-cache")), (200, "HIT"));
    assert_eq!(server.state.metrics.counts().renders, 1);
}

/// Image responses carry the SPEC's headers, and conditional requests get 304.
#[tokio::test]
async fn headers_and_conditional_requests() {
    let server = TestServer::builder()
        .set("ROSS__CACHE__MAX_AGE", "3600")
        .start()
        .await;
    let r = server.get("/200/250/resizecomp/photos/Wood.jpg").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "image/jpeg");
    assert_eq!(r.header("cache-control"), "public, max-age=3600");
    assert_eq!(r.header("content-length"), r.body.len().to_string());
    let etag = r.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let modified = r.header("last-modified").to_owned();
    assert!(modified.ends_with("GMT"), "{modified}");
    // Same ETag on the hit.
    let hit = server.get("/200/250/resizecomp/photos/Wood.jpg").await;
    assert_eq!(hit.header("etag"), etag);

    let req = server.client().get("/200/250/resizecomp/photos/Wood.jpg");
    let r = server
        .request(req.header("If-None-Match", etag.as_str()))
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let req = server.client().get("/200/250/resizecomp/photos/Wood.jpg");
    let r = server
        .request(req.header("If-None-Match", "\"other\""))
        .await;
    assert_eq!(r.status, 200);
    let req = server.client().get("/200/250/resizecomp/photos/Wood.jpg");
    let r = server
        .request(req.header("If-Modified-Since", modified.as_str()))
        .await;
    assert_eq!(r.status, 304);
}

/// HEAD answers like GET, with the same headers.
#[tokio::test]
async fn head_requests_work() {
    let server = TestServer::builder().start().await;
    let req = server
        .client()
        .request(Method::HEAD, "/100/100/crop/photos/Wood.jpg");
    let r = server.request(req).await;
    assert_eq!((r.status, r.header("content-type")), (200, "image/jpeg"));
    let get = server.get("/100/100/crop/photos/Wood.jpg").await;
    assert_eq!(
        get.header("x-cache"),
        "HIT",
        "HEAD rendered and cached the variant"
    );
    let req = server.client().request(Method::HEAD, "/photos/Wood.jpg");
    assert_eq!(server.request(req).await.status, 200);
}

/// Twenty identical concurrent requests for an uncached variant render it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_misses_render_once() {
    let server = Arc::new(TestServer::builder().start().await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { server.get("/640/480/crop/webp/symbolic-d.webp").await })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    let stats = &server.state.metrics;
    assert_eq!(stats.counts().renders, 1);
    assert_eq!(stats.counts().fetches, 1);
}

/// A full queue answers 503 with Retry-After instead of queueing without bound. Regression:
/// the original was fetched before the queue was checked, so a 503 still cost a source read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_render_queue_is_503_with_retry_after() {
    let server = Arc::new(
        TestServer::builder()
            .set("ROSS__LIMITS__MAX_CONCURRENT_RENDERS", "1")
            .set("ROSS__LIMITS__MAX_QUEUE", "0")
            // Every render fetches, so fetches count the requests let in.
            .set("ROSS__CACHE__DECODED_BYTES", "0")
            .start()
            .await,
    );
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .get(&format!("/{}/500/crop/webp/symbolic-d.webp", 500 + i))
                    .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 503 {
            assert_eq!(r.header("retry-after"), "1");
            assert_eq!(r.json()["error"]["code"], "overloaded");
        }
        statuses.push(r.status);
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&503),
        "{statuses:?}"
    );
    // Refused before fetching: a 503 costs no source read.
    let served = statuses.iter().filter(|s| **s == 200).count() as u64;
    let fetches = server.state.metrics.counts().fetches;
    assert_eq!(fetches, served, "{statuses:?}");
}

/// A page's sizes of one original: one fetch and one decode, made for the largest of the
/// sizes pages ask for (known from another original's page), render them all. A purge of the
/// key (the original was replaced) makes the next size fetch and decode the new original.
#[tokio::test]
async fn several_sizes_of_one_original_share_a_fetch_and_a_decode() {
    let (_dir, media) = media_copy();
    std::fs::copy(corpus().join("photos/Dune.jpg"), media.join("other.jpg")).unwrap();
    let sizes = "72x72,200x250,300x300,1024x768";
    let server = TestServer::builder()
        .media(&media)
        .whitelist(sizes)
        .start()
        .await;
    let decodes = || {
        let decode = server.state.metrics.stage_latency("decode");
        decode.unwrap().count()
    };
    let page = ["300/300", "72/72", "1024/768"];
    for size in page {
        let r = server.get(&format!("/{size}/crop/other.jpg")).await;
        assert_eq!(r.status, 200, "{size}");
    }
    let stats = &server.state.metrics;
    let (renders, fetches, decoded) = (stats.counts().renders, stats.counts().fetches, decodes());
    let mut bodies = Vec::new();
    for size in page {
        let r = server.get(&format!("/{size}/crop/lady.jpg")).await;
        assert_eq!((r.status, r.header("x-cache")), (200, "MISS"), "{size}");
        bodies.push(r.image());
    }
    assert_eq!(
        (
            stats.counts().renders - renders,
            stats.counts().fetches - fetches,
            decodes() - decoded
        ),
        (3, 1, 1)
    );
    // The memory both caches hold is reported.
    let metrics = server.get("/metrics").await.text();
    let gauge = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(
        gauge("ross_recent_originals_bytes") > 343 * 1024,
        "{metrics}"
    );
    assert!(gauge("ross_cache_memory_bytes") > 0, "{metrics}");

    // The same sizes without reuse: the same pictures, within resampling noise.
    let (_other, media_again) = media_copy();
    let plain = TestServer::builder()
        .media(&media_again)
        .whitelist(sizes)
        .set("ROSS__CACHE__DECODED_BYTES", "0")
        .set("ROSS__CACHE__ORIGINALS_BYTES", "0")
        .start()
        .await;
    for (size, shared) in page.iter().zip(&bodies) {
        let alone = plain.get(&format!("/{size}/crop/lady.jpg")).await.image();
        assert_eq!(alone.dimensions(), shared.dimensions());
        let error = crate::util::mae(&alone, shared);
        assert!(
            error < 2.0,
            "{size}: mean error {error:.2} against a decode of its own"
        );
    }
    assert_eq!(plain.state.metrics.counts().fetches, 3);

    // Replaced and purged: the next size is the new picture.
    std::fs::copy(corpus().join("photos/Storm.jpg"), media.join("lady.jpg")).unwrap();
    let r = server
        .admin("POST", "/purge", r#"{"key": "lady.jpg"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = server.get("/200/250/crop/lady.jpg").await;
    assert_eq!(after.status, 200);
    assert_eq!(
        (stats.counts().fetches - fetches, decodes() - decoded),
        (2, 2)
    );
}

/// An original replaced within the minute its pixels are kept (and no watcher to tell) is
/// never rendered from its old pixels: the miss sees its version changed, purges the key's
/// renders (the size cached from the old picture too) and renders from the new one.
#[tokio::test]
async fn a_replaced_original_is_never_rendered_from_its_old_pixels() {
    let (_dir, media) = media_copy();
    let server = TestServer::builder()
        .media(&media)
        .set("ROSS__WHITELIST__ENABLED", "false")
        .set("ROSS__SOURCE__WATCH", "false")
        .start()
        .await;
    assert_eq!(server.get("/300/300/crop/lady.jpg").await.status, 200);
    std::fs::copy(corpus().join("photos/Storm.jpg"), media.join("lady.jpg")).unwrap();
    let after = server.get("/72/72/crop/lady.jpg").await;
    assert_eq!((after.status, after.header("x-cache")), (200, "MISS"));
    let stats = &server.state.metrics;
    assert_eq!(stats.counts().fetches, 2, "the old original was reused");

    // What a server that never saw the old picture renders.
    let (_other, fresh) = media_copy();
    std::fs::copy(corpus().join("photos/Storm.jpg"), fresh.join("lady.jpg")).unwrap();
    let plain = TestServer::builder()
        .media(&fresh)
        .set("ROSS__WHITELIST__ENABLED", "false")
        .start()
        .await;
    for size in ["72/72", "300/300"] {
        let expected = plain.get(&format!("/{size}/crop/lady.jpg")).await.image();
        let got = server.get(&format!("/{size}/crop/lady.jpg")).await.image();
        let error = crate::util::mae(&got, &expected);
        assert!(
            error < 2.0,
            "{size}: mean error {error:.2} against the new picture"
        );
    }
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.contains("ross_source_changes_total{noticed=\"render\",outcome=\"purged\"} 1"),
        "{metrics}"
    );
}

/// A size larger than the decode kept was made for decodes again, from the kept bytes.
#[tokio::test]
async fn a_larger_size_than_the_kept_decode_decodes_again() {
    let (_dir, media) = media_copy();
    let server = TestServer::builder()
        .media(&media)
        .set("ROSS__WHITELIST__ENABLED", "false")
        .start()
        .await;
    for size in ["100/100", "1600/1000", "300/300"] {
        assert_eq!(
            server.get(&format!("/{size}/crop/lady.jpg")).await.status,
            200
        );
    }
    let stats = &server.state.metrics;
    let decodes = stats.stage_latency("decode").unwrap().count();
    assert_eq!(
        (stats.counts().renders, stats.counts().fetches, decodes),
        (3, 1, 2)
    );
}

/// The path before the router answers a plain GET of a variant in memory, and declines (for
/// the router) a HEAD, a conditional request, a variant not in memory, a size the whitelist
/// refuses and anything that is not a sized URL, handing the router the request's admission
/// (made once, there).
#[tokio::test]
async fn memory_hits_are_answered_before_the_router_and_nothing_else() {
    use poem::http::{HeaderMap, HeaderValue, Method, Uri};
    use ross::http::Fast;
    use ross::routes::admission::Admission;
    use ross::routes::fast::MemoryHits;
    let server = TestServer::builder().whitelist("120x80").start().await;
    let hits = MemoryHits::new(server.state.clone());
    let admission = |fast: Fast| match fast {
        Fast::Pass(learned) => learned.get::<Admission>().cloned(),
        Fast::Answered(_) => None,
    };
    let memory_hit =
        |method: &Method, uri: &Uri, headers: &HeaderMap| match hits.answer(method, uri, headers) {
            Fast::Answered(response) => Some(response),
            Fast::Pass(_) => None,
        };
    let state = &server.state;
    let uri = |path: &str| path.parse::<Uri>().unwrap();
    let none = HeaderMap::new();
    let hit = "/120/80/crop/photos/Dune.jpg";
    assert!(memory_hit(&Method::GET, &uri(hit), &none).is_none()); // not rendered yet
    let miss = server.get(hit).await;
    assert_eq!(miss.status, 200);
    let answered = memory_hit(&Method::GET, &uri(hit), &none).expect("in memory");
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.headers()["x-cache"], "HIT");
    assert_eq!(answered.headers()["etag"], miss.header("etag"));
    assert_eq!(answered.into_body().into_vec().await.unwrap(), miss.body);
    let mut conditional = HeaderMap::new();
    conditional.insert("if-none-match", HeaderValue::from_static("\"x\""));
    assert!(memory_hit(&Method::GET, &uri(hit), &conditional).is_none());
    assert!(memory_hit(&Method::HEAD, &uri(hit), &none).is_none());
    for other in [
        "/72/72/crop/photos/Dune.jpg",
        "/120/80/nosuchmode/photos/Dune.jpg",
        "/photos/Dune.jpg",
        "/metrics",
    ] {
        assert!(
            memory_hit(&Method::GET, &uri(other), &none).is_none(),
            "{other}"
        );
    }
    // What the router is handed, so it neither parses nor checks again.
    let passed = |path: &str| admission(hits.answer(&Method::GET, &uri(path), &none)).unwrap();
    assert!(matches!(
        passed("/72/72/crop/photos/Dune.jpg"),
        Admission::Render(Err(e)) if e.code == ross::error::ErrorCode::SizeNotAllowed
    ));
    assert!(matches!(
        passed("/120/80/nosuchmode/photos/Dune.jpg"),
        Admission::Render(Err(e)) if e.code == ross::error::ErrorCode::UnknownMode
    ));
    assert!(matches!(passed("/photos/Dune.jpg"), Admission::Original(_)));
    assert!(matches!(
        admission(hits.answer(&Method::HEAD, &uri(hit), &none)),
        Some(Admission::Render(Ok(_)))
    ));
    // While a purge that may remove it runs, the router answers (and renders).
    let job = state
        .cache
        .begin_purge(ross::cache::Selector::Key("photos/Dune.jpg".into()))
        .unwrap();
    assert!(memory_hit(&Method::GET, &uri(hit), &none).is_none());
    state.cache.finish_purge(job).unwrap();
    assert!(memory_hit(&Method::GET, &uri(hit), &none).is_none());
}
