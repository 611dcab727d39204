//! Latency histograms: counts in fixed buckets of milliseconds, since start (what `/metrics`
//! shows, and what Prometheus adds up across a cluster's nodes) and per 10 s window (what the
//! admin page's quantiles and timeline are taken from).
//!
//! Quantiles from buckets are estimates: within a bucket, observations are taken to be spread
//! evenly, as Prometheus's `histogram_quantile` does, so an estimate is off by at most its
//! bucket's width.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Upper bounds of the buckets, in milliseconds (each holds what is at most its bound and more
/// than the one before; a last bucket holds the rest). From a memory hit's tens of
/// microseconds to a render timeout's seconds, about 2.5x apart.
pub const BOUNDS_MS: [f64; 18] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
    5000.0, 10000.0, 30000.0,
];

/// Buckets, the last one unbounded.
const SLOTS: usize = BOUNDS_MS.len() + 1;

/// The width of a window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The windows a server's clock has counted since start.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// A clock started now.
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    /// The window that holds now.
    pub fn window(self) -> u64 {
        self.0.elapsed().as_secs() / WINDOW.as_secs()
    }

    /// Time since start.
    pub fn elapsed(self) -> Duration {
        self.0.elapsed()
    }
}

/// Values per window, the last `keep` windows kept.
#[derive(Debug)]
pub struct Windows<T> {
    windows: VecDeque<(u64, T)>,
    keep: u64,
}

impl<T: Default> Windows<T> {
    /// Windows keeping the last `keep`.
    pub fn new(keep: u64) -> Windows<T> {
        Windows {
            windows: VecDeque::new(),
            keep,
        }
    }

    /// The value of window `now`, the windows older than `keep` dropped.
    pub fn at(&mut self, now: u64) -> &mut T {
        if self.windows.back().is_none_or(|(at, _)| *at != now) {
            self.windows.push_back((now, T::default()));
        }
        while self
            .windows
            .front()
            .is_some_and(|(at, _)| at + self.keep <= now)
        {
            self.windows.pop_front();
        }
        &mut self.windows.back_mut().expect("pushed above").1
    }

    /// The windows of the last `last` (`now` included) that have a value, with how many
    /// windows before `now` each is.
    pub fn recent(&self, now: u64, last: u64) -> impl Iterator<Item = (u64, &T)> {
        self.windows
            .iter()
            .filter(move |(at, _)| at + last > now && *at <= now)
            .map(move |(at, value)| (now - at, value))
    }
}

/// Counts per bucket: a distribution of latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets([u64; SLOTS]);

impl Default for Buckets {
    fn default() -> Buckets {
        Buckets([0; SLOTS])
    }
}

impl Buckets {
    /// Observations counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Buckets) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }

    /// The `q` quantile (0 to 1) in milliseconds, interpolated within its bucket; `None` when
    /// nothing was counted. One beyond the last bound is reported as the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (slot, &count) in self.0.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let Some(&upper) = BOUNDS_MS.get(slot) else {
                    return BOUNDS_MS.last().copied();
                };
                let lower = slot.checked_sub(1).map_or(0.0, |s| BOUNDS_MS[s]);
                let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * within);
            }
            below += count;
        }
        BOUNDS_MS.last().copied()
    }
}

/// The bucket `took` falls in.
fn slot(took: Duration) -> usize {
    let ms = took.as_secs_f64() * 1e3;
    BOUNDS_MS.partition_point(|bound| *bound < ms)
}

/// A latency histogram. Clones count into the same histogram.
#[derive(Debug, Clone)]
pub struct Latency(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    counts: [AtomicU64; SLOTS],
    /// Windows kept, and what [`Latency::recent`] covers.
    keep: u64,
    /// In nanoseconds: a memory hit takes about 20 µs, so whole microseconds would lose 5%.
    sum_ns: AtomicU64,
    windows: Mutex<Windows<Buckets>>,
    clock: Clock,
}

/// Locks `m`, taking over from a holder that panicked (the data are counts: still usable).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Latency {
    /// A histogram keeping `keep` windows of `clock`.
    pub fn new(clock: Clock, keep: u64) -> Latency {
        Latency(Arc::new(Inner {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            keep,
            windows: Mutex::new(Windows::new(keep)),
            clock,
        }))
    }

    /// One observation.
    pub fn record(&self, took: Duration) {
        let slot = slot(took);
        let inner = &self.0;
        inner.counts[slot].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        inner.sum_ns.fetch_add(ns, Ordering::Relaxed);
        lock(&inner.windows).at(inner.clock.window()).0[slot] += 1;
    }

    /// Observations since start.
    pub fn count(&self) -> u64 {
        self.since_start().total()
    }

    /// Their sum, in milliseconds.
    pub fn sum_ms(&self) -> f64 {
        self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// The counts since start.
    pub fn since_start(&self) -> Buckets {
        Buckets(std::array::from_fn(|i| {
            self.0.counts[i].load(Ordering::Relaxed)
        }))
    }

    /// The counts of the last `last` windows, together.
    pub fn over(&self, last: u64) -> Buckets {
        let mut merged = Buckets::default();
        let windows = lock(&self.0.windows);
        for (_, buckets) in windows.recent(self.0.clock.window(), last) {
            merged.add(buckets);
        }
        merged
    }

    /// The counts of every window kept, together.
    pub fn recent(&self) -> Buckets {
        self.over(self.0.keep)
    }

    /// Each of the `last` windows up to window `now` that had observations, with how many
    /// windows before `now`.
    pub fn per_window(&self, now: u64, last: u64) -> Vec<(u64, Buckets)> {
        let windows = lock(&self.0.windows);
        windows
            .recent(now, last)
            .map(|(ago, buckets)| (ago, *buckets))
            .collect()
    }
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.since_start();
        let buckets: Vec<(f64, u64)> = BOUNDS_MS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(counts.0)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum_ms(), counts.total(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fall_in_their_bucket() {
        assert_eq!(slot(Duration::from_micros(10)), 0);
        assert_eq!(
            slot(Duration::from_micros(50)),
            0,
            "a bound is in its bucket"
        );
        assert_eq!(slot(Duration::from_micros(51)), 1);
        assert_eq!(slot(Duration::from_millis(3)), 6);
        assert_eq!(slot(Duration::from_secs(60)), SLOTS - 1);
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let latency = Latency::new(Clock::start(), 30);
        assert_eq!(latency.over(30).quantile(0.5), None);
        for ms in 1..=100u64 {
            latency.record(Duration::from_millis(ms));
        }
        let buckets = latency.over(30);
        assert_eq!(buckets.total(), 100);
        // Interpolated within the bucket as histogram_quantile does: rank 50 is the 26th of
        // the 26 observations in (25, 50], rank 99 the 49th of the 50 in (50, 100].
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(buckets.quantile(0.5).unwrap(), 50.0));
        assert!(close(buckets.quantile(0.99).unwrap(), 99.0));
        // Rank 0 is the lower bound of the first bucket with any; 1 ms is in (0.5, 1].
        assert!(close(buckets.quantile(0.0).unwrap(), 0.5));
        assert_eq!(latency.count(), 100);
        assert!((latency.sum_ms() - 5050.0).abs() < 1e-6);
        latency.record(Duration::from_secs(100));
        assert_eq!(latency.over(30).quantile(1.0), Some(30000.0));
    }

    #[test]
    fn windows_keep_the_last_ones() {
        let mut windows: Windows<u64> = Windows::new(3);
        for now in 0..10 {
            *windows.at(now) += now;
        }
        let recent: Vec<_> = windows.recent(9, 2).collect();
        assert_eq!(recent, vec![(1, &8), (0, &9)]);
        assert_eq!(windows.recent(9, 10).count(), 3, "3 kept");
        assert_eq!(windows.recent(20, 10).count(), 0, "too old");
    }

    #[test]
    fn encodes_as_a_prometheus_histogram() {
        let latency = Latency::new(Clock::start(), 30);
        latency.record(Duration::from_millis(3));
        latency.record(Duration::from_millis(7));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("ross_test_ms", "A test", latency);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE ross_test_ms histogram"), "{text}");
        assert!(text.contains("ross_test_ms_bucket{le=\"2.5\"} 0"), "{text}");
        assert!(text.contains("ross_test_ms_bucket{le=\"5\"} 1"), "{text}");
        assert!(text.contains("ross_test_ms_bucket{le=\"10\"} 2"), "{text}");
        assert!(
            text.contains("ross_test_ms_bucket{le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(text.contains("ross_test_ms_sum 10.0"), "{text}");
        assert!(text.contains("ross_test_ms_count 2"), "{text}");
    }
}
