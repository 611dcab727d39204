//! The Debian package: built with `cargo deb` from the release build, installed with `dpkg`,
//! and run as its service would be. Needs root (it installs a package and adds a user) and
//! `cargo-deb` (`scripts/deps.sh` installs it); skipped, saying so, without either. A test
//! binary of its own, as `plugin_kit`: packing the package takes the CPU for a minute.

#[allow(dead_code)]
mod process;
#[allow(dead_code)]
mod util;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::http_get;
use crate::util::free_port;

/// Whether `cmd` runs and succeeds.
fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

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

/// The unit without its opening comment (which says where each one is installed).
fn unit_body(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_packaged_unit_is_the_documented_one_with_the_packages_paths() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let by_hand = unit_body(&deploy.join("ross.service")).replace("/usr/local/", "/usr/");
    let packaged = unit_body(&deploy.join("debian/ross.service"));
    assert!(!packaged.contains("/usr/local"), "{packaged}");
    assert_eq!(
        packaged, by_hand,
        "deploy/debian/ross.service must be deploy/ross.service with /usr/local/ made /usr/"
    );
}

/// The unit's `UMask=0022`, whatever the test runner's.
trait Umask {
    fn umask_022(&mut self) -> &mut Self;
}

impl Umask for Command {
    fn umask_022(&mut self) -> &mut Self {
        #[allow(unsafe_code)] // umask is async-signal-safe, as pre_exec asks
        unsafe {
            self.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            })
        }
    }
}

/// A server stopped (SIGTERM, then SIGKILL after 10 s) when dropped, even if the test failed.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        #[allow(unsafe_code)] // kill has no preconditions
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let has_deb = succeeds(Command::new("cargo").args(["deb", "--version"]));
    if !root || !has_deb {
        // scripts/test says so where it shows (a passing test's output is not).
        eprintln!("skipped: needs root and cargo-deb (scripts/deps.sh installs it)");
        return;
    }
    // Never on a machine where ross is installed: the test installs and purges its own.
    let installed = succeeds(Command::new("dpkg").args(["-s", "ross"]));
    assert!(
        !installed,
        "the ross package is installed here: this test would purge it (settings, state and cache)"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    run(Command::new("cargo")
        .current_dir(&repo)
        // --fast: lighter compression (a larger file, the same contents), a minute sooner.
        .args(["deb", "-p", "ross", "--no-build", "--fast", "--output"])
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
        assert!(
            contents.contains(path),
            "{path} not in the package:\n{contents}"
        );
    }
    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    // Under systemd the package started its service, which holds the state and cache folders:
    // stopped, so that the server below can take them (and so that the unit ran).
    if Path::new("/run/systemd/system").exists() {
        run(Command::new("systemctl").args(["stop", "ross"]));
    }
    // The settings: readable by root and the ross user only.
    let stat = run(Command::new("stat").args(["-c", "%U:%G %a", "/etc/ross/ross.toml"]));
    assert_eq!(stat.trim(), "root:ross 640");
    run(Command::new("runuser").args([
        "-u",
        "ross",
        "--",
        "/usr/bin/ross",
        "check-config",
        "--config",
        "/etc/ross/ross.toml",
    ]));
    // Served as the unit serves it: as ross, from the packaged settings and the folders the
    // package made, on a port of its own.
    let port = free_port();
    let id = |flag: &str| -> u32 {
        run(Command::new("id").args([flag, "ross"]))
            .trim()
            .parse()
            .unwrap()
    };
    let log = out.path().join("ross.log");
    let serving = Serving(
        Command::new("/usr/bin/ross")
            .args(["serve", "--config", "/etc/ross/ross.toml"])
            .uid(id("-u"))
            .gid(id("-g"))
            .umask_022()
            .env("ROSS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("ROSS__HIT_LOG__LISTEN", "")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = std::time::Instant::now();
    let answer = loop {
        match http_get(port, "/200/250/crop/flower.jpg", Duration::from_secs(10)) {
            Ok(answer) => break answer,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!(
                "the packaged ross does not answer: {e}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    };
    drop(serving);
    assert_eq!(answer.0, 200);
    // The render is in the packaged cache folder, readable by nginx; the state is ross's.
    let render = run(Command::new("stat").args([
        "-c",
        "%U %a",
        "/var/cache/ross/jpeg/200/250/crop/flower.jpg",
    ]));
    assert_eq!(render.trim(), "ross 644");
    let state = run(Command::new("stat").args(["-c", "%U %a", "/var/lib/ross"]));
    assert_eq!(state.trim(), "ross 700");
    // The unit systemd would run.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        run(Command::new("systemd-analyze")
            .args(["verify", "/usr/lib/systemd/system/ross.service"]));
    }
    // A purge takes the settings, the state and the cache with it.
    run(Command::new("dpkg").args(["--purge", "ross"]));
    let override_kept =
        succeeds(Command::new("dpkg-statoverride").args(["--list", "/etc/ross/ross.toml"]));
    assert!(
        !override_kept,
        "dpkg --purge left the settings' stat override"
    );
    for gone in [
        "/etc/ross/ross.toml",
        "/var/lib/ross",
        "/var/cache/ross",
        "/usr/bin/ross",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left after dpkg --purge");
    }
}
