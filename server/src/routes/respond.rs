//! Image responses with the SPEC's headers, and conditional requests (304).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use poem::http::{header, StatusCode};
use poem::{Body, Request, Response};

use crate::pipeline::CacheStatus;

/// `"<mtime hex>-<length hex>"`, the form nginx uses, so an ETag does not change when the
/// same cached file is served by nginx instead of ross.
fn etag(modified_secs: u64, len: u64) -> String {
    format!("\"{modified_secs:x}-{len:x}\"")
}

fn not_modified(req: &Request, tag: &str, modified_secs: u64) -> bool {
    if let Some(inm) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == tag);
    }
    req.headers()
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|since| since.duration_since(UNIX_EPOCH).ok())
        .is_some_and(|since| modified_secs <= since.as_secs())
}

/// A 200 (or 304) image response with caching headers and `X-Cache`.
pub(super) fn image_response(
    req: &Request,
    body: Bytes,
    content_type: &str,
    modified: SystemTime,
    cache: CacheStatus,
    max_age: Duration,
) -> Response {
    let len = body.len() as u64;
    streamed_image_response(
        req,
        body.into(),
        len,
        content_type,
        modified,
        cache,
        max_age,
    )
}

/// [`image_response`] for a body of `len` bytes still to be read.
pub(super) fn streamed_image_response(
    req: &Request,
    body: Body,
    len: u64,
    content_type: &str,
    modified: SystemTime,
    cache: CacheStatus,
    max_age: Duration,
) -> Response {
    let secs = modified
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let tag = etag(secs, len);
    let builder = caching_headers(&tag, secs, cache, max_age);
    if not_modified(req, &tag, secs) {
        return builder.status(StatusCode::NOT_MODIFIED).finish();
    }
    builder
        .content_type(content_type)
        .header(header::CONTENT_LENGTH, len)
        .body(body)
}

/// The headers every image response carries, 200 or 304.
fn caching_headers(
    tag: &str,
    modified_secs: u64,
    cache: CacheStatus,
    max_age: Duration,
) -> poem::ResponseBuilder {
    Response::builder()
        .header(
            header::CACHE_CONTROL,
            format!("public, max-age={}", max_age.as_secs()),
        )
        .header(header::ETAG, tag)
        .header(
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(modified_secs)),
        )
        .header(
            "X-Cache",
            if cache == CacheStatus::Hit {
                "HIT"
            } else {
                "MISS"
            },
        )
        .header("X-Content-Type-Options", "nosniff")
}

/// [`image_response`] for a request known not to be conditional: a 200.
pub(super) fn unconditional_image_response(
    body: Bytes,
    content_type: &str,
    modified: SystemTime,
    cache: CacheStatus,
    max_age: Duration,
) -> Response {
    let len = body.len() as u64;
    let secs = modified
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    caching_headers(&etag(secs, len), secs, cache, max_age)
        .content_type(content_type)
        .header(header::CONTENT_LENGTH, len)
        .body(body)
}
