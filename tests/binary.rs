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
        .env("ROSS__SOURCE__ROOT", crate::util::corpus())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let text = String::from_utf8(ok.stdout).unwrap();
    assert!(
        text.contains("server.listen = \"127.0.0.1:8080\""),
        "{text}"
    );
}

/// `check-config` refuses what `serve` refuses: a media root that is not there, and a
/// plugin folder that is ross's own data folder (regression: both passed the check).
#[test]
fn check_config_refuses_what_serve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let check = |pairs: &[(&str, &str)]| {
        let mut cmd = Command::new(build_dir().join("ross"));
        cmd.arg("check-config")
            .env("ROSS__SOURCE__ROOT", crate::util::corpus())
            .env("ROSS__DATA_DIR", dir.path().join("data"));
        for (k, v) in pairs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let missing = dir.path().join("no-such-folder");
    let (code, err) = check(&[("ROSS__SOURCE__ROOT", missing.to_str().unwrap())]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("source.root"), "{err}");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (code, err) = check(&[("ROSS__PLUGINS__DIR", data.to_str().unwrap())]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("plugins.dir") && err.contains("data_dir"),
        "{err}"
    );
    // serve refuses the same folder before starting.
    let out = Command::new(build_dir().join("ross"))
        .arg("serve")
        .env("ROSS__SOURCE__ROOT", missing.to_str().unwrap())
        .env("ROSS__DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(!out.status.success());
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

/// A cache hit held in memory is answered before the router: the same headers and bytes as
/// the router's answer (the miss, and the same hit with memory off), counted and logged like
/// any request; a conditional request, a HEAD, and a hit while a purge may remove it still go
/// through the router.
#[test]
fn memory_hits_are_answered_as_the_router_answers_them() {
    use crate::process::{admin, http_exchange};
    let headers_of = |head: &str| -> Vec<String> {
        let mut kept: Vec<String> = head
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .filter(|l| !l.starts_with("date:") && !l.starts_with("x-cache:"))
            .filter(|l| !l.starts_with("x-request-id:") && !l.starts_with("connection:"))
            .map(str::to_owned)
            .collect();
        kept.sort();
        kept
    };
    let path = "/120/80/crop/photos/Dune.jpg";
    let get = |port: u16, extra: &[(&str, &str)]| {
        http_exchange(port, "GET", path, extra, b"", Duration::from_secs(10)).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(dir.path(), &[]);
    let (status, miss_head, miss_body) = get(ross.port, &[]);
    assert_eq!(status, 200);
    assert!(miss_head.contains("x-cache: miss"), "{miss_head}");
    let (status, hit_head, hit_body) = get(ross.port, &[("X-Request-Id", "fast-1")]);
    assert_eq!(status, 200);
    assert!(hit_head.contains("x-cache: hit"), "{hit_head}");
    assert!(hit_head.contains("x-request-id: fast-1"), "{hit_head}");
    assert_eq!(hit_body, miss_body);
    assert_eq!(headers_of(&hit_head), headers_of(&miss_head));

    // The router's own hit (memory off) answers the same.
    let other = tempfile::tempdir().unwrap();
    let plain = Ross::start(other.path(), &[("ROSS__CACHE__MEMORY_BYTES", "0")]);
    get(plain.port, &[]);
    let (_, plain_head, plain_body) = get(plain.port, &[]);
    assert!(plain_head.contains("x-cache: hit"), "{plain_head}");
    assert_eq!(plain_body, hit_body);
    let strip_dates = |h: Vec<String>| -> Vec<String> {
        h.into_iter()
            .filter(|l| !l.starts_with("etag:") && !l.starts_with("last-modified:"))
            .collect()
    };
    assert_eq!(
        strip_dates(headers_of(&plain_head)),
        strip_dates(headers_of(&hit_head))
    );

    // Conditional: a 304 (from the router).
    let etag = hit_head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_owned();
    let (status, _, body) = get(ross.port, &[("If-None-Match", &etag)]);
    assert_eq!((status, body.len()), (304, 0));
    let (status, head, body) =
        http_exchange(ross.port, "HEAD", path, &[], b"", Duration::from_secs(10)).unwrap();
    assert_eq!((status, body.len()), (200, 0));
    assert!(head.contains("x-cache: hit"), "{head}");

    // Counted and logged like any request: 1 miss, 2 GET hits and the HEAD's.
    let (_, stats) = admin(ross.port, "GET", "/stats", "");
    assert_eq!(stats["hits"], 3, "{stats}");
    assert_eq!(stats["misses"], 1, "{stats}");
    let log = crate::process::log_once_it_holds(dir.path(), "fast-1");
    assert!(
        log.lines()
            .any(|l| l.contains("fast-1") && l.contains("status=200") && l.contains("cache=HIT")),
        "{log}"
    );

    // Purged: the next request renders again.
    let (status, _) = admin(ross.port, "POST", "/purge", r#"{"key": "photos/Dune.jpg"}"#);
    assert_eq!(status, 200);
    let (status, head, _) = get(ross.port, &[]);
    assert_eq!(status, 200);
    assert!(head.contains("x-cache: miss"), "{head}");
}
