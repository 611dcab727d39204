//! Request handlers, one file each, and the response helpers they share.

pub mod admin_api;
pub mod health;
pub mod image;
pub mod metrics;
mod original;
mod render;
mod respond;

/// The methods `path` takes, for the `Allow` header of a 405. Kept beside the routes in
/// `app.rs` and `admin_api`, which it mirrors.
pub fn allowed_methods(path: &str) -> &'static str {
    match path.strip_prefix("/admin/api/") {
        Some("whitelist") => "GET, PUT",
        Some(p) if p.starts_with("whitelist/") => "PUT, DELETE",
        Some("purge") => "POST",
        Some(_) => "GET",
        None if path == "/metrics" => "GET",
        None => "GET, HEAD",
    }
}
