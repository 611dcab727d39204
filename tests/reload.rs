use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::process::{admin, cache_files, http_get, Ross};
use crate::util::{built, fixture_plugin, plugin_folder, TestServer};

/// Publishes `from` as `dir/name` the recommended way: copy to a hidden name, then rename.
fn publish(from: &Path, dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.incoming"));
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Which build of the `swap` fixture rendered `jpeg`: its fill colour.
fn colour_of(jpeg: &[u8]) -> &'static str {
    let img = image::load_from_memory(jpeg).unwrap().into_rgb8();
    let [r, _, b] = img.get_pixel(img.width() / 2, img.height() / 2).0;
    match (r > 150, b > 150) {
        (true, false) => "red",
        (false, true) => "blue",
        _ => "neither",
    }
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns how long it took.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A plugin added, removed and added again while serving is picked up within 2 s each time.
#[tokio::test]
async fn plugins_follow_the_folder_while_serving() {
    let dir = plugin_folder(&[built("crop")]);
    let server = TestServer::builder().plugins(dir.path()).start().await;
    let url = "/120/80/desaturate/photos/Dune.jpg";
    assert_eq!(server.get(url).await.status, 404);

    publish(&built("desaturate"), dir.path(), "libdesaturate.so");
    let added = within(Duration::from_secs(2), async || {
        server.get(url).await.status == 200
    })
    .await
    .expect("added plugin not served within 2 s");
    std::fs::remove_file(dir.path().join("libdesaturate.so")).unwrap();
    let removed = within(Duration::from_secs(2), async || {
        server
            .get("/121/80/desaturate/photos/Dune.jpg")
            .await
            .status
            == 404
    })
    .await
    .expect("removed plugin still served after 2 s");
    // A cached render of a removed mode is not served either.
    assert_eq!(server.get(url).await.status, 404);
    publish(&built("desaturate"), dir.path(), "libdesaturate.so");
    within(Duration::from_secs(2), async || {
        server.get(url).await.status == 200
    })
    .await
    .expect("re-added plugin not served within 2 s");
    println!(
        "hot reload: added after {} ms, removed after {} ms",
        added.as_millis(),
        removed.as_millis()
    );
    assert_eq!(server.get("/metrics").await.status, 200);
}

/// A new version of a mode purges its cached renders; the same version (a copy of the same
/// build) keeps them. The version behind the cache is remembered across restarts.
#[tokio::test]
async fn a_new_version_purges_the_cache_and_the_same_version_keeps_it() {
    let dir = plugin_folder(&[]);
    publish(&fixture_plugin("swap_red"), dir.path(), "libswap.so");
    let state = tempfile::tempdir().unwrap();
    let start = || {
        TestServer::builder()
            .plugins(dir.path())
            .set(
                "ROSS__CACHE__DIR",
                state.path().join("cache").to_str().unwrap(),
            )
            .set(
                "ROSS__DATA_DIR",
                state.path().join("data").to_str().unwrap(),
            )
            .start()
    };
    let server = start().await;
    let url = "/100/100/swap/photos/Dune.jpg";
    let first = server.get(url).await;
    assert_eq!(
        (first.header("x-cache"), colour_of(&first.body)),
        ("MISS", "red")
    );
    assert_eq!(server.get(url).await.header("x-cache"), "HIT");

    // Same build again (new inode, same version 1.0.0): the cache stays.
    publish(&fixture_plugin("swap_red"), dir.path(), "libswap.so");
    let reloaded = within(Duration::from_secs(2), async || {
        server.state.metrics.counts().plugin_loads >= 2
    })
    .await;
    assert!(reloaded.is_some(), "the same build was not reloaded");
    assert_eq!(server.get(url).await.header("x-cache"), "HIT");

    // Version 2.0.0: the red render is purged and the next one is blue.
    publish(&fixture_plugin("swap_blue"), dir.path(), "libswap.so");
    within(Duration::from_secs(2), async || {
        colour_of(&server.get(url).await.body) == "blue"
    })
    .await
    .expect("the new version's renders not served within 2 s");
    assert!(server
        .get("/metrics")
        .await
        .text()
        .contains("ross_cache_mode_purges_total 1"));
    drop(server);

    // Restarted with the old build: the cache (blue, 2.0.0) is purged at start-up.
    publish(&fixture_plugin("swap_red"), dir.path(), "libswap.so");
    let server = start().await;
    let again = server.get(url).await;
    assert_eq!(
        (again.header("x-cache"), colour_of(&again.body)),
        ("MISS", "red")
    );
}

/// With `cache.development`, the same build published again (same version) purges its
/// mode's renders, other modes' stay, and images say `Cache-Control: no-store`.
#[tokio::test]
async fn in_development_every_reload_purges_its_mode() {
    let dir = plugin_folder(&[built("crop")]);
    publish(&fixture_plugin("swap_red"), dir.path(), "libswap.so");
    let server = TestServer::builder()
        .plugins(dir.path())
        .set("ROSS__CACHE__DEVELOPMENT", "true")
        .start()
        .await;
    let swapped = "/100/100/swap/photos/Dune.jpg";
    let cropped = "/100/100/crop/photos/Dune.jpg";
    for url in [swapped, cropped] {
        let first = server.get(url).await;
        assert_eq!(first.header("cache-control"), "no-store");
        assert_eq!(server.get(url).await.header("x-cache"), "HIT");
    }
    let loads = server.state.metrics.counts().plugin_loads;
    publish(&fixture_plugin("swap_red"), dir.path(), "libswap.so");
    within(Duration::from_secs(2), async || {
        server.state.metrics.counts().plugin_loads > loads
    })
    .await
    .expect("the same build was not reloaded");
    within(Duration::from_secs(2), async || {
        server.get(swapped).await.header("x-cache") == "MISS"
    })
    .await
    .expect("the reloaded mode's render was not purged");
    assert_eq!(server.get(cropped).await.header("x-cache"), "HIT");
}

/// The `swap` mode's plugin replaced 20 times, alternating two builds and two ways of
/// publishing, while two clients keep requesting new renders: no request fails, every answer
/// is one of the two builds' output, and after the last swap, once the admin API says no file
/// is pending, new renders come from the last build (and keep coming from it).
#[test]
fn replacing_a_plugin_under_load_fails_no_request() {
    let plugins = plugin_folder(&[built("crop")]);
    let (red, blue) = (fixture_plugin("swap_red"), fixture_plugin("swap_blue"));
    publish(&red, plugins.path(), "libswap.so");
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[("ROSS__PLUGINS__DIR", plugins.path().to_str().unwrap())],
    );
    let port = ross.port;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|client| {
            let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let path = format!("/{}/{}/swap/photos/Dune.jpg", 40 + i % 500, 30 + client);
                    match http_get(port, &path, Duration::from_secs(10)) {
                        Ok((200, body)) if colour_of(&body) != "neither" => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((status, body)) => failures.lock().unwrap().push(format!(
                            "{path}: {status} {}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        )),
                        Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
                    }
                }
            })
        })
        .collect();
    for swap in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let build = if swap % 2 == 0 { &blue } else { &red };
        if swap % 4 < 2 {
            publish(build, plugins.path(), "libswap.so");
        } else {
            // Staged long before, then renamed into place.
            let staged = plugins.path().join(format!(".staged-{swap}"));
            std::fs::copy(build, &staged).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            std::fs::rename(&staged, plugins.path().join("libswap.so")).unwrap();
        }
    }
    // The last swap (19) published red. Under load the reloader can lag a swap or more
    // behind (each file settles 200 ms, then a worker checks it), so red served is not yet
    // the last red: the folder is in service once nothing in it is pending.
    let last = Instant::now();
    let mut probe = 0;
    let switched = loop {
        probe += 1;
        let (_, plugins) = admin(port, "GET", "/plugins", "");
        let settled = plugins["pending"].as_array().is_some_and(Vec::is_empty);
        let path = format!("/777/{}/swap/photos/Dune.jpg", 100 + probe);
        let (status, body) = http_get(port, &path, Duration::from_secs(10)).unwrap();
        if settled && status == 200 && colour_of(&body) == "red" {
            break Some(last.elapsed());
        }
        if last.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let served = served.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        served > 40,
        "only {served} requests were made during the swaps"
    );
    let switched = switched.expect("the last build was not in service within 10 s of its swap");
    let (_, metrics) = http_get(port, "/metrics", Duration::from_secs(5)).unwrap();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    println!(
        "20 swaps under load: {served} renders, none failed; last build served after {} ms",
        switched.as_millis()
    );
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        metrics.contains("ross_plugin_load_failures_total 0"),
        "{metrics}\n{log}"
    );
    // A render by a replaced version is served but never cached: once the last version's
    // purge has run, every cached render of the mode is red, and the index agrees.
    ross.settled();
    for i in 0..5 {
        let path = format!("/{}/31/swap/photos/Dune.jpg", 600 + i);
        let (status, body) = http_get(port, &path, Duration::from_secs(10)).unwrap();
        assert_eq!((status, colour_of(&body)), (200, "red"));
    }
    let stats = ross.settled();
    let cached: Vec<_> = cache_files(&dir.path().join("cache"))
        .into_iter()
        .filter(|f| f.components().any(|c| c.as_os_str() == "swap"))
        .collect();
    assert!(cached.len() >= 5, "{} swap renders cached", cached.len());
    for file in &cached {
        let colour = colour_of(&std::fs::read(file).unwrap());
        assert_eq!(
            colour,
            "red",
            "{} was cached by a replaced version",
            file.display()
        );
    }
    let crop = cache_files(&dir.path().join("cache")).len() - cached.len();
    assert_eq!(
        stats["cache"]["entries"],
        (cached.len() + crop) as u64,
        "{stats}"
    );
}

/// Broken files dropped in place of a working plugin are refused, and the working version
/// serves on: a truncated library, one built against another plugin-api, one whose
/// initialisation panics, one with an unresolved symbol, one whose mode fails its test render
/// (its output is larger than the box), one whose test render never finishes, and junk.
#[test]
fn broken_replacements_are_refused_and_the_old_version_serves_on() {
    let plugins = plugin_folder(&[built("crop")]);
    let red = fixture_plugin("swap_red");
    publish(&red, plugins.path(), "libswap.so");
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[("ROSS__PLUGINS__DIR", plugins.path().to_str().unwrap())],
    );
    let truncated = dir.path().join("truncated.so");
    let whole = std::fs::read(fixture_plugin("swap_blue")).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let junk = dir.path().join("junk.so");
    std::fs::write(&junk, b"\x7fELF not really a library").unwrap();
    let broken = [
        truncated,
        fixture_plugin("abi_mismatch_plugin"),
        fixture_plugin("init_panic_plugin"),
        fixture_plugin("missing_symbol_plugin"),
        fixture_plugin("oversized_plugin"),
        fixture_plugin("hanging_plugin"),
        junk,
    ];
    for (i, file) in broken.iter().enumerate() {
        publish(file, plugins.path(), "libswap.so");
        // Once refused, the failure counter moves; then swap must still be the red build.
        let started = Instant::now();
        loop {
            let (_, metrics) = http_get(ross.port, "/metrics", Duration::from_secs(5)).unwrap();
            let text = String::from_utf8_lossy(&metrics).into_owned();
            if text.contains(&format!("ross_plugin_load_failures_total {}", i + 1)) {
                break;
            }
            // The hanging plugin takes the 5 s test-render limit to be refused.
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "{} was not refused: {text}",
                file.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let path = format!("/{}/50/swap/photos/Dune.jpg", 60 + i);
        let (status, body) = http_get(ross.port, &path, Duration::from_secs(10)).unwrap();
        assert_eq!(
            (status, colour_of(&body)),
            (200, "red"),
            "after {}",
            file.display()
        );
    }
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    for needle in [
        "truncated ELF file",
        "incompatible plugin ABI",
        "plugin initialisation failed",
        "not a loadable shared library",
        "failed its test render",
        "did not finish within 5 s",
    ] {
        assert!(log.contains(needle), "{needle:?} not logged:\n{log}");
    }
}

/// With `plugins.hot_reload = false` the folder is read at start-up only.
#[tokio::test]
async fn without_hot_reload_the_folder_is_read_once() {
    let dir = plugin_folder(&[built("crop")]);
    let server = TestServer::builder()
        .plugins(dir.path())
        .set("ROSS__PLUGINS__HOT_RELOAD", "false")
        .start()
        .await;
    publish(&built("desaturate"), dir.path(), "libdesaturate.so");
    std::fs::remove_file(dir.path().join("libcrop.so")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        server.get("/50/50/desaturate/photos/Dune.jpg").await.status,
        404
    );
    assert_eq!(server.get("/50/50/crop/photos/Dune.jpg").await.status, 200);
}
