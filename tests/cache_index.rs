use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{admin, cache_bytes, cache_files, http_get, Ross};
use crate::util::{build_dir, corpus, TestServer};

/// Hundreds of variants through a cache bounded to 300 kB: after every batch the files on
/// disk stay within the bound, the most recently served survive, and the index agrees with
/// the disk.
#[tokio::test]
async fn eviction_keeps_the_cache_within_its_bound() {
    const MAX: u64 = 300_000;
    let server = TestServer::builder()
        .set("ROSS__CACHE__MAX_BYTES", &MAX.to_string())
        .start()
        .await;
    let photos = ["Dune", "Wood", "Storm", "LadyBird", "FreshFlower"];
    let mut rendered = 0;
    for batch in 0..6 {
        for i in 0..50 {
            let photo = photos[i % photos.len()];
            let url = format!("/{}/120/crop/photos/{photo}.jpg", 100 + 50 * batch + i);
            let r = server.get(&url).await;
            assert_eq!(r.status, 200, "{url}");
            rendered += 1;
            // A popular variant, served all along.
            let hot = server.get("/64/64/crop/photos/Dune.jpg").await;
            assert_eq!(hot.status, 200);
        }
        let on_disk = cache_bytes(&server.cache_dir());
        assert!(
            on_disk <= MAX,
            "after batch {batch}: {on_disk} bytes on disk, bound {MAX}"
        );
    }
    let evicted = server.state.metrics.counts().evicted_entries;
    assert!(evicted > 100, "{evicted} evicted");
    assert_eq!(
        server
            .get("/64/64/crop/photos/Dune.jpg")
            .await
            .header("x-cache"),
        "HIT",
        "the variant served all along was evicted"
    );
    server.settled().await;
    // The index and the disk agree once a background eviction still running has ended.
    let started = std::time::Instant::now();
    let stats = loop {
        let files = cache_files(&server.cache_dir());
        let stats = server.state.cache.stats();
        let agree = stats.entries == files.len() as u64
            && stats.bytes == cache_bytes(&server.cache_dir())
            && stats.bytes == server.state.cache.stats().bytes;
        if agree {
            break stats;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "index {stats:?} and disk ({} files) disagree",
            files.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sled_folder = cache_bytes(&server.state.settings.data_dir.join("sled"));
    println!(
        "eviction: {rendered} renders into a {MAX}-byte cache, {} entries ({} bytes) left, {} \
         evicted; sled: {} bytes by its own count, {sled_folder} bytes of files in its folder",
        stats.entries,
        stats.bytes,
        server.state.metrics.counts().evicted_entries,
        stats.index_disk_bytes
    );
}

/// Each purge kind through the API removes what it names and nothing else, and says how
/// many entries and bytes went.
#[tokio::test]
async fn every_purge_kind_through_the_api() {
    let server = TestServer::builder().start().await;
    let urls = [
        "/72/72/crop/photos/Dune.jpg",
        "/72/72/resize/photos/Dune.jpg",
        "/80/80/crop/photos/Dune.jpg",
        "/72/72/crop/photos/Wood.jpg",
        "/72/72/blur/png/ccwn2c08.png",
        "/90/90/crop/png/g04n2c08.png",
    ];
    for url in urls {
        assert_eq!(server.get(url).await.status, 200, "{url}");
    }
    let hit = |url: &'static str| {
        let server = &server;
        async move { server.get(url).await.header("x-cache") == "HIT" }
    };
    let purge = |body: &'static str| {
        let server = &server;
        async move {
            let r = server.admin("POST", "/purge", body).await;
            assert_eq!(r.status, 200, "{body}: {}", r.text());
            let json = r.json();
            (
                json["entries"].as_u64().unwrap(),
                json["bytes"].as_u64().unwrap(),
            )
        }
    };
    let dune_bytes: u64 = urls[..3]
        .iter()
        .map(|u| {
            let rel = format!("jpeg{u}");
            std::fs::metadata(server.cache_dir().join(rel))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(
        purge(r#"{"key": "photos/Dune.jpg"}"#).await,
        (3, dune_bytes)
    );
    assert!(hit("/72/72/crop/photos/Wood.jpg").await);
    assert_eq!(purge(r#"{"mode": "blur"}"#).await.0, 1);
    assert!(hit("/90/90/crop/png/g04n2c08.png").await);
    assert_eq!(purge(r#"{"prefix": "png/"}"#).await.0, 1);
    assert!(!hit("/90/90/crop/png/g04n2c08.png").await); // rendered again
    assert_eq!(purge(r#"{"size": "72x72"}"#).await.0, 1); // Wood
    assert_eq!(purge(r#"{"key": "photos/Nothing.jpg"}"#).await, (0, 0));
    assert_eq!(purge(r#"{"all": true}"#).await.0, 1); // the png rendered again
    assert!(cache_files(&server.cache_dir()).is_empty());
    assert_eq!(server.state.cache.stats().entries, 0);
}

/// Killing the server (SIGKILL) in the middle of a burst of renders leaves no partial file,
/// and after a restart the index agrees with the disk. Regression: this test used to look
/// in one width's folder while the renders varied the width, so its guard that some renders
/// were interrupted always held.
#[test]
fn a_burst_of_renders_killed_half_way_leaves_whole_files_and_a_consistent_index() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // Every render decodes (no pixels kept for the next size), so the burst lasts.
    let mut ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__LIMITS__MAX_CONCURRENT_RENDERS", "1"),
            ("ROSS__CACHE__DECODED_BYTES", "0"),
        ],
    );
    let port = ross.port;
    let variant = |i: u32| format!("{}/1500/crop/webp/symbolic-d.webp", 1500 + i);
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let path = format!("/{}", variant(i));
            std::thread::spawn(move || {
                let _ = http_get(port, &path, Duration::from_secs(30));
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    ross.child.kill().unwrap(); // SIGKILL: no clean-up runs
    ross.child.wait().unwrap();
    for c in clients {
        c.join().unwrap();
    }
    let mut complete = 0;
    for i in 0..12 {
        let file = cache.join("jpeg").join(variant(i));
        if let Ok(bytes) = std::fs::read(&file) {
            // Variants are JPEG whatever the key's extension: decode by content.
            let img = image::load_from_memory(&bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(img.height(), 1500);
            complete += 1;
        }
    }
    assert!(
        complete < 12,
        "every render finished before the kill; the test proved nothing"
    );
    drop(ross);
    let restarted = Ross::start(dir.path(), &[]);
    let stats = restarted.settled();
    let files = cache_files(&cache);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        image::load_from_memory(&bytes).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    assert_eq!(stats["cache"]["entries"], files.len() as u64, "{stats}");
    assert_eq!(stats["cache"]["bytes"], cache_bytes(&cache), "{stats}");
    let leftovers = std::fs::read_dir(cache.join(".tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "temporaries survived a restart");
}

/// A purge by prefix of thousands of entries killed half-way (SIGKILL) finishes after a
/// restart: the journal it left is run again before the cache is trusted.
#[test]
fn a_purge_killed_half_way_finishes_after_a_restart() {
    const VARIANTS: u32 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut ross = Ross::start(dir.path(), &[]);
    let port = ross.port;
    let clients: Vec<_> = (0..6)
        .map(|c| {
            std::thread::spawn(move || {
                for n in (c..VARIANTS).step_by(6) {
                    let (w, h) = (1 + n / 2, 8 + n % 2);
                    let path = format!("/{w}/{h}/resize/png/g04n2c08.png");
                    let (status, _) = http_get(port, &path, Duration::from_secs(30)).unwrap();
                    assert_eq!(status, 200, "{path}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let stats = ross.settled();
    assert_eq!(stats["cache"]["entries"], VARIANTS, "{stats}");
    // The index is in key order: width 1's variant is purged first.
    let first = cache.join("jpeg/1/8/resize/png/g04n2c08.png");
    assert!(first.is_file());
    let purge = std::thread::spawn(move || {
        let _ = crate::process::http_request(
            port,
            "POST",
            "/admin/api/purge",
            &[(
                "Authorization",
                &format!("Bearer {}", crate::process::ADMIN_TOKEN),
            )],
            // By prefix: a walk of the index (purges of everything, a mode or a size move
            // folders to the trash at once: `a_purge_of_everything_killed_at_any_step...`).
            br#"{"prefix": "png/"}"#,
            Duration::from_secs(60),
        );
    });
    let started = Instant::now();
    while first.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the purge never began"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    ross.child.kill().unwrap();
    ross.child.wait().unwrap();
    purge.join().unwrap();
    let left = cache_files(&cache).len();
    assert!(
        left > 0,
        "the purge finished before the kill; the test proved nothing"
    );
    drop(ross);
    let restarted = Ross::start(dir.path(), &[]);
    let stats = restarted.settled();
    assert_eq!(stats["cache"]["entries"], 0, "{stats}");
    assert_eq!(cache_files(&cache), Vec::<std::path::PathBuf>::new());
    println!("purge killed with {left} of {VARIANTS} files left; finished after the restart");
}

/// A second process on the same data_dir is refused at start-up with one clear line.
#[test]
fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Ross::start(dir.path(), &[]);
    let out = Command::new(build_dir().join("ross"))
        .arg("serve")
        .env("ROSS__SERVER__LISTEN", "127.0.0.1:0")
        .env("ROSS__SOURCE__ROOT", corpus())
        .env("ROSS__CACHE__DIR", dir.path().join("other-cache"))
        .env("ROSS__DATA_DIR", dir.path().join("data"))
        .env("ROSS__PLUGINS__DIR", build_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let data = dir.path().join("data");
    assert!(
        err.contains(&format!(
            "data_dir {} is in use by another ross process",
            data.display()
        )),
        "{err}"
    );
    assert!(
        !dir.path().join("other-cache").exists(),
        "it went on after the refusal"
    );
}

/// `cache.dir` or `data_dir` equal to the media root, inside it or containing it is a
/// configuration error, as is a cache folder that already holds files of its own: ross
/// removes what its index does not know, so it must never take over a folder of originals.
#[test]
fn dangerous_cache_folders_are_refused() {
    let media = tempfile::tempdir().unwrap();
    std::fs::copy(
        corpus().join("photos/Wood.jpg"),
        media.path().join("Wood.jpg"),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let run = |pairs: &[(&str, std::path::PathBuf)]| {
        let mut cmd = Command::new(build_dir().join("ross"));
        cmd.arg("serve")
            .env("ROSS__SERVER__LISTEN", "127.0.0.1:0")
            .env("ROSS__SOURCE__ROOT", media.path())
            .env("ROSS__CACHE__DIR", state.path().join("cache"))
            .env("ROSS__DATA_DIR", state.path().join("data"))
            .env("ROSS__PLUGINS__DIR", build_dir());
        for (k, v) in pairs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (key, var, path, says) in [
        (
            "cache.dir",
            "ROSS__CACHE__DIR",
            media.path().to_owned(),
            "is the media root",
        ),
        (
            "cache.dir",
            "ROSS__CACHE__DIR",
            media.path().join("cache"),
            "lies inside",
        ),
        (
            "cache.dir",
            "ROSS__CACHE__DIR",
            media.path().join(".."),
            "contains",
        ),
        (
            "data_dir",
            "ROSS__DATA_DIR",
            media.path().join("state"),
            "lies inside",
        ),
    ] {
        let (code, err) = run(&[(var, path.clone())]);
        assert_eq!(code, Some(2), "{key} = {}: {err}", path.display());
        assert!(err.contains(key) && err.contains(says), "{err}");
        assert!(
            err.lines().all(|l| l.starts_with("invalid setting ")),
            "{err}"
        );
    }
    let taken = state.path().join("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("notes.txt"), "mine").unwrap();
    let (code, err) = run(&[("ROSS__CACHE__DIR", taken.clone())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not a ross cache"), "{err}");
    assert_eq!(
        std::fs::read_to_string(taken.join("notes.txt")).unwrap(),
        "mine"
    );
    // Nothing was written among the originals.
    let names: Vec<_> = std::fs::read_dir(media.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["Wood.jpg"]);
}

/// The live whitelist survives a real restart (SIGTERM, then start), and a kill right after
/// an edit: an edit the API confirmed is on disk.
#[test]
fn a_confirmed_whitelist_edit_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let extra = [
        ("ROSS__WHITELIST__ENABLED", "true"),
        ("ROSS__WHITELIST__SIZES", "72x72"),
    ];
    let mut ross = Ross::start(dir.path(), &extra);
    assert_eq!(admin(ross.port, "PUT", "/whitelist/300x300", "").0, 200);
    ross.child.kill().unwrap();
    ross.child.wait().unwrap();
    drop(ross);
    let ross = Ross::start(dir.path(), &extra);
    let (status, wl) = admin(ross.port, "GET", "/whitelist", "");
    assert_eq!(status, 200);
    assert_eq!(wl["sizes"], serde_json::json!(["72x72", "300x300"]));
}

/// A purge costs what it matches: sizes of one photo rendered while another key is purged
/// (one purge before each request, and more every 20 ms alongside) are all cached, and its
/// original is fetched and decoded no more often than those of a copy of it rendered with no
/// purge at all (in the same run, so reuse is alike).
#[tokio::test]
async fn a_purge_of_another_key_costs_renders_in_flight_nothing() {
    let media = tempfile::tempdir().unwrap();
    for name in ["quiet.jpg", "busy.jpg"] {
        std::fs::copy(corpus().join("photos/Dune.jpg"), media.path().join(name)).unwrap();
    }
    let server = TestServer::builder().media(media.path()).start().await;
    server.settled().await;
    let sizes = [640, 520, 430, 360, 300, 240, 200, 160, 120, 96];
    let decodes = || {
        let latency = server.state.metrics.stage_latency("decode").unwrap();
        latency.count()
    };
    let purge = || async {
        let r = server
            .admin("POST", "/purge", r#"{"key": "elsewhere.jpg"}"#)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let run = |key: &'static str, purging: bool| {
        let server = &server;
        async move {
            let (fetches, decoded) = (server.state.metrics.counts().fetches, decodes());
            for s in sizes {
                if purging {
                    purge().await;
                }
                let r = server.get(&format!("/{s}/{s}/crop/{key}")).await;
                assert_eq!(r.status, 200, "{key} at {s}: {}", r.text());
                assert_eq!(r.header("x-cache"), "MISS");
            }
            (
                server.state.metrics.counts().fetches - fetches,
                decodes() - decoded,
            )
        }
    };
    let quiet = run("quiet.jpg", false).await;
    let done = std::sync::atomic::AtomicBool::new(false);
    let purges = async {
        let mut purges = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            purge().await;
            purges += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        purges
    };
    let busy = async {
        let counts = run("busy.jpg", true).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        counts
    };
    let (busy, purges) = tokio::join!(busy, purges);
    assert!(purges >= 1, "no purge ran alongside");
    assert_eq!(
        busy, quiet,
        "(fetches, decodes) with purges against without"
    );
    server.settled().await;
    for key in ["quiet.jpg", "busy.jpg"] {
        for s in sizes {
            let r = server.get(&format!("/{s}/{s}/crop/{key}")).await;
            assert_eq!(r.header("x-cache"), "HIT", "{key} at {s} was not cached");
        }
    }
}

/// Copies the tree at `from` to `to` (files and folders only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A purge of everything, or of a mode, killed (SIGKILL) at each of its steps and while its
/// trash is deleted: after a restart no purged file is at a variant's path (nginx never serves
/// one) and nothing purged is counted, from the first answer once the purge was answered; the
/// trash empties; the index holds exactly the files on disk (the other mode's, for a mode
/// purge); and a render after it is kept across another restart (no purge is run twice).
#[test]
fn a_purge_of_everything_or_a_mode_killed_at_any_step_holds_after_a_restart() {
    const VARIANTS: u32 = 2400;
    let base = tempfile::tempdir().unwrap();
    let ross = Ross::start(base.path(), &[]);
    let port = ross.port;
    let clients: Vec<_> = (0..4)
        .map(|c| {
            std::thread::spawn(move || {
                for n in (c..VARIANTS).step_by(4) {
                    let (w, h) = (1 + n / 4, 8 + n % 2);
                    let mode = if n % 4 < 2 { "resize" } else { "crop" };
                    // Two formats, so that the move takes more than one rename.
                    let accept = if n % 3 == 0 {
                        "image/webp"
                    } else {
                        "image/jpeg"
                    };
                    let path = format!("/{w}/{h}/{mode}/photos/Dune.jpg");
                    let (status, _) = crate::process::http_request(
                        port,
                        "GET",
                        &path,
                        &[("Accept", accept)],
                        b"",
                        Duration::from_secs(30),
                    )
                    .unwrap();
                    assert_eq!(status, 200, "{path}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(ross.settled()["cache"]["entries"], VARIANTS);
    ross.stop();
    let all = r#"{"all": true}"#;
    let mode = r#"{"mode": "resize"}"#;
    for (purge, point) in [
        (all, "purge.trash-made"),
        (all, "purge.renamed-one"),
        (all, "purge.renamed-all"),
        (all, "trash.index-some"),
        (all, "trash.deleting"),
        (all, "trash.journal-removed"),
        (mode, "purge.renamed-one"),
        (mode, "trash.index-some"),
        (mode, "trash.deleting"),
    ] {
        let left = if purge == all { 0 } else { VARIANTS / 2 };
        let dir = tempfile::tempdir().unwrap();
        copy_tree(base.path(), dir.path());
        let cache = dir.path().join("cache");
        let mut ross = Ross::start(dir.path(), &[("ROSS_TEST_CRASH_AT", point)]);
        let port = ross.port;
        let request = std::thread::spawn(move || {
            let _ = crate::process::http_request(
                port,
                "POST",
                "/admin/api/purge",
                &[(
                    "Authorization",
                    &format!("Bearer {}", crate::process::ADMIN_TOKEN),
                )],
                purge.as_bytes(),
                Duration::from_secs(60),
            );
        });
        assert!(
            ross.ended_within(Duration::from_secs(60)),
            "{purge} never reached {point}"
        );
        request.join().unwrap();
        drop(ross);
        let restarted = Ross::start(dir.path(), &[]);
        if !point.starts_with("purge.trash-made") && point != "purge.renamed-one" {
            // Answered before the kill: nothing purged is back, not for a moment.
            let (_, stats) = admin(restarted.port, "GET", "/stats", "");
            assert_eq!(stats["cache"]["entries"], left, "{purge} {point}: {stats}");
            assert_eq!(cache_files(&cache).len() as u32, left, "{purge} {point}");
        }
        restarted.settled();
        let started = Instant::now();
        loop {
            let trash = std::fs::read_dir(cache.join(".trash")).unwrap().count();
            let (_, stats) = admin(restarted.port, "GET", "/stats", "");
            if trash == 0 && stats["cache"]["entries"] == left {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{purge} {point}: the trash was not emptied ({trash} left): {stats}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(cache_files(&cache).len() as u32, left, "{purge} {point}");
        let (status, _) = http_get(
            restarted.port,
            "/40/40/resize/photos/Dune.jpg",
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(status, 200);
        let (_, stats) = admin(restarted.port, "GET", "/stats", "");
        assert_eq!(
            stats["cache"]["entries"],
            left + 1,
            "{purge} {point}: {stats}"
        );
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        assert!(!log.contains("ERROR"), "{purge} {point}: {log}");
        restarted.stop();
        let again = Ross::start(dir.path(), &[]);
        let stats = again.settled();
        assert_eq!(
            stats["cache"]["entries"],
            left + 1,
            "{purge} {point}: purged again after a restart: {stats}"
        );
        assert_eq!(
            cache_files(&cache).len() as u32,
            left + 1,
            "{purge} {point}"
        );
        again.stop();
        println!("{purge} killed at {point}: held after the restart");
    }
}
