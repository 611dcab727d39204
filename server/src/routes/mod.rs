//! Request handlers, one file each, and the response helpers they share.

pub mod admin_api;
pub mod admin_pages;
pub mod admission;
pub mod fast;
pub mod health;
pub mod image;
pub mod metrics;
mod original;
mod render;
pub(crate) mod respond;

/// The methods `path` takes, for the `Allow` header of a 405. Kept beside the routes in
/// `app.rs` and `admin_api`, which it mirrors.
pub fn allowed_methods(path: &str) -> &'static str {
    if let Some(methods) = admin_pages::allowed_methods(path) {
        return methods;
    }
    match path.strip_prefix("/admin/api/") {
        Some("whitelist") => "GET, PUT, PATCH",
        Some(p) if p.starts_with("whitelist/") => "PUT, DELETE",
        Some("purge") => "POST",
        Some(_) => "GET",
        None if path == "/metrics" => "GET",
        None => "GET, HEAD",
    }
}

/// Largest request body read: admin requests and forms are a few bytes.
const MAX_BODY: usize = 64 << 10;

/// Reads an admin request's body. It must arrive within `server.header_timeout_ms` (408 after
/// that: a client trickling it cannot hold the connection) and be at most 64 KiB (413).
pub(crate) async fn read_small_body(
    state: &crate::state::AppState,
    body: poem::Body,
) -> Result<bytes::Bytes, crate::error::AppError> {
    use crate::error::{AppError, ErrorCode};
    use poem::error::ReadBodyError;
    let deadline = state.settings.server.header_timeout;
    match tokio::time::timeout(deadline, body.into_bytes_limit(MAX_BODY)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(ReadBodyError::PayloadTooLarge)) => Err(AppError::new(
            ErrorCode::BodyTooLarge,
            format!("The request body is larger than {MAX_BODY} bytes."),
        )),
        Ok(Err(e)) => Err(crate::admin::ops::bad_request(format!(
            "The request body could not be read: {e}."
        ))),
        Err(_) => Err(AppError::new(
            ErrorCode::RequestTimeout,
            format!(
                "The request body did not arrive within {} s.",
                deadline.as_secs_f64()
            ),
        )),
    }
}
