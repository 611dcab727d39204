//! `GET /admin/api/stats` and `GET /admin/api/plugins`.

use std::sync::Arc;
use std::time::SystemTime;

use poem::web::Data;
use poem::{handler, Response};
use serde_json::json;

use super::json;
use crate::state::AppState;

/// Requests, hits, misses, errors by status, cache totals and renders in flight.
#[handler]
pub(super) fn stats(Data(state): Data<&Arc<AppState>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let by_status = state.requests.by_status();
    let errors: serde_json::Map<String, serde_json::Value> = by_status
        .iter()
        .filter(|(status, _)| **status >= 400)
        .map(|(status, n)| (status.to_string(), json!(n)))
        .collect();
    let responses: serde_json::Map<String, serde_json::Value> = by_status
        .iter()
        .map(|(status, n)| (status.to_string(), json!(n)))
        .collect();
    let pipeline = state.pipeline.stats();
    json(&json!({
        "requests": state.requests.total(),
        "responses": responses,
        "errors": errors,
        "hits": pipeline.hits.load(Relaxed),
        "misses": pipeline.misses.load(Relaxed),
        "renders": pipeline.renders.load(Relaxed),
        "renders_in_flight": state.pipeline.renders_in_flight(),
        "renders_waiting": state.pipeline.renders_waiting(),
        "cache": state.cache.stats(),
    }))
}

/// Every mode in service (name, version, description, file, when loaded, the file's last load
/// error), and the recent refusals.
#[handler]
pub(super) fn plugins(Data(state): Data<&Arc<AppState>>) -> Response {
    let failures = state.modes.failures();
    let modes: Vec<_> = state
        .modes
        .modes()
        .iter()
        .map(|m| {
            let last_error = failures
                .iter()
                .rev()
                .find(|f| f.file == m.file)
                .map(|f| json!({"error": f.error.to_string(), "at": http_date(f.at)}));
            json!({
                "name": m.name,
                "version": m.version,
                "description": m.description,
                "file": m.file.display().to_string(),
                "loaded_at": http_date(m.loaded_at),
                "last_load_error": last_error,
            })
        })
        .collect();
    let refused: Vec<_> = failures
        .iter()
        .rev()
        .map(|f| {
            json!({
                "file": f.file.display().to_string(),
                "error": f.error.to_string(),
                "at": http_date(f.at),
            })
        })
        .collect();
    json(&json!({"modes": modes, "refused": refused}))
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}
