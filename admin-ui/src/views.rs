//! What the pages show, as plain data. The server fills these from its state in one place;
//! the admin JSON API sends the same structs as JSON, and `GET /metrics` is written from the
//! same [`StatsView`], so the page, the API and Prometheus cannot disagree.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::format;

/// Counters and timings of the server now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsView {
    /// Seconds since the server started.
    pub uptime_seconds: u64,
    /// Responses sent since start.
    pub requests: u64,
    /// Requests a second over the last minute.
    pub requests_per_second: f64,
    /// Responses by status.
    pub responses: BTreeMap<u16, u64>,
    /// Responses with a 4xx or 5xx status, by status.
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
    pub stages: Vec<StageView>,
    /// The disk cache.
    pub cache: CacheView,
    /// Plugin loading.
    pub plugins: PluginCounters,
    /// The most recent error responses, newest first.
    pub recent_errors: Vec<ErrorView>,
    /// Requests and latency over the last minutes, in 10 s buckets, oldest first.
    pub timeline: Vec<TimelinePoint>,
}

impl StatsView {
    /// The uptime, as "3 d 4 h", "12 min".
    pub fn uptime(&self) -> String {
        format::duration(self.uptime_seconds)
    }

    /// The hit ratio as a percentage, or a dash.
    pub fn hit_ratio_text(&self) -> String {
        self.hit_ratio
            .map_or_else(|| "–".into(), |r| format!("{:.1} %", r * 100.0))
    }

    /// Requests a second, to one decimal.
    pub fn rate_text(&self) -> String {
        format!("{:.1}", self.requests_per_second)
    }

    /// Responses by status, as rows.
    pub fn response_rows(&self) -> Vec<(u16, u64)> {
        self.responses.iter().map(|(s, n)| (*s, *n)).collect()
    }

    /// Errors since start.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The timeline as a chart.
    pub fn chart(&self) -> crate::chart::Chart {
        crate::chart::Chart::of(&self.timeline)
    }
}

/// One pipeline stage's timings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageView {
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

impl StageView {
    /// The median in milliseconds as text: "1.25", or a dash when nothing was recorded.
    pub fn p50(&self) -> String {
        ms_or_dash(self.p50_ms)
    }

    /// The 95th percentile as text.
    pub fn p95(&self) -> String {
        ms_or_dash(self.p95_ms)
    }

    /// The 99th percentile as text.
    pub fn p99(&self) -> String {
        ms_or_dash(self.p99_ms)
    }
}

fn ms_or_dash(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), format::ms_number)
}

/// The disk cache's totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheView {
    /// Variants indexed.
    pub entries: u64,
    /// Bytes of the cached variants.
    pub bytes: u64,
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
}

impl CacheView {
    /// The bytes cached, readable.
    pub fn bytes_text(&self) -> String {
        format::bytes(self.bytes)
    }

    /// The bytes held in memory, readable.
    pub fn memory_bytes_text(&self) -> String {
        format::bytes(self.memory_bytes)
    }

    /// The originals' bytes held in memory, readable.
    pub fn recent_bytes_text(&self) -> String {
        format::bytes(self.recent_bytes)
    }

    /// The bound, readable.
    pub fn max_bytes_text(&self) -> String {
        format::bytes(self.max_bytes)
    }

    /// How full the cache is, in percent.
    pub fn percent_full(&self) -> String {
        let percent = self.bytes as f64 * 100.0 / self.max_bytes.max(1) as f64;
        if self.bytes > 0 && percent < 0.1 {
            "< 0.1".into()
        } else {
            format!("{percent:.1}")
        }
    }
}

/// Plugin loading since start.
#[derive(Debug, Clone, Default, Serialize)]
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

/// An error response.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorView {
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
#[derive(Debug, Clone, Default, Serialize)]
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

/// The live whitelist.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WhitelistView {
    /// When false, every size within the limits is served.
    pub enabled: bool,
    /// The sizes allowed, each with a URL that shows it.
    pub sizes: Vec<SizeView>,
}

/// A size of the whitelist.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SizeView {
    /// `WxH`.
    pub size: String,
    /// A render at this size (cropped) of an image ross has served, to try it; none before
    /// the first.
    pub example: Option<String>,
}

/// The modes in service and the plugin files refused.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PluginsView {
    /// The plugin folder.
    pub dir: String,
    /// Whether the folder is watched.
    pub hot_reload: bool,
    /// Modes in service, by name.
    pub modes: Vec<ModeView>,
    /// Files refused, newest first.
    pub refused: Vec<RefusedView>,
    /// The render workers the modes run in.
    pub workers: WorkersView,
}

/// The render worker processes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkersView {
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

impl WorkersView {
    /// `limits.worker_memory_bytes`, for people.
    pub fn memory_text(&self) -> String {
        crate::format::bytes(self.memory_bytes)
    }
}

/// Why a mode is out of service.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QuarantineView {
    /// Since when, as an HTTP date.
    pub since: String,
    /// Why.
    pub reason: String,
}

/// A mode in service.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModeView {
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
    /// "serving", "serving; a newer file was refused", or "quarantined".
    pub status: String,
    /// Renders of this load that produced an image.
    pub renders: u64,
    /// Renders of this load that failed in the mode's own code (an error or unusable pixels
    /// from the plugin; its worker hung, crashed or ran out of memory while rendering).
    pub failures: u64,
    /// Why the mode is out of service, if it is (until its plugin file changes).
    pub quarantine: Option<QuarantineView>,
    /// The last load error of its file, if a later copy was refused.
    pub last_load_error: Option<RefusedView>,
}

impl ModeView {
    /// The plugin file's name, without its folder.
    pub fn file_name(&self) -> &str {
        file_name(&self.file)
    }
}

/// The last part of a path.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A plugin file refused.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefusedView {
    /// The file.
    pub file: String,
    /// Why.
    pub error: String,
    /// When, as an HTTP date.
    pub at: String,
}

impl RefusedView {
    /// The file's name, without its folder.
    pub fn file_name(&self) -> &str {
        file_name(&self.file)
    }
}

/// The effective settings, credentials redacted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SettingsView {
    /// `key = value` lines, in the settings file's order.
    pub lines: Vec<SettingLine>,
}

impl SettingsView {
    /// The lines by section (`server`, `source`...), in order; keys outside a section under
    /// "general".
    pub fn groups(&self) -> Vec<(String, Vec<&SettingLine>)> {
        let mut groups: Vec<(String, Vec<&SettingLine>)> = Vec::new();
        for line in &self.lines {
            let section = line.key.split_once('.').map_or("general", |(s, _)| s);
            match groups.iter_mut().find(|(name, _)| name == section) {
                Some((_, lines)) => lines.push(line),
                None => groups.push((section.to_owned(), vec![line])),
            }
        }
        groups
    }
}

/// One setting.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SettingLine {
    /// `section.key`.
    pub key: String,
    /// Its value, as TOML.
    pub value: String,
    /// The value in units people read ("10 GiB", "30 s"), where that differs.
    pub readable: Option<String>,
    /// Where it came from: "default", "file /etc/ross.toml" or "env ROSS__LIMITS__MAX_WIDTH".
    pub origin: String,
}
