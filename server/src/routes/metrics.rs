//! `GET /metrics`: Prometheus text exposition of the server's counters.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use poem::http::header;
use poem::web::Data;
use poem::{handler, Response};

use crate::plugins::libraries_mapped;
use crate::state::AppState;

/// Counters and gauges, one `# HELP`/`# TYPE` block each.
#[handler]
pub fn metrics(Data(state): Data<&Arc<AppState>>) -> Response {
    let mut out = String::new();
    crate::app::set_gauges(state);
    if let Some(recorded) = crate::telemetry::render() {
        out.push_str(&recorded);
    }
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let cache = state.cache.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    // What the state knows and the event sites do not record.
    let single: [(&str, &str, &str, u64); 4] = [
        (
            "ross_cache_max_bytes",
            "gauge",
            "cache.max_bytes: the bound on ross_cache_bytes.",
            cache.max_bytes,
        ),
        (
            "ross_cache_evicted_total",
            "counter",
            "Variants evicted (least recently served first) to stay within cache.max_bytes.",
            cache.evicted_entries,
        ),
        (
            "ross_plugin_libraries_mapped",
            "gauge",
            "Plugin libraries mapped into this process. Never unmapped: restart the process \
             (rolling) when this grows large; see docs/plugins.md.",
            libraries_mapped(),
        ),
        (
            "ross_cache_mode_purges_total",
            "counter",
            "Cache purges of a mode whose plugin changed version.",
            load(&state.reloader.stats.purges),
        ),
    ];
    for (name, kind, help, value) in single {
        metric(name, kind, help, &[(String::new(), value)]);
    }
    let modes: Vec<(String, u64)> = state
        .modes
        .modes()
        .iter()
        .map(|m| {
            let labels = format!("{{mode=\"{}\",version=\"{}\"}}", m.name, escape(&m.version));
            (labels, 1)
        })
        .collect();
    metric(
        "ross_mode_loaded",
        "gauge",
        "Modes in service, by name and version.",
        &modes,
    );
    if let Some(rss) = resident_bytes() {
        metric(
            "ross_process_resident_memory_bytes",
            "gauge",
            "Resident memory of this process.",
            &[(String::new(), rss)],
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
