//! Metrics to statsd: the `metrics` facade's recorder, installed when `statsd.host` is set,
//! sends every event the registry ([`super::Metrics`]) counts over non-blocking UDP (cadence,
//! through `metrics-exporter-statsd`; a full queue drops metrics, never delays a request),
//! renamed the statsd way ([`statsd_name`]): stage timers become `<prefix>.<stage>` in
//! milliseconds, counters `<prefix>.<name>.<label values>` (`ross.requests.404`, `ross.hits`).

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_statsd::StatsdBuilder;
use ross_config::StatsdSettings;

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
    use crate::telemetry::names;

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
            statsd_name(&key(names::STAGE_MS.name, &[("stage", "fetch")])),
            "fetch"
        );
        assert_eq!(
            statsd_name(&key(names::REQUESTS.name, &[("status", "404")])),
            "requests.404"
        );
        assert_eq!(statsd_name(&key(names::HITS.name, &[])), "hits");
        assert_eq!(
            statsd_name(&key(names::CACHE_BYTES.name, &[])),
            "cache_bytes"
        );
        assert_eq!(
            statsd_name(&key(names::WORKER_TIMEOUTS.name, &[])),
            "worker_timeouts"
        );
    }
}
