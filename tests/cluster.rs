//! A cluster on loopback: ross nodes (the binary) sharing their state through the
//! S3-compatible test server, behind `deploy/nginx-cluster.conf` with Debian's nginx.

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::deploy::{deploy, Nginx};
use crate::process::{admin, cache_files, http_exchange, http_get, Ross, ADMIN_TOKEN};
use crate::s3_support::{Moto, Proxy, BUCKET};
use crate::util::{corpus, free_port};

/// The bucket of the cluster's state.
const STATE_BUCKET: &str = "cluster-state";

/// A TCP relay to one upstream that can be cut: while cut, it has closed every connection it
/// relayed and closes new ones at once, as a store out of reach does.
struct Cuttable {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Cuttable {
    fn start(upstream: u16) -> Cuttable {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, s, o) = (cut.clone(), stop.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut kept = o.lock().unwrap();
                kept.push(client.try_clone().unwrap());
                kept.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Cuttable {
            port,
            cut,
            open,
            stop,
        }
    }

    /// Cuts the store off (`true`) or brings it back.
    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for stream in self.open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.set_cut(true);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Waits for `holds` (checked every 100 ms), failing with `what` after `limit`; returns how
/// long it took.
fn wait_for(what: &str, limit: Duration, mut holds: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !holds() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// The sizes `port`'s node allows.
fn sizes(port: u16) -> Vec<String> {
    let (status, body) = admin(port, "GET", "/whitelist", "");
    assert_eq!(status, 200, "{body}");
    body["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn cluster(port: u16) -> serde_json::Value {
    let (status, body) = admin(port, "GET", "/cluster", "");
    assert_eq!(status, 200, "{body}");
    body
}

/// Whether the node `name` is shown up (`Some(true)`), down, or not at all on `port`'s
/// Cluster page.
fn shown_up(port: u16, name: &str) -> Option<bool> {
    cluster(port)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .map(|n| n["up"].as_bool().unwrap())
}

/// The Cluster admin page of `port`'s node, logged in with the test token.
fn cluster_page(port: u16) -> String {
    let exchange = |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        http_exchange(port, method, path, headers, body, Duration::from_secs(10)).unwrap()
    };
    let cookie = |head: &str, name: &str| -> String {
        head.lines()
            .filter_map(|l| l.strip_prefix("set-cookie:"))
            .find_map(|v| {
                v.trim()
                    .split(';')
                    .next()?
                    .strip_prefix(&format!("{name}="))
            })
            .map(|v| format!("{name}={v}"))
            .unwrap_or_else(|| panic!("no {name} cookie: {head}"))
    };
    let (_, head, body) = exchange("GET", "/admin/login", &[], b"");
    let html = String::from_utf8_lossy(&body);
    let marker = "name=\"csrf\" value=\"";
    let at = html.find(marker).unwrap() + marker.len();
    let csrf = html[at..].split('"').next().unwrap().to_owned();
    let form = format!("csrf={csrf}&token={ADMIN_TOKEN}");
    let (status, head, _) = exchange(
        "POST",
        "/admin/login",
        &[
            ("Cookie", &cookie(&head, "ross_login")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    );
    assert_eq!(status, 303, "{head}");
    let session = cookie(&head, "ross_session");
    let (status, _, body) = exchange("GET", "/admin/cluster", &[("Cookie", &session)], b"");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

struct Cluster {
    dir: tempfile::TempDir,
    store: Cuttable,
    _moto: Moto,
}

impl Cluster {
    /// moto with the state's bucket, behind a relay that can be cut.
    fn new() -> Cluster {
        let moto = Moto::start(false);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            moto.client()
                .create_bucket()
                .bucket(STATE_BUCKET)
                .send()
                .await
                .unwrap();
        });
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            store: Cuttable::start(moto.port),
            _moto: moto,
        }
    }

    fn node_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A node named `name`, its whitelist seeded with `sizes`, polling every second.
    fn node(&self, name: &str, sizes: &str, extra: &[(&str, &str)]) -> Ross {
        let endpoint = format!("http://127.0.0.1:{}", self.store.port);
        let mut env = vec![
            ("ROSS__CLUSTER__ENABLED", "true"),
            ("ROSS__CLUSTER__BUCKET", STATE_BUCKET),
            ("ROSS__CLUSTER__ENDPOINT", endpoint.as_str()),
            ("ROSS__CLUSTER__REGION", "us-east-1"),
            ("ROSS__CLUSTER__FORCE_PATH_STYLE", "true"),
            ("ROSS__CLUSTER__POLL_INTERVAL_MS", "1000"),
            ("ROSS__CLUSTER__HEARTBEAT_INTERVAL_MS", "1000"),
            ("ROSS__CLUSTER__NODE_NAME", name),
            ("ROSS__WHITELIST__ENABLED", "true"),
            ("ROSS__WHITELIST__SIZES", sizes),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ];
        env.extend_from_slice(extra);
        Ross::start(&self.node_dir(name), &env)
    }

    fn cache_of(&self, name: &str) -> Vec<PathBuf> {
        cache_files(&self.dir.path().join(name).join("cache"))
    }
}

/// nginx with `deploy/nginx-cluster.conf`, its three nodes replaced by `ports`.
fn balancer(dir: &Path, ports: &[u16]) -> Nginx {
    let dir = dir.join("nginx");
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let port = free_port();
    let mut site =
        deploy("nginx-cluster.conf").replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    for (i, node) in ports.iter().enumerate() {
        site = site.replace(
            &format!("10.0.0.1{}:8080", i + 1),
            &format!("127.0.0.1:{node}"),
        );
    }
    Nginx::start(&dir, &site, port)
}

/// Three nodes: a size added on one is allowed on all within 5 s, a purge on one removes the
/// variant from every node's disk, changes made while the store is cut off for 30 s reach
/// every node once it is back, a fourth node started later has every change, and a node
/// killed shows as down on the others' Cluster page.
#[test]
fn three_nodes_share_whitelist_changes_purges_and_heartbeats_through_s3() {
    let c = Cluster::new();
    let mut nodes: Vec<Ross> = ["a", "b", "c"]
        .iter()
        .map(|n| c.node(n, "72x72", &[]))
        .collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    wait_for("every node shown up", Duration::from_secs(15), || {
        ["a", "b", "c"]
            .iter()
            .all(|n| shown_up(ports[0], n) == Some(true))
    });
    let nginx = balancer(c.dir.path(), &ports);
    let url = "/300/300/crop/photos/Dune.jpg";
    assert_eq!(nginx.get(url, &[]).0, 403);

    // A size added on one node.
    let (status, body) = admin(ports[0], "PUT", "/whitelist/300x300", "");
    assert_eq!(status, 200, "{body}");
    let took = wait_for(
        "300x300 allowed on every node",
        Duration::from_secs(5),
        || {
            ports
                .iter()
                .all(|&p| sizes(p).contains(&"300x300".to_owned()))
        },
    );
    println!("a whitelist change reached every node in {took:?}");
    assert_eq!(nginx.get(url, &[]).0, 200, "{}", nginx.errors());

    // Rendered on every node, purged on one.
    for &port in &ports {
        assert_eq!(http_get(port, url, Duration::from_secs(30)).unwrap().0, 200);
    }
    let rendered = |name: &str| {
        c.cache_of(name)
            .iter()
            .any(|p| p.ends_with("300/300/crop/photos/Dune.jpg"))
    };
    assert!(["a", "b", "c"].iter().all(|n| rendered(n)));
    let (status, body) = admin(ports[2], "POST", "/purge", r#"{"key": "photos/Dune.jpg"}"#);
    assert_eq!(status, 200, "{body}");
    let took = wait_for(
        "the purge on every node's disk",
        Duration::from_secs(5),
        || !["a", "b", "c"].iter().any(|n| rendered(n)),
    );
    println!("a purge reached every node in {took:?}");
    let applied = cluster(ports[0])["applied"].clone();
    assert!(applied.is_string(), "{applied}");

    // The store cut off for 30 s: changes made meanwhile are kept, and sent when it is back.
    for &port in &ports {
        assert_eq!(http_get(port, url, Duration::from_secs(30)).unwrap().0, 200);
    }
    assert!(["a", "b", "c"].iter().all(|n| rendered(n)));
    c.store.set_cut(true);
    let (status, _) = admin(ports[1], "PUT", "/whitelist/400x400", "");
    assert_eq!(
        status, 200,
        "a change is made while the store is out of reach"
    );
    assert!(sizes(ports[1]).contains(&"400x400".to_owned()));
    let (status, _) = admin(ports[0], "POST", "/purge", r#"{"size": "300x300"}"#);
    assert_eq!(status, 200);
    wait_for(
        "node b says it is out of sync",
        Duration::from_secs(10),
        || {
            let b = cluster(ports[1]);
            b["in_sync"] == false && b["pending"].as_u64() >= Some(1)
        },
    );
    assert_eq!(
        nginx.get("/72/72/crop/photos/Dune.jpg", &[]).0,
        200,
        "serving goes on without the store"
    );
    std::thread::sleep(Duration::from_secs(30));
    c.store.set_cut(false);
    let took = wait_for(
        "the changes made while cut off",
        Duration::from_secs(10),
        || {
            ports
                .iter()
                .all(|&p| sizes(p).contains(&"400x400".to_owned()))
                && !["a", "b", "c"].iter().any(|n| rendered(n))
                && cluster(ports[1])["in_sync"] == true
        },
    );
    println!("changes waiting 30 s reached every node {took:?} after the store was back");

    // A node started later, with other sizes in its settings, has every change.
    let d = c.node("d", "10x10", &[]);
    wait_for(
        "the fourth node has the cluster's whitelist",
        Duration::from_secs(5),
        || sizes(d.port) == ["72x72", "300x300", "400x400"],
    );
    wait_for("the fourth node shown up", Duration::from_secs(5), || {
        shown_up(ports[0], "d") == Some(true)
    });

    // A node killed shows as down.
    let _ = nodes[1].child.kill();
    let _ = nodes[1].child.wait();
    let took = wait_for("b shown down", Duration::from_secs(10), || {
        shown_up(ports[0], "b") == Some(false)
    });
    println!("a node killed was shown down after {took:?}");
    let page = cluster_page(ports[0]);
    let row = page
        .split("<tr")
        .find(|row| row.contains("<strong>b</strong>"))
        .unwrap_or_else(|| panic!("no row for b: {page}"));
    assert!(row.contains(">down<"), "{row}");
    // What the API says of a node, pinned as the other answers are (tests/admin_api.rs).
    let node = &cluster(ports[0])["nodes"][0];
    let mut keys: Vec<&String> = node.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "address",
            "applied",
            "cache_bytes",
            "cache_entries",
            "heartbeat_seconds_ago",
            "hit_ratio",
            "hits",
            "id",
            "in_sync",
            "memory_bytes",
            "misses",
            "modes",
            "name",
            "p99_ms",
            "pending",
            "renders",
            "requests",
            "requests_per_second",
            "this",
            "up",
            "uptime_seconds",
            "version",
            "warnings"
        ]
    );
    // Every node but b agrees on the newest change.
    let applied: Vec<serde_json::Value> = [ports[0], ports[2], d.port]
        .iter()
        .map(|&p| cluster(p)["applied"].clone())
        .collect();
    assert!(applied.windows(2).all(|w| w[0] == w[1]), "{applied:?}");
    nodes.remove(1);
}

/// An attacker sends requests that make a node answer 502 (an S3 key longer than S3 allows,
/// a key the store refuses to read) through the balancer, twice a second: ordinary requests
/// are all answered, by the node their URL hashes to (each rendered once).
#[test]
fn no_client_can_take_a_node_out_of_the_balancer() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = Moto::start(false);
    let dune = std::fs::read(corpus().join("photos/Dune.jpg")).unwrap();
    runtime.block_on(moto.seed(&[("shop/photos/Dune.jpg", dune)]));
    let proxy = runtime.block_on(Proxy::start(moto.addr()));
    proxy.deny_containing("secret-");
    let dir = tempfile::tempdir().unwrap();
    let endpoint = proxy.endpoint();
    let nodes: Vec<Ross> = (0..3)
        .map(|i| {
            let node = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node).unwrap();
            Ross::start(
                &node,
                &[
                    ("ROSS__SOURCE__KIND", "s3"),
                    ("ROSS__SOURCE__BUCKET", BUCKET),
                    ("ROSS__SOURCE__PREFIX", "shop"),
                    ("ROSS__SOURCE__ENDPOINT", endpoint.as_str()),
                    ("ROSS__SOURCE__REGION", "us-east-1"),
                    ("ROSS__SOURCE__FORCE_PATH_STYLE", "true"),
                    ("ROSS__SOURCE__RETRIES", "0"),
                    ("AWS_ACCESS_KEY_ID", "testing"),
                    ("AWS_SECRET_ACCESS_KEY", "testing"),
                    ("AWS_EC2_METADATA_DISABLED", "true"),
                ],
            )
        })
        .collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let nginx = Arc::new(balancer(dir.path(), &ports));

    // The two answers the attacker can provoke, as ross gives them.
    let long = format!("/100/100/crop/{}.jpg", "k".repeat(1020));
    let (status, _, body) = nginx.get(&long, &[]);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(
        !proxy.requests().iter().any(|r| r.contains("kkkk")),
        "a key S3 cannot take was sent to it"
    );
    let (status, _, body) = nginx.get("/100/100/crop/secret-0.jpg", &[]);
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));

    let attacking = Arc::new(AtomicBool::new(true));
    let attacker = {
        let (nginx, attacking, long) = (nginx.clone(), attacking.clone(), long.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while attacking.load(Ordering::SeqCst) {
                i += 1;
                let path = if i % 2 == 0 {
                    long.clone()
                } else {
                    format!("/100/100/crop/secret-{i}.jpg")
                };
                nginx.get(&path, &[]);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let urls: Vec<String> = (0..30)
        .map(|i| format!("/{}/{}/crop/photos/Dune.jpg", 100 + i, 90 + i))
        .collect();
    let started = Instant::now();
    let mut answered = 0;
    let mut failed = Vec::new();
    while started.elapsed() < Duration::from_secs(10) {
        for url in &urls {
            let (status, head, _) = nginx.get(url, &[]);
            answered += 1;
            if status != 200 {
                failed.push(format!(
                    "{url}: {}",
                    head.lines().next().unwrap_or_default()
                ));
            }
        }
    }
    attacking.store(false, Ordering::SeqCst);
    attacker.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {answered} ordinary requests failed under attack: {:?}\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        nginx.errors()
    );
    let renders: u64 = ports
        .iter()
        .map(|&p| admin(p, "GET", "/stats", "").1["renders"].as_u64().unwrap())
        .sum();
    assert_eq!(
        renders, 30,
        "a URL moved to another node and was rendered again"
    );
    assert!(
        !nginx.errors().contains("no live upstreams"),
        "{}",
        nginx.errors()
    );
    let _ = std::io::stdout().flush();
    drop(nodes);
}

/// Debian's prometheus, killed when dropped.
struct Prometheus {
    child: std::process::Child,
    port: u16,
}

impl Prometheus {
    /// Starts it with `deploy/prometheus.yml` and `deploy/ross-rules.yml`, scraping `targets`
    /// every second.
    fn start(dir: &Path, targets: &[u16]) -> Prometheus {
        let deploy_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        for file in ["prometheus.yml", "ross-rules.yml"] {
            let checked = std::process::Command::new("promtool")
                .args([
                    "check",
                    if file == "prometheus.yml" {
                        "config"
                    } else {
                        "rules"
                    },
                ])
                .arg(deploy_dir.join(file))
                .output()
                .expect("promtool is not installed: scripts/test installs Debian's prometheus");
            assert!(
                checked.status.success(),
                "promtool refuses deploy/{file}: {}",
                String::from_utf8_lossy(&checked.stdout)
            );
        }
        std::fs::copy(
            deploy_dir.join("ross-rules.yml"),
            dir.join("ross-rules.yml"),
        )
        .unwrap();
        let mut config = deploy("prometheus.yml")
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        for (i, port) in targets.iter().enumerate() {
            config = config.replace(
                &format!("10.0.0.1{}:8080", i + 1),
                &format!("127.0.0.1:{port}"),
            );
        }
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus is not installed: scripts/test installs Debian's prometheus");
        let prometheus = Prometheus { child, port };
        wait_for("prometheus answers", Duration::from_secs(30), || {
            http_get(port, "/-/ready", Duration::from_secs(1)).is_ok_and(|r| r.0 == 200)
        });
        prometheus
    }

    /// The answer to an instant query: `status` and `data.result`.
    fn query(&self, promql: &str) -> serde_json::Value {
        let q = percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
        let (status, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={q}"),
            Duration::from_secs(10),
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "{promql}: {json}");
        json
    }

    /// The single value `promql` gives, once it gives one.
    fn value(&self, promql: &str) -> f64 {
        let mut value = f64::NAN;
        wait_for(
            &format!("a value for {promql}"),
            Duration::from_secs(30),
            || {
                let result = &self.query(promql)["data"]["result"];
                value = result[0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                value.is_finite()
            },
        );
        value
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `deploy/prometheus.yml` and its recording rules with Debian's prometheus against three
/// nodes: the cluster's hit ratio is the ratio of the summed counters (not the mean of the
/// nodes'), the p99 comes from the summed histograms, and every panel of the Grafana dashboard
/// is a query Prometheus takes.
#[test]
fn prometheus_adds_the_nodes_up() {
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<Ross> = (0..3)
        .map(|i| {
            let node = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node).unwrap();
            Ross::start(&node, &[])
        })
        .collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let prometheus = Prometheus::start(dir.path(), &ports);
    wait_for("every node scraped", Duration::from_secs(30), || {
        prometheus.value("count(up{job=\"ross\"} == 1)") == 3.0
    });
    // Node 0: one miss, nine hits. Node 1: four misses. Node 2: nothing. The nodes' ratios
    // with traffic average 0.45; the cluster's is 9/14.
    let get = |port: u16, url: &str| {
        assert_eq!(http_get(port, url, Duration::from_secs(30)).unwrap().0, 200);
    };
    for _ in 0..10 {
        get(ports[0], "/100/100/crop/photos/Dune.jpg");
    }
    for i in 0..4 {
        get(ports[1], &format!("/{}/100/crop/photos/Dune.jpg", 101 + i));
    }
    let expected = 9.0 / 14.0;
    let mut ratio = 0.0;
    wait_for("the cluster's hit ratio", Duration::from_secs(30), || {
        ratio = prometheus.value("ross:hit_ratio:rate5m");
        (ratio - expected).abs() < 0.05
    });
    println!("cluster hit ratio {ratio:.3} (expected {expected:.3})");
    let p99 = prometheus.value("ross:request_ms:p99_5m");
    assert!(p99 > 0.0, "{p99}");
    wait_for(
        "the per-node rate of every node",
        Duration::from_secs(30),
        || {
            let per_node = prometheus.query("instance:ross_requests:rate1m");
            per_node["data"]["result"].as_array().unwrap().len() == 3
        },
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy("grafana-dashboard.json")).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let answer = prometheus.query(expr);
            assert_eq!(answer["status"], "success", "{expr}: {answer}");
        }
    }
    drop(nodes);
}

/// Renders run by the node on `port`, and misses it answered with another node's render.
fn renders_and_shared(port: u16) -> (u64, u64) {
    let metrics = http_get(port, "/metrics", Duration::from_secs(5))
        .unwrap()
        .1;
    let metrics = String::from_utf8(metrics).unwrap();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    };
    (value("ross_renders_total"), value("ross_shared_hits_total"))
}

/// Three nodes with `cache.shared` behind the cluster balancer: once one is stopped, the
/// others serve its URLs from the shared renders without rendering them; a purge applies to
/// the shared renders too. (Without the shared tier, `tests/deploy.rs` shows the others
/// render every one of them again.)
#[test]
fn with_shared_renders_a_node_that_takes_over_urls_renders_none() {
    let c = Cluster::new();
    let shared = [("ROSS__CACHE__SHARED", "true")];
    let mut nodes: Vec<Ross> = ["a", "b", "c"]
        .iter()
        .map(|n| c.node(n, "72x72", &shared))
        .collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    admin(ports[0], "PUT", "/whitelist", r#"{"enabled": false}"#);
    wait_for(
        "the whitelist off everywhere",
        Duration::from_secs(10),
        || {
            ports
                .iter()
                .all(|&p| admin(p, "GET", "/whitelist", "").1["enabled"] == false)
        },
    );
    let nginx = balancer(c.dir.path(), &ports);
    let urls: Vec<String> = (0..30)
        .map(|i| format!("/{}/{}/crop/photos/Dune.jpg", 100 + i, 90 + i))
        .collect();
    for url in &urls {
        assert_eq!(nginx.get(url, &[]).0, 200, "{url}");
    }
    let before: Vec<(u64, u64)> = ports.iter().map(|&p| renders_and_shared(p)).collect();
    let share_b = before[1].0;
    assert_eq!(before.iter().map(|r| r.0).sum::<u64>(), 30);
    assert!(share_b > 0, "{before:?}");
    // The renders reach the store in the background.
    std::thread::sleep(Duration::from_secs(2));

    let _ = nodes[1].child.kill();
    let _ = nodes[1].child.wait();
    for url in &urls {
        assert_eq!(nginx.get(url, &[]).0, 200, "{url} with b stopped");
    }
    let after: Vec<(u64, u64)> = [ports[0], ports[2]]
        .iter()
        .map(|&p| renders_and_shared(p))
        .collect();
    let rendered_again = after[0].0 + after[1].0 - before[0].0 - before[2].0;
    let from_store = after[0].1 + after[1].1 - before[0].1 - before[2].1;
    println!(
        "b had {share_b} of 30 URLs; with it stopped, the others rendered {rendered_again} of \
         them again and took {from_store} from the shared renders"
    );
    assert_eq!((rendered_again, from_store), (0, share_b));

    // A purge reaches the shared renders: a URL purged is rendered anew, not taken from them.
    let url = &urls[0];
    let (status, _) = admin(ports[0], "POST", "/purge", r#"{"key": "photos/Dune.jpg"}"#);
    assert_eq!(status, 200);
    wait_for("the purge on c", Duration::from_secs(5), || {
        !c.cache_of("c")
            .iter()
            .any(|p| p.ends_with("photos/Dune.jpg"))
    });
    let renders = |p| renders_and_shared(p).0;
    let (a0, c0) = (renders(ports[0]), renders(ports[2]));
    assert_eq!(nginx.get(url, &[]).0, 200);
    assert_eq!(
        renders(ports[0]) + renders(ports[2]),
        a0 + c0 + 1,
        "a purged render was taken from the shared renders"
    );
}
