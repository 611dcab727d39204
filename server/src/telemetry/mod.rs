//! Telemetry: the metrics registry ([`Metrics`]: `GET /metrics`, the admin page and API, and
//! statsd read it), and, configured once per process, statsd ([`install`]), the panic hook and
//! Sentry, which, when `sentry.dsn` is set, receives every 5xx ([`report_failure`]) and every
//! plugin refused ([`report_refused_plugin`]).

mod errors;
mod latency;
pub mod names;
mod registry;
mod statsd;

pub use errors::RecentErrors;
pub use latency::{Buckets, Latency, BOUNDS_MS};
pub use names::stage;
pub use registry::{Count, Counts, Metrics, Readings, Window, TIMELINE_WINDOWS, WARNING_KINDS};
pub use statsd::{install, statsd_name, TelemetryError};

use ross_config::SentrySettings;

#[cfg(test)]
mod tests {
    use super::*;

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
            .contains("telemetry/mod.rs"));
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
