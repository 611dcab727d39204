//! The plugin author kit, followed as a new author would: `ross plugin new`, the generated
//! crate's own tests, a release build, `ross plugin check`, and the library dropped into a
//! running server. A test binary of its own so its cargo builds do not compete for the CPU
//! with the timing-sensitive tests of `e2e`.

#[allow(dead_code)]
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use util::{build_dir, TestServer};

fn ross(args: &[&str]) -> std::process::Output {
    Command::new(build_dir().join("ross"))
        .args(args)
        .output()
        .unwrap()
}

fn cargo(dir: &Path, args: &[&str]) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(args)
        .arg("--offline")
        .current_dir(dir)
        // Shared between runs so the plugin's dependencies build once per machine.
        .env("CARGO_TARGET_DIR", workspace.join("target/plugin-kit"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_new_plugin_builds_passes_its_tests_and_is_served() {
    let work = tempfile::tempdir().unwrap();
    let crate_dir = work.path().join("mirror");
    let out = ross(&[
        "plugin",
        "new",
        "mirror",
        "--dir",
        crate_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["Cargo.toml", "src/lib.rs", "README.md"] {
        assert!(crate_dir.join(file).is_file(), "{file} not created");
    }
    // Refusals: a bad mode name, an occupied folder.
    let bad = ross(&[
        "plugin",
        "new",
        "Mirror!",
        "--dir",
        work.path().join("x").to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot be a mode name"));
    let again = ross(&[
        "plugin",
        "new",
        "mirror",
        "--dir",
        crate_dir.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    cargo(&crate_dir, &["test", "--release"]);
    cargo(&crate_dir, &["build", "--release"]);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let library: PathBuf = workspace.join("target/plugin-kit/release/libmirror.so");
    let check = ross(&["plugin", "check", library.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{said}");
    assert!(said.contains("mode mirror 0.1.0 loads"), "{said}");

    // Published into a running server's plugin folder: served within 2 s, mirrored crop.
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        build_dir().join("libcrop.so"),
        plugins.path().join("libcrop.so"),
    )
    .unwrap();
    let server = TestServer::builder().plugins(plugins.path()).start().await;
    let tmp = plugins.path().join(".libmirror.so.new");
    std::fs::copy(&library, &tmp).unwrap();
    std::fs::rename(&tmp, plugins.path().join("libmirror.so")).unwrap();
    let started = Instant::now();
    let mirrored = loop {
        let r = server.get("/240/160/mirror/photos/Storm.jpg").await;
        if r.status == 200 {
            break r.image();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "not served: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let plain = server.get("/240/160/crop/photos/Storm.jpg").await.image();
    let flipped = image::imageops::flip_horizontal(&plain);
    let diff = util::mae(&mirrored, &flipped);
    assert!(diff < 3.0, "not the crop mirrored: MAE {diff}");
}
