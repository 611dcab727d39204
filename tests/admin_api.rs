use std::sync::Arc;

use crate::util::{TestServer, ADMIN_TOKEN};

fn sizes(reply: &crate::util::Reply) -> Vec<String> {
    reply.json()["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// No token, a wrong token, or another scheme: 401 with `WWW-Authenticate`, on every route.
#[tokio::test]
async fn the_api_needs_the_token() {
    let server = TestServer::builder().start().await;
    for (method, path) in [
        ("GET", "/whitelist"),
        ("PUT", "/whitelist/10x10"),
        ("DELETE", "/whitelist/72x72"),
        ("POST", "/purge"),
        ("GET", "/stats"),
        ("GET", "/plugins"),
    ] {
        // Wrong bearer tokens are guesses, counted against the address (5 in 15 minutes):
        // two routes get them here, the others the answers that are not guesses.
        let mut auths = vec![None, Some(format!("Basic {ADMIN_TOKEN}"))];
        if [("GET", "/whitelist"), ("POST", "/purge")].contains(&(method, path)) {
            auths.push(Some("Bearer wrong-token".to_owned()));
            auths.push(Some(format!("Bearer {ADMIN_TOKEN}x")));
        }
        for auth in auths {
            let mut req = server
                .client()
                .request(method.parse().unwrap(), format!("/admin/api{path}"))
                .body("{\"all\": true}");
            if let Some(auth) = &auth {
                req = req.header("Authorization", auth.as_str());
            }
            let r = server.request(req).await;
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}");
            assert_eq!(r.header("www-authenticate"), "Bearer");
            assert_eq!(r.json()["error"]["code"], "unauthorized");
        }
    }
    assert_eq!(server.state.whitelist.snapshot().sizes.len(), 4);
    assert_eq!(server.admin("GET", "/whitelist", "").await.status, 200);
    let req = server
        .client()
        .get("/admin/api/whitelist")
        .header("Authorization", format!("bearer {ADMIN_TOKEN}"));
    assert_eq!(
        server.request(req).await.status,
        200,
        "the scheme is case-insensitive"
    );
}

/// Regression: the API's token could be guessed at full speed (47,868 a second, no lockout
/// after 389,000 failures), and 40 parallel logins got 7 guesses where 5 are allowed. Wrong
/// bearer tokens now count with failed logins, per address, each counted before it is
/// checked: of 40 parallel guesses 5 are checked, the rest refused; then even the right
/// token is refused (429, `Retry-After`) until the window has passed.
#[tokio::test]
async fn api_guesses_are_limited_like_logins_even_in_parallel() {
    let server = std::sync::Arc::new(TestServer::builder().start().await);
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                let req = server
                    .client()
                    .get("/admin/api/stats")
                    .header("Authorization", format!("Bearer guess-{i}"));
                server.request(req).await.status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for g in guesses {
        statuses.push(g.await.unwrap());
    }
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((checked, refused), (5, 35), "{statuses:?}");
    let r = server.admin("GET", "/stats", "").await;
    assert_eq!(r.status, 429, "the right token while locked out");
    assert_eq!(r.json()["error"]["code"], "too-many-logins");
    assert!(r.header("retry-after").parse::<u64>().unwrap() > 800);
}

/// Sizes allowed, removed and the whitelist switched take effect on the next request, with
/// no restart; removing a size purges its renders.
#[tokio::test]
async fn whitelist_edits_apply_at_once_and_removing_a_size_purges_it() {
    let server = TestServer::builder().whitelist("72x72").start().await;
    let url = "/300/300/crop/photos/Dune.jpg";
    assert_eq!(server.get(url).await.status, 403);
    let r = server.admin("PUT", "/whitelist/300x300", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sizes(&r), ["72x72", "300x300"]);
    assert_eq!(server.get(url).await.status, 200);
    assert!(server
        .cache_dir()
        .join("jpeg/300/300/crop/photos/Dune.jpg")
        .is_file());
    let r = server.admin("DELETE", "/whitelist/300x300", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sizes(&r), ["72x72"]);
    assert_eq!(r.json()["purged"]["entries"], 1);
    assert!(!server
        .cache_dir()
        .join("jpeg/300/300/crop/photos/Dune.jpg")
        .exists());
    assert_eq!(server.get(url).await.status, 403);
    let r = server
        .admin("PUT", "/whitelist", r#"{"enabled": false}"#)
        .await;
    assert_eq!(
        (r.status, r.json()["enabled"].as_bool()),
        (200, Some(false))
    );
    assert_eq!(server.get(url).await.status, 200);
    let r = server.admin("GET", "/whitelist", "").await;
    assert_eq!(
        r.json(),
        serde_json::json!({"enabled": false, "sizes": ["72x72"], "source": "admin", "shared": false})
    );
}

/// Sizes added and removed in bulk (`PATCH /whitelist`): all checked before any changes, the
/// removed ones purged.
#[tokio::test]
async fn sizes_are_added_and_removed_in_bulk() {
    let server = TestServer::builder().whitelist("72x72").start().await;
    let url = "/72/72/crop/photos/Dune.jpg";
    assert_eq!(server.get(url).await.status, 200);
    let r = server
        .admin(
            "PATCH",
            "/whitelist",
            r#"{"add": ["300x300", "10x10", "300x300"]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["sizes"],
        serde_json::json!(["10x10", "72x72", "300x300"])
    );
    let r = server
        .admin(
            "PATCH",
            "/whitelist",
            r#"{"add": ["20x20"], "remove": ["72x72", "0x1"]}"#,
        )
        .await;
    assert_eq!(r.status, 400, "one bad size refuses the whole edit");
    assert!(r.text().contains("0x1"), "{}", r.text());
    let r = server
        .admin(
            "PATCH",
            "/whitelist",
            r#"{"add": ["20x20"], "remove": ["72x72", "10x10"]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["sizes"], serde_json::json!(["20x20", "300x300"]));
    assert_eq!(r.json()["purged"]["entries"], 1);
    assert_eq!(server.get(url).await.status, 403);
    let r = server.admin("PATCH", "/whitelist", r#"{}"#).await;
    assert_eq!(r.status, 400);
}

/// With `whitelist.source = "config"` the settings are the whitelist: every edit is a 409,
/// and a restart applies the file over what the data folder held.
#[tokio::test]
async fn a_whitelist_from_the_settings_file_cannot_be_edited_and_is_applied_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let server = TestServer::builder()
            .whitelist("72x72")
            .start_at(dir.path())
            .await;
        server.admin("PUT", "/whitelist/300x300", "").await;
    }
    let server = TestServer::builder()
        .whitelist("72x72,200x250")
        .set("ROSS__WHITELIST__SOURCE", "config")
        .start_at(dir.path())
        .await;
    let r = server.admin("GET", "/whitelist", "").await;
    assert_eq!(r.json()["sizes"], serde_json::json!(["72x72", "200x250"]));
    assert_eq!(r.json()["source"], "config");
    for (method, path, body) in [
        ("PUT", "/whitelist/400x400", ""),
        ("DELETE", "/whitelist/72x72", ""),
        ("PUT", "/whitelist", r#"{"enabled": false}"#),
        ("PATCH", "/whitelist", r#"{"add": ["1x1"]}"#),
    ] {
        let r = server.admin(method, path, body).await;
        assert_eq!(r.status, 409, "{method} {path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "whitelist-from-config");
    }
    assert_eq!(
        server.get("/300/300/crop/photos/Dune.jpg").await.status,
        403
    );
}

/// Every malformed edit or purge is a 400 naming what is wrong, and changes nothing.
#[tokio::test]
async fn bad_input_is_400_and_changes_nothing() {
    let server = TestServer::builder().whitelist("72x72").start().await;
    server.get("/72/72/crop/photos/Dune.jpg").await;
    let before = server.admin("GET", "/whitelist", "").await.json();
    let cases: &[(&str, &str, &str, &str)] = &[
        ("PUT", "/whitelist/0x0", "", "not a size"),
        ("PUT", "/whitelist/abcxdef", "", "not a size"),
        ("PUT", "/whitelist/300", "", "not a size"),
        ("PUT", "/whitelist/0300x300", "", "not a size"),
        ("PUT", "/whitelist/99999x1", "", "larger than"),
        ("DELETE", "/whitelist/72x", "", "not a size"),
        ("PUT", "/whitelist", "{not json", "not what this call takes"),
        ("PUT", "/whitelist", "", "not what this call takes"),
        (
            "PUT",
            "/whitelist",
            r#"{"enabled": "maybe"}"#,
            "invalid type",
        ),
        (
            "PUT",
            "/whitelist",
            r#"{"enabled": false, "colour": 1}"#,
            "colour",
        ),
        ("PUT", "/whitelist", r#"[true]"#, "JSON object"),
        ("POST", "/purge", "{}", "exactly one"),
        (
            "POST",
            "/purge",
            r#"{"key": "a", "mode": "crop"}"#,
            "exactly one",
        ),
        ("POST", "/purge", r#"{"size": "abc"}"#, "not a size"),
        ("POST", "/purge", r#"{"everything": true}"#, "everything"),
        ("POST", "/purge", r#"{"all": false}"#, "must be true"),
        ("POST", "/purge", r#"{"key": "../etc/passwd"}"#, "segment"),
        ("POST", "/purge", r#"{"key": ""}"#, "empty"),
        ("POST", "/purge", r#"{"prefix": ""}"#, "all"),
        ("POST", "/purge", r#"{"mode": "Crop!"}"#, "not a mode name"),
        ("POST", "/purge", r#"{"key": 5}"#, "invalid type"),
    ];
    for (method, path, body, says) in cases {
        let r = server.admin(method, path, body).await;
        assert_eq!(r.status, 400, "{method} {path} {body}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid-request");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(says), "{method} {path} {body}: {message}");
    }
    assert_eq!(server.admin("GET", "/whitelist", "").await.json(), before);
    assert_eq!(
        server.state.cache.stats().entries,
        1,
        "a refused purge removed something"
    );
    let hit = server.get("/72/72/crop/photos/Dune.jpg").await;
    assert_eq!(hit.header("x-cache"), "HIT");
}

/// Edits made at the same time from many clients all land, and all survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_all_land_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let builder = || TestServer::builder().whitelist("72x72,200x250");
    let server = Arc::new(builder().start_at(dir.path()).await);
    let tasks: Vec<_> = (1..=40)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                let r = server
                    .admin("PUT", &format!("/whitelist/{i}x{i}"), "")
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
                if i % 2 == 0 {
                    let r = server
                        .admin("DELETE", &format!("/whitelist/{i}x{i}"), "")
                        .await;
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            })
        })
        .chain([{
            let server = server.clone();
            tokio::spawn(async move {
                let r = server.admin("DELETE", "/whitelist/200x250", "").await;
                assert_eq!(r.status, 200);
            })
        }])
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut expected: Vec<String> = (1..=40)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("{i}x{i}"))
        .chain(["72x72".to_owned()])
        .collect();
    let sort = |v: &mut Vec<String>| {
        v.sort_by_key(|s| {
            let (w, h) = s.split_once('x').unwrap();
            (w.parse::<u32>().unwrap(), h.parse::<u32>().unwrap())
        })
    };
    sort(&mut expected);
    assert_eq!(
        sizes(&server.admin("GET", "/whitelist", "").await),
        expected
    );
    drop(server);
    let again = builder().start_at(dir.path()).await;
    assert_eq!(sizes(&again.admin("GET", "/whitelist", "").await), expected);
    assert!(again.state.whitelist.allows("39x39".parse().unwrap()));
    assert!(!again.state.whitelist.allows("200x250".parse().unwrap()));
}

/// The whitelist and the cache outlive a restart; the settings only seed a new data_dir.
#[tokio::test]
async fn whitelist_and_cache_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::builder()
        .whitelist("72x72")
        .start_at(dir.path())
        .await;
    server.admin("PUT", "/whitelist/300x300", "").await;
    server
        .admin("PUT", "/whitelist", r#"{"enabled": false}"#)
        .await;
    let first = server.get("/120/90/crop/photos/Wood.jpg").await;
    assert_eq!(first.header("x-cache"), "MISS");
    drop(server);
    let again = TestServer::builder()
        .whitelist("10x10")
        .start_at(dir.path())
        .await;
    let wl = again.admin("GET", "/whitelist", "").await.json();
    assert_eq!(
        wl,
        serde_json::json!({
            "enabled": false,
            "sizes": ["72x72", "300x300"],
            "source": "admin",
            "shared": false
        })
    );
    let hit = again.get("/120/90/crop/photos/Wood.jpg").await;
    assert_eq!(hit.header("x-cache"), "HIT");
    assert_eq!(hit.body, first.body);
    again.settled().await;
    assert_eq!(again.state.cache.stats().entries, 1);
}

/// Stats count requests, hits, misses and errors; plugins list each mode's file and version.
#[tokio::test]
async fn stats_and_plugins() {
    let server = TestServer::builder().start().await;
    server.get("/50/50/crop/photos/Dune.jpg").await;
    server.get("/50/50/crop/photos/Dune.jpg").await;
    server.get("/50/50/nosuchmode/photos/Dune.jpg").await;
    let stats = server.admin("GET", "/stats", "").await.json();
    assert_eq!(stats["hits"], 1, "{stats}");
    assert_eq!(stats["misses"], 1, "{stats}");
    assert_eq!(stats["errors"]["404"], 1, "{stats}");
    assert_eq!(stats["responses"]["200"], 2, "{stats}");
    assert_eq!(stats["requests"], 3, "{stats}");
    assert_eq!(stats["renders_in_flight"], 0);
    assert_eq!(stats["cache"]["entries"], 1);
    assert!(stats["cache"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(stats["cache"]["max_bytes"], 10u64 << 30);
    let plugins = server.admin("GET", "/plugins", "").await.json();
    let crop = plugins["modes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "crop")
        .unwrap_or_else(|| panic!("{plugins}"));
    assert!(crop["file"].as_str().unwrap().ends_with("libcrop.so"));
    assert!(crop["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(crop["abi"], plugin_api::PLUGIN_ABI_VERSION);
    assert!(crop["loaded_at"].as_str().unwrap().ends_with("GMT"));
    assert!(crop["last_load_error"].is_null());
}

/// With `admin.enabled = false` there is no API.
#[tokio::test]
async fn the_api_can_be_switched_off() {
    let server = TestServer::builder()
        .set("ROSS__ADMIN__ENABLED", "false")
        .start()
        .await;
    assert_eq!(server.admin("GET", "/whitelist", "").await.status, 404);
}

/// The paths of every key in `value`, one per line, sorted: objects as `a.b`, arrays as
/// `a[]` (from their first element), keys that are statuses as `*`.
fn key_tree(value: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, path: String, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    let key = if key.parse::<u16>().is_ok() { "*" } else { key };
                    let path = if path.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{path}.{key}")
                    };
                    out.push(path.clone());
                    walk(value, path, out);
                }
            }
            serde_json::Value::Array(items) => {
                if let Some(first) = items.first() {
                    walk(first, format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out.sort();
    out.dedup();
    out
}

/// The admin API's JSON is a public interface: its keys are pinned here, so that reshaping an
/// admin page (or a core type) cannot change it unnoticed. A change to these lists is a
/// change to `docs/admin-api.md` and to its version.
#[tokio::test]
async fn the_api_responses_keep_their_keys() {
    let server = TestServer::builder().start().await;
    server.get("/50/50/crop/photos/Dune.jpg").await;
    server.get("/50/50/nosuchmode/photos/Dune.jpg").await;
    let tree = |reply: crate::util::Reply| key_tree(&reply.json()).join("\n");
    let stats = tree(server.admin("GET", "/stats", "").await);
    let plugins = tree(server.admin("GET", "/plugins", "").await);
    let whitelist = tree(server.admin("GET", "/whitelist", "").await);
    let removed = tree(server.admin("DELETE", "/whitelist/72x72", "").await);
    let purge = tree(server.admin("POST", "/purge", "{\"all\": true}").await);
    let cluster = tree(server.admin("GET", "/cluster", "").await);
    let stats_keys = "\
cache
cache.bytes
cache.disk_bytes
cache.entries
cache.evicted_bytes
cache.evicted_entries
cache.index_disk_bytes
cache.max_bytes
cache.memory_bytes
cache.memory_entries
cache.purges_running
cache.recent_bytes
cache.reconciled
cache.reduced_disk_bytes
cache.reduced_max_bytes
cache.reduced_originals
errors
errors.*
fetches
hit_ratio
hits
misses
plugins
plugins.failures
plugins.libraries_mapped
plugins.loads
plugins.quarantines
recent_errors
recent_errors[].ago
recent_errors[].at
recent_errors[].code
recent_errors[].count
recent_errors[].method
recent_errors[].path
recent_errors[].reason
recent_errors[].request_id
recent_errors[].status
render_slots
renders
renders_in_flight
renders_waiting
requests
requests_per_second
responses
responses.*
stages
stages[].count
stages[].p50_ms
stages[].p90_ms
stages[].p95_ms
stages[].p99_ms
stages[].stage
stages[].sum_ms
timeline
timeline[].errors
timeline[].p50_ms
timeline[].p95_ms
timeline[].p99_ms
timeline[].requests
timeline[].seconds_ago
uptime_seconds";
    let plugins_keys = "\
dir
hot_reload
modes
modes[].abi
modes[].description
modes[].failures
modes[].file
modes[].last_load_error
modes[].loaded_at
modes[].name
modes[].quarantine
modes[].renders
modes[].status
modes[].version
pending
refused
workers
workers.crashes
workers.idle
workers.memory_bytes
workers.out_of_memory
workers.sandbox
workers.size
workers.start_failures
workers.started
workers.timeouts";
    let whitelist_keys = "\
enabled
shared
sizes
source";
    let removed_keys = "\
enabled
purged
purged.bytes
purged.entries
shared
sizes
source";
    let cluster_keys = "\
applied
enabled
in_sync
last_error
last_ok_seconds_ago
node
nodes
pending
received
sent
store";
    let purge_keys = "\
bytes
entries";
    assert_eq!(stats, stats_keys, "GET /stats");
    assert_eq!(plugins, plugins_keys, "GET /plugins");
    assert_eq!(whitelist, whitelist_keys, "GET /whitelist");
    assert_eq!(removed, removed_keys, "DELETE /whitelist/72x72");
    assert_eq!(purge, purge_keys, "POST /purge");
    assert_eq!(cluster, cluster_keys, "GET /cluster");
}

/// `/metrics` is a public interface too: every family's name and kind is pinned here (a
/// dashboard or alert reads them). Since the one registry, stage latencies are histograms
/// (they were summaries, which cannot be added up across nodes).
#[tokio::test]
async fn the_metrics_families_keep_their_names() {
    let server = TestServer::builder().start().await;
    // A labelled family shows once it has a series: ross_mode_renders_total after a render.
    assert_eq!(
        server.get("/100/100/crop/photos/Dune.jpg").await.status,
        200
    );
    let text = server.get("/metrics").await.text();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    let pinned = "\
ross_stage_ms histogram
ross_request_ms histogram
ross_requests_total counter
ross_errors_total counter
ross_hits_total counter
ross_misses_total counter
ross_renders_total counter
ross_source_fetches_total counter
ross_plugin_loads_total counter
ross_plugin_load_failures_total counter
ross_mode_quarantines_total counter
ross_workers_started_total counter
ross_worker_start_failures_total counter
ross_worker_timeouts_total counter
ross_worker_crashes_total counter
ross_worker_out_of_memory_total counter
ross_cache_evicted_total counter
ross_cache_evicted_bytes_total counter
ross_cache_no_space_total counter
ross_source_events_queue_errors_total counter
ross_cache_mode_purges_total counter
ross_log_refusals_dropped_total counter
ross_nginx_hits_total counter
ross_shared_hits_total counter
ross_hit_log_dropped_total counter
ross_hit_log_unreadable_total counter
ross_reduced_renders_total counter
ross_reduced_kept_total counter
ross_decode_warnings_total counter
ross_renders_in_flight gauge
ross_renders_waiting gauge
ross_cache_entries gauge
ross_cache_bytes gauge
ross_cache_disk_bytes gauge
ross_cache_max_bytes gauge
ross_cache_memory_entries gauge
ross_cache_memory_bytes gauge
ross_cache_purges_running gauge
ross_cache_index_disk_bytes gauge
ross_recent_originals_bytes gauge
ross_reduced_originals gauge
ross_reduced_originals_disk_bytes gauge
ross_workers_idle gauge
ross_plugin_libraries_mapped gauge
ross_uptime_seconds gauge
ross_process_resident_memory_bytes gauge
ross_mode_loaded gauge
ross_mode_renders_total counter";
    assert_eq!(families.join("\n"), pinned);
}
