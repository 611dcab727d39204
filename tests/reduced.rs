use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{http_get, Ross};
use crate::util::{corpus, mae, TestServer};

/// The sizes these tests whitelist: the default four, and a shop's two larger ones.
const SIZES: &str = "72x72,200x250,300x300,400x500,800x1000,1024x768";

/// A media folder holding `files` of the corpus, each under the key given.
fn media_with(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for (from, key) in files {
        let to = dir.path().join(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(corpus().join(from), to).unwrap();
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

/// A server of `media` with [`SIZES`] whitelisted and no decoded pixels kept in the workers:
/// what it renders again comes from the copies (or the originals).
fn copies_only(media: &Path) -> crate::util::TestServerBuilder {
    TestServer::builder()
        .media(media)
        .whitelist(SIZES)
        .set("ROSS__CACHE__DECODED_BYTES", "0")
}

/// The reduced originals' files of the server whose `data_dir` is `data`.
fn copies(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("reduced"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn decodes(server: &TestServer) -> u64 {
    server
        .state
        .metrics
        .stage_latency("decode")
        .unwrap()
        .count()
}

/// Waits for the copy made by the last render to be stored (it is written after the answer).
async fn copies_kept(server: &TestServer, n: u64) {
    let started = std::time::Instant::now();
    while server.state.metrics.counts().reduced_kept < n {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no reduced original was kept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Once a shop's sizes are known (asked for once, of another original), the first size of an
/// original decodes it, for the largest of them, and keeps that decode as its copy; every
/// later size renders from the copy, with no fetch and no decode, and is the very render from
/// the original, byte for byte: on the corpus photos and JPEG variants, a PNG and a WebP, in
/// every mode that scales, at every size.
#[tokio::test]
async fn later_sizes_render_from_the_reduced_original_within_the_error_bound() {
    let mut files: Vec<String> = Vec::new();
    for folder in ["photos", "jpeg-variants"] {
        for e in std::fs::read_dir(corpus().join(folder)).unwrap().flatten() {
            files.push(format!("{folder}/{}", e.file_name().to_string_lossy()));
        }
    }
    // A photo with transparency (its copy keeps the alpha channel), and a large WebP.
    files.push("png/tmshre_riaphotographs_alpha.png".into());
    files.push("webp/symbolic-d.webp".into());
    files.sort();
    let mut pairs: Vec<(&str, &str)> = files.iter().map(|f| (f.as_str(), f.as_str())).collect();
    pairs.push(("photos/Dune.jpg", "warm-up.jpg"));
    let (_dir, media) = media_with(&pairs);
    // A large PNG: decoded into cells of at least three times the largest size shown, which is
    // its copy.
    let lady = image::open(corpus().join("photos/LadyBird.jpg")).unwrap();
    lady.save(media.join("photos/LadyBird.png")).unwrap();
    files.push("photos/LadyBird.png".into());
    // No pixels kept by the workers, no originals kept by the server: only the copies.
    let tiered = copies_only(&media).start().await;
    let plain = copies_only(&media)
        .set("ROSS__CACHE__ORIGINALS_BYTES", "0")
        .start()
        .await;
    let sizes: Vec<&str> = SIZES.split(',').collect();
    let modes = ["crop", "resize", "resizecomp"];
    // Every size of every mode, asked for once: both servers now decode for all of them.
    for server in [&tiered, &plain] {
        for mode in modes {
            for size in &sizes {
                let path = format!("/{}/{mode}/warm-up.jpg", size.replace('x', "/"));
                assert_eq!(server.get(&path).await.status, 200, "{path}");
            }
        }
    }
    let kept = tiered.state.metrics.counts().reduced_kept;
    let before = tiered.state.metrics.counts();
    let decoded_before = decodes(&tiered);
    let mut n = 0;
    for (i, file) in files.iter().enumerate() {
        for mode in modes {
            for size in &sizes {
                let path = format!("/{}/{mode}/{file}", size.replace('x', "/"));
                let got = tiered.get(&path).await;
                assert_eq!(got.status, 200, "{path}: {}", got.text());
                // The copy is stored after the first answer: the next sizes wait for it.
                copies_kept(&tiered, kept + i as u64 + 1).await;
                let expected = plain.get(&path).await;
                // The copy is the decode: the very render, byte for byte.
                assert!(
                    got.body == expected.body,
                    "{path}: differs from the render from the original (mean error {:.3})",
                    mae(&got.image(), &expected.image())
                );
                n += 1;
            }
        }
    }
    let counts = tiered.state.metrics.counts();
    let originals = files.len() as u64;
    // One fetch and one decode per original; every other render read its copy back.
    assert_eq!(counts.fetches - before.fetches, originals);
    assert_eq!(decodes(&tiered) - decoded_before, originals);
    assert_eq!(
        counts.reduced_renders - before.reduced_renders,
        counts.renders - before.renders - originals
    );
    println!("reduced originals: {n} renders, each the very render from the original");
    assert_eq!(n, files.len() * modes.len() * sizes.len());
    assert_eq!(
        copies(&tiered.state.settings.data_dir).len(),
        files.len() + 1
    );
}

/// An original is decoded for the sizes asked for so far, and its copy serves them; a larger
/// size asked for the first time decodes it again, for that size too, and its copy is
/// replaced by the larger one, which serves every size asked for since. A mode that needs the
/// whole original does not make the others' decodes whole. A resize is decoded
/// for the box the picture fits within: LadyBird (2560x1600) at 800x1000 is shown 800 wide, and
/// its copy is 1280x800 (the DCT scale of 1/2), not the 2560x1600 a cover of 800x1000 needs.
#[tokio::test]
async fn a_size_asked_for_the_first_time_replaces_the_copy_with_a_larger_one() {
    let (_dir, media) = media_with(&[
        ("photos/LadyBird.jpg", "lady.jpg"),
        ("photos/Storm.jpg", "storm.jpg"),
    ]);
    let server = copies_only(&media).start().await;
    let data = server.state.settings.data_dir.clone();
    let sizes_of_copies = || {
        let mut sizes: Vec<u64> = copies(&data)
            .iter()
            .map(|name| {
                std::fs::metadata(data.join("reduced").join(name))
                    .unwrap()
                    .len()
            })
            .collect();
        sizes.sort_unstable();
        sizes
    };
    let copy_bytes = || {
        let sizes = sizes_of_copies();
        assert_eq!(sizes.len(), 1, "{sizes:?}");
        sizes[0]
    };
    let get = |path: &'static str| {
        let server = &server;
        async move {
            let r = server.get(path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
        }
    };
    get("/72/72/crop/lady.jpg").await;
    copies_kept(&server, 1).await;
    // Decoded at 1/8 for 72x72 (320x200).
    assert_eq!(copy_bytes(), 40 + 320 * 200 * 3);
    get("/800/1000/resize/lady.jpg").await;
    copies_kept(&server, 2).await;
    assert_eq!(decodes(&server), 2);
    assert_eq!(copy_bytes(), 40 + 1280 * 800 * 3);
    // Every size asked for so far, and any smaller, from the copy.
    get("/300/300/crop/lady.jpg").await;
    get("/400/500/resize/lady.jpg").await;
    assert_eq!(decodes(&server), 2);
    assert_eq!(server.state.metrics.counts().reduced_renders, 2);
    assert_eq!(server.state.metrics.counts().fetches, 2);
    // A mode that needs the whole original (trimresize) is decoded whole for its own requests,
    // and makes no copy; the other modes' decodes stay reduced, and keep theirs: Storm
    // (1920x1280) fitted within 800x1000 is decoded at 1/2, 960x640.
    get("/300/300/trimresize/lady.jpg").await;
    assert_eq!(copy_bytes(), 40 + 1280 * 800 * 3);
    get("/72/72/crop/storm.jpg").await;
    copies_kept(&server, 3).await;
    assert_eq!(sizes_of_copies(), [40 + 960 * 640 * 3, 40 + 1280 * 800 * 3]);
}

/// A purge of an original drops its reduced copy with its renders: the next size decodes
/// the original again. A purge of a mode or a size leaves it.
#[tokio::test]
async fn purging_an_original_drops_its_reduced_copy() {
    let (_dir, media) = media_with(&[
        ("photos/LadyBird.jpg", "shop/lady.jpg"),
        ("photos/Storm.jpg", "shop/storm.jpg"),
    ]);
    let server = copies_only(&media).start().await;
    for key in ["shop/lady.jpg", "shop/storm.jpg"] {
        assert_eq!(
            server.get(&format!("/300/300/crop/{key}")).await.status,
            200
        );
    }
    copies_kept(&server, 2).await;
    assert_eq!(copies(&server.state.settings.data_dir).len(), 2);
    for purge in [r#"{"mode": "crop"}"#, r#"{"size": "72x72"}"#] {
        let r = server.admin("POST", "/purge", purge).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    server.settled().await;
    assert_eq!(copies(&server.state.settings.data_dir).len(), 2);
    let r = server
        .admin("POST", "/purge", r#"{"key": "shop/lady.jpg"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    server.settled().await;
    assert_eq!(copies(&server.state.settings.data_dir).len(), 1);
    let before = decodes(&server);
    assert_eq!(server.get("/72/72/crop/shop/lady.jpg").await.status, 200);
    assert_eq!(server.get("/72/72/crop/shop/storm.jpg").await.status, 200);
    // lady's copy was purged: decoded again; storm's is read back.
    assert_eq!(decodes(&server), before + 1);
    let r = server.admin("POST", "/purge", r#"{"all": true}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    server.settled().await;
    assert!(copies(&server.state.settings.data_dir).is_empty());
    let stats = server.state.cache.reduced().unwrap().stats();
    assert_eq!((stats.copies, stats.disk), (0, 0));
}

/// An original replaced (with no watcher to tell) is never rendered from the copy of its old
/// picture: the miss asks the source for its version first, purges what was made from the
/// old one, copy included, and renders the new picture.
#[tokio::test]
async fn a_changed_original_is_never_rendered_from_a_stale_copy() {
    let (_dir, media) = media_with(&[("photos/LadyBird.jpg", "lady.jpg")]);
    let server = copies_only(&media)
        .set("ROSS__SOURCE__WATCH", "false")
        .start()
        .await;
    assert_eq!(server.get("/1024/768/crop/lady.jpg").await.status, 200);
    copies_kept(&server, 1).await;
    std::fs::copy(corpus().join("photos/Storm.jpg"), media.join("lady.jpg")).unwrap();
    let after = server.get("/300/300/crop/lady.jpg").await;
    assert_eq!((after.status, after.header("x-cache")), (200, "MISS"));
    assert_eq!(server.state.metrics.counts().reduced_renders, 0);

    let (_other, fresh) = media_with(&[("photos/Storm.jpg", "lady.jpg")]);
    let plain = TestServer::builder()
        .media(&fresh)
        .whitelist(SIZES)
        .set("ROSS__CACHE__ORIGINALS_BYTES", "0")
        .start()
        .await;
    let expected = plain.get("/300/300/crop/lady.jpg").await.image();
    let error = mae(&after.image(), &expected);
    assert!(error < 1.5, "mean error {error:.2} against the new picture");
    // The new picture's copy replaced the old one's, and serves the next size.
    copies_kept(&server, 2).await;
    assert_eq!(copies(&server.state.settings.data_dir).len(), 1);
    let next = server.get("/72/72/crop/lady.jpg").await.image();
    let expected = plain.get("/72/72/crop/lady.jpg").await.image();
    assert!(mae(&next, &expected) < 1.5);
    assert_eq!(server.state.metrics.counts().reduced_renders, 1);
}

/// A copy damaged on disk (a flipped bit, a file cut short) is found so by the worker that
/// reads it, before any of its pixels are used: the render comes from the original, the
/// damaged copy is dropped, and the decode's copy takes its place.
#[tokio::test]
async fn a_damaged_copy_is_found_by_its_reader_and_replaced() {
    let (_dir, media) = media_with(&[("photos/LadyBird.jpg", "lady.jpg")]);
    let server = copies_only(&media).start().await;
    let data = server.state.settings.data_dir.clone();
    let (_plain_dir, plain_media) = media_with(&[("photos/LadyBird.jpg", "lady.jpg")]);
    let plain = TestServer::builder()
        .media(&plain_media)
        .whitelist(SIZES)
        .set("ROSS__CACHE__ORIGINALS_BYTES", "0")
        .start()
        .await;
    // Both know the sizes asked for: both decode for the same box.
    for shop in [&server, &plain] {
        assert_eq!(shop.get("/1024/768/crop/lady.jpg").await.status, 200);
    }
    copies_kept(&server, 1).await;
    type Harm = fn(&mut Vec<u8>);
    let damages: [(&str, Harm); 2] = [
        ("a flipped bit", |bytes| {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
        }),
        ("cut short", |bytes| bytes.truncate(bytes.len() - 1000)),
    ];
    for (n, (damage, harm)) in damages.iter().enumerate() {
        let names = copies(&data);
        assert_eq!(names.len(), 1, "{names:?}");
        let path = data.join("reduced").join(&names[0]);
        let mut bytes = std::fs::read(&path).unwrap();
        harm(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let decoded = decodes(&server);
        let size = ["300/300", "72/72"][n];
        let got = server.get(&format!("/{size}/crop/lady.jpg")).await;
        assert_eq!(got.status, 200, "{damage}: {}", got.text());
        let expected = plain.get(&format!("/{size}/crop/lady.jpg")).await;
        assert!(
            got.body == expected.body,
            "{damage}: not the render from the original"
        );
        assert_eq!(decodes(&server), decoded + 1, "{damage}");
        // The damaged copy went, and the decode's copy replaced it.
        copies_kept(&server, 2 + n as u64).await;
        let now = copies(&data);
        assert!(now.len() == 1 && now != names, "{damage}: {now:?}");
    }
    // Read for a mode that makes no copy (it needs the whole original): dropped all the same.
    let path = data.join("reduced").join(&copies(&data)[0]);
    std::fs::write(&path, b"ROSSRPX").unwrap();
    let got = server.get("/300/300/trimresize/lady.jpg").await;
    assert_eq!(got.status, 200, "{}", got.text());
    // Dropped in the background, after the answer.
    let started = std::time::Instant::now();
    while !copies(&data).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            copies(&data)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = server.state.cache.reduced().unwrap().stats();
    assert_eq!((stats.copies, stats.disk), (0, 0));
    assert_eq!(server.state.metrics.counts().reduced_renders, 0);
}

/// `kill -9` at every step of keeping a copy (the file half-written, written but not
/// recorded, its record removed but not its file) leaves nothing a restarted server serves
/// from: what the crash left is cleaned up, and every size renders as from the original.
#[test]
fn a_kill_while_keeping_a_copy_leaves_nothing_served_from_a_partial_one() {
    let (_media_dir, media) = media_with(&[("photos/LadyBird.jpg", "lady.jpg")]);
    let root = media.to_str().unwrap().to_owned();
    let settings = [
        ("ROSS__SOURCE__ROOT", root.as_str()),
        ("ROSS__WHITELIST__ENABLED", "true"),
        ("ROSS__WHITELIST__SIZES", SIZES),
        ("ROSS__CACHE__DECODED_BYTES", "0"),
    ];
    // What a server without copies renders.
    let reference_dir = tempfile::tempdir().unwrap();
    let mut plain = settings.to_vec();
    plain.push(("ROSS__CACHE__ORIGINALS_BYTES", "0"));
    let reference = Ross::start(reference_dir.path(), &plain);
    let render = |port: u16, size: &str| {
        let (status, body) = http_get(
            port,
            &format!("/{size}/crop/lady.jpg"),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(status, 200, "{size}");
        image::load_from_memory(&body).unwrap().to_rgb8()
    };
    let expected: Vec<_> = ["300/300", "72/72"]
        .iter()
        .map(|s| render(reference.port, s))
        .collect();
    reference.stop();
    for point in [
        "reduced.part-written",
        "reduced.renamed",
        "reduced.record-removed",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut crashing = settings.to_vec();
        crashing.push(("ROSS_TEST_CRASH_AT", point));
        let mut ross = Ross::start(dir.path(), &crashing);
        let port = ross.port;
        let watched = data.clone();
        let first = std::thread::spawn(move || {
            let _ = http_get(port, "/1024/768/crop/lady.jpg", Duration::from_secs(30));
            // The copy is stored after the answer: the purge waits for it (or for the kill).
            let started = std::time::Instant::now();
            while !copies(&watched).iter().any(|f| f.ends_with(".copy"))
                && started.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            // A purge of the key removes the copy (its record first, then its file).
            let auth = format!("Bearer {}", crate::process::ADMIN_TOKEN);
            let _ = crate::process::http_request(
                port,
                "POST",
                "/admin/api/purge",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                br#"{"key": "lady.jpg"}"#,
                Duration::from_secs(30),
            );
        });
        assert!(
            ross.ended_within(Duration::from_secs(60)),
            "never reached {point}"
        );
        first.join().unwrap();
        drop(ross);
        let restarted = Ross::start(dir.path(), &settings);
        restarted.settled();
        let left = copies(&data);
        assert!(
            left.iter().all(|f| f.ends_with(".copy")),
            "{point}: {left:?}"
        );
        for (size, expected) in ["300/300", "72/72"].iter().zip(&expected) {
            let got = render(restarted.port, size);
            let error = mae(&got, expected);
            assert!(error < 1.5, "{point} {size}: mean error {error:.2}");
        }
        // Every copy on disk now is whole and recorded: one, for the one original.
        let started = std::time::Instant::now();
        while copies(&data).len() != 1 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{point}: {:?}",
                copies(&data)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        restarted.stop();
    }
}
