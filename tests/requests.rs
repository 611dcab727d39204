use std::path::Path;

use crate::util::{built, corpus, plugin_folder, TestServer};

/// A media root inside a temporary folder, with a secret next to it that must never be read.
fn media_with_secret() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir_all(media.join("photos")).unwrap();
    std::fs::copy(
        corpus().join("photos/FreshFlower.jpg"),
        media.join("photos/a.jpg"),
    )
    .unwrap();
    std::fs::copy(
        corpus().join("photos/FreshFlower.jpg"),
        dir.path().join("secret.jpg"),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.jpg"), media.join("escape.jpg")).unwrap();
    (dir, media)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn traversal_attempts_are_400_and_read_nothing_outside_the_root() {
    let (dir, media) = media_with_secret();
    let server = TestServer::builder().media(&media).start().await;
    for path in [
        "/300/300/crop/../secret.jpg",
        "/300/300/crop/photos/../../secret.jpg",
        "/300/300/crop/%2e%2e/secret.jpg",
        "/300/300/crop/%2E%2E%2Fsecret.jpg",
        "/300/300/crop//etc/passwd",
        "/300/300/crop/%2Fetc%2Fpasswd",
        "/300/300/crop/photos%5c..%5c..%5csecret.jpg",
        "/300/300/crop/a%00.jpg",
        "/300/300/crop/photos/a.jpg%00.png",
        "/../secret.jpg",
        "/%2e%2e/secret.jpg",
        "//etc/passwd",
    ] {
        let r = server.get(path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid-key", "{path}");
    }
    // A symlink out of the root is treated as missing.
    assert_eq!(server.get("/300/300/crop/escape.jpg").await.status, 404);
    assert_eq!(server.get("/escape.jpg").await.status, 404);
    // Nothing was written anywhere but the cache.
    assert_eq!(files_under(&media).len(), 2, "{:?}", files_under(&media));
    let outside: Vec<String> = files_under(dir.path())
        .into_iter()
        .filter(|f| !f.contains("/media/"))
        .collect();
    assert_eq!(
        outside,
        vec![dir.path().join("secret.jpg").display().to_string()]
    );
    assert_eq!(server.get("/300/300/crop/photos/a.jpg").await.status, 200);
}

#[tokio::test]
async fn malformed_sizes_are_400() {
    let server = TestServer::builder().start().await;
    for (w, h) in [
        ("0", "300"),
        ("-1", "300"),
        ("007", "300"),
        ("2001", "300"),
        ("99999999999", "3"),
        ("300", "0"),
        ("300", "2001"),
        ("+300", "300"),
    ] {
        let r = server.get(&format!("/{w}/{h}/crop/photos/Dune.jpg")).await;
        assert_eq!(r.status, 400, "{w}x{h}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid-size");
    }
}

#[tokio::test]
async fn sizes_outside_the_whitelist_are_403_naming_the_size() {
    let server = TestServer::builder()
        .whitelist("72x72,200x250")
        .start()
        .await;
    assert_eq!(server.get("/72/72/crop/photos/Dune.jpg").await.status, 200);
    assert_eq!(
        server.get("/200/250/resize/photos/Dune.jpg").await.status,
        200
    );
    let r = server.get("/300/300/crop/photos/Dune.jpg").await;
    assert_eq!(r.status, 403);
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    // It says how to allow the size, and names no environment variable: the whitelist is
    // edited while serving, not in the settings.
    assert!(
        message.contains("300x300")
            && message.contains("/admin/api/whitelist/300x300")
            && !message.contains("ROSS__"),
        "{message}"
    );
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.header("content-type"), "application/json");
}

#[tokio::test]
async fn any_size_within_limits_works_with_the_whitelist_off() {
    let server = TestServer::builder().start().await;
    for (w, h) in [(1, 1), (17, 1999), (2000, 3)] {
        let r = server
            .get(&format!("/{w}/{h}/crop/photos/FreshFlower.jpg"))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.image().dimensions(), (w, h));
    }
}

#[tokio::test]
async fn unknown_mode_and_missing_key_are_404() {
    let server = TestServer::builder().start().await;
    let r = server.get("/300/300/nosuchmode/photos/Dune.jpg").await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("unknown-mode"))
    );
    let r = server.get("/300/300/crop/photos/missing.jpg").await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("source-not-found"))
    );
    assert_eq!(
        server.get("/300/300/crop/photos").await.status,
        404,
        "a folder is not an object"
    );
}

#[tokio::test]
async fn health_answers_ok() {
    let server = TestServer::builder().start().await;
    let r = server.get("/health").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

/// `/ready` needs loaded modes and a source that answers, and says which is missing.
#[tokio::test]
async fn ready_needs_modes_and_a_source() {
    let server = TestServer::builder().start().await;
    let r = server.get("/ready").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let modes = r.json()["modes"].clone();
    for mode in ["crop", "resize", "resizecomp"] {
        assert!(modes.as_array().unwrap().contains(&mode.into()), "{modes}");
    }

    assert_eq!(r.json()["workers"]["ok"], true, "{}", r.text());

    // Every plugin file removed while serving: no mode, not ready.
    let plugins = plugin_folder(&[built("crop")]);
    let server = TestServer::builder().plugins(plugins.path()).start().await;
    std::fs::remove_file(plugins.path().join("libcrop.so")).unwrap();
    let reloader = server.state.reloader.clone();
    tokio::task::spawn_blocking(move || reloader.scan())
        .await
        .unwrap();
    let r = server.get("/ready").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["ready"], false);
    assert_eq!(r.json()["source"]["ok"], true);

    let media = tempfile::tempdir().unwrap();
    let server = TestServer::builder().media(media.path()).start().await;
    drop(media);
    let r = server.get("/ready").await;
    assert_eq!(r.status, 503, "a media root that vanished: {}", r.text());
    assert_eq!(r.json()["source"]["ok"], false);
}

/// The README's error table lists exactly the codes ross sends, each with its status.
#[test]
fn the_readme_error_table_matches_the_code_table() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let table = readme
        .split("### Errors")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for row in table
        .lines()
        .filter(|l| l.starts_with("| 4") || l.starts_with("| 5"))
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let status: u16 = cells[1].parse().unwrap();
        for code in cells[2].split(',') {
            documented.insert((status, code.trim().trim_matches('`').to_owned()));
        }
    }
    let sent: std::collections::BTreeSet<(u16, String)> = ross::error::ErrorCode::ALL
        .iter()
        .map(|c| (c.status().as_u16(), c.as_str().to_owned()))
        .collect();
    assert_eq!(documented, sent);
}
