//! `deploy/` with the real programs: Debian's nginx (started here on free ports, with a
//! temporary prefix) in front of one ross, and in front of three with the cluster config; and
//! the systemd unit checked by `systemd-analyze verify`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{admin, http_exchange, http_get, Ross};
use crate::util::free_port;

/// The repository's `deploy/` folder.
pub(crate) fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// nginx serving `site` (a `server` block with its upstream) on `port`, from `dir`.
pub(crate) struct Nginx {
    child: Child,
    dir: PathBuf,
    pub(crate) port: u16,
}

impl Nginx {
    pub(crate) fn start(dir: &Path, site: &str, port: u16) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is not installed: scripts/test installs Debian's nginx");
        let dir = dir.to_owned();
        std::fs::write(dir.join("site.conf"), site).unwrap();
        // As root, nginx's workers would run as nobody, who cannot read a private temp folder.
        #[allow(unsafe_code)] // geteuid has no preconditions
        let root = unsafe { libc::geteuid() } == 0;
        let d = dir.display();
        let main = format!(
            "{user}daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{ include /etc/nginx/mime.types; access_log {d}/access.log;\n\
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
             uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             include {d}/site.conf; }}\n",
            user = if root { "user root;\n" } else { "" }
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let child = Command::new(nginx)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            // A group of its own: dropping it kills the workers with the master.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child, dir, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                panic!("nginx exited with {status}:\n{}", nginx.errors());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    pub(crate) fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// GET through nginx: status, head (lower-cased) and body.
    pub(crate) fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
        http_exchange(
            self.port,
            "GET",
            path,
            headers,
            b"",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("GET {path} through nginx: {e}\n{}", self.errors()))
    }
}

impl Drop for Nginx {
    /// Kills the process and its group: nginx's workers are children of its master, and
    /// killing the master alone leaves them running, holding the port.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nginx -t` of `site` in `dir`: `Err` with nginx's complaint.
fn nginx_t(dir: &Path, site: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let d = dir.display();
    let main = format!(
        "pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 16; }}\n\
         http {{ include /etc/nginx/mime.types; access_log {d}/access.log;\n\
         client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
         uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
         include {d}/site.conf; }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let out = Command::new("/usr/sbin/nginx")
        .arg("-t")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `ross nginx-config` passes `nginx -t` with every surrogate-key header, one format and
/// three, a hit log over UDP and a Unix socket and none, CORS, other admin networks, and a
/// cache folder with a space; and refuses what nginx could not take.
#[test]
fn generated_sites_pass_nginx_t() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("the cache");
    let cache = cache.to_str().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let media = media.to_str().unwrap();
    let base = [("ROSS__CACHE__DIR", cache), ("ROSS__SOURCE__ROOT", media)];
    for (i, extra) in [
        vec![],
        vec![
            ("ROSS__OUTPUT__SURROGATE_KEYS", ""),
            ("ROSS__CACHE__DEVELOPMENT", "true"),
        ],
        vec![
            ("ROSS__OUTPUT__FORMATS", "webp,jpeg"),
            ("ROSS__OUTPUT__SURROGATE_KEYS", "Cache-Tag"),
            ("ROSS__HIT_LOG__LISTEN", "127.0.0.1:8079"),
        ],
        vec![
            ("ROSS__OUTPUT__FORMATS", "avif,webp,jpeg"),
            (
                "ROSS__OUTPUT__SURROGATE_KEYS",
                "Surrogate-Key,Cache-Tag,xkey",
            ),
            ("ROSS__OUTPUT__CORS_ORIGIN", "https://shop.example"),
            ("ROSS__HIT_LOG__LISTEN", "unix:/run/ross/hits.sock"),
            ("ROSS__ADMIN__NETWORKS", "10.0.0.0/8,fd00::/8,192.168.1.7"),
            ("ROSS__SERVER__LISTEN", "0.0.0.0:9000"),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let nginx_dir = dir.path().join(format!("nginx{i}"));
        let site =
            crate::process::nginx_config(base.into_iter().chain(extra.clone()), 8080, &nginx_dir)
                .unwrap();
        if let Err(e) = nginx_t(&nginx_dir, &site) {
            panic!("{extra:?}: nginx -t: {e}\n{site}");
        }
        // nginx's hits say what ross's answers say.
        let development = extra.contains(&("ROSS__CACHE__DEVELOPMENT", "true"));
        assert_eq!(
            site.contains("add_header Cache-Control \"no-store\" always;"),
            development,
            "{site}"
        );
    }
    let dollar = crate::process::nginx_config(
        [
            ("ROSS__CACHE__DIR", "/tmp/a$b"),
            ("ROSS__SOURCE__ROOT", media),
        ],
        8080,
        dir.path(),
    );
    assert!(dollar.unwrap_err().contains("cache.dir"));
}

/// A free UDP port on loopback (for ross's hit log).
pub(crate) fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A header's value in a lower-cased head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn error_code(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    json["error"]["code"].as_str().unwrap().to_owned()
}

/// One ross behind `deploy/nginx.conf`: misses go through ross, hits are nginx's (with ross's
/// headers, and with ross stopped), a `.png` key's render is JPEG, ross's errors pass through
/// with their JSON bodies, and a miss with ross down is a 502.
#[test]
fn nginx_serves_hits_from_the_cache_and_passes_the_rest_to_ross() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("nginx/tmp")).unwrap();
    let hit_log = format!("127.0.0.1:{}", free_udp_port());
    let mut ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__WHITELIST__ENABLED", "true"),
            ("ROSS__WHITELIST__SIZES", "300x200,100x100"),
            ("ROSS__HIT_LOG__LISTEN", &hit_log),
        ],
    );
    let port = free_port();
    let site = ross.nginx_site(port, &dir.path().join("nginx"), &[]);
    let nginx = Nginx::start(&dir.path().join("nginx"), &site, port);

    // A miss: rendered by ross (its request id on the answer).
    let (status, head, body) = nginx.get("/300/200/crop/photos/Dune.jpg", &[]);
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("image/jpeg"));
    assert!(
        header(&head, "x-request-id").is_some(),
        "the miss did not reach ross"
    );
    assert_eq!(
        image::load_from_memory(&body)
            .unwrap()
            .into_rgb8()
            .dimensions(),
        (300, 200)
    );
    let (_, from_ross, _) = http_exchange(
        ross.port,
        "GET",
        "/300/200/crop/photos/Dune.jpg",
        &[],
        b"",
        Duration::from_secs(10),
    )
    .unwrap();
    // The hit: nginx's own, with the headers ross sends for it.
    let (status, hit, hit_body) = nginx.get("/300/200/crop/photos/Dune.jpg", &[]);
    assert_eq!(status, 200);
    assert!(
        header(&hit, "x-request-id").is_none(),
        "the hit reached ross: {hit}"
    );
    assert_eq!(hit_body, body);
    for name in [
        "content-type",
        "cache-control",
        "etag",
        "last-modified",
        "x-cache",
        "surrogate-key",
    ] {
        assert_eq!(header(&hit, name), header(&from_ross, name), "{name}");
    }
    assert_eq!(
        header(&hit, "surrogate-key"),
        Some("ross k-photos/dune.jpg m-crop s-300x200") // heads are lower-cased here
    );
    let etag = header(&hit, "etag").unwrap().to_owned();
    let (status, _, _) = nginx.get("/300/200/crop/photos/Dune.jpg", &[("If-None-Match", &etag)]);
    assert_eq!(status, 304);
    // nginx's two hits (the 304 is one) reach ross over the hit log, with ross's own.
    let started = Instant::now();
    loop {
        let (_, metrics) = http_get(ross.port, "/metrics", Duration::from_secs(5)).unwrap();
        let metrics = String::from_utf8(metrics).unwrap();
        if metrics.contains("ross_nginx_hits_total 2\n") {
            assert!(metrics.contains("ross_hits_total 3\n"), "{metrics}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "nginx's hits not counted by ross: {}",
            metrics
                .lines()
                .filter(|l| l.contains("hit"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A .png key's render is a JPEG, from ross and then from nginx.
    assert_eq!(nginx.get("/100/100/resize/png/ccwn2c08.png", &[]).0, 200);
    // Errors pass through with their JSON bodies.
    for (path, want, code) in [
        ("/300/200/nosuchmode/photos/Dune.jpg", 404, "unknown-mode"),
        ("/300/200/crop/photos/nope.jpg", 404, "source-not-found"),
        ("/0300/200/crop/photos/Dune.jpg", 400, "invalid-size"),
        ("/640/480/crop/photos/Dune.jpg", 403, "size-not-allowed"),
    ] {
        let (status, head, body) = nginx.get(path, &[]);
        assert_eq!(status, want, "{path}: {head}");
        assert_eq!(
            header(&head, "content-type"),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(error_code(&body), code, "{path}");
    }
    // A path that climbs out is normalised by nginx and never reads the disk.
    let (status, _, body) = nginx.get("/300/200/crop/photos/../../../etc/passwd", &[]);
    assert!((400..500).contains(&status) && !body.windows(5).any(|w| w == b"root:"));

    // ross stopped: hits are still served, a miss is a 502.
    let _ = ross.child.kill();
    let _ = ross.child.wait();
    for path in [
        "/300/200/crop/photos/Dune.jpg",
        "/100/100/resize/png/ccwn2c08.png",
    ] {
        let (status, head, _) = nginx.get(path, &[]);
        assert_eq!(status, 200, "{path} with ross stopped");
        assert_eq!(header(&head, "content-type"), Some("image/jpeg"), "{path}");
        assert_eq!(
            header(&head, "cache-control"),
            Some("public, max-age=604800")
        );
    }
    let (status, _, _) = nginx.get("/100/100/crop/photos/Dune.jpg", &[]);
    assert!(
        (502..=504).contains(&status),
        "a miss with ross down: {status}"
    );
}

/// `Accept` headers beyond [`ross::nginx_config::KNOWN_ACCEPT`]: odd, refusing, weighing.
const ODD_ACCEPT: &[&str] = &[
    "image/webp,*/*;q=0.8",
    "image/avif;q=0,image/webp,*/*;q=0.8",
    "image/avif; q=0.0, image/webp;q=0",
    "image/jpeg,image/avif;q=0.5",
    "image/avif;q=0.5,image/webp;q=0.9",
    "image/avifx,image/webpx",
    "x-image/avif,x-image/webp",
    "image/avif-sequence",
    "IMAGE/AVIF",
    "image / webp",
    "image/webp , image/avif",
    "image/*;q=0.9,image/avif;q=0.1",
    "*/avif",
    "image/avif;level=1",
    "",
    "text/html",
    "image/avif,image/webp;q=1.5",
    "image/avif;q=abc,image/webp",
];

/// The generated site in front of a ross serving AVIF, WebP and JPEG: for every header of the
/// browsers' table and of odd ones, the format nginx serves is the one ross chooses (nginx
/// serving the hit itself for every browser's header and every header without parameters,
/// else leaving the choice to ross), with the same headers (`Vary: Accept` included).
#[test]
fn nginx_serves_the_format_ross_would_choose_for_every_accept_header() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("nginx/tmp")).unwrap();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__WHITELIST__ENABLED", "false"),
            ("ROSS__OUTPUT__FORMATS", "avif,webp,jpeg"),
            ("ROSS__OUTPUT__CORS_ORIGIN", "*"),
        ],
    );
    let port = free_port();
    let site = ross.nginx_site(port, &dir.path().join("nginx"), &[]);
    let nginx = Nginx::start(&dir.path().join("nginx"), &site, port);
    let path = "/300/200/crop/photos/Dune.jpg";
    // Every format rendered first, so that nginx has each hit.
    for accept in ["image/avif", "image/webp", "image/jpeg"] {
        let (status, _, _) = nginx.get(path, &[("Accept", accept)]);
        assert_eq!(status, 200);
    }
    let mut by_nginx = 0;
    let table: Vec<&str> = ross::nginx_config::KNOWN_ACCEPT
        .iter()
        .chain(ODD_ACCEPT)
        .copied()
        .collect();
    for accept in &table {
        let headers = [("Accept", *accept)];
        let (_, from_ross, _) = http_exchange(
            ross.port,
            "GET",
            path,
            &headers,
            b"",
            Duration::from_secs(10),
        )
        .unwrap();
        let (status, answer, _) = nginx.get(path, &headers);
        assert_eq!(status, 200, "{accept:?}: {answer}");
        for name in [
            "content-type",
            "cache-control",
            "etag",
            "vary",
            "surrogate-key",
            "access-control-allow-origin",
        ] {
            assert_eq!(
                header(&answer, name),
                header(&from_ross, name),
                "{accept:?}: {name}"
            );
        }
        let nginx_chose = header(&answer, "x-request-id").is_none();
        by_nginx += usize::from(nginx_chose);
        if ross::nginx_config::KNOWN_ACCEPT.contains(accept) || !accept.contains(';') {
            assert!(nginx_chose, "{accept:?}: left to ross");
        }
    }
    assert_eq!(header(&nginx.get(path, &[]).1, "vary"), Some("accept"));
    eprintln!(
        "{by_nginx} of {} Accept headers served by nginx, the rest chosen by ross",
        table.len()
    );
}

/// Renders run by the node on `port`.
fn renders(port: u16) -> u64 {
    admin(port, "GET", "/stats", "").1["renders"]
        .as_u64()
        .unwrap()
}

/// Three ross nodes behind the cluster config: each distinct URL renders once across the
/// cluster; a node killed hands its URLs to the others without failed requests; restarted,
/// it takes them back (and serves them from its cache).
#[test]
fn a_cluster_renders_each_variant_once_and_survives_a_node() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("nginx/tmp")).unwrap();
    let start = |i: usize, port: Option<u16>| {
        let node = dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&node).unwrap();
        let listen = port.map(|p| format!("127.0.0.1:{p}"));
        let mut env = Vec::new();
        if let Some(listen) = &listen {
            env.push(("ROSS__SERVER__LISTEN", listen.as_str()));
        }
        Ross::start(&node, &env)
    };
    let mut nodes: Vec<Ross> = (0..3).map(|i| start(i, None)).collect();
    let port = free_port();
    let mut site =
        deploy("nginx-cluster.conf").replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    for (i, node) in nodes.iter().enumerate() {
        site = site.replace(
            &format!("10.0.0.1{}:8080", i + 1),
            &format!("127.0.0.1:{}", node.port),
        );
    }
    // A node is tried again 1 s after it failed, not 10, to keep the test short.
    let site = site.replace("fail_timeout=10s", "fail_timeout=1s");
    let nginx = Nginx::start(&dir.path().join("nginx"), &site, port);

    let urls: Vec<String> = (0..30)
        .map(|i| format!("/{}/{}/crop/photos/Dune.jpg", 100 + i, 90 + i))
        .collect();
    let all_ok = |what: &str| {
        for url in &urls {
            let (status, head, _) = nginx.get(url, &[]);
            assert_eq!(status, 200, "{what}: {url}: {head}\n{}", nginx.errors());
        }
    };
    all_ok("first round");
    all_ok("second round");
    let shares: Vec<u64> = nodes.iter().map(|n| renders(n.port)).collect();
    assert_eq!(
        shares.iter().sum::<u64>(),
        30,
        "a URL rendered on more than one node"
    );
    assert!(
        shares.iter().all(|&n| n > 0),
        "a node got no URLs: {shares:?}"
    );
    println!("renders per node: {shares:?}");

    // Node 1 killed: its URLs move to the others (rendered there once), no request fails.
    let down_port = nodes[1].port;
    let _ = nodes[1].child.kill();
    let _ = nodes[1].child.wait();
    all_ok("with a node down");
    all_ok("with a node down, again");
    let moved = renders(nodes[0].port) + renders(nodes[2].port) - (shares[0] + shares[2]);
    assert_eq!(
        moved, shares[1],
        "the dead node's URLs were not rendered once elsewhere"
    );

    // Restarted on its port: it takes its URLs back. (Killed with SIGKILL, it may have lost
    // the index entries of its last renders, and with them those files, which it then
    // renders again.)
    nodes[1] = start(1, Some(down_port));
    // nginx tries a failed node again once its fail_timeout has passed: then a whole round
    // of the URLs gives the node all of its share.
    let answered = || {
        let back = admin(nodes[1].port, "GET", "/stats", "").1;
        back["hits"].as_u64().unwrap() + back["misses"].as_u64().unwrap()
    };
    let started = Instant::now();
    loop {
        let before = answered();
        all_ok("with the node back");
        let round = answered() - before;
        if round == shares[1] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the restarted node answered {round} of its {} URLs\n{}",
            shares[1],
            nginx.errors()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `deploy/ross.service` is a unit systemd accepts (with the binary where the unit expects
/// it).
#[test]
fn the_systemd_unit_verifies() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        panic!("systemd-analyze is missing (Debian's systemd package)");
    };
    let dir = tempfile::tempdir().unwrap();
    let ross = crate::util::build_dir().join("ross");
    let unit = deploy("ross.service").replace("/usr/local/bin/ross", ross.to_str().unwrap());
    let path = dir.path().join("ross.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ross.service"))
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify: {text}");
}

/// The generated site lets only `admin.networks` reach the admin pages and API, `/metrics` and
/// `/ready`: loopback by default; a 403 from anywhere else. `/health` and images stay open.
#[test]
fn the_admin_metrics_and_readiness_are_for_the_admin_networks_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("open/tmp")).unwrap();
    std::fs::create_dir_all(dir.path().join("closed/tmp")).unwrap();
    let ross = Ross::start(dir.path(), &[]);
    let port = free_port();
    let site = ross.nginx_site(port, &dir.path().join("open"), &[]);
    let open = Nginx::start(&dir.path().join("open"), &site, port);
    let other = free_port();
    let site = ross.nginx_site(
        other,
        &dir.path().join("closed"),
        &[("ROSS__ADMIN__NETWORKS", "10.0.0.0/8")],
    );
    let closed = Nginx::start(&dir.path().join("closed"), &site, other);
    for path in ["/metrics", "/ready", "/admin", "/admin/api/stats"] {
        let (status, head, _) = open.get(path, &[]);
        assert_ne!(
            status, 403,
            "{path} from loopback, allowed by default: {head}"
        );
        let (status, _, _) = closed.get(path, &[]);
        assert_eq!(status, 403, "{path} from outside admin.networks");
    }
    for nginx in [&open, &closed] {
        assert_eq!(nginx.get("/health", &[]).0, 200);
        assert_eq!(nginx.get("/100/100/crop/photos/Dune.jpg", &[]).0, 200);
    }
}
