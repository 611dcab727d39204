use ross::plugins::PluginLoadError;

use crate::util::{built, fixture_plugin, plugin_folder, TestServer};

/// Each kind of bad plugin file is refused with a one-line reason; the good ones load and
/// serve.
#[tokio::test]
async fn load_failures_are_reported_and_do_not_stop_start_up() {
    let dir = plugin_folder(&[
        built("crop"),
        fixture_plugin("abi_mismatch_plugin"),
        fixture_plugin("init_panic_plugin"),
        fixture_plugin("missing_symbol_plugin"),
    ]);
    std::fs::write(
        dir.path().join("libjunk.so"),
        b"\x7fELF not really a library",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("README.txt"),
        b"not a plugin, and not a .so",
    )
    .unwrap();
    std::fs::write(dir.path().join(".hidden.so"), b"ignored").unwrap();
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    if let Some(libm) = libm {
        std::fs::copy(libm, dir.path().join("libm.so")).unwrap();
    }
    let server = TestServer::builder().plugins(dir.path()).start().await;

    let names: Vec<String> = server
        .state
        .modes
        .modes()
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(names, vec!["crop"]);
    assert_eq!(
        server.get("/100/100/crop/photos/Dune.jpg").await.status,
        200
    );

    let failures = server.state.modes.failures();
    let kind = |file: &str| {
        failures
            .iter()
            .find(|f| f.file.file_name().unwrap() == file)
            .unwrap_or_else(|| panic!("no failure recorded for {file}: {failures:?}"))
            .error
            .clone()
    };
    assert!(matches!(
        kind("libjunk.so"),
        PluginLoadError::NotALibrary { .. }
    ));
    assert!(matches!(
        kind("libabi_mismatch_plugin.so"),
        PluginLoadError::Incompatible { .. }
    ));
    assert!(matches!(
        kind("libinit_panic_plugin.so"),
        PluginLoadError::InitFailed { .. }
    ));
    let missing = kind("libmissing_symbol_plugin.so");
    assert!(
        matches!(missing, PluginLoadError::NotALibrary { .. }),
        "{missing}"
    );
    assert!(
        missing
            .to_string()
            .contains("ross_fixture_symbol_nobody_defines"),
        "{missing}"
    );
    if libm.is_some() {
        assert!(matches!(
            kind("libm.so"),
            PluginLoadError::NotAPlugin { .. }
        ));
    }
    assert_eq!(
        failures.len(),
        4 + usize::from(libm.is_some()),
        "{failures:?}"
    );
    for f in &failures {
        let line = f.error.to_string();
        assert!(
            !line.contains('\n') && line.len() < 400,
            "not one short line: {line}"
        );
    }
    // Refused copies are not left in the data folder; loaded ones are.
    let copies = std::fs::read_dir(server.state.settings.data_dir.join("loaded-plugins")).unwrap();
    assert_eq!(copies.count(), 1);
}

/// No mode is compiled into the server: without libcrop.so, crop is 404.
#[tokio::test]
async fn modes_come_only_from_plugins() {
    let dir = plugin_folder(&[built("resize")]);
    let server = TestServer::builder().plugins(dir.path()).start().await;
    assert_eq!(
        server.get("/100/100/crop/photos/Dune.jpg").await.status,
        404
    );
    assert_eq!(
        server
            .get("/100/100/resizecomp/photos/Dune.jpg")
            .await
            .status,
        404
    );
    assert_eq!(
        server.get("/100/100/resize/photos/Dune.jpg").await.status,
        200
    );
}

/// A panic inside a plugin is a 500 for that request; the server keeps serving.
#[tokio::test]
async fn plugin_panic_is_a_500_for_that_request_only() {
    let dir = plugin_folder(&[built("crop"), fixture_plugin("panicking_plugin")]);
    let server = TestServer::builder().plugins(dir.path()).start().await;
    for _ in 0..3 {
        let r = server.get("/100/100/panic/photos/Dune.jpg").await;
        assert_eq!(r.status, 500);
        assert_eq!(r.json()["error"]["code"], "render-failed");
        assert!(
            !r.text().contains("panicked"),
            "internals leaked: {}",
            r.text()
        );
        assert_eq!(
            server.get("/100/100/crop/photos/Dune.jpg").await.status,
            200
        );
    }
    assert!(!server.cache_dir().join("jpeg/100/100/panic").exists());
    assert_eq!(
        server.state.cache.stats().entries,
        1,
        "only the crop render is cached"
    );
}
