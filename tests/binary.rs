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
