//! The one registry every counter, gauge and latency of a server goes to. `GET /metrics`
//! encodes it (Prometheus text, through `prometheus-client`), and the admin page and the admin
//! API read their numbers back from it, so the three cannot disagree. Each event is also
//! handed to the `metrics` facade, which sends it to statsd when `statsd.host` is set: the
//! facade is called here and nowhere else.
//!
//! Counters are totals since start. Latencies are histograms ([`Latency`]): since start on
//! `/metrics`, and in 10 s windows for the admin page's quantiles (over the last 5 minutes)
//! and timeline (the last 15 minutes). Gauges are set in one place, from the state
//! ([`Metrics::set_gauges`]), every second and before each read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::latency::{lock, Buckets, Clock, Latency, Windows, WINDOW};
use super::names::{self, stage, Name};

/// Windows a stage's quantiles are taken over: the last 5 minutes.
const STAGE_WINDOWS: u64 = 30;

/// Windows the request rate is taken over: the last minute.
const RATE_WINDOWS: u64 = 6;

/// Windows of the timeline: the last 15 minutes.
pub const TIMELINE_WINDOWS: u64 = 90;

/// Statuses are counted in one slot each, from 100 to 599; anything else in the last one.
const STATUS_SLOTS: usize = 501;

macro_rules! counters {
    ($($(#[$doc:meta])* $event:ident => $field:ident: $name:ident,)*) => {
        /// A counted event (each a counter of its own).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Count {
            $($(#[$doc])* $event,)*
        }

        /// The counters since start, read back.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Counts {
            $($(#[$doc])* pub $field: u64,)*
        }

        #[derive(Debug, Default)]
        struct Counters {
            $($field: Counter,)*
        }

        impl Counters {
            fn register(&self, registry: &mut Registry) {
                $(register(registry, names::$name, self.$field.clone());)*
            }

            fn read(&self) -> Counts {
                Counts { $($field: self.$field.get(),)* }
            }

            fn of(&self, count: Count) -> (&Counter, Name) {
                match count {
                    $(Count::$event => (&self.$field, names::$name),)*
                }
            }
        }
    };
}

counters! {
    /// A request answered from the cache.
    Hit => hits: HITS,
    /// A request answered by a render (its own or one it joined).
    Miss => misses: MISSES,
    /// A render run.
    Render => renders: RENDERS,
    /// An original fetched.
    Fetch => fetches: FETCHES,
    /// A plugin file loaded and put in service.
    PluginLoad => plugin_loads: PLUGIN_LOADS,
    /// A plugin file refused.
    PluginRefused => plugin_failures: PLUGIN_FAILURES,
    /// A mode put in quarantine.
    Quarantine => quarantines: MODE_QUARANTINES,
    /// A render worker started.
    WorkerStarted => workers_started: WORKERS_STARTED,
    /// A render worker that could not be started.
    WorkerStartFailed => worker_start_failures: WORKER_START_FAILURES,
    /// A worker killed at the render timeout.
    WorkerTimeout => worker_timeouts: WORKER_TIMEOUTS,
    /// A worker that died in a job.
    WorkerCrash => worker_crashes: WORKER_CRASHES,
    /// A worker that went over its memory limit.
    WorkerOutOfMemory => worker_out_of_memory: WORKER_OUT_OF_MEMORY,
    /// Variants evicted.
    Evicted => evicted_entries: CACHE_EVICTED,
    /// Bytes of the variants evicted.
    EvictedBytes => evicted_bytes: CACHE_EVICTED_BYTES,
    /// A render served uncached because the disk was full.
    CacheNoSpace => cache_no_space: CACHE_NO_SPACE,
    /// A read of the events queue that failed.
    EventsQueueError => events_queue_errors: EVENTS_QUEUE_ERRORS,
    /// A purge of a mode whose plugin changed version.
    ModePurge => mode_purges: MODE_PURGES,
    /// A refusal line not written, past the line rate.
    RefusalLineDropped => refusal_lines_dropped: REFUSAL_LINES_DROPPED,
    /// A hit nginx served and reported.
    NginxHit => nginx_hits: NGINX_HITS,
    /// A miss answered with a render another node shared.
    SharedHit => shared_hits: SHARED_HITS,
    /// A hit log line dropped.
    HitLogDropped => hit_log_dropped: HIT_LOG_DROPPED,
    /// A hit log line that named no variant.
    HitLogUnreadable => hit_log_unreadable: HIT_LOG_UNREADABLE,
    /// A render made from a reduced original.
    ReducedRender => reduced_renders: REDUCED_RENDERS,
    /// A reduced original stored.
    ReducedKept => reduced_kept: REDUCED_KEPT,
}

macro_rules! gauges {
    ($($(#[$doc:meta])* $field:ident: $name:ident,)*) => {
        /// What the gauges are set from, and read back as.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Readings {
            $($(#[$doc])* pub $field: u64,)*
        }

        #[derive(Debug, Default)]
        struct Gauges {
            $($field: Gauge,)*
        }

        impl Gauges {
            fn register(&self, registry: &mut Registry) {
                $(register(registry, names::$name, self.$field.clone());)*
            }

            fn set(&self, readings: &Readings) {
                $(
                    let value = readings.$field;
                    self.$field.set(i64::try_from(value).unwrap_or(i64::MAX));
                    metrics::gauge!(names::$name.name).set(value as f64);
                )*
            }

            fn read(&self) -> Readings {
                Readings { $($field: u64::try_from(self.$field.get()).unwrap_or(0),)* }
            }
        }
    };
}

gauges! {
    /// Renders holding a slot.
    renders_in_flight: IN_FLIGHT,
    /// Misses admitted and waiting for a fetch or a slot.
    renders_waiting: WAITING,
    /// Variants indexed.
    cache_entries: CACHE_ENTRIES,
    /// Their bytes.
    cache_bytes: CACHE_BYTES,
    /// What the cache takes on disk.
    cache_disk_bytes: CACHE_DISK_BYTES,
    /// `cache.max_bytes`.
    cache_max_bytes: CACHE_MAX_BYTES,
    /// Hot variants held in memory.
    cache_memory_entries: CACHE_MEMORY_ENTRIES,
    /// Their bytes.
    cache_memory_bytes: CACHE_MEMORY_BYTES,
    /// Purges started and not finished.
    cache_purges_running: CACHE_PURGES_RUNNING,
    /// Bytes the cache index takes on disk.
    cache_index_disk_bytes: CACHE_INDEX_BYTES,
    /// Bytes of the originals kept in memory.
    recent_originals_bytes: RECENT_ORIGINALS_BYTES,
    /// Reduced originals kept on disk.
    reduced_originals: REDUCED_COPIES,
    /// What they take on disk.
    reduced_originals_disk_bytes: REDUCED_DISK_BYTES,
    /// Render workers idle.
    workers_idle: WORKERS_IDLE,
    /// Plugin libraries mapped into the server process.
    libraries_mapped: LIBRARIES_MAPPED,
    /// Seconds since start.
    uptime_seconds: UPTIME,
    /// Resident memory of the server process.
    resident_bytes: RESIDENT_BYTES,
}

fn register(registry: &mut Registry, name: Name, metric: impl prometheus_client::registry::Metric) {
    registry.register(name.name, name.help, metric);
}

/// A server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    clock: Clock,
    statuses: Arc<Statuses>,
    requests: Latency,
    errors: Mutex<Windows<u64>>,
    stages: Arc<[Latency; stage::ALL.len()]>,
    counters: Counters,
    warnings: Arc<[Counter; WARNING_KINDS.len()]>,
    gauges: Gauges,
    modes: Arc<arc_swap::ArcSwap<Vec<(String, String)>>>,
    mode_renders: Family<[(&'static str, String); 2], Counter>,
    cdn_purges: Family<[(&'static str, String); 2], Counter>,
    cdn_pending: Family<[(&'static str, String); 1], Gauge>,
    source_changes: Family<[(&'static str, &'static str); 2], Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Ten seconds of requests, for the timeline.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    /// How many seconds before the current window this one is (0 for the current one).
    pub seconds_ago: u64,
    /// The latencies of the requests answered in it (as many as it answered).
    pub latency: Buckets,
    /// Of which errors.
    pub errors: u64,
}

/// Kinds of decode warning (label `kind` of [`names::DECODE_WARNINGS`]).
pub const WARNING_KINDS: [&str; 2] = ["jpeg", "profile"];

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Metrics {
        let clock = Clock::start();
        let mut metrics = Metrics {
            registry: Registry::default(),
            clock,
            statuses: Arc::new(Statuses(std::array::from_fn(|_| AtomicU64::new(0)))),
            requests: Latency::new(clock, TIMELINE_WINDOWS),
            errors: Mutex::new(Windows::new(TIMELINE_WINDOWS)),
            stages: Arc::new(std::array::from_fn(|_| Latency::new(clock, STAGE_WINDOWS))),
            counters: Counters::default(),
            warnings: Default::default(),
            gauges: Gauges::default(),
            modes: Default::default(),
            mode_renders: Family::default(),
            cdn_purges: Family::default(),
            cdn_pending: Family::default(),
            source_changes: Family::default(),
        };
        let registry = &mut metrics.registry;
        register(
            registry,
            names::STAGE_MS,
            ByLabel::new("stage", &stage::ALL, metrics.stages.clone()),
        );
        register(registry, names::REQUEST_MS, metrics.requests.clone());
        for (name, errors_only) in [(names::REQUESTS, false), (names::ERRORS, true)] {
            let family = ByStatus {
                statuses: metrics.statuses.clone(),
                errors_only,
            };
            register(registry, name, family);
        }
        metrics.counters.register(registry);
        register(
            registry,
            names::DECODE_WARNINGS,
            ByLabel::new("kind", &WARNING_KINDS, metrics.warnings.clone()),
        );
        metrics.gauges.register(registry);
        register(
            registry,
            names::MODE_LOADED,
            ModesLoaded(metrics.modes.clone()),
        );
        register(registry, names::MODE_RENDERS, metrics.mode_renders.clone());
        register(registry, names::CDN_PURGES, metrics.cdn_purges.clone());
        register(registry, names::CDN_PENDING, metrics.cdn_pending.clone());
        register(
            registry,
            names::SOURCE_CHANGES,
            metrics.source_changes.clone(),
        );
        metrics
    }

    /// A changed original, `noticed` by what, its renders `purged` or all current.
    pub fn source_change(&self, noticed: &'static str, purged: bool) {
        let outcome = if purged { "purged" } else { "current" };
        self.source_changes
            .get_or_create(&[("noticed", noticed), ("outcome", outcome)])
            .inc();
        metrics::counter!(names::SOURCE_CHANGES.name, "noticed" => noticed, "outcome" => outcome)
            .increment(1);
    }

    /// `n` purges sent to `cdn` (`sent`), or a try of them that failed.
    pub fn cdn_purges(&self, cdn: &str, sent: bool, n: u64) {
        let outcome = if sent { "sent" } else { "failed" };
        self.cdn_purges
            .get_or_create(&[("cdn", cdn.to_owned()), ("outcome", outcome.to_owned())])
            .inc_by(n);
        metrics::counter!(names::CDN_PURGES.name, "cdn" => cdn.to_owned(), "outcome" => outcome)
            .increment(n);
    }

    /// `n` purges wait for `cdn`.
    pub fn cdn_pending(&self, cdn: &str, n: u64) {
        self.cdn_pending
            .get_or_create(&[("cdn", cdn.to_owned())])
            .set(n as i64);
        metrics::gauge!(names::CDN_PENDING.name, "cdn" => cdn.to_owned()).set(n as f64);
    }

    /// A render of `mode`: whether it produced an image, or failed in the mode's own code.
    pub fn mode_render(&self, mode: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.mode_renders
            .get_or_create(&[("mode", mode.to_owned()), ("outcome", outcome.to_owned())])
            .inc();
        metrics::counter!(
            names::MODE_RENDERS.name, "mode" => mode.to_owned(), "outcome" => outcome
        )
        .increment(1);
    }

    /// How long the server has been up.
    pub fn uptime(&self) -> Duration {
        self.clock.elapsed()
    }

    /// One response sent, with its status and how long the request took (`None` for an
    /// answer the connection layer gave before a request was read: counted, not timed).
    pub fn response(&self, status: u16, took: Option<Duration>) {
        let slot = usize::from(status)
            .checked_sub(100)
            .filter(|s| *s < STATUS_SLOTS - 1)
            .unwrap_or(STATUS_SLOTS - 1);
        self.statuses.0[slot].fetch_add(1, Ordering::Relaxed);
        if let Some(took) = took {
            self.requests.record(took);
        }
        let error = status >= 400;
        let label = status_label(status);
        metrics::counter!(names::REQUESTS.name, "status" => label.clone()).increment(1);
        if error {
            metrics::counter!(names::ERRORS.name, "status" => label).increment(1);
            // The timeline shows requests read: an answer given before one was is left out
            // of it, as of the latencies.
            if took.is_some() {
                *lock(&self.errors).at(self.clock.window()) += 1;
            }
        }
    }

    /// One event.
    pub fn count(&self, count: Count) {
        self.add(count, 1);
    }

    /// `n` events.
    pub fn add(&self, count: Count, n: u64) {
        let (counter, name) = self.counters.of(count);
        counter.inc_by(n);
        metrics::counter!(name.name).increment(n);
    }

    /// An original decoded past a warning of `kind` ([`WARNING_KINDS`]).
    pub fn decode_warning(&self, kind: &'static str) {
        if let Some(i) = WARNING_KINDS.iter().position(|k| *k == kind) {
            self.warnings[i].inc();
        }
        metrics::counter!(names::DECODE_WARNINGS.name, "kind" => kind).increment(1);
    }

    /// Decode warnings of `kind` so far.
    pub fn decode_warnings(&self, kind: &str) -> u64 {
        WARNING_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.warnings[i].get())
    }

    /// A stage of one request took from `since` until now.
    pub fn stage(&self, stage: &'static str, since: Instant) {
        self.stage_took(stage, since.elapsed());
    }

    /// Records that `stage` took `took` (measured elsewhere: in a render worker).
    pub fn stage_took(&self, stage: &'static str, took: Duration) {
        metrics::histogram!(names::STAGE_MS.name, "stage" => stage)
            .record(took.as_secs_f64() * 1e3);
        if let Some(i) = stage::ALL.iter().position(|s| *s == stage) {
            self.stages[i].record(took);
        }
    }

    /// Sets every gauge from `readings` (uptime is the registry's own).
    pub fn set_gauges(&self, readings: &Readings, modes: Vec<(String, String)>) {
        let readings = Readings {
            uptime_seconds: self.uptime().as_secs(),
            ..readings.clone()
        };
        self.gauges.set(&readings);
        self.modes.store(Arc::new(modes));
    }

    /// The gauges as last set.
    pub fn gauges(&self) -> Readings {
        self.gauges.read()
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        self.counters.read()
    }

    /// Responses so far, by status (only statuses seen).
    pub fn responses(&self) -> BTreeMap<u16, u64> {
        self.statuses.seen().collect()
    }

    /// Responses so far.
    pub fn requests(&self) -> u64 {
        self.statuses.seen().map(|(_, n)| n).sum()
    }

    /// Every stage's latencies, in pipeline order (their recent windows are the last 5
    /// minutes).
    pub fn stages(&self) -> impl Iterator<Item = (&'static str, &Latency)> {
        stage::ALL.into_iter().zip(self.stages.iter())
    }

    /// The latencies of `stage`.
    pub fn stage_latency(&self, stage: &str) -> Option<&Latency> {
        self.stages().find(|(s, _)| *s == stage).map(|(_, l)| l)
    }

    /// The last 15 minutes in 10 s windows, oldest first; windows without requests (before
    /// the start, too) are there, empty.
    pub fn timeline(&self) -> Vec<Window> {
        let now = self.clock.window();
        let requests = self.requests.per_window(now, TIMELINE_WINDOWS);
        let errors: BTreeMap<u64, u64> = lock(&self.errors)
            .recent(now, TIMELINE_WINDOWS)
            .map(|(ago, n)| (ago, *n))
            .collect();
        (0..TIMELINE_WINDOWS)
            .rev()
            .map(|ago| {
                let latency = requests
                    .iter()
                    .find(|(a, _)| *a == ago)
                    .map_or_else(Buckets::default, |(_, b)| *b);
                Window {
                    seconds_ago: ago * WINDOW.as_secs(),
                    latency,
                    errors: errors.get(&ago).copied().unwrap_or(0),
                }
            })
            .collect()
    }

    /// The latencies of the requests of the last minute.
    pub fn recent_requests(&self) -> Buckets {
        self.requests.over(RATE_WINDOWS)
    }

    /// Requests a second over the last minute (over the uptime, when shorter).
    pub fn requests_per_second(&self) -> f64 {
        let requests = self.requests.over(RATE_WINDOWS).total();
        // The windows counted: the ones before, whole, and the current one so far.
        let uptime = self.uptime().as_secs_f64();
        let current = uptime % WINDOW.as_secs_f64();
        let span = uptime.min(((RATE_WINDOWS - 1) * WINDOW.as_secs()) as f64 + current);
        if span < 1.0 {
            requests as f64
        } else {
            requests as f64 / span
        }
    }

    /// Every metric, as Prometheus text (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// Responses by status, in one slot each.
#[derive(Debug)]
struct Statuses([AtomicU64; STATUS_SLOTS]);

impl Statuses {
    /// `(status, count)` of every status seen.
    fn seen(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .map(|(slot, n)| (slot as u16 + 100, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
    }
}

/// A counter family over [`Statuses`], label `status`: all of them, or the errors only.
#[derive(Debug)]
struct ByStatus {
    statuses: Arc<Statuses>,
    errors_only: bool,
}

impl EncodeMetric for ByStatus {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (status, n) in self.statuses.seen() {
            if self.errors_only && status < 400 {
                continue;
            }
            let labels = [("status", status.to_string())];
            encoder
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A family of metrics with one label, its values fixed.
#[derive(Debug)]
struct ByLabel<M: 'static, const N: usize> {
    label: &'static str,
    values: &'static [&'static str; N],
    metrics: Arc<[M; N]>,
}

impl<M, const N: usize> ByLabel<M, N> {
    fn new(label: &'static str, values: &'static [&'static str; N], metrics: Arc<[M; N]>) -> Self {
        ByLabel {
            label,
            values,
            metrics,
        }
    }
}

impl<M: EncodeMetric, const N: usize> EncodeMetric for ByLabel<M, N> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (value, metric) in self.values.iter().zip(self.metrics.iter()) {
            let labels = [(self.label, *value)];
            metric.encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.metrics[0].metric_type()
    }
}

/// The modes in service: a gauge of 1 per mode and version.
#[derive(Debug)]
struct ModesLoaded(Arc<arc_swap::ArcSwap<Vec<(String, String)>>>);

impl EncodeMetric for ModesLoaded {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (mode, version) in self.0.load().iter() {
            let labels = [("mode", mode.as_str()), ("version", version.as_str())];
            encoder.encode_family(&labels)?.encode_gauge(&1i64)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// A status as a metric label: the common ones without an allocation per request.
fn status_label(status: u16) -> metrics::SharedString {
    const COMMON: [(u16, &str); 8] = [
        (200, "200"),
        (304, "304"),
        (400, "400"),
        (403, "403"),
        (404, "404"),
        (429, "429"),
        (503, "503"),
        (504, "504"),
    ];
    match COMMON.iter().find(|(code, _)| *code == status) {
        Some((_, label)) => metrics::SharedString::const_str(label),
        None => status.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_responses_and_times_stages() {
        let m = Metrics::new();
        for status in [200, 200, 404, 503] {
            m.response(status, Some(Duration::from_millis(3)));
        }
        assert_eq!(m.requests(), 4);
        assert_eq!(
            m.responses(),
            BTreeMap::from([(200, 2), (404, 1), (503, 1)])
        );
        m.stage_took(stage::DECODE, Duration::from_millis(2));
        m.stage_took(stage::DECODE, Duration::from_millis(4));
        let decode = m.stage_latency(stage::DECODE).unwrap();
        assert_eq!(decode.count(), 2);
        assert!((decode.sum_ms() - 6.0).abs() < 1e-6);
        assert!(decode.recent().quantile(0.99).is_some());
        let (name, fetch) = m.stages().nth(1).unwrap();
        assert_eq!((name, fetch.count()), (stage::FETCH, 0));
        assert!(fetch.recent().quantile(0.5).is_none());
        let timeline = m.timeline();
        assert_eq!(timeline.len() as u64, TIMELINE_WINDOWS);
        assert_eq!(timeline[0].seconds_ago, (TIMELINE_WINDOWS - 1) * 10);
        assert_eq!(timeline[0].latency.total(), 0);
        let last = timeline.last().unwrap();
        assert_eq!(last.seconds_ago, 0);
        assert_eq!((last.latency.total(), last.errors), (4, 2));
        // 3 ms is in the bucket (2.5, 5]: a quantile from buckets is within it.
        let p50 = last.latency.quantile(0.5).unwrap();
        assert!((2.5..=5.0).contains(&p50), "{last:?}");
    }

    #[test]
    fn counters_and_gauges_read_back_what_metrics_shows() {
        let m = Metrics::new();
        m.count(Count::Hit);
        m.add(Count::Evicted, 3);
        m.decode_warning("profile");
        m.set_gauges(
            &Readings {
                cache_entries: 7,
                ..Readings::default()
            },
            vec![("crop".into(), "1.2.0".into())],
        );
        assert_eq!(m.counts().hits, 1);
        assert_eq!(m.counts().evicted_entries, 3);
        assert_eq!(m.decode_warnings("profile"), 1);
        assert_eq!(m.gauges().cache_entries, 7);
        m.response(404, Some(Duration::from_millis(1)));
        m.stage_took(stage::FETCH, Duration::from_millis(30));
        // A family with labels of its own shows once it has a series.
        m.mode_render("crop", false);
        m.cdn_purges("edge", true, 3);
        m.cdn_pending("edge", 2);
        m.source_change("watch", true);
        let text = m.encode();
        for line in [
            "ross_hits_total 1",
            "ross_cache_evicted_total 3",
            "ross_decode_warnings_total{kind=\"profile\"} 1",
            "ross_decode_warnings_total{kind=\"jpeg\"} 0",
            "ross_cache_entries 7",
            "ross_mode_loaded{mode=\"crop\",version=\"1.2.0\"} 1",
            "ross_requests_total{status=\"404\"} 1",
            "ross_errors_total{status=\"404\"} 1",
            "ross_stage_ms_bucket{stage=\"fetch\",le=\"50\"} 1",
            "ross_stage_ms_count{stage=\"decode\"} 0",
            "ross_request_ms_count 1",
            "ross_mode_renders_total{mode=\"crop\",outcome=\"failed\"} 1",
            "ross_cdn_purges_total{cdn=\"edge\",outcome=\"sent\"} 3",
            "ross_cdn_purges_pending{cdn=\"edge\"} 2",
            "ross_source_changes_total{noticed=\"watch\",outcome=\"purged\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        // Every name is on /metrics, once.
        for name in names::ALL {
            let kind = ["counter", "gauge", "histogram"].iter().find(|kind| {
                let suffix = if **kind == "counter" { "_total" } else { "" };
                text.contains(&format!("# TYPE {}{suffix} {kind}\n", name.name))
            });
            assert!(kind.is_some(), "{} not on /metrics:\n{text}", name.name);
        }
    }
}
