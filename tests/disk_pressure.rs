//! A full disk, on small tmpfs mounts (the tests run as root, as the README's test command
//! does; they fail where mounting is not allowed): `cache.dir` running out of room evicts and retries, `cache.min_free_bytes` keeps
//! headroom, and a full `data_dir` refuses what needs it with 503 `storage-full` while purges
//! still stop files being served and renders are still served.

use std::time::Duration;

use std::path::Path;

use crate::util::{TestServer, Tmpfs};

/// A tmpfs of `bytes` at `path`, or a failure saying why there is none.
fn tmpfs(path: &Path, bytes: u64) -> Tmpfs {
    Tmpfs::mount(path, bytes)
        .expect("cannot mount a tmpfs: run the tests as root (the README's test command does)")
}

/// Distinct sizes of one photo: each a render of 20 to 50 kB.
fn sizes(n: u32) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!("/{}/{}/crop/photos/Dune.jpg", 400 + i, 300 + i % 40))
}

/// `cache.dir` on a 2 MiB file system with `max_bytes` far above it: every render is served
/// (none fails with a 500), writes that meet a full disk evict the least recently served and
/// retry, so nearly every render is still cached, and the count of the disk stays within it.
#[tokio::test]
async fn a_full_cache_disk_evicts_and_retries_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = tmpfs(&dir.path().join("cache"), 2 << 20);
    let server = TestServer::builder()
        .set("ROSS__CACHE__MAX_BYTES", &(100u64 << 20).to_string())
        .set("ROSS__CACHE__MIN_FREE_BYTES", "0")
        .set("ROSS__CACHE__MEMORY_BYTES", "0")
        .start_at(dir.path())
        .await;
    server.settled().await;
    for path in sizes(150) {
        let r = server.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let counts = server.state.metrics.counts();
    assert!(counts.evicted_entries > 0, "nothing evicted: {counts:?}");
    assert!(
        counts.cache_no_space <= 5,
        "{} renders left uncached though eviction could make room",
        counts.cache_no_space
    );
    let stats = server.state.cache.stats();
    assert!(stats.disk_bytes <= 2 << 20, "{stats:?}");
    // The last renders are hits.
    let last = sizes(150).last().unwrap();
    assert_eq!(server.get(&last).await.header("x-cache"), "HIT");
    drop(server);
    drop(fs);
}

/// `cache.min_free_bytes` keeps that much free on the cache's disk, evicting below it, though
/// `max_bytes` would allow more.
#[tokio::test]
async fn min_free_bytes_keeps_headroom_on_the_cache_disk() {
    let dir = tempfile::tempdir().unwrap();
    let fs = tmpfs(&dir.path().join("cache"), 4 << 20);
    let min_free = 2u64 << 20;
    let server = TestServer::builder()
        .set("ROSS__CACHE__MAX_BYTES", &(100u64 << 20).to_string())
        .set("ROSS__CACHE__MIN_FREE_BYTES", &min_free.to_string())
        .start_at(dir.path())
        .await;
    server.settled().await;
    let mut lowest = u64::MAX;
    for path in sizes(150) {
        assert_eq!(server.get(&path).await.status, 200, "{path}");
        lowest = lowest.min(fs.free());
    }
    let counts = server.state.metrics.counts();
    assert!(counts.evicted_entries > 0, "nothing evicted: {counts:?}");
    assert_eq!(counts.cache_no_space, 0);
    // A render in flight may take a little of the headroom before eviction catches up.
    assert!(
        lowest + (64 << 10) >= min_free,
        "{lowest} bytes free, under min_free_bytes {min_free}"
    );
    drop(server);
    drop(fs);
}

/// A full `data_dir`: edits answer 503 `storage-full` (with `Retry-After`), renders are served
/// but not cached, purges still take the files away; once there is room, all works again.
#[tokio::test]
async fn a_full_data_dir_refuses_writes_with_503_and_purges_still_work() {
    let dir = tempfile::tempdir().unwrap();
    // data_dir holds a private copy of each plugin too (about 35 MB in this build).
    let fs = tmpfs(&dir.path().join("data"), 96 << 20);
    let server = TestServer::builder()
        .set("ROSS__WHITELIST__ENABLED", "false")
        .start_at(dir.path())
        .await;
    server.settled().await;
    let cached = [
        "/100/100/crop/photos/Dune.jpg",
        "/100/80/crop/photos/Dune.jpg",
    ];
    for path in cached {
        let r = server.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(server.get(path).await.header("x-cache"), "HIT");
    }
    // Less free than ross keeps for sled (a tenth of this file system).
    let filler = fs.fill_to(2 << 20);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = server.admin("PUT", "/whitelist/77x77", "").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "storage-full");
    assert_eq!(r.header("retry-after"), "60");

    let fresh = "/101/101/crop/photos/Dune.jpg";
    for _ in 0..2 {
        let r = server.get(fresh).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), "MISS", "cached with data_dir full");
    }
    assert!(server.state.metrics.counts().cache_no_space >= 2);

    let r = server
        .admin("POST", "/purge", r#"{"key": "photos/Dune.jpg"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cache = server.cache_dir();
    for path in cached {
        let file = cache.join("jpeg").join(&path[1..]);
        assert!(
            !file.exists(),
            "{} still there to be served",
            file.display()
        );
        assert_eq!(server.get(path).await.header("x-cache"), "MISS");
    }
    let r = server.admin("POST", "/purge", r#"{"all": true}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());

    std::fs::remove_file(filler).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = server.admin("PUT", "/whitelist/77x77", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    server.get(fresh).await;
    assert_eq!(server.get(fresh).await.header("x-cache"), "HIT");
    drop(server);
    drop(fs);
}
