//! The Debian package: built with `cargo deb` from the release build, installed with `dpkg`,
//! and run as its service would be. Needs root (it installs a package and adds a user) and
//! `cargo-deb` (`scripts/deps.sh` installs it); skipped, saying so, without either.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::http_get;
use crate::util::free_port;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the package when dropped, even if the test failed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "ross"]).output();
    }
}

#[test]
fn the_debian_package_installs_and_serves() {
    #[allow(unsafe_code)] // geteuid has no preconditions
    let root = unsafe { libc::geteuid() } == 0;
    let has_deb = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !root || !has_deb {
        eprintln!("skipped: needs root and cargo-deb (scripts/deps.sh installs it)");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    run(Command::new("cargo")
        .current_dir(&repo)
        .args(["deb", "-p", "ross", "--no-build", "--output"])
        .arg(out.path()));
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb made no .deb");
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "./usr/bin/ross",
        "./usr/lib/ross/plugins/libcrop.so",
        "./etc/ross/ross.toml",
        "./usr/lib/systemd/system/ross.service",
        "./usr/share/ross/nginx/ross.conf",
        "./usr/share/ross/samples/flower.jpg",
    ] {
        assert!(contents.contains(path), "{path} not in the package:\n{contents}");
    }
    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    // The settings: readable by root and the ross user only.
    let stat = run(Command::new("stat").args(["-c", "%U:%G %a", "/etc/ross/ross.toml"]));
    assert_eq!(stat.trim(), "root:ross 640");
    run(Command::new("runuser").args([
        "-u", "ross", "--", "/usr/bin/ross", "check-config", "--config", "/etc/ross/ross.toml",
    ]));
    // Served as the unit serves it (as ross, from the packaged settings), on a port of its own.
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    run(Command::new("chown").arg("ross:ross").arg(data.path()));
    let mut child = Command::new("runuser")
        .args(["-u", "ross", "--", "/usr/bin/ross", "serve", "--config", "/etc/ross/ross.toml"])
        .env("ROSS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("ROSS__DATA_DIR", data.path().join("data"))
        .env("ROSS__CACHE__DIR", data.path().join("cache"))
        .env("ROSS__HIT_LOG__LISTEN", "")
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let answer = loop {
        match http_get(port, "/200/250/crop/flower.jpg", Duration::from_secs(10)) {
            Ok(answer) => break answer,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("the packaged ross does not answer: {e}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer.0, 200);
    // The unit systemd would run.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        run(Command::new("systemd-analyze").args(["verify", "/usr/lib/systemd/system/ross.service"]));
    }
}
