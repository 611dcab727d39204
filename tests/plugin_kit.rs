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

/// `ross` as installed: a copy outside the source tree, so nothing can be found by walking up
/// from the executable.
struct Installed {
    _dir: tempfile::TempDir,
    exe: PathBuf,
}

impl Installed {
    fn new() -> Installed {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("bin/ross");
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        std::fs::copy(build_dir().join("ross"), &exe).unwrap();
        Installed { _dir: dir, exe }
    }

    fn run(&self, args: &[&str], cwd: &Path) -> std::process::Output {
        Command::new(&self.exe)
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap()
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Runs cargo in `dir`, offline, with `config` (`--config` values).
fn cargo(dir: &Path, args: &[&str], config: &[String]) {
    let mut command = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    command.args(args).arg("--offline");
    for value in config {
        command.arg("--config").arg(value);
    }
    let out = command
        .current_dir(dir)
        // Shared between runs so the plugin's dependencies build once per machine.
        .env("CARGO_TARGET_DIR", workspace().join("target/plugin-kit"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a registry that has ross's crates would give: this tree's two crates packaged as for
/// publishing (`cargo package`: what is left out of a package, such as a file outside it, is
/// missing here too), unpacked under `dir`, and `[patch]` values that prepublish them.
fn as_published(dir: &Path) -> Vec<String> {
    // Packaging the kit with a [patch] notes the patch in the workspace's lockfile: put it
    // back as it was, however this ends.
    let lock = workspace().join("Cargo.lock");
    let _lock = Restore(lock.clone(), std::fs::read(&lock).unwrap());
    let target = dir.join("package-target");
    let mut config = Vec::new();
    for (package, sub) in [
        ("ross-plugin-api", "plugin-api"),
        ("ross-plugin-kit", "plugin-kit"),
    ] {
        // The kit needs the ABI crate from "the registry": the one packaged just before.
        let target_dir = target.display().to_string();
        let args = [
            "package",
            "--no-verify",
            "--allow-dirty",
            "-p",
            package,
            "--target-dir",
            &target_dir,
        ];
        cargo(&workspace(), &args, &config);
        let version = toml_version(&workspace().join(sub).join("Cargo.toml"));
        let file = target.join(format!("package/{package}-{version}.crate"));
        let unpacked = Command::new("tar")
            .arg("-xzf")
            .arg(&file)
            .arg("-C")
            .arg(dir)
            .status()
            .unwrap();
        assert!(unpacked.success(), "cannot unpack {}", file.display());
        let path = dir.join(format!("{package}-{version}"));
        config.push(format!(
            "patch.crates-io.{package}.path={:?}",
            path.display().to_string()
        ));
    }
    config
}

/// A file written back as it was when this is dropped.
struct Restore(PathBuf, Vec<u8>);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, &self.1);
    }
}

/// The `package.version` of a manifest.
fn toml_version(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no version in {}", manifest.display()))
        .to_owned()
}

#[tokio::test]
async fn a_new_plugin_builds_passes_its_tests_and_is_served() {
    let ross = Installed::new();
    let work = tempfile::tempdir().unwrap();
    let crate_dir = work.path().join("mirror");
    let out = ross.run(
        &[
            "plugin",
            "new",
            "mirror",
            "--dir",
            crate_dir.to_str().unwrap(),
        ],
        work.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["Cargo.toml", "src/lib.rs", "README.md"] {
        assert!(crate_dir.join(file).is_file(), "{file} not created");
    }
    // Refusals: a bad mode name, an occupied folder, a folder that is not an SDK.
    let bad = ross.run(&["plugin", "new", "Mirror!"], work.path());
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot be a mode name"));
    let again = ross.run(
        &[
            "plugin",
            "new",
            "mirror",
            "--dir",
            crate_dir.to_str().unwrap(),
        ],
        work.path(),
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let no_sdk = ross.run(&["plugin", "new", "other", "--path", "."], work.path());
    assert!(!no_sdk.status.success());
    assert!(String::from_utf8_lossy(&no_sdk.stderr).contains("not a ross plugin SDK"));

    // From a source tree, given relative to the current folder: the crate's paths are
    // relative to the crate, so both can move together.
    let sdk_crate = work.path().join("plugins/mirror2");
    let up = "../".repeat(work.path().components().count() - 1);
    let relative = format!("{up}{}", workspace().strip_prefix("/").unwrap().display());
    let from_sdk = ross.run(
        &[
            "plugin",
            "new",
            "mirror2",
            "--dir",
            "plugins/mirror2",
            "--path",
            &relative,
        ],
        work.path(),
    );
    assert!(
        from_sdk.status.success(),
        "{}",
        String::from_utf8_lossy(&from_sdk.stderr)
    );
    // Written relative to the crate, and leading to this tree's crate.
    let manifest = std::fs::read_to_string(sdk_crate.join("Cargo.toml")).unwrap();
    let api = manifest
        .lines()
        .find_map(|l| l.strip_prefix("ross-plugin-api = { version = "))
        .and_then(|l| l.split("path = \"").nth(1))
        .and_then(|l| l.split('"').next())
        .unwrap_or_else(|| panic!("no path for ross-plugin-api in\n{manifest}"));
    assert!(api.starts_with("../"), "{api}");
    assert_eq!(
        sdk_crate.join(api).canonicalize().unwrap(),
        workspace().join("plugin-api")
    );
    cargo(&sdk_crate, &["test", "--release"], &[]);
    cargo(&sdk_crate, &["build", "--release"], &[]);

    // By version, as from a registry.
    let published = as_published(work.path());
    cargo(&crate_dir, &["test", "--release"], &published);
    cargo(&crate_dir, &["build", "--release"], &published);
    let library: PathBuf = workspace().join("target/plugin-kit/release/libmirror.so");
    assert!(workspace()
        .join("target/plugin-kit/release/libmirror2.so")
        .is_file());
    let check = ross.run(&["plugin", "check", library.to_str().unwrap()], work.path());
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
