//! What the pages show. The data are the admin API's response types (`ross-admin-api`, which
//! the server fills from its metrics registry and state in one place); the pages read them
//! through the presentation helpers here, so that a page can be reshaped without changing
//! what API clients read. The whitelist and settings pages have views of their own.

use crate::format;

pub use admin_api::{
    Cache as CacheView, Cluster as ClusterView, ClusterNode as NodeView, Mode as ModeView,
    PluginCounters, Plugins as PluginsView, Quarantine as QuarantineView, RecentError as ErrorView,
    Refused as RefusedView, Stage as StageView, Stats as StatsView, TimelinePoint,
    Workers as WorkersView,
};

fn ms_or_dash(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), format::ms_number)
}

/// The live whitelist.
#[derive(Debug, Clone, Default)]
pub struct WhitelistView {
    /// When false, every size within the limits is served.
    pub enabled: bool,
    /// Kept in the settings file (`whitelist.source = "config"`): shown, not edited.
    pub read_only: bool,
    /// Edits reach every node of the cluster.
    pub shared: bool,
    /// The sizes allowed, each with a URL that shows it.
    pub sizes: Vec<SizeView>,
}

/// A size of the whitelist.
#[derive(Debug, Clone, Default)]
pub struct SizeView {
    /// `WxH`.
    pub size: String,
    /// A render at this size (cropped) of an image ross has served, to try it; none before
    /// the first.
    pub example: Option<String>,
}

/// The last part of a path.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The effective settings, credentials redacted.
#[derive(Debug, Clone, Default)]
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
#[derive(Debug, Clone, Default)]
pub struct SettingLine {
    /// `section.key`.
    pub key: String,
    /// Its value, as TOML.
    pub value: String,
    /// The value in units people read ("10 GiB", "30 s"), where that differs.
    pub readable: Option<String>,
    /// Where it came from: "default", "file /etc/ross.toml", "env ROSS__LIMITS__MAX_WIDTH" or
    /// "derived from data_dir".
    pub origin: String,
}

/// The dashboard's numbers as text.
pub trait StatsText {
    /// The uptime, as "3 d 4 h", "12 min".
    fn uptime(&self) -> String;

    /// The hit ratio as a percentage, or a dash.
    fn hit_ratio_text(&self) -> String;

    /// Requests a second, to one decimal.
    fn rate_text(&self) -> String;

    /// Responses by status, as rows.
    fn response_rows(&self) -> Vec<(u16, u64)>;

    /// Errors since start.
    fn error_total(&self) -> u64;

    /// The timeline as a chart.
    fn chart(&self) -> crate::chart::Chart;
}

impl StatsText for StatsView {
    fn uptime(&self) -> String {
        format::duration(self.uptime_seconds)
    }

    fn hit_ratio_text(&self) -> String {
        self.hit_ratio
            .map_or_else(|| "–".into(), |r| format!("{:.1} %", r * 100.0))
    }

    fn rate_text(&self) -> String {
        format!("{:.1}", self.requests_per_second)
    }

    fn response_rows(&self) -> Vec<(u16, u64)> {
        self.responses.iter().map(|(s, n)| (*s, *n)).collect()
    }

    fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    fn chart(&self) -> crate::chart::Chart {
        crate::chart::Chart::of(&self.timeline)
    }
}

/// A stage's quantiles as text.
pub trait StageText {
    /// The median in milliseconds as text: "1.25", or a dash when nothing was recorded.
    fn p50(&self) -> String;

    /// The 95th percentile as text.
    fn p95(&self) -> String;

    /// The 99th percentile as text.
    fn p99(&self) -> String;
}

impl StageText for StageView {
    fn p50(&self) -> String {
        ms_or_dash(self.p50_ms)
    }

    fn p95(&self) -> String {
        ms_or_dash(self.p95_ms)
    }

    fn p99(&self) -> String {
        ms_or_dash(self.p99_ms)
    }
}

/// The cache's totals as text.
pub trait CacheText {
    /// The bytes cached, readable.
    fn bytes_text(&self) -> String;

    /// The bytes held in memory, readable.
    fn memory_bytes_text(&self) -> String;

    /// The originals' bytes held in memory, readable.
    fn recent_bytes_text(&self) -> String;

    /// What the reduced originals take on disk, readable.
    fn reduced_disk_text(&self) -> String;

    /// Their bound, readable.
    fn reduced_max_text(&self) -> String;

    /// What the cache takes on disk, readable.
    fn disk_bytes_text(&self) -> String;

    /// The bound, readable.
    fn max_bytes_text(&self) -> String;

    /// How full the cache is, in percent.
    fn percent_full(&self) -> String;
}

impl CacheText for CacheView {
    fn bytes_text(&self) -> String {
        format::bytes(self.bytes)
    }

    fn memory_bytes_text(&self) -> String {
        format::bytes(self.memory_bytes)
    }

    fn recent_bytes_text(&self) -> String {
        format::bytes(self.recent_bytes)
    }

    fn reduced_disk_text(&self) -> String {
        format::bytes(self.reduced_disk_bytes)
    }

    fn reduced_max_text(&self) -> String {
        format::bytes(self.reduced_max_bytes)
    }

    fn disk_bytes_text(&self) -> String {
        format::bytes(self.disk_bytes)
    }

    fn max_bytes_text(&self) -> String {
        format::bytes(self.max_bytes)
    }

    fn percent_full(&self) -> String {
        let percent = self.disk_bytes as f64 * 100.0 / self.max_bytes.max(1) as f64;
        if self.disk_bytes > 0 && percent < 0.1 {
            "< 0.1".into()
        } else {
            format!("{percent:.1}")
        }
    }
}

/// The workers' memory bound as text.
pub trait WorkersText {
    /// `limits.worker_memory_bytes`, for people.
    fn memory_text(&self) -> String;
}

impl WorkersText for WorkersView {
    fn memory_text(&self) -> String {
        crate::format::bytes(self.memory_bytes)
    }
}

/// A mode's file name.
pub trait ModeText {
    /// The plugin file's name, without its folder.
    fn file_name(&self) -> &str;
}

impl ModeText for ModeView {
    fn file_name(&self) -> &str {
        file_name(&self.file)
    }
}

/// A refused file's name.
pub trait RefusedText {
    /// The file's name, without its folder.
    fn file_name(&self) -> &str;
}

impl RefusedText for RefusedView {
    fn file_name(&self) -> &str {
        file_name(&self.file)
    }
}

/// How a node's figures read on the Cluster page.
pub trait NodeText {
    /// Requests a second, one decimal.
    fn rate_text(&self) -> String;
    /// The hit ratio as a percentage, or a dash.
    fn hit_text(&self) -> String;
    /// The p99 latency, or a dash.
    fn p99_text(&self) -> String;
    /// Resident memory, readable.
    fn memory_text(&self) -> String;
    /// The disk cache, readable.
    fn cache_text(&self) -> String;
    /// How long ago its heartbeat was written.
    fn heartbeat_text(&self) -> String;
    /// Its modes, `name version` each.
    fn modes_text(&self) -> String;
}

impl NodeText for NodeView {
    fn rate_text(&self) -> String {
        format!("{:.1}", self.requests_per_second)
    }

    fn hit_text(&self) -> String {
        self.hit_ratio
            .map_or_else(|| "–".into(), |r| format!("{:.1}%", r * 100.0))
    }

    fn p99_text(&self) -> String {
        ms_or_dash(self.p99_ms)
    }

    fn memory_text(&self) -> String {
        format::bytes(self.memory_bytes)
    }

    fn cache_text(&self) -> String {
        format!(
            "{} in {} entries",
            format::bytes(self.cache_bytes),
            self.cache_entries
        )
    }

    fn heartbeat_text(&self) -> String {
        format!(
            "{} ago",
            format::duration(self.heartbeat_seconds_ago as u64)
        )
    }

    fn modes_text(&self) -> String {
        self.modes
            .iter()
            .map(|(m, v)| format!("{m} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How the node answering stands, on the Cluster page.
pub trait ClusterText {
    /// "2 s ago", or "never".
    fn last_ok_text(&self) -> String;
}

impl ClusterText for ClusterView {
    fn last_ok_text(&self) -> String {
        self.last_ok_seconds_ago.map_or_else(
            || "never".into(),
            |s| format!("{} ago", format::duration(s as u64)),
        )
    }
}
