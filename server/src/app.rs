//! The HTTP surface: the router as a pure function of the state, and [`run`], which serves it
//! on a listener until a shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use poem::middleware::CatchPanic;
use poem::{get, Endpoint, EndpointExt, Route};

use crate::error::AppError;
use crate::routes;
use crate::state::AppState;

/// How long in-flight requests may take to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);

/// The whole HTTP application.
pub fn app(state: Arc<AppState>) -> impl Endpoint<Output = poem::Response> {
    let mut route = Route::new();
    if state.settings.admin.enabled {
        route = route.nest("/admin/api", routes::admin_api::routes());
    }
    let counted = state.clone();
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
        .around(move |endpoint, req| {
            let state = counted.clone();
            async move {
                let path = req.uri().path().to_owned();
                let response = in_spec_format(endpoint.get_response(req).await, &path);
                state.requests.record(response.status().as_u16());
                Ok(response)
            }
        })
}

/// Errors poem produces itself (a method a route does not take, an extractor that fails)
/// come as plain text: they get the SPEC's JSON body, and a 405 its `Allow` header.
fn in_spec_format(response: poem::Response, path: &str) -> poem::Response {
    let status = response.status();
    let json = response
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let mut fixed = poem::IntoResponse::into_response(AppError::from_status(status));
    if status == poem::http::StatusCode::METHOD_NOT_ALLOWED {
        let allow = routes::allowed_methods(path);
        fixed.headers_mut().insert(
            poem::http::header::ALLOW,
            poem::http::HeaderValue::from_static(allow),
        );
    }
    fixed
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
    };
    crate::http::serve(listener, app(state.clone()), shutdown, GRACE, limits).await?;
    // Hit times gathered since the last batch, and the index, to disk before exiting.
    let cache = state.cache.clone();
    let flushed = tokio::task::spawn_blocking(move || cache.flush()).await;
    if let Ok(Err(e)) = flushed {
        tracing::error!(error = %e, "cannot flush the cache index at shutdown");
    }
    Ok(())
}
