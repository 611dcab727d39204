//! The HTTP surface: the router as a pure function of the state, and [`run`], which serves it
//! on a listener until a shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use poem::middleware::CatchPanic;
use poem::{get, Endpoint, EndpointExt, Route};

use crate::routes;
use crate::state::AppState;
use crate::telemetry::Readings;

/// How long in-flight requests may take to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);

/// The whole HTTP application.
pub fn app(state: Arc<AppState>) -> impl Endpoint<Output = poem::Response> {
    let mut route = routes::admin_pages::mount_static(Route::new());
    if state.settings.admin.enabled {
        route = routes::admin_pages::mount(route.nest("/admin/api", routes::admin_api::routes()));
    }
    let observed = state.clone();
    route
        .at(
            "/health",
            get(routes::health::health).head(routes::health::health),
        )
        .at("/metrics", get(routes::metrics::metrics))
        .at(
            "/ready",
            get(routes::health::ready).head(routes::health::ready),
        )
        .at("/", get(routes::image::image).head(routes::image::image))
        .at(
            "/*path",
            get(routes::image::image).head(routes::image::image),
        )
        .data(state)
        .with(CatchPanic::new())
        .around(move |endpoint, req| crate::observe::observe(endpoint, req, observed.clone()))
}

/// Sets the gauges every second, for statsd (which is pushed to).
async fn publish_gauges(state: Arc<AppState>) {
    loop {
        set_gauges(&state);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Sets every gauge of the registry from the state now: the one place they are read from
/// it, every second and before `/metrics`, the admin page or the API reads them.
pub fn set_gauges(state: &AppState) {
    let cache = state.cache.stats();
    let reduced = state
        .cache
        .reduced()
        .map(|tier| tier.stats())
        .unwrap_or_default();
    let readings = Readings {
        renders_in_flight: state.pipeline.renders_in_flight() as u64,
        renders_waiting: state.pipeline.renders_waiting() as u64,
        cache_entries: cache.entries,
        cache_bytes: cache.bytes,
        cache_disk_bytes: cache.disk_bytes,
        cache_max_bytes: cache.max_bytes,
        cache_memory_entries: cache.memory_entries,
        cache_memory_bytes: cache.memory_bytes,
        cache_purges_running: cache.purges_running as u64,
        cache_index_disk_bytes: cache.index_disk_bytes,
        recent_originals_bytes: state.pipeline.recent_bytes(),
        reduced_originals: reduced.copies,
        reduced_originals_disk_bytes: reduced.disk,
        workers_idle: state.workers.idle() as u64,
        libraries_mapped: crate::plugins::libraries_mapped(),
        uptime_seconds: 0, // the registry's own
        resident_bytes: resident_bytes().unwrap_or(0),
    };
    let modes = state
        .modes
        .modes()
        .iter()
        .map(|m| (m.name.clone(), m.version.clone()))
        .collect();
    state.metrics.set_gauges(&readings, modes);
}

/// Resident set size, from `VmRSS` in `/proc/self/status` (Linux; reported in kB).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Serves `state` on `listener` until `shutdown` completes, then lets requests in flight
/// finish (up to a grace period).
pub async fn run(
    listener: std::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let server = &state.settings.server;
    let limits = crate::http::HttpLimits {
        header_timeout: server.header_timeout,
        keep_alive_timeout: server.keep_alive_timeout,
        max_connections: server.max_connections,
        max_header_bytes: server.max_header_bytes,
        send_timeout: server.send_timeout,
    };
    crate::hitlog::start(&state)?;
    let gauges = tokio::spawn(publish_gauges(state.clone()));
    crate::cluster::Cluster::spawn(&state);
    if let Some(cdns) = state.purges.cdns() {
        cdns.spawn();
    }
    if let (ross_config::SourceSettings::S3(s3), Some(queue)) =
        (&state.settings.source, &state.settings.changes.events_queue)
    {
        crate::source::sqs::spawn(&state, s3, queue);
    }
    let hits = routes::fast::MemoryHits::new(state.clone());
    let fast =
        move |method: &poem::http::Method,
              uri: &poem::http::Uri,
              headers: &poem::http::HeaderMap| hits.answer(method, uri, headers);
    let observed = state.clone();
    let refused: crate::http::Refused = Arc::new(move |code, message| {
        crate::observe::refused_by_connection(&observed, code, message)
    });
    crate::http::serve(
        listener,
        app(state.clone()),
        fast,
        shutdown,
        GRACE,
        limits,
        refused,
    )
    .await?;
    gauges.abort();
    // Hit times gathered since the last batch, and the index, to disk before exiting.
    let cache = state.cache.clone();
    let flushed = tokio::task::spawn_blocking(move || cache.flush()).await;
    if let Ok(Err(e)) = flushed {
        tracing::error!(error = %e, "cannot flush the cache index at shutdown");
    }
    Ok(())
}
