//! `GET /health`: 200 `ok` while the process serves.

use poem::handler;

/// Liveness: answers as long as the server accepts requests.
#[handler]
pub fn health() -> &'static str {
    "ok"
}
