//! `GET /metrics`: the server's registry as Prometheus text (version 0.0.4), its gauges set
//! from the state first. The admin page and the admin API read the same registry.

use std::sync::Arc;

use poem::http::header;
use poem::web::Data;
use poem::{handler, Response};

use crate::state::AppState;

/// Every metric, as Prometheus text.
#[handler]
pub fn metrics(Data(state): Data<&Arc<AppState>>) -> Response {
    crate::app::set_gauges(state);
    Response::builder()
        .content_type(prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
        .header(header::CACHE_CONTROL, "no-store")
        .body(state.metrics.encode())
}
