//! `GET /health` (liveness) and `GET /ready` (readiness for a load balancer).

use std::sync::Arc;

use poem::http::{header, StatusCode};
use poem::web::Data;
use poem::{handler, Response};

use crate::state::AppState;

/// Liveness: answers as long as the server accepts requests.
#[handler]
pub fn health() -> &'static str {
    "ok"
}

/// Readiness: 200 when at least one mode is loaded, render workers start, and the source
/// answers (an S3 bucket is probed with `HeadBucket`), else 503. The JSON body says which part is missing, so the
/// answer is useful to an operator as well as to a load balancer.
#[handler]
pub async fn ready(Data(state): Data<&Arc<AppState>>) -> Response {
    let modes: Vec<String> = state.modes.modes().iter().map(|m| m.name.clone()).collect();
    let source = state.pipeline.source();
    let probe = source.check().await;
    let workers = state.workers.can_start();
    let ready = !modes.is_empty() && workers && probe.is_ok();
    if !workers {
        tracing::warn!("not ready: render workers cannot be started");
    }
    if let Err(e) = &probe {
        tracing::warn!(error = %e, "not ready: the source does not answer");
    }
    let body = serde_json::json!({
        "ready": ready,
        "modes": modes,
        "workers": {"ok": workers, "idle": state.workers.idle()},
        "source": {
            "location": source.describe(),
            "ok": probe.is_ok(),
            "error": probe.err().map(|e| e.to_string()),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Response::builder()
        .status(status)
        .content_type("application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body.to_string())
}
