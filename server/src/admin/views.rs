//! The one place where the server's registry (`crate::telemetry::Metrics`, which `GET /metrics`
//! encodes) and state become what the admin pages and the admin API show: the API's own
//! response types (the `admin-api` crate) and the pages' views of their own.

use std::time::SystemTime;

use admin_ui::views::{
    CacheView, ErrorView, ModeView, PluginCounters, PluginsView, QuarantineView, RefusedView,
    SettingLine, SettingsView, SizeView, StageView, StatsView, TimelinePoint, WhitelistView,
    WorkersView,
};

use crate::state::AppState;
use crate::telemetry::{Counts, Readings};

/// A bundled sample image, for the whitelist page's examples before anything was rendered.
const SAMPLE_KEY: &str = "flower.jpg";

/// Counters and timings now.
pub fn stats(state: &AppState) -> StatsView {
    crate::app::set_gauges(state);
    let metrics = &state.metrics;
    let counts = metrics.counts();
    let gauges = metrics.gauges();
    let responses = metrics.responses();
    let (hits, misses) = (counts.hits, counts.misses);
    StatsView {
        uptime_seconds: metrics.uptime().as_secs(),
        requests: metrics.requests(),
        requests_per_second: metrics.requests_per_second(),
        errors: responses
            .iter()
            .filter(|(status, _)| **status >= 400)
            .map(|(s, n)| (*s, *n))
            .collect(),
        responses,
        hits,
        misses,
        hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        renders: counts.renders,
        fetches: counts.fetches,
        renders_in_flight: gauges.renders_in_flight,
        renders_waiting: gauges.renders_waiting,
        render_slots: state.settings.limits.max_concurrent_renders as u64,
        stages: metrics
            .stages()
            .map(|(stage, latency)| {
                let recent = latency.recent();
                StageView {
                    stage: stage.to_owned(),
                    count: latency.count(),
                    sum_ms: latency.sum_ms(),
                    p50_ms: recent.quantile(0.5),
                    p90_ms: recent.quantile(0.9),
                    p95_ms: recent.quantile(0.95),
                    p99_ms: recent.quantile(0.99),
                }
            })
            .collect(),
        cache: cache_view(state, &counts, &gauges),
        plugins: PluginCounters {
            loads: counts.plugin_loads,
            failures: counts.plugin_failures,
            libraries_mapped: gauges.libraries_mapped,
            quarantines: counts.quarantines,
        },
        recent_errors: state
            .recent_errors
            .list()
            .into_iter()
            .map(|(at, error)| ErrorView {
                ago: admin_ui::format::duration(
                    SystemTime::now()
                        .duration_since(at)
                        .unwrap_or_default()
                        .as_secs(),
                ),
                ..error
            })
            .collect(),
        timeline: metrics
            .timeline()
            .into_iter()
            .map(|w| TimelinePoint {
                seconds_ago: w.seconds_ago,
                requests: w.latency.total(),
                errors: w.errors,
                p50_ms: w.latency.quantile(0.5),
                p95_ms: w.latency.quantile(0.95),
                p99_ms: w.latency.quantile(0.99),
            })
            .collect(),
    }
}

/// The disk cache's totals now.
pub fn cache_totals(state: &AppState) -> CacheView {
    crate::app::set_gauges(state);
    cache_view(state, &state.metrics.counts(), &state.metrics.gauges())
}

/// The disk cache's totals, from the registry's counters and gauges.
fn cache_view(state: &AppState, counts: &Counts, gauges: &Readings) -> CacheView {
    CacheView {
        entries: gauges.cache_entries,
        bytes: gauges.cache_bytes,
        disk_bytes: gauges.cache_disk_bytes,
        max_bytes: gauges.cache_max_bytes,
        evicted_entries: counts.evicted_entries,
        evicted_bytes: counts.evicted_bytes,
        purges_running: gauges.cache_purges_running,
        reconciled: state.cache.stats().reconciled,
        index_disk_bytes: gauges.cache_index_disk_bytes,
        memory_entries: gauges.cache_memory_entries,
        memory_bytes: gauges.cache_memory_bytes,
        recent_bytes: gauges.recent_originals_bytes,
        reduced_originals: gauges.reduced_originals,
        reduced_disk_bytes: gauges.reduced_originals_disk_bytes,
        reduced_max_bytes: state.settings.cache.originals_bytes,
    }
}

/// The live whitelist, each size with an example render.
pub fn whitelist(state: &AppState) -> WhitelistView {
    let allowed = state.whitelist.snapshot();
    let key = state
        .pipeline
        .last_rendered_key()
        .map(|k| k.to_string())
        .or_else(|| serves_samples(state).then(|| SAMPLE_KEY.to_owned()));
    WhitelistView {
        enabled: allowed.enabled,
        read_only: state.whitelist.source() == ross_config::WhitelistSource::Config,
        shared: state.cluster.is_some(),
        sizes: allowed
            .sizes
            .iter()
            .map(|s| SizeView {
                size: s.to_string(),
                example: key
                    .as_ref()
                    .map(|k| format!("/{}/{}/crop/{}", s.width, s.height, url_path(k))),
            })
            .collect(),
    }
}

/// Every mode in service, and the plugin files refused (newest first).
pub fn plugins(state: &AppState) -> PluginsView {
    let failures = state.modes.failures();
    let refused = |f: &crate::plugins::LoadFailure| RefusedView {
        file: f.file.display().to_string(),
        error: f.error.to_string(),
        at: httpdate::fmt_http_date(f.at),
    };
    let mut modes: Vec<ModeView> = state
        .modes
        .modes()
        .iter()
        .map(|m| {
            // A refusal of the mode's file since it was loaded: the old version serves on.
            let last_load_error = failures
                .iter()
                .rev()
                .find(|f| f.file == m.file && f.at >= m.loaded_at)
                .map(refused);
            let quarantine = m.quarantine().map(|q| QuarantineView {
                since: httpdate::fmt_http_date(q.since),
                reason: q.reason,
            });
            ModeView {
                name: m.name.clone(),
                version: m.version.clone(),
                description: m.description.clone(),
                abi: m.abi_version().to_owned(),
                file: m.file.display().to_string(),
                loaded_at: httpdate::fmt_http_date(m.loaded_at),
                status: if quarantine.is_some() {
                    "quarantined".into()
                } else if last_load_error.is_some() {
                    "serving; a newer copy of its file was refused".into()
                } else {
                    "serving".into()
                },
                renders: m.render_counts().0,
                failures: m.render_counts().1,
                quarantine,
                last_load_error,
            }
        })
        .collect();
    modes.sort_by(|a, b| a.name.cmp(&b.name));
    PluginsView {
        dir: state.settings.plugins.dir.display().to_string(),
        hot_reload: state.settings.plugins.hot_reload,
        modes,
        refused: failures.iter().rev().map(refused).collect(),
        pending: state
            .reloader
            .pending()
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
        workers: workers(state),
    }
}

/// The render workers.
fn workers(state: &AppState) -> WorkersView {
    let pool = &state.workers;
    let counts = state.metrics.counts();
    let sandbox = match pool.sandbox() {
        Some(report) => {
            let landlock = match report.landlock_abi {
                0 => "no Landlock".to_owned(),
                abi => format!("Landlock ABI {abi}"),
            };
            format!("seccomp allowlist, {landlock}, no new privileges")
        }
        None => "no worker started yet".to_owned(),
    };
    WorkersView {
        size: state.settings.limits.max_concurrent_renders as u64,
        idle: state.metrics.gauges().workers_idle,
        started: counts.workers_started,
        start_failures: counts.worker_start_failures,
        timeouts: counts.worker_timeouts,
        crashes: counts.worker_crashes,
        out_of_memory: counts.worker_out_of_memory,
        memory_bytes: state.settings.limits.worker_memory_bytes,
        sandbox,
    }
}

/// The effective settings (credentials are never in them: see `Settings::effective`).
pub fn settings(state: &AppState) -> SettingsView {
    SettingsView {
        lines: state
            .settings
            .effective()
            .into_iter()
            .map(|(key, value)| SettingLine {
                readable: admin_ui::format::setting(&key, &value),
                origin: match state.settings.origins.get(&key) {
                    None => "default".to_owned(),
                    Some(ross_config::Origin::File(path)) => format!("file {path}"),
                    Some(ross_config::Origin::Env(var)) => format!("env {var}"),
                    Some(ross_config::Origin::Whole) => "file".to_owned(),
                    Some(ross_config::Origin::Derived(from)) => format!("derived from {from}"),
                },
                key,
                value,
            })
            .collect(),
    }
}

/// Whether the media root is the bundled sample images (the built-in default).
pub fn serves_samples(state: &AppState) -> bool {
    matches!(
        &state.settings.source,
        ross_config::SourceSettings::Local { root, .. }
            if root.as_path() == std::path::Path::new(ross_config::DEFAULT_MEDIA_ROOT)
    )
}

/// What a URL path segment keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A key as a URL path: each segment percent-encoded.
pub fn url_path(key: &str) -> String {
    key.split('/')
        .map(|segment| percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// This node's standing in the cluster and every node, for the API and the Cluster page.
pub fn cluster(state: &AppState) -> admin_api::Cluster {
    let Some(cluster) = &state.cluster else {
        return admin_api::Cluster::default();
    };
    let sync = cluster.sync();
    admin_api::Cluster {
        enabled: true,
        node: sync.node,
        store: sync.store,
        in_sync: sync.in_sync,
        pending: sync.pending as u64,
        last_ok_seconds_ago: sync.last_ok.map(|d| d.as_secs_f64()),
        last_error: sync.last_error,
        applied: sync.applied,
        sent: sync.sent,
        received: sync.received,
        nodes: cluster
            .nodes()
            .iter()
            .map(|n| {
                let b = &n.beat;
                admin_api::ClusterNode {
                    id: b.id.clone(),
                    name: b.name.clone(),
                    address: b.address.clone(),
                    version: b.version.clone(),
                    up: n.up,
                    this: n.this,
                    heartbeat_seconds_ago: n.age_ms as f64 / 1000.0,
                    uptime_seconds: b.at_ms.saturating_sub(b.started_ms) / 1000,
                    modes: b.modes.clone(),
                    applied: b.applied.clone(),
                    pending: b.pending as u64,
                    in_sync: b.in_sync,
                    requests: b.stats.requests,
                    requests_per_second: b.stats.requests_per_second,
                    hits: b.stats.hits,
                    misses: b.stats.misses,
                    hit_ratio: b.stats.hit_ratio(),
                    renders: b.stats.renders,
                    p99_ms: b.stats.p99_ms,
                    memory_bytes: b.stats.memory_bytes,
                    cache_bytes: b.stats.cache_bytes,
                    cache_entries: b.stats.cache_entries,
                    warnings: n.warnings.clone(),
                }
            })
            .collect(),
    }
}

/// The CDNs in front and the purges waiting for them.
pub fn cdn(state: &AppState) -> admin_api::Cdns {
    let Some(cdns) = state.purges.cdns() else {
        return admin_api::Cdns::default();
    };
    let date = |ms: u64| {
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
    };
    let mut pending: std::collections::HashMap<String, Vec<crate::cdn::Entry>> =
        cdns.pending().into_iter().collect();
    admin_api::Cdns {
        cdns: cdns
            .health()
            .into_iter()
            .map(|(name, kind, health)| admin_api::Cdn {
                pending: pending
                    .remove(&name)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| admin_api::CdnPurge {
                        what: e.pending.request.what,
                        made_at: date(e.pending.made_ms),
                        failures: e.pending.failures,
                        next_try_at: date(e.pending.next_ms),
                        last_error: e.pending.last_error,
                    })
                    .collect(),
                name,
                kind: kind.to_owned(),
                sent: health.sent,
                failures: health.failures,
                failing: health.failing,
            })
            .collect(),
    }
}
