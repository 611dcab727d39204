use std::process::Command;
use std::time::Duration;

use crate::process::{http_get, Ross};
use crate::util::{build_dir, fixture_plugin, plugin_folder};

/// A bad config stops start-up with one line per bad key, naming it; exit code 2.
#[test]
fn bad_configuration_names_every_key() {
    let out = Command::new(build_dir().join("ross"))
        .arg("check-config")
        .env("ROSS__LIMITS__MAX_WIDTH", "wide")
        .env("ROSS__WHITELIST__SIZES", "72x72,big")
        .env("ROSS__NOPE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 3, "{err}");
    for needle in [
        "limits.max_width",
        "ROSS__LIMITS__MAX_WIDTH",
        "whitelist.sizes",
        "nope",
    ] {
        assert!(err.contains(needle), "{needle} not in {err}");
    }
    let ok = Command::new(build_dir().join("ross"))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(ok.status.success());
    let text = String::from_utf8(ok.stdout).unwrap();
    assert!(
        text.contains("server.listen = \"127.0.0.1:8080\""),
        "{text}"
    );
}

/// A broken plugin file is logged and start-up goes on.
#[test]
fn broken_plugins_do_not_stop_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(&[
        build_dir().join("libcrop.so"),
        fixture_plugin("abi_mismatch_plugin"),
    ]);
    std::fs::write(plugins.path().join("libbroken.so"), b"garbage").unwrap();
    let ross = Ross::start(
        dir.path(),
        &[("ROSS__PLUGINS__DIR", plugins.path().to_str().unwrap())],
    );
    let (status, _) = http_get(
        ross.port,
        "/100/100/crop/photos/Dune.jpg",
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(status, 200);
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        log.contains("libbroken.so") && log.contains("not a loadable shared library"),
        "{log}"
    );
    assert!(
        log.contains("libabi_mismatch_plugin.so") && log.contains("incompatible plugin ABI"),
        "{log}"
    );
}

/// Killing the server while it renders leaves no partial file in the cache: every variant
/// file present is a whole image, and the next start clears unfinished temporaries.
#[test]
fn a_render_killed_half_way_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut ross = Ross::start(dir.path(), &[("ROSS__LIMITS__MAX_CONCURRENT_RENDERS", "1")]);
    let port = ross.port;
    let clients: Vec<_> = (0..12)
        .map(|i| {
            std::thread::spawn(move || {
                let path = format!("/{}/1500/crop/webp/symbolic-d.webp", 1500 + i);
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
    let variants = dir.path().join("cache/1500");
    let mut complete = 0;
    for entry in std::fs::read_dir(&variants).into_iter().flatten().flatten() {
        let file = entry.path().join("crop/webp/symbolic-d.webp");
        if file.exists() {
            // Variants are JPEG whatever the key's extension: decode by content.
            let bytes = std::fs::read(&file).unwrap();
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
    let _restarted = Ross::start(dir.path(), &[]);
    let leftovers = std::fs::read_dir(dir.path().join("cache/.tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "temporaries survived a restart");
}
