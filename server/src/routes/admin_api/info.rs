//! `GET /admin/api/stats`, `GET /admin/api/plugins` and `GET /admin/api/cluster`: the API's own response types
//! (`ross-admin-api`), which the admin pages show too.

use std::sync::Arc;

use poem::web::Data;
use poem::{handler, Response};

use super::json;
use crate::admin::views;
use crate::state::AppState;

/// Requests, hits, misses, errors by status, stage timings, cache totals and renders in
/// flight.
#[handler]
pub(super) fn stats(Data(state): Data<&Arc<AppState>>) -> Response {
    json(&views::stats(state))
}

/// Every mode in service (name, version, description, file, when loaded, a refusal of its
/// file since), and the files refused.
#[handler]
pub(super) fn plugins(Data(state): Data<&Arc<AppState>>) -> Response {
    json(&views::plugins(state))
}

/// This node's standing in the cluster, and every node's last heartbeat.
#[handler]
pub(super) fn cluster(Data(state): Data<&Arc<AppState>>) -> Response {
    json(&views::cluster(state))
}

/// The CDNs in front, what they took and the purges waiting for them.
#[handler]
pub(super) fn cdn(Data(state): Data<&Arc<AppState>>) -> Response {
    json(&views::cdn(state))
}
