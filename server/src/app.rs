//! The HTTP surface: the router as a pure function of the state, and [`run`], which serves it
//! on a listener until a shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use poem::middleware::CatchPanic;
use poem::{get, Endpoint, EndpointExt, Route};

use crate::routes;
use crate::state::AppState;
use crate::telemetry::names;

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

/// Sets the gauges (renders, cache size) every second, for exporters that are pushed to.
async fn publish_gauges(state: Arc<AppState>) {
    loop {
        set_gauges(&state);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Sets the gauges from the state now.
pub fn set_gauges(state: &AppState) {
    let cache = state.cache.stats();
    metrics::gauge!(names::IN_FLIGHT).set(state.pipeline.renders_in_flight() as f64);
    metrics::gauge!(names::WAITING).set(state.pipeline.renders_waiting() as f64);
    metrics::gauge!(names::CACHE_ENTRIES).set(cache.entries as f64);
    metrics::gauge!(names::CACHE_BYTES).set(cache.bytes as f64);
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
    let gauges = tokio::spawn(publish_gauges(state.clone()));
    let hits = routes::fast::MemoryHits::new(state.clone());
    let fast =
        move |method: &poem::http::Method,
              uri: &poem::http::Uri,
              headers: &poem::http::HeaderMap| hits.answer(method, uri, headers);
    crate::http::serve(listener, app(state.clone()), fast, shutdown, GRACE, limits).await?;
    gauges.abort();
    // Hit times gathered since the last batch, and the index, to disk before exiting.
    let cache = state.cache.clone();
    let flushed = tokio::task::spawn_blocking(move || cache.flush()).await;
    if let Ok(Err(e)) = flushed {
        tracing::error!(error = %e, "cannot flush the cache index at shutdown");
    }
    Ok(())
}
