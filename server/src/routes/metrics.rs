//! `GET /metrics`: Prometheus text, written from the same admin view of the stats that the
//! admin page and the admin API show, plus what only the state knows.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use poem::http::header;
use poem::web::Data;
use poem::{handler, Response};

use crate::admin::views;
use crate::state::AppState;
use crate::telemetry::names;

/// One metric family: `# HELP`, `# TYPE` and its samples (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// A family of one unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl ToString) {
    family(out, name, kind, help, &[(String::new(), value.to_string())]);
}

/// A Prometheus float: `NaN` for none.
fn float(value: Option<f64>) -> String {
    value.map_or_else(|| "NaN".into(), |v| v.to_string())
}

/// Every metric, as Prometheus text.
#[handler]
pub fn metrics(Data(state): Data<&Arc<AppState>>) -> Response {
    crate::app::set_gauges(state);
    let stats = views::stats(state);
    let mut out = String::new();
    let mut stage_samples = Vec::new();
    for stage in &stats.stages {
        let quantiles = [
            ("0.5", stage.p50_ms),
            ("0.9", stage.p90_ms),
            ("0.95", stage.p95_ms),
            ("0.99", stage.p99_ms),
        ];
        for (q, value) in quantiles {
            let labels = format!("{{stage=\"{}\",quantile=\"{q}\"}}", stage.stage);
            stage_samples.push((labels, float(value)));
        }
    }
    family(
        &mut out,
        names::STAGE_MS,
        "summary",
        "Time spent in each pipeline stage, in milliseconds (quantiles over the last 5 minutes).",
        &stage_samples,
    );
    let per_stage = |value: &dyn Fn(&admin_ui::views::StageView) -> String| {
        stats
            .stages
            .iter()
            .map(|s| (format!("{{stage=\"{}\"}}", s.stage), value(s)))
            .collect::<Vec<_>>()
    };
    for (line, samples) in [
        ("sum", per_stage(&|s| s.sum_ms.to_string())),
        ("count", per_stage(&|s| s.count.to_string())),
    ] {
        for (labels, value) in samples {
            let _ = writeln!(out, "{}_{line}{labels} {value}", names::STAGE_MS);
        }
    }
    let by_status = |map: &std::collections::BTreeMap<u16, u64>| {
        map.iter()
            .map(|(status, n)| (format!("{{status=\"{status}\"}}"), n.to_string()))
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        names::REQUESTS,
        "counter",
        "Responses sent, by status.",
        &by_status(&stats.responses),
    );
    family(
        &mut out,
        names::ERRORS,
        "counter",
        "Responses with a 4xx or 5xx status, by status.",
        &by_status(&stats.errors),
    );
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let counters: [(&str, &str, u64); 12] = [
        (
            names::HITS,
            "Requests answered from the cache by ross (nginx's own hits never reach it).",
            stats.hits,
        ),
        (
            names::MISSES,
            "Requests answered by a render.",
            stats.misses,
        ),
        (
            names::RENDERS,
            "Renders run (identical concurrent misses count once).",
            stats.renders,
        ),
        (
            names::FETCHES,
            "Originals fetched from the source.",
            stats.fetches,
        ),
        (
            names::PLUGIN_LOADS,
            "Plugin files loaded and put in service.",
            stats.plugins.loads,
        ),
        (
            names::PLUGIN_FAILURES,
            "Plugin files refused (the version already loaded, if any, kept serving).",
            stats.plugins.failures,
        ),
        (
            names::MODE_QUARANTINES,
            "Modes put in quarantine (they hung, crashed or ran out of memory 3 times in a minute).",
            stats.plugins.quarantines,
        ),
        (
            names::WORKERS_STARTED,
            "Render workers started (replacements included).",
            load(&state.workers.stats.started),
        ),
        (
            "ross_worker_timeouts_total",
            "Render workers killed at limits.render_timeout_ms.",
            load(&state.workers.stats.timeouts),
        ),
        (
            "ross_worker_crashes_total",
            "Render workers that died in a job (a crash in a plugin, decoder or encoder).",
            load(&state.workers.stats.crashes),
        ),
        (
            "ross_worker_out_of_memory_total",
            "Render workers that went over limits.worker_memory_bytes.",
            load(&state.workers.stats.out_of_memory),
        ),
        (
            "ross_cache_evicted_total",
            "Variants evicted (least recently served first) to stay within cache.max_bytes.",
            stats.cache.evicted_entries,
        ),
    ];
    for (name, help, value) in counters {
        single(&mut out, name, "counter", help, value);
    }
    let warnings = [
        ("jpeg", &state.workers.stats.jpeg_warnings),
        ("profile", &state.workers.stats.profile_warnings),
    ]
    .map(|(kind, n)| (format!("{{kind=\"{kind}\"}}"), load(n).to_string()));
    family(
        &mut out,
        names::DECODE_WARNINGS,
        "counter",
        "Originals decoded past a warning: libjpeg's (damaged data it got past), or an ICC profile ignored (too large, unreadable, not for the pixels).",
        &warnings,
    );
    single(
        &mut out,
        "ross_cache_mode_purges_total",
        "counter",
        "Cache purges of a mode whose plugin changed version.",
        state.reloader.stats.purges.load(Ordering::Relaxed),
    );
    let gauges: [(&str, &str, u64); 9] = [
        (
            names::IN_FLIGHT,
            "Renders holding a render slot.",
            stats.renders_in_flight,
        ),
        (
            names::WAITING,
            "Misses admitted and waiting for a fetch or a slot.",
            stats.renders_waiting,
        ),
        (
            names::CACHE_ENTRIES,
            "Variants in the cache index.",
            stats.cache.entries,
        ),
        (
            names::CACHE_BYTES,
            "Bytes of the cached variants.",
            stats.cache.bytes,
        ),
        (
            "ross_cache_memory_bytes",
            "Bytes of the hot variants also held in memory (at most cache.memory_bytes).",
            stats.cache.memory_bytes,
        ),
        (
            "ross_recent_originals_bytes",
            "Bytes of the originals fetched in the last minute, kept to render other sizes (their \
             decoded pixels are kept by the render workers; together at most \
             cache.decoded_bytes).",
            stats.cache.recent_bytes,
        ),
        (
            "ross_cache_max_bytes",
            "cache.max_bytes: the bound on ross_cache_bytes.",
            stats.cache.max_bytes,
        ),
        (
            "ross_plugin_libraries_mapped",
            "Plugin libraries mapped into this process: 0, render workers map them (and exit \
             with their generation).",
            stats.plugins.libraries_mapped,
        ),
        (
            "ross_uptime_seconds",
            "Seconds since the server started.",
            stats.uptime_seconds,
        ),
    ];
    for (name, help, value) in gauges {
        single(&mut out, name, "gauge", help, value);
    }
    let modes: Vec<(String, String)> = state
        .modes
        .modes()
        .iter()
        .map(|m| {
            let labels = format!("{{mode=\"{}\",version=\"{}\"}}", m.name, escape(&m.version));
            (labels, "1".to_owned())
        })
        .collect();
    family(
        &mut out,
        "ross_mode_loaded",
        "gauge",
        "Modes in service, by name and version.",
        &modes,
    );
    if let Some(rss) = resident_bytes() {
        single(
            &mut out,
            "ross_process_resident_memory_bytes",
            "gauge",
            "Resident memory of this process.",
            rss,
        );
    }
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(out)
}

/// Escapes a Prometheus label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Resident set size, from `VmRSS` in `/proc/self/status` (Linux; reported in kB).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
