//! What a server counts and times, kept per server: the one store that the admin page, the
//! admin API's stats and `GET /metrics` all read, so that they never disagree. Every event
//! site reports here, and each report is also handed to the `metrics` facade, which sends it
//! to statsd when `statsd.host` is set.
//!
//! Counters are totals since start. Stage timings keep quantiles over the last 5 minutes (and a
//! total count and sum); the timeline keeps requests, errors and latency quantiles in 10 s
//! buckets over the last 15 minutes, for the dashboard's chart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use admin_ui::views::TimelinePoint;
use metrics_util::storage::Summary;

use crate::telemetry::names;

/// The pipeline stages timed, as the SPEC names them, in pipeline order.
pub mod stage {
    /// Looking for the variant in the cache.
    pub const CACHE_CHECK: &str = "cache_check";
    /// Reading the original.
    pub const FETCH: &str = "fetch";
    /// Decoding it.
    pub const DECODE: &str = "decode";
    /// The mode plugin's work.
    pub const RENDER: &str = "render";
    /// Encoding the output.
    pub const ENCODE: &str = "encode";
    /// Writing it to the cache.
    pub const CACHE_WRITE: &str = "cache_write";

    /// Every stage, in pipeline order.
    pub const ALL: [&str; 6] = [CACHE_CHECK, FETCH, DECODE, RENDER, ENCODE, CACHE_WRITE];
}

/// Statuses are counted in one slot each, from 100 to 599; anything else in the last one.
const STATUS_SLOTS: usize = 501;

/// Width of one bucket of the stage windows and of the timeline.
const BUCKET: Duration = Duration::from_secs(10);

/// Buckets a stage's quantiles are taken over: the last 5 minutes.
const STAGE_BUCKETS: u64 = 30;

/// Buckets the request rate is taken over: the last minute.
const RATE_BUCKETS: u64 = 6;

/// Buckets of the timeline: the last 15 minutes.
pub const TIMELINE_BUCKETS: u64 = 90;

/// Recent errors kept for the dashboard.
const RECENT_ERRORS: usize = 12;

/// The quantiles reported.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

/// A server's counters and timings.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    responses: Box<[AtomicU64]>,
    hits: AtomicU64,
    misses: AtomicU64,
    renders: AtomicU64,
    fetches: AtomicU64,
    stages: [Mutex<Window>; stage::ALL.len()],
    timeline: Mutex<VecDeque<Bucket>>,
    recent_errors: Mutex<VecDeque<RecentError>>,
    last_rendered: arc_swap::ArcSwapOption<String>,
}

/// One stage's timings: a summary per bucket of the last 5 minutes, and totals since start.
#[derive(Debug, Default)]
struct Window {
    buckets: VecDeque<(u64, Summary)>,
    count: u64,
    sum_ms: f64,
}

/// Ten seconds of requests.
#[derive(Debug)]
struct Bucket {
    at: u64,
    requests: u64,
    errors: u64,
    latency: Summary,
}

/// An error response, for the dashboard's list of recent ones. Repeats of one (same status,
/// code, method and path) are one entry, counted.
#[derive(Debug, Clone)]
pub struct RecentError {
    /// When it was sent.
    pub at: SystemTime,
    /// Its status.
    pub status: u16,
    /// The SPEC's error code.
    pub code: String,
    /// The message the client got (the latest request's).
    pub reason: String,
    /// Method and path asked for.
    pub method: String,
    /// The path asked for.
    pub path: String,
    /// The latest request's id.
    pub request_id: String,
    /// How many times it was sent since it entered the list.
    pub count: u64,
}

/// A stage's timings now.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTimes {
    /// The stage's name.
    pub stage: &'static str,
    /// Times recorded since start.
    pub count: u64,
    /// Their sum, in milliseconds.
    pub sum_ms: f64,
    /// [`QUANTILES`] over the last 5 minutes, in milliseconds (`None` with nothing recorded).
    pub quantiles: [Option<f64>; QUANTILES.len()],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            responses: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            renders: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            stages: Default::default(),
            timeline: Mutex::new(VecDeque::new()),
            recent_errors: Mutex::new(VecDeque::new()),
            last_rendered: Default::default(),
        }
    }
}

/// Locks `m`, taking over from a holder that panicked (the data are counters: still usable).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Stats {
    /// The bucket that holds now.
    fn bucket_now(&self) -> u64 {
        self.started.elapsed().as_secs() / BUCKET.as_secs()
    }

    /// How long the server has been up.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// One response sent, with its status and how long the request took.
    pub fn response(&self, status: u16, took: Duration) {
        let slot = usize::from(status)
            .checked_sub(100)
            .filter(|s| *s < STATUS_SLOTS - 1)
            .unwrap_or(STATUS_SLOTS - 1);
        self.responses[slot].fetch_add(1, Ordering::Relaxed);
        let error = status >= 400;
        let label = status_label(status);
        metrics::counter!(names::REQUESTS, "status" => label.clone()).increment(1);
        if error {
            metrics::counter!(names::ERRORS, "status" => label).increment(1);
        }
        let now = self.bucket_now();
        let mut timeline = lock(&self.timeline);
        if timeline.back().is_none_or(|b| b.at != now) {
            timeline.push_back(Bucket {
                at: now,
                requests: 0,
                errors: 0,
                latency: Summary::with_defaults(),
            });
        }
        while timeline
            .front()
            .is_some_and(|b| b.at + TIMELINE_BUCKETS <= now)
        {
            timeline.pop_front();
        }
        let bucket = timeline.back_mut().expect("pushed above");
        bucket.requests += 1;
        bucket.errors += u64::from(error);
        bucket.latency.add(took.as_secs_f64() * 1e3);
    }

    /// An error response, for the list of recent ones (`count` is ignored: a repeat of an
    /// error in the list moves it to the front, counted).
    pub fn error(&self, mut error: RecentError) {
        let mut recent = lock(&self.recent_errors);
        let same = |e: &RecentError| {
            (e.status, &e.code, &e.method, &e.path)
                == (error.status, &error.code, &error.method, &error.path)
        };
        error.count = 1;
        if let Some(i) = recent.iter().position(same) {
            let earlier = recent.remove(i).expect("found");
            error.count += earlier.count;
        } else if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(error);
    }

    /// A request answered from the cache.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::HITS).increment(1);
    }

    /// A request answered by a render (its own or one it joined).
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::MISSES).increment(1);
    }

    /// The source key of the latest render, for examples on the admin pages.
    pub fn rendered_key(&self, key: &str) {
        self.last_rendered.store(Some(Arc::new(key.to_owned())));
    }

    /// The key [`Stats::rendered_key`] saw last.
    pub fn last_rendered_key(&self) -> Option<Arc<String>> {
        self.last_rendered.load_full()
    }

    /// A render run.
    pub fn render(&self) {
        self.renders.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::RENDERS).increment(1);
    }

    /// An original fetched.
    pub fn fetch(&self) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::FETCHES).increment(1);
    }

    /// A stage of one request took from `since` until now.
    pub fn stage(&self, stage: &'static str, since: Instant) {
        self.stage_took(stage, since.elapsed());
    }

    /// Records that `stage` took `took` (measured elsewhere: in a render worker).
    pub fn stage_took(&self, stage: &'static str, took: std::time::Duration) {
        let ms = took.as_secs_f64() * 1e3;
        metrics::histogram!(names::STAGE_MS, "stage" => stage).record(ms);
        let Some(i) = stage::ALL.iter().position(|s| *s == stage) else {
            return;
        };
        let now = self.bucket_now();
        let mut window = lock(&self.stages[i]);
        window.count += 1;
        window.sum_ms += ms;
        if window.buckets.back().is_none_or(|(at, _)| *at != now) {
            window.buckets.push_back((now, Summary::with_defaults()));
        }
        while window
            .buckets
            .front()
            .is_some_and(|(at, _)| at + STAGE_BUCKETS <= now)
        {
            window.buckets.pop_front();
        }
        window.buckets.back_mut().expect("pushed above").1.add(ms);
    }

    /// Responses so far, by status (only statuses seen).
    pub fn responses(&self) -> BTreeMap<u16, u64> {
        self.responses
            .iter()
            .enumerate()
            .map(|(slot, n)| (slot as u16 + 100, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Responses so far.
    pub fn requests(&self) -> u64 {
        self.responses
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Requests answered by a render so far.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Renders run so far.
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }

    /// Originals fetched so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Every stage's timings, in pipeline order.
    pub fn stages(&self) -> Vec<StageTimes> {
        let now = self.bucket_now();
        stage::ALL
            .iter()
            .zip(&self.stages)
            .map(|(name, window)| {
                let window = lock(window);
                let mut merged = Summary::with_defaults();
                for (at, summary) in &window.buckets {
                    if at + STAGE_BUCKETS > now {
                        // Same parameters everywhere: merging cannot fail.
                        let _ = merged.merge(summary);
                    }
                }
                StageTimes {
                    stage: name,
                    count: window.count,
                    sum_ms: window.sum_ms,
                    quantiles: QUANTILES.map(|q| merged.quantile(q)),
                }
            })
            .collect()
    }

    /// The last 15 minutes in 10 s buckets, oldest first; buckets without requests (before
    /// the start, too) are there, empty.
    pub fn timeline(&self) -> Vec<TimelinePoint> {
        let now = self.bucket_now();
        let timeline = lock(&self.timeline);
        (0..TIMELINE_BUCKETS)
            .rev()
            .map(|ago| {
                let bucket = now
                    .checked_sub(ago)
                    .and_then(|at| timeline.iter().find(|b| b.at == at));
                TimelinePoint {
                    seconds_ago: ago * BUCKET.as_secs(),
                    requests: bucket.map_or(0, |b| b.requests),
                    errors: bucket.map_or(0, |b| b.errors),
                    p50_ms: bucket.and_then(|b| b.latency.quantile(0.5)),
                    p95_ms: bucket.and_then(|b| b.latency.quantile(0.95)),
                    p99_ms: bucket.and_then(|b| b.latency.quantile(0.99)),
                }
            })
            .collect()
    }

    /// Requests a second over the last minute (over the uptime, when shorter).
    pub fn requests_per_second(&self) -> f64 {
        let now = self.bucket_now();
        let timeline = lock(&self.timeline);
        let requests: u64 = timeline
            .iter()
            .filter(|b| b.at + RATE_BUCKETS > now)
            .map(|b| b.requests)
            .sum();
        let span = self
            .started
            .elapsed()
            .as_secs_f64()
            .min((RATE_BUCKETS * BUCKET.as_secs()) as f64);
        if span < 1.0 {
            requests as f64
        } else {
            requests as f64 / span
        }
    }

    /// The most recent error responses, newest first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        lock(&self.recent_errors).iter().rev().cloned().collect()
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
        let s = Stats::default();
        for status in [200, 200, 404, 503] {
            s.response(status, Duration::from_millis(3));
        }
        assert_eq!(s.requests(), 4);
        assert_eq!(
            s.responses(),
            BTreeMap::from([(200, 2), (404, 1), (503, 1)])
        );
        let now = Instant::now();
        s.stage(stage::DECODE, now);
        s.stage(stage::DECODE, now);
        let decode = s
            .stages()
            .into_iter()
            .find(|t| t.stage == stage::DECODE)
            .unwrap();
        assert_eq!(decode.count, 2);
        assert!(decode.quantiles.iter().all(Option::is_some));
        let fetch = &s.stages()[1];
        assert_eq!((fetch.stage, fetch.count), (stage::FETCH, 0));
        assert!(fetch.quantiles.iter().all(Option::is_none));
        let timeline = s.timeline();
        assert_eq!(timeline.len() as u64, TIMELINE_BUCKETS);
        assert_eq!(timeline[0].seconds_ago, (TIMELINE_BUCKETS - 1) * 10);
        assert_eq!(timeline[0].requests, 0);
        let last = timeline.last().unwrap();
        assert_eq!(last.seconds_ago, 0);
        assert_eq!((last.requests, last.errors), (4, 2));
        assert!((last.p50_ms.unwrap() - 3.0).abs() < 0.5, "{last:?}");
    }

    #[test]
    fn keeps_the_most_recent_errors_and_counts_repeats() {
        let s = Stats::default();
        let error = |path: String| RecentError {
            at: SystemTime::now(),
            status: 404,
            code: "not-found".into(),
            reason: "Nothing is served at this path.".into(),
            method: "GET".into(),
            path,
            request_id: "id".into(),
            count: 0,
        };
        for i in 0..30u16 {
            s.error(error(format!("/{i}")));
        }
        let recent = s.recent_errors();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!((recent[0].path.as_str(), recent[0].count), ("/29", 1));
        s.error(error("/25".into()));
        s.error(error("/25".into()));
        let recent = s.recent_errors();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!((recent[0].path.as_str(), recent[0].count), ("/25", 3));
        assert_eq!(recent[1].path, "/29");
    }
}
