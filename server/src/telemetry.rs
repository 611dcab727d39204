//! Telemetry, configured once per process. Sentry, when `sentry.dsn` is set, receives every
//! 5xx ([`report_failure`]) and every plugin refused ([`report_refused_plugin`]).
//!
//! Metrics: every event is reported to the server's [`Stats`](crate::stats::Stats), which
//! `GET /metrics` (Prometheus text), the admin page and the admin API read, and which hands
//! each event on to the `metrics` facade with the names in [`names`]. The facade's recorder,
//! installed when `statsd.host` is set, sends them to statsd over non-blocking UDP (cadence,
//! through `metrics-exporter-statsd`; a full queue drops metrics, never delays a request),
//! renamed the statsd way ([`statsd_name`]): stage timers become `<prefix>.<stage>` in
//! milliseconds, counters `<prefix>.<name>.<label values>` (`ross.requests.404`, `ross.hits`).

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_statsd::StatsdBuilder;
use ross_config::{SentrySettings, StatsdSettings};

/// Metric names, one place for every event site.
pub mod names {
    /// Histogram, milliseconds, label `stage`: one pipeline stage of one request.
    pub const STAGE_MS: &str = "ross_stage_ms";
    /// Counter, label `status`: responses sent.
    pub const REQUESTS: &str = "ross_requests_total";
    /// Counter, label `status`: responses with a 4xx or 5xx status.
    pub const ERRORS: &str = "ross_errors_total";
    /// Counter: requests answered from the cache by ross.
    pub const HITS: &str = "ross_hits_total";
    /// Counter: requests answered by a render.
    pub const MISSES: &str = "ross_misses_total";
    /// Counter: renders run.
    pub const RENDERS: &str = "ross_renders_total";
    /// Counter: originals fetched.
    pub const FETCHES: &str = "ross_source_fetches_total";
    /// Gauge: renders holding a slot.
    pub const IN_FLIGHT: &str = "ross_renders_in_flight";
    /// Gauge: misses admitted and waiting.
    pub const WAITING: &str = "ross_renders_waiting";
    /// Gauge: variants indexed.
    pub const CACHE_ENTRIES: &str = "ross_cache_entries";
    /// Gauge: bytes of the cached variants.
    pub const CACHE_BYTES: &str = "ross_cache_bytes";
    /// Counter: plugin files loaded and put in service.
    pub const PLUGIN_LOADS: &str = "ross_plugin_loads_total";
    /// Counter: plugin files refused.
    pub const PLUGIN_FAILURES: &str = "ross_plugin_load_failures_total";
    /// Counter, label `mode`: modes put in quarantine.
    pub const MODE_QUARANTINES: &str = "ross_mode_quarantines_total";
    /// Counter: render workers started (replacements included).
    pub const WORKERS_STARTED: &str = "ross_workers_started_total";
    /// Counter, label `kind` (`timeout`, `crash`, `out-of-memory`): render workers lost in a
    /// job.
    pub const WORKER_FAILURES: &str = "ross_worker_failures_total";
    /// Counter, label `kind` (`jpeg`, `profile`): originals decoded past a warning (libjpeg's,
    /// or an ICC profile ignored).
    pub const DECODE_WARNINGS: &str = "ross_decode_warnings_total";
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[error("statsd.host: {0}")]
pub struct TelemetryError(String);

/// Whether a recorder was installed (a process has one).
static INSTALLED: OnceLock<()> = OnceLock::new();

/// Metrics waiting to be sent to statsd; beyond it new ones are dropped, never waited for.
const STATSD_QUEUE: usize = 8192;

/// Installs the process's recorder when statsd is configured (without one, the facade's
/// calls cost next to nothing). Later calls do nothing: the first configuration stays.
pub fn install(statsd: Option<&StatsdSettings>) -> Result<(), TelemetryError> {
    let Some(s) = statsd else {
        return Ok(());
    };
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let failed = |e: &dyn std::fmt::Display| TelemetryError(e.to_string());
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| failed(&e))?;
    socket.set_nonblocking(true).map_err(|e| failed(&e))?;
    // One datagram a metric, sent at once from a queue of bounded size by cadence's own
    // thread: a request never waits for the network, and nothing sits in a buffer.
    let udp =
        cadence::UdpMetricSink::from((s.host.as_str(), s.port), socket).map_err(|e| failed(&e))?;
    let sink = cadence::QueuingMetricSink::with_capacity(udp, STATSD_QUEUE);
    let recorder = StatsdBuilder::from(s.host.clone(), s.port)
        .with_sink(sink)
        .histogram_is_timer()
        .build(Some(&s.prefix))
        .map_err(|e| failed(&e))?;
    if metrics::set_global_recorder(StatsdNames(recorder)).is_ok() {
        let _ = INSTALLED.set(());
        tracing::info!(host = %s.host, port = s.port, prefix = %s.prefix, "sending metrics to statsd");
    }
    Ok(())
}

/// A metric's statsd name: `ross_stage_ms{stage="fetch"}` is `fetch`, `ross_requests_total
/// {status="404"}` is `requests.404`, `ross_hits_total` is `hits` (the prefix is cadence's).
pub fn statsd_name(key: &Key) -> String {
    let name = key.name();
    let base = name.strip_prefix("ross_").unwrap_or(name);
    let base = base
        .strip_suffix("_total")
        .or_else(|| base.strip_suffix("_ms"))
        .unwrap_or(base);
    let values: Vec<&str> = key.labels().map(|l| l.value()).collect();
    if base == "stage" {
        return values.join(".");
    }
    std::iter::once(base)
        .chain(values)
        .collect::<Vec<_>>()
        .join(".")
}

/// A recorder that hands metrics to `R` under their statsd names.
struct StatsdNames<R>(R);

impl<R: Recorder> Recorder for StatsdNames<R> {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.0
            .register_counter(&Key::from_name(statsd_name(key)), metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.0
            .register_gauge(&Key::from_name(statsd_name(key)), metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.0
            .register_histogram(&Key::from_name(statsd_name(key)), metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statsd_names() {
        let key = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, *v))
                .collect();
            Key::from_parts(name, labels)
        };
        assert_eq!(
            statsd_name(&key(names::STAGE_MS, &[("stage", "fetch")])),
            "fetch"
        );
        assert_eq!(
            statsd_name(&key(names::REQUESTS, &[("status", "404")])),
            "requests.404"
        );
        assert_eq!(statsd_name(&key(names::HITS, &[])), "hits");
        assert_eq!(statsd_name(&key(names::CACHE_BYTES, &[])), "cache_bytes");
    }

    /// A writer into a shared buffer, for a subscriber under test.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Regression: a panic's text went to stderr in lines of its own, breaking JSON logs.
    #[test]
    fn a_panic_is_one_json_log_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        log_panics();
        tracing::subscriber::with_default(subscriber, || {
            let _ = std::panic::catch_unwind(|| panic!("first line\nsecond line"));
        });
        let _ = std::panic::take_hook(); // the default hook again, for the other tests
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(event["fields"]["panic"], "first line\nsecond line");
        assert!(event["fields"]["location"]
            .as_str()
            .unwrap()
            .contains("telemetry.rs"));
    }
}

/// Reports panics through the log, as one event (message, location, thread), instead of the
/// default hook's lines on stderr, which break `log.format = "json"`'s one object a line.
/// Installed once the log is set up and before Sentry (whose hook then runs first and calls
/// this one).
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(a panic without a message)");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            panic = %message, location = %location, thread = thread.name().unwrap_or("unnamed"),
            "panicked"
        );
    }));
}

/// Starts the Sentry client; events are sent from its own thread until the guard drops
/// (at exit, flushing what is queued).
pub fn init_sentry(settings: Option<&SentrySettings>) -> Option<sentry::ClientInitGuard> {
    let settings = settings?;
    let mut options = sentry::ClientOptions::default();
    options.dsn = match settings.dsn.parse() {
        Ok(dsn) => Some(dsn),
        Err(e) => {
            tracing::error!(error = %e, "sentry.dsn cannot be used: Sentry off");
            return None;
        }
    };
    options.environment = settings.environment.clone().map(Into::into);
    options.release = Some(concat!("ross@", env!("CARGO_PKG_VERSION")).into());
    options.send_default_pii = false;
    tracing::info!("reporting 5xx and plugin failures to Sentry");
    Some(sentry::init(options))
}

/// What Sentry is told about a failed request.
#[derive(Debug, Default)]
pub struct FailedRequest<'a> {
    /// Status sent.
    pub status: u16,
    /// Method and path.
    pub method: &'a str,
    /// The path asked for.
    pub path: &'a str,
    /// The request's id.
    pub request_id: &'a str,
    /// The source key, size and mode, for a sized request.
    pub key: Option<&'a str>,
    /// `WxH`.
    pub size: Option<String>,
    /// The mode asked for.
    pub mode: Option<&'a str>,
    /// The version of the mode's plugin in service.
    pub plugin_version: Option<String>,
    /// What went wrong inside.
    pub detail: Option<&'a str>,
}

/// Sends a 5xx to Sentry (nothing when Sentry is off).
pub fn report_failure(failed: &FailedRequest<'_>) {
    sentry::with_scope(
        |scope| {
            scope.set_tag("status", failed.status);
            scope.set_tag("request_id", failed.request_id);
            scope.set_tag("path", failed.path);
            if let Some(key) = failed.key {
                scope.set_tag("key", key);
            }
            if let Some(size) = &failed.size {
                scope.set_tag("size", size);
            }
            if let Some(mode) = failed.mode {
                scope.set_tag("mode", mode);
            }
            if let Some(version) = &failed.plugin_version {
                scope.set_tag("plugin_version", version);
            }
        },
        || {
            let message = format!(
                "{} {} {}: {}",
                failed.status,
                failed.method,
                failed.path,
                failed.detail.unwrap_or("no detail")
            );
            sentry::capture_message(&message, sentry::Level::Error);
        },
    );
}

/// Sends a plugin refusal to Sentry (nothing when Sentry is off).
pub fn report_refused_plugin(file: &std::path::Path, error: &dyn std::fmt::Display) {
    sentry::with_scope(
        |scope| scope.set_tag("plugin_file", file.display()),
        || {
            let message = format!("plugin refused: {error}");
            sentry::capture_message(&message, sentry::Level::Error);
        },
    );
}
