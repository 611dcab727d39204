//! The one place where the server's state becomes the admin views: the admin pages, the admin
//! JSON API and `GET /metrics` all start from these.

use std::time::SystemTime;

use admin_ui::views::{
    CacheView, ErrorView, ModeView, PluginCounters, PluginsView, QuarantineView, RefusedView,
    SettingLine, SettingsView, SizeView, StageView, StatsView, WhitelistView, WorkersView,
};

use crate::plugins::libraries_mapped;
use crate::state::AppState;

/// A bundled sample image, for the whitelist page's examples before anything was rendered.
const SAMPLE_KEY: &str = "flower.jpg";

/// Counters and timings now.
pub fn stats(state: &AppState) -> StatsView {
    let stats = &state.stats;
    let responses = stats.responses();
    let (hits, misses) = (stats.hits(), stats.misses());
    let plugins = &state.modes.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    StatsView {
        uptime_seconds: stats.uptime().as_secs(),
        requests: stats.requests(),
        requests_per_second: stats.requests_per_second(),
        errors: responses
            .iter()
            .filter(|(status, _)| **status >= 400)
            .map(|(s, n)| (*s, *n))
            .collect(),
        responses,
        hits,
        misses,
        hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        renders: stats.renders(),
        fetches: stats.fetches(),
        renders_in_flight: state.pipeline.renders_in_flight() as u64,
        renders_waiting: state.pipeline.renders_waiting() as u64,
        render_slots: state.settings.limits.max_concurrent_renders as u64,
        stages: stats
            .stages()
            .into_iter()
            .map(|t| StageView {
                stage: t.stage.to_owned(),
                count: t.count,
                sum_ms: t.sum_ms,
                p50_ms: t.quantiles[0],
                p90_ms: t.quantiles[1],
                p95_ms: t.quantiles[2],
                p99_ms: t.quantiles[3],
            })
            .collect(),
        cache: cache_totals(state),
        plugins: PluginCounters {
            loads: load(&plugins.loads),
            failures: load(&plugins.failures),
            libraries_mapped: libraries_mapped(),
            quarantines: load(&plugins.quarantines),
        },
        recent_errors: stats
            .recent_errors()
            .into_iter()
            .map(|e| ErrorView {
                at: httpdate::fmt_http_date(e.at),
                ago: admin_ui::format::duration(
                    SystemTime::now()
                        .duration_since(e.at)
                        .unwrap_or_default()
                        .as_secs(),
                ),
                status: e.status,
                code: e.code,
                reason: e.reason,
                method: e.method,
                path: e.path,
                request_id: e.request_id,
                count: e.count,
            })
            .collect(),
        timeline: stats.timeline(),
    }
}

/// The disk cache's totals.
pub fn cache_totals(state: &AppState) -> CacheView {
    let cache = state.cache.stats();
    CacheView {
        entries: cache.entries,
        bytes: cache.bytes,
        max_bytes: cache.max_bytes,
        evicted_entries: cache.evicted_entries,
        evicted_bytes: cache.evicted_bytes,
        purges_running: cache.purges_running as u64,
        reconciled: cache.reconciled,
        index_disk_bytes: cache.index_disk_bytes,
        memory_entries: cache.memory_entries,
        memory_bytes: cache.memory_bytes,
        recent_bytes: state.pipeline.recent_bytes(),
    }
}

/// The live whitelist, each size with an example render.
pub fn whitelist(state: &AppState) -> WhitelistView {
    let allowed = state.whitelist.snapshot();
    let key = state
        .stats
        .last_rendered_key()
        .map(|k| k.to_string())
        .or_else(|| serves_samples(state).then(|| SAMPLE_KEY.to_owned()));
    WhitelistView {
        enabled: allowed.enabled,
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
        workers: workers(state),
    }
}

/// The render workers.
fn workers(state: &AppState) -> WorkersView {
    let pool = &state.workers;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
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
        idle: pool.idle() as u64,
        started: load(&pool.stats.started),
        start_failures: load(&pool.stats.start_failures),
        timeouts: load(&pool.stats.timeouts),
        crashes: load(&pool.stats.crashes),
        out_of_memory: load(&pool.stats.out_of_memory),
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
