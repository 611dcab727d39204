//! Every metric ross reports: its name, what it means and its kind, in one place. The
//! registry ([`super::Metrics`]) registers each under this name, `GET /metrics` shows it
//! (counters with `_total` added, histograms as `_bucket`, `_sum` and `_count`), and statsd
//! gets it renamed the statsd way ([`super::statsd_name`]).

/// A metric's name and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name {
    /// Its name as registered: `ross_` and snake case, without the `_total` that counters get
    /// on `/metrics`.
    pub name: &'static str,
    /// One line for whoever reads `/metrics` (without its full stop: the encoder adds it).
    pub help: &'static str,
}

macro_rules! names {
    ($($(#[$doc:meta])* $id:ident = $name:literal, $help:literal;)*) => {
        $($(#[$doc])* pub const $id: Name = Name { name: $name, help: $help };)*
        /// Every name, in `/metrics` order.
        pub const ALL: &[Name] = &[$($id),*];
    };
}

names! {
    /// Histogram, label `stage`: one pipeline stage of one request, in milliseconds.
    STAGE_MS = "ross_stage_ms",
        "Time spent in each pipeline stage, in milliseconds";
    /// Histogram: whole requests, from the request line read to the response handed over.
    REQUEST_MS = "ross_request_ms",
        "Time from a request read to its response, in milliseconds";
    /// Counter, label `status`: responses sent.
    REQUESTS = "ross_requests", "Responses sent, by status";
    /// Counter, label `status`: responses with a 4xx or 5xx status.
    ERRORS = "ross_errors", "Responses with a 4xx or 5xx status, by status";
    /// Counter: requests answered from the cache by ross.
    HITS = "ross_hits",
        "Requests answered from the cache: by ross, and by nginx in front when it reports its \
         hits (hit_log.listen)";
    /// Counter: requests answered by a render.
    MISSES = "ross_misses", "Requests answered by a render";
    /// Counter: renders run.
    RENDERS = "ross_renders", "Renders run (identical concurrent misses count once)";
    /// Counter: originals fetched.
    FETCHES = "ross_source_fetches", "Originals fetched from the source";
    /// Counter: plugin files loaded and put in service.
    PLUGIN_LOADS = "ross_plugin_loads", "Plugin files loaded and put in service";
    /// Counter: plugin files refused.
    PLUGIN_FAILURES = "ross_plugin_load_failures",
        "Plugin files refused (the version already loaded, if any, kept serving)";
    /// Counter: modes put in quarantine.
    MODE_QUARANTINES = "ross_mode_quarantines",
        "Modes put in quarantine (they hung, crashed or ran out of memory 3 times in a minute)";
    /// Counter: render workers started (replacements included).
    WORKERS_STARTED = "ross_workers_started",
        "Render workers started (replacements included)";
    /// Counter: render workers that could not be started.
    WORKER_START_FAILURES = "ross_worker_start_failures",
        "Render workers that could not be started";
    /// Counter: workers killed at `limits.render_timeout_ms`.
    WORKER_TIMEOUTS = "ross_worker_timeouts", "Render workers killed at limits.render_timeout_ms";
    /// Counter: workers that died in a job.
    WORKER_CRASHES = "ross_worker_crashes",
        "Render workers that died in a job (a crash in a plugin, decoder or encoder)";
    /// Counter: workers that went over `limits.worker_memory_bytes`.
    WORKER_OUT_OF_MEMORY = "ross_worker_out_of_memory",
        "Render workers that went over limits.worker_memory_bytes";
    /// Counter: variants evicted.
    CACHE_EVICTED = "ross_cache_evicted",
        "Variants evicted (least recently served first) to stay within cache.max_bytes";
    /// Counter: bytes of the variants evicted.
    CACHE_EVICTED_BYTES = "ross_cache_evicted_bytes", "Bytes of the variants evicted";
    /// Counter: renders served uncached because the disk was full.
    CACHE_NO_SPACE = "ross_cache_no_space",
        "Renders served but not cached because cache.dir's or data_dir's disk was full (after \
         evicting to make room)";
    /// Counter, label `kind` (`jpeg`, `profile`): originals decoded past a warning.
    DECODE_WARNINGS = "ross_decode_warnings",
        "Originals decoded past a warning: libjpeg's (damaged data it got past), or an ICC \
         profile ignored (too large, unreadable, not for the pixels)";
    /// Counter, labels `mode` and `outcome` (`ok`, or `failed` in the mode's own code):
    /// renders by mode, over every load of it.
    MODE_RENDERS = "ross_mode_renders",
        "Renders by mode and outcome: ok, or failed in the mode's own code (an error or bad \
         pixels from the plugin, or its worker hung, crashed or ran out of memory)";
    /// Counter: refusal lines not written past the line rate.
    REFUSAL_LINES_DROPPED = "ross_log_refusals_dropped",
        "Refusal (4xx) log lines not written, past 100 a second (the responses are still \
         counted in ross_errors)";
    /// Counter: hits nginx served and reported over the hit log.
    NGINX_HITS = "ross_nginx_hits",
        "Hits nginx served from the cache folder and reported over the hit log (counted in \
         ross_hits too)";
    /// Counter: misses answered with another node's render.
    SHARED_HITS = "ross_shared_hits",
        "Misses on disk answered with a render another node shared (cache.shared), without \
         rendering";
    /// Counter: hit log lines dropped.
    HIT_LOG_DROPPED = "ross_hit_log_dropped",
        "Hit log lines dropped because more arrived than ross could take (their hits are \
         not counted)";
    /// Counter: hit log lines that were not a hit.
    HIT_LOG_UNREADABLE = "ross_hit_log_unreadable",
        "Hit log lines that did not name a variant (another log sent to the hit log's port?)";
    /// Counter, labels `cdn` and `outcome` (`sent`, or `failed`: a try that failed):
    /// purges sent to the CDNs in front.
    CDN_PURGES = "ross_cdn_purges",
        "Purges sent to each CDN in front (outcome sent), and tries that failed (outcome \
         failed: the purges are tried again)";
    /// Gauge, label `cdn`: purges waiting for a CDN.
    CDN_PENDING = "ross_cdn_purges_pending",
        "Purges waiting to be sent to each CDN in front (made, not yet accepted)";
    /// Counter, labels `noticed` (`watch`, `event`, `queue`, `render`, `scan`) and `outcome`
    /// (`purged`, or `current`: every cached render was of the version now there): changed
    /// originals.
    SOURCE_CHANGES = "ross_source_changes",
        "Changed originals noticed (by the media folder's watcher, an S3 event posted or \
         read from the events queue, a render or the start-up scan), and whether their renders were purged";
    /// Counter: failed reads of the events queue (`source.events_queue`).
    EVENTS_QUEUE_ERRORS = "ross_source_events_queue_errors",
        "Reads of the source bucket's events queue that failed (tried again, backing off)";
    /// Counter: purges of a mode whose plugin changed version.
    MODE_PURGES = "ross_cache_mode_purges",
        "Cache purges of a mode whose plugin changed version";
    /// Gauge: renders holding a slot.
    IN_FLIGHT = "ross_renders_in_flight", "Renders holding a render slot";
    /// Gauge: misses admitted and waiting.
    WAITING = "ross_renders_waiting", "Misses admitted and waiting for a fetch or a slot";
    /// Gauge: variants indexed.
    CACHE_ENTRIES = "ross_cache_entries", "Variants in the cache index";
    /// Gauge: bytes of the cached variants.
    CACHE_BYTES = "ross_cache_bytes", "Bytes of the cached variants";
    /// Gauge: what the cache takes on disk.
    CACHE_DISK_BYTES = "ross_cache_disk_bytes",
        "What the disk cache takes on disk, as du counts it (the files' blocks, its folders, \
         purged files not yet deleted)";
    /// Gauge: `cache.max_bytes`.
    CACHE_MAX_BYTES = "ross_cache_max_bytes",
        "cache.max_bytes: the bound on ross_cache_disk_bytes";
    /// Gauge: hot variants held in memory.
    CACHE_MEMORY_ENTRIES = "ross_cache_memory_entries",
        "Hot variants also held in memory";
    /// Gauge: their bytes.
    CACHE_MEMORY_BYTES = "ross_cache_memory_bytes",
        "Bytes of the hot variants also held in memory (at most cache.memory_bytes)";
    /// Gauge: purges started and not finished.
    CACHE_PURGES_RUNNING = "ross_cache_purges_running", "Cache purges started and not finished";
    /// Gauge: bytes sled takes on disk.
    CACHE_INDEX_BYTES = "ross_cache_index_disk_bytes",
        "Bytes the cache index (sled) takes on disk";
    /// Gauge: bytes of the originals kept in memory.
    RECENT_ORIGINALS_BYTES = "ross_recent_originals_bytes",
        "Bytes of the originals fetched in the last minute, kept to render other sizes (their \
         decoded pixels are kept by the render workers; together at most cache.decoded_bytes)";
    /// Gauge: reduced originals kept on disk.
    REDUCED_COPIES = "ross_reduced_originals",
        "Reduced originals kept on disk (copies of decoded originals that later sizes render from)";
    /// Gauge: what they take on disk.
    REDUCED_DISK_BYTES = "ross_reduced_originals_disk_bytes",
        "Bytes the reduced originals take on disk (at most cache.originals_bytes)";
    /// Counter: renders from a reduced original.
    REDUCED_RENDERS = "ross_reduced_renders",
        "Renders made from a reduced original, without decoding the original";
    /// Counter: reduced originals stored.
    REDUCED_KEPT = "ross_reduced_kept", "Reduced originals stored";
    /// Gauge: render workers idle.
    WORKERS_IDLE = "ross_workers_idle", "Render workers idle now";
    /// Gauge: plugin libraries mapped into the server process.
    LIBRARIES_MAPPED = "ross_plugin_libraries_mapped",
        "Plugin libraries mapped into this process: 0, render workers map them (and exit with \
         their generation)";
    /// Gauge, labels `mode` and `version`: modes in service.
    MODE_LOADED = "ross_mode_loaded", "Modes in service, by name and version";
    /// Gauge: seconds since start.
    UPTIME = "ross_uptime_seconds", "Seconds since the server started";
    /// Gauge: resident memory.
    RESIDENT_BYTES = "ross_process_resident_memory_bytes", "Resident memory of this process";
}

#[cfg(test)]
#[test]
fn help_texts_end_without_a_full_stop() {
    for name in ALL {
        assert!(!name.help.ends_with('.'), "{}", name.name);
        assert!(name.name.starts_with("ross_") && !name.name.ends_with("_total"));
    }
}

/// The pipeline stages timed (label `stage` of [`STAGE_MS`]), as the SPEC names them.
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
