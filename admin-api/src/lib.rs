//! The admin JSON API's response types: ross's admin schema, version [`VERSION`], documented
//! key by key in `docs/admin-api.md` and pinned by a test of every key.
//!
//! The server fills these from its metrics registry and state in one place, the API sends
//! them as they are, and the admin pages (`ross-admin-ui`) show them through presentation
//! helpers of their own: a page can be reshaped, or a core type changed, without changing what
//! API clients read. Adding a key is compatible; renaming or removing one, or changing its
//! meaning, is a new version. Clients in Rust can read answers with these types
//! (`Deserialize`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The schema's version.
pub const VERSION: u32 = 1;

/// `GET /admin/api/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds since the server started.
    pub uptime_seconds: u64,
    /// Responses sent since start.
    pub requests: u64,
    /// Requests a second over the last minute.
    pub requests_per_second: f64,
    /// By status.
    pub responses: BTreeMap<u16, u64>,
    /// 4xx and 5xx by status.
    pub errors: BTreeMap<u16, u64>,
    /// Requests answered from the cache by ross.
    pub hits: u64,
    /// Requests answered by a render.
    pub misses: u64,
    /// Hits over hits and misses, when there was either.
    pub hit_ratio: Option<f64>,
    /// Renders run.
    pub renders: u64,
    /// Originals fetched.
    pub fetches: u64,
    /// Renders holding a slot now.
    pub renders_in_flight: u64,
    /// Misses admitted and waiting for a fetch or a slot.
    pub renders_waiting: u64,
    /// `limits.max_concurrent_renders`.
    pub render_slots: u64,
    /// Timings of each pipeline stage, in pipeline order.
    pub stages: Vec<Stage>,
    /// The disk cache.
    pub cache: Cache,
    /// Plugin loading.
    pub plugins: PluginCounters,
    /// The most recent error responses, newest first.
    pub recent_errors: Vec<RecentError>,
    /// Requests and latency over the last minutes, in 10 s buckets, oldest first.
    pub timeline: Vec<TimelinePoint>,
}

/// A pipeline stage's timings: since start (count, sum) and over the last 5 minutes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// `cache_check`, `fetch`, `decode`, `render`, `encode` or `cache_write`.
    pub stage: String,
    /// Times recorded since start.
    pub count: u64,
    /// Their sum, in milliseconds.
    pub sum_ms: f64,
    /// Median over the last 5 minutes, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 90th percentile over the last 5 minutes.
    pub p90_ms: Option<f64>,
    /// 95th percentile over the last 5 minutes.
    pub p95_ms: Option<f64>,
    /// 99th percentile over the last 5 minutes.
    pub p99_ms: Option<f64>,
}

/// The disk cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cache {
    /// Variants indexed.
    pub entries: u64,
    /// Bytes of the cached variants.
    pub bytes: u64,
    /// What the cache takes on disk, as `du` counts it (the files' blocks, the cache's
    /// folders, purged files not yet deleted): the figure held within `max_bytes`.
    pub disk_bytes: u64,
    /// `cache.max_bytes`.
    pub max_bytes: u64,
    /// Variants evicted since start.
    pub evicted_entries: u64,
    /// Bytes evicted since start.
    pub evicted_bytes: u64,
    /// Purges running now.
    pub purges_running: u64,
    /// Whether start-up reconciliation with the disk has finished.
    pub reconciled: bool,
    /// Bytes the index takes on disk.
    pub index_disk_bytes: u64,
    /// Hot variants also held in memory.
    pub memory_entries: u64,
    /// Their bytes.
    pub memory_bytes: u64,
    /// Bytes of the originals fetched in the last minute, and their decoded pixels.
    pub recent_bytes: u64,
    /// Reduced originals kept on disk (copies of decoded originals later sizes render from).
    pub reduced_originals: u64,
    /// What they take on disk, as `du` counts it.
    pub reduced_disk_bytes: u64,
    /// `cache.originals_bytes`: their bound (0: none are kept).
    pub reduced_max_bytes: u64,
}

/// Plugin loading since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginCounters {
    /// Plugin files loaded and put in service.
    pub loads: u64,
    /// Plugin files refused.
    pub failures: u64,
    /// Plugin libraries mapped into the server process (none: workers map them).
    pub libraries_mapped: u64,
    /// Modes put in quarantine.
    pub quarantines: u64,
}

/// An error response of the last ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentError {
    /// When, as an HTTP date.
    pub at: String,
    /// How long ago, readable.
    pub ago: String,
    /// The status sent.
    pub status: u16,
    /// The SPEC's error code.
    pub code: String,
    /// The message the client got: why it was refused or what failed.
    pub reason: String,
    /// The method.
    pub method: String,
    /// The path asked for.
    pub path: String,
    /// The latest request's id (`X-Request-Id`), to find its log line.
    pub request_id: String,
    /// How many times it was sent (same status, code, method and path) since it entered the
    /// list.
    pub count: u64,
}

/// Ten seconds of requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// How many seconds before the current bucket this one is (0 for the current one).
    pub seconds_ago: u64,
    /// Requests answered in it.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Latency percentiles of its requests, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

/// `GET /admin/api/plugins`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plugins {
    /// The plugin folder.
    pub dir: String,
    /// Whether the folder is watched.
    pub hot_reload: bool,
    /// Modes in service, by name.
    pub modes: Vec<Mode>,
    /// Files refused, newest first.
    pub refused: Vec<Refused>,
    /// Files of the folder, new or changed since they were loaded and not refused, not yet in
    /// service: settling (unchanged for 200 ms first) or being checked. Empty once the
    /// folder is what is served.
    pub pending: Vec<String>,
    /// The render workers the modes run in.
    pub workers: Workers,
}

/// A mode in service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mode {
    /// Its URL name.
    pub name: String,
    /// The plugin's version of it.
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// The plugin ABI its library was built against.
    pub abi: String,
    /// The plugin file.
    pub file: String,
    /// When it was loaded, as an HTTP date.
    pub loaded_at: String,
    /// "serving", "serving; a newer copy of its file was refused", or "quarantined".
    pub status: String,
    /// Renders of this load that produced an image.
    pub renders: u64,
    /// Renders of this load that failed in the mode's own code (an error or unusable pixels
    /// from the plugin; its worker hung, crashed or ran out of memory while rendering).
    pub failures: u64,
    /// Why the mode is out of service, if it is (until its plugin file changes).
    pub quarantine: Option<Quarantine>,
    /// The last load error of its file, if a later copy was refused.
    pub last_load_error: Option<Refused>,
}

/// Why a mode is out of service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quarantine {
    /// Since when, as an HTTP date.
    pub since: String,
    /// Why.
    pub reason: String,
}

/// A plugin file refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    /// The file.
    pub file: String,
    /// Why.
    pub error: String,
    /// When, as an HTTP date.
    pub at: String,
}

/// The render workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Workers {
    /// Workers kept per generation (`limits.max_concurrent_renders`).
    pub size: u64,
    /// Workers idle now.
    pub idle: u64,
    /// Workers started since the server started (replacements included).
    pub started: u64,
    /// Workers that could not be started.
    pub start_failures: u64,
    /// Jobs killed at `limits.render_timeout_ms`.
    pub timeouts: u64,
    /// Workers that died in a job (a crash in a plugin, decoder or encoder).
    pub crashes: u64,
    /// Workers that went over `limits.worker_memory_bytes`.
    pub out_of_memory: u64,
    /// `limits.worker_memory_bytes`.
    pub memory_bytes: u64,
    /// The sandbox the last worker started is in, in a line.
    pub sandbox: String,
}

/// `GET /admin/api/whitelist`, and the answer to a change of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Whitelist {
    /// When false, every size within the limits is served.
    pub enabled: bool,
    /// `WxH`, ascending.
    pub sizes: Vec<String>,
    /// Where the whitelist is kept: `admin` (edited here) or `config` (the settings file; edits
    /// are refused with 409).
    #[serde(default)]
    pub source: String,
    /// Whether edits reach every node of the cluster.
    #[serde(default)]
    pub shared: bool,
    /// What removing a size purged (only in the answer to `DELETE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<Purged>,
}

/// `POST /admin/api/purge`: what a purge removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Purged {
    /// Entries (files) removed.
    pub entries: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// `GET /admin/api/cluster`: this node's standing in the cluster, and every node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Whether this node is in a cluster (`cluster.enabled`); the rest is empty when not.
    pub enabled: bool,
    /// This node's id.
    pub node: String,
    /// Where the shared state lives, `s3://bucket/prefix/`.
    pub store: String,
    /// Whether this node has sent every change made on it and read the store lately.
    pub in_sync: bool,
    /// Changes made on this node that wait to be sent.
    pub pending: u64,
    /// Seconds since the store last answered a whole round, if it ever did.
    pub last_ok_seconds_ago: Option<f64>,
    /// Why the last round failed, if it did.
    pub last_error: Option<String>,
    /// The stamp of the newest change applied here.
    pub applied: Option<String>,
    /// Changes sent since start.
    pub sent: u64,
    /// Changes from other nodes applied since start.
    pub received: u64,
    /// Every node that wrote a heartbeat in the last day, by name.
    pub nodes: Vec<ClusterNode>,
}

/// A node, from its last heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Its id.
    pub id: String,
    /// Its name (`cluster.node_name`).
    pub name: String,
    /// Where its admin pages and `/metrics` are reached (`cluster.advertise`).
    pub address: String,
    /// The ross version it runs.
    pub version: String,
    /// Whether its heartbeat is recent (3 intervals).
    pub up: bool,
    /// Whether it is the node answering.
    pub this: bool,
    /// Seconds since its last heartbeat.
    pub heartbeat_seconds_ago: f64,
    /// Seconds it has been running, as of that heartbeat.
    pub uptime_seconds: u64,
    /// Its modes and their versions.
    pub modes: BTreeMap<String, String>,
    /// The stamp of the newest change it applied.
    pub applied: Option<String>,
    /// Changes made on it that wait to be sent.
    pub pending: u64,
    /// Whether it is in sync, by its own account.
    pub in_sync: bool,
    /// Requests since start.
    pub requests: u64,
    /// Requests a second over the last minute.
    pub requests_per_second: f64,
    /// Cache hits since start (nginx's included when it reports them).
    pub hits: u64,
    /// Misses since start.
    pub misses: u64,
    /// Hits over hits and misses.
    pub hit_ratio: Option<f64>,
    /// Renders since start.
    pub renders: u64,
    /// 99th percentile of request latency over the last minute, ms.
    pub p99_ms: Option<f64>,
    /// Resident memory, bytes.
    pub memory_bytes: u64,
    /// Bytes cached on disk.
    pub cache_bytes: u64,
    /// Entries cached on disk.
    pub cache_entries: u64,
    /// What differs from the rest of the cluster: mode versions, changes not applied.
    pub warnings: Vec<String>,
}

/// `GET /admin/api/cdn`: the CDNs in front (`[cdn.NAME]`) and the purges waiting for them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cdns {
    /// Each CDN, in the settings' order.
    pub cdns: Vec<Cdn>,
}

/// One CDN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cdn {
    /// Its name in the settings.
    pub name: String,
    /// `varnish`, `fastly`, `cloudflare` or `cloudfront`.
    pub kind: String,
    /// Purges it accepted since start.
    pub sent: u64,
    /// Tries that failed since start.
    pub failures: u64,
    /// Why the last try failed, when it did.
    pub failing: Option<String>,
    /// Purges waiting for it, oldest first.
    pub pending: Vec<CdnPurge>,
}

/// A purge waiting for a CDN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CdnPurge {
    /// What it purges: `key shoes/red.jpg`, `mode crop`...
    pub what: String,
    /// When it was made (HTTP date).
    pub made_at: String,
    /// Tries that failed.
    pub failures: u32,
    /// Not tried again before this (HTTP date).
    pub next_try_at: String,
    /// Why the last try failed.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of the parts of `/plugins` that a running server shows only when something
    /// went wrong (a quarantine, a refused file), pinned as the end-to-end test pins the rest.
    #[test]
    fn the_keys_shown_only_on_trouble_are_pinned() {
        let refused = Refused::default();
        let plugins = Plugins {
            modes: vec![Mode {
                quarantine: Some(Quarantine::default()),
                last_load_error: Some(refused.clone()),
                ..Mode::default()
            }],
            refused: vec![refused],
            ..Plugins::default()
        };
        let json = serde_json::to_value(&plugins).unwrap();
        let keys = |v: &serde_json::Value| {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys.join(",")
        };
        assert_eq!(keys(&json["modes"][0]["quarantine"]), "reason,since");
        assert_eq!(keys(&json["modes"][0]["last_load_error"]), "at,error,file");
        assert_eq!(keys(&json["refused"][0]), "at,error,file");
    }
}

/// `POST /admin/api/source-events`: what a body of S3 event notifications did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceEvents {
    /// Keys the body named a change of (one per key: the latest record of each).
    pub keys: u64,
    /// Of them, keys whose renders were purged (the others' were all of the version named).
    pub purged: u64,
    /// Records not about the source (another bucket, outside `source.prefix`, another kind
    /// of event, a key no request can name).
    pub skipped: u64,
    /// An SNS subscription to confirm: open this URL once (ross does not fetch it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
}
