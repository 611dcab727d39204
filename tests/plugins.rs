use ross::plugins::PluginLoadError;

use crate::util::{built, fixture_plugin, mode_code, plugin_folder, TestServer};

/// Each kind of bad plugin file is refused with a one-line reason; the good ones load and
/// serve.
#[tokio::test]
async fn load_failures_are_reported_and_do_not_stop_start_up() {
    let dir = plugin_folder(&[
        built("crop"),
        fixture_plugin("abi_mismatch_plugin"),
        fixture_plugin("abi_wrong_field_plugin"),
        fixture_plugin("abi_no_layout_plugin"),
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
    // An older plugin whose entry point disagrees with the server's: only the check with
    // the roles swapped sees it. One without its layout could not be checked at all.
    for (file, says) in [
        ("libabi_wrong_field_plugin.so", "layout differs"),
        ("libabi_no_layout_plugin.so", "without its layout"),
    ] {
        let error = kind(file);
        assert!(
            matches!(error, PluginLoadError::Incompatible { .. })
                && error.to_string().contains(says),
            "{file}: {error}"
        );
    }
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
        6 + usize::from(libm.is_some()),
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
    // The plugins page counts each mode's renders and its failures.
    let modes = ross::admin::views::plugins(&server.state).modes;
    let counts = |name: &str| {
        let m = modes.iter().find(|m| m.name == name).unwrap();
        (m.renders, m.failures)
    };
    assert_eq!(counts("panic"), (0, 3));
    assert_eq!(counts("crop"), (1, 0));
    // And the registry, over every load of each mode.
    let metrics = server.get("/metrics").await.text();
    for line in [
        r#"ross_mode_renders_total{mode="panic",outcome="failed"} 3"#,
        r#"ross_mode_renders_total{mode="crop",outcome="ok"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    assert_eq!(
        server.state.cache.stats().entries,
        1,
        "only the crop render is cached"
    );
}

/// A plugin built before plugin ABI 0.1.1 (its root module has no `decode_need`, its version
/// string is 0.1.0) loads and serves, its decode just covering the box; a mode that asks for
/// the full size gets it.
#[tokio::test]
async fn plugins_built_before_decode_needs_still_load() {
    let dir = plugin_folder(&[fixture_plugin("legacy_plugin"), built("trimresize")]);
    let server = TestServer::builder().plugins(dir.path()).start().await;
    assert_no_failures(&server);
    let legacy = server
        .state
        .modes
        .get("legacy")
        .expect("the old plugin loaded");
    let target = plugin_api::TargetSize {
        width: 300,
        height: 200,
    };
    assert_eq!(legacy.abi_version(), "0.1.0");
    let legacy_code = mode_code(&fixture_plugin("legacy_plugin"), "legacy");
    assert_eq!(
        legacy_code.decode_box(target),
        Some(ross::imaging::DecodeBox::cover(300, 200))
    );
    let trim = server.state.modes.get("trimresize").unwrap();
    assert_eq!(trim.abi_version(), plugin_api::PLUGIN_ABI_VERSION);
    assert_eq!(
        mode_code(&built("trimresize"), "trimresize").decode_box(target),
        None
    );
    let r = server.get("/300/200/legacy/photos/Dune.jpg").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.image().dimensions(), (300, 200));
    // The whole picture, stretched: its mean colour is the picture's.
    let mean = |img: &image::RgbImage| {
        let n = f64::from(img.width() * img.height());
        [0, 1, 2].map(|c| img.pixels().map(|p| f64::from(p.0[c])).sum::<f64>() / n)
    };
    let whole = image::open(crate::util::corpus().join("photos/Dune.jpg"))
        .unwrap()
        .to_rgb8();
    for (got, want) in mean(&r.image()).iter().zip(mean(&whole)) {
        assert!((got - want).abs() < 4.0, "mean {got:.1} against {want:.1}");
    }
}

/// Plugins built against ABI 0.1.1 (a root module with `decode_need` but no `takes_alpha`) and
/// 0.1.2 (with `takes_alpha`, saying no), each with its version string, load; their decode
/// need is honoured, and they are handed RGB: a transparent source is flattened for them even
/// when the answer is WebP. The built-in `crop` takes alpha and keeps it.
#[tokio::test]
async fn plugins_built_against_older_abis_load_and_get_what_they_asked_for() {
    for (fixture, mode, abi) in [
        ("abi_0_1_1_plugin", "abi011", "0.1.1"),
        ("abi_0_1_2_plugin", "abi012", "0.1.2"),
    ] {
        plugin_of_an_older_abi(fixture, mode, abi).await;
    }
}

/// Every plugin in the folder loaded.
fn assert_no_failures(server: &TestServer) {
    let failures = server.state.modes.failures();
    assert!(failures.is_empty(), "{failures:?}");
}

async fn plugin_of_an_older_abi(fixture: &str, mode: &str, abi: &str) {
    let dir = plugin_folder(&[fixture_plugin(fixture), built("crop")]);
    let server = TestServer::builder()
        .plugins(dir.path())
        .set("ROSS__OUTPUT__FORMATS", "webp,jpeg")
        .start()
        .await;
    assert_no_failures(&server);
    let old = server
        .state
        .modes
        .get(mode)
        .unwrap_or_else(|| panic!("the {abi} plugin did not load"));
    assert_eq!(old.abi_version(), abi);
    assert!(!old.takes_alpha);
    let target = plugin_api::TargetSize {
        width: 300,
        height: 200,
    };
    assert_eq!(
        mode_code(&fixture_plugin(fixture), mode).decode_box(target),
        None,
        "its full-size decode need is lost"
    );
    let crop = server.state.modes.get("crop").unwrap();
    assert_eq!(crop.abi_version(), plugin_api::PLUGIN_ABI_VERSION);
    assert!(crop.takes_alpha);
    let webp = |path: &str| {
        let req = server.client().get(path).header("Accept", "image/webp");
        server.request(req)
    };
    let alpha_of = |body: &[u8]| {
        let img = image::load_from_memory(body).unwrap();
        img.color().has_alpha().then(|| img.into_rgba8())
    };
    let r = webp(&format!(
        "/120/80/{mode}/png/tmshre_riaphotographs_alpha.png"
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), "image/webp");
    assert!(
        alpha_of(&r.body).is_none(),
        "an RGB-only mode's answer has alpha"
    );
    let r = webp("/120/80/crop/png/tmshre_riaphotographs_alpha.png").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rgba = alpha_of(&r.body).expect("crop kept the transparency");
    assert!(
        rgba.pixels().any(|p| p.0[3] < 128),
        "no transparent pixel left"
    );
}

/// A plugin built against ABI 0.2.0 (no `fits_within`) loads and serves, and is decoded for as
/// covering its box, whatever it does with it; `resize` (0.2.1) says it fits the source within
/// its box: a 1680x1050 photo's 800x1000 resize needs it 800 across, not 1600.
#[tokio::test]
async fn a_plugin_of_abi_0_2_0_loads_and_is_decoded_for_as_covering_its_box() {
    let dir = plugin_folder(&[fixture_plugin("abi_0_2_0_plugin"), built("resize")]);
    let server = TestServer::builder().plugins(dir.path()).start().await;
    assert_no_failures(&server);
    let old = server
        .state
        .modes
        .get("abi020")
        .expect("the 0.2.0 plugin loads");
    assert_eq!(old.abi_version(), "0.2.0");
    let target = plugin_api::TargetSize {
        width: 800,
        height: 1000,
    };
    let code = mode_code(&fixture_plugin("abi_0_2_0_plugin"), "abi020");
    assert!(!code.spec.fits_within);
    assert_eq!(
        code.decode_box(target),
        Some(ross::imaging::DecodeBox::cover(800, 1000))
    );
    let resize = mode_code(&built("resize"), "resize");
    assert!(resize.spec.fits_within);
    let within = resize.decode_box(target).unwrap();
    assert_eq!(within, ross::imaging::DecodeBox::fit(800, 1000));
    assert_eq!(within.shown((1680, 1050)), (800, 500));
    for mode in ["abi020", "resize"] {
        let r = server
            .get(&format!("/800/1000/{mode}/photos/Dune.jpg"))
            .await;
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        assert_eq!(r.image().dimensions(), (800, 500), "{mode}");
    }
}

/// trimresize asks for the full-size source: a 2400x2400 JPEG holding a 1200x1200 object on
/// white gives the object at 300 px in a 300x300 box, as the same picture stored as PNG does
/// (a decode shrunk to cover the box would have shown it at 150).
#[tokio::test]
async fn a_mode_that_needs_the_full_size_gets_it_from_any_format() {
    let media = tempfile::tempdir().unwrap();
    let picture = image::RgbImage::from_fn(2400, 2400, |x, y| {
        let inside = (600..1800).contains(&x) && (600..1800).contains(&y);
        if inside {
            image::Rgb([40, (x / 10) as u8, (y / 10) as u8])
        } else {
            image::Rgb([255, 255, 255])
        }
    });
    picture.save(media.path().join("object.png")).unwrap();
    picture.save(media.path().join("object.jpg")).unwrap();
    let server = TestServer::builder().media(media.path()).start().await;
    let object_width = |img: &image::RgbImage| {
        let row = img.height() / 2;
        (0..img.width())
            .filter(|&x| img.get_pixel(x, row).0[0] < 128)
            .count()
    };
    for file in ["object.jpg", "object.png"] {
        let r = server.get(&format!("/300/300/trimresize/{file}")).await;
        assert_eq!(r.status, 200, "{file}");
        let width = object_width(&r.image());
        assert!(
            (296..=300).contains(&width),
            "{file}: object {width} px wide"
        );
    }
}

/// One check opens every plugin of the ABI's line, older or newer than the server, with no
/// frozen copy of an older root module: a plugin of a newer 0.2 (this line's types, and an
/// entry point appended that the server does not know) and one of a later 0.1 than any released
/// (the closed line, checked against its own types) load and serve; a plugin of a later line
/// (0.3.0, which abi_stable alone would take) is refused, naming both versions.
#[tokio::test]
async fn newer_plugins_of_the_line_load_and_other_lines_are_refused() {
    let dir = plugin_folder(&[
        fixture_plugin("abi_next_patch_plugin"),
        fixture_plugin("abi_future_plugin"),
        fixture_plugin("abi_next_line_plugin"),
    ]);
    let server = TestServer::builder().plugins(dir.path()).start().await;
    for (mode, abi) in [("nextpatch", "0.2.9"), ("future", "0.1.9")] {
        let loaded = server
            .state
            .modes
            .get(mode)
            .unwrap_or_else(|| panic!("the {abi} plugin did not load"));
        assert_eq!(loaded.abi_version(), abi);
        let r = server.get(&format!("/120/80/{mode}/photos/Dune.jpg")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.image().dimensions(), (120, 80));
    }
    let failures = server.state.modes.failures();
    let refused = failures
        .iter()
        .find(|f| f.file.ends_with("libabi_next_line_plugin.so"))
        .unwrap_or_else(|| panic!("the other line was not refused: {failures:?}"));
    let message = refused.error.to_string();
    assert!(
        matches!(refused.error, PluginLoadError::Incompatible { .. })
            && message.contains("0.3.0")
            && message.contains(plugin_api::PLUGIN_ABI_VERSION),
        "{message}"
    );
    assert!(server.state.modes.get("nextline").is_none());
    assert_eq!(failures.len(), 1, "{failures:?}");
}
