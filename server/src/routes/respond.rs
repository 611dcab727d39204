//! Image responses with the SPEC's headers, and conditional requests (304).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use poem::http::{header, HeaderValue, StatusCode};
use poem::{Body, Request, Response};

use crate::cache::OutputFormat;
use crate::file_headers::FileHeaders;
use crate::pipeline::CacheStatus;
use ross_config::CacheSettings;

fn not_modified(req: &Request, headers: &FileHeaders) -> bool {
    if let Some(inm) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let tag = headers.etag_str();
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
        .is_some_and(|since| headers.modified_secs <= since.as_secs())
}

/// A 200 (or 304) rendered image with caching headers and `X-Cache`, and `Vary: Accept`
/// when it `varies` by the request's `Accept` (more than one format is served).
pub(super) fn image_response(
    req: &Request,
    body: Bytes,
    format: OutputFormat,
    modified: SystemTime,
    cache: CacheStatus,
    policy: &CacheSettings,
    varies: bool,
) -> Response {
    let len = body.len() as u64;
    let mut response = streamed_image_response(
        req,
        body.into(),
        len,
        format.media_type(),
        modified,
        cache,
        policy,
    );
    if varies {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    response
}

/// [`image_response`] for a body of `len` bytes still to be read.
pub(super) fn streamed_image_response(
    req: &Request,
    body: Body,
    len: u64,
    content_type: &str,
    modified: SystemTime,
    cache: CacheStatus,
    policy: &CacheSettings,
) -> Response {
    let headers = FileHeaders::new(modified, len);
    let builder = caching_headers(&headers, cache, cache_control(policy));
    if not_modified(req, &headers) {
        return builder.status(StatusCode::NOT_MODIFIED).finish();
    }
    builder
        .content_type(content_type)
        .header(header::CONTENT_LENGTH, len)
        .body(body)
}

/// `Cache-Control` of an image response: `public, max-age=` `cache.max_age`, or `no-store`
/// with `cache.development` (browsers, nginx and CDNs keep nothing of a mode in the making).
pub fn cache_control(policy: &CacheSettings) -> HeaderValue {
    if policy.development {
        return HeaderValue::from_static("no-store");
    }
    HeaderValue::from_maybe_shared(format!("public, max-age={}", policy.max_age.as_secs()))
        .expect("ASCII")
}

/// The headers every image response carries, 200 or 304.
fn caching_headers(
    headers: &FileHeaders,
    cache: CacheStatus,
    cache_control: HeaderValue,
) -> poem::ResponseBuilder {
    Response::builder()
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::ETAG, headers.etag.clone())
        .header(header::LAST_MODIFIED, headers.last_modified.clone())
        .header(
            "X-Cache",
            HeaderValue::from_static(if cache == CacheStatus::Hit {
                "HIT"
            } else {
                "MISS"
            }),
        )
        .header(
            "X-Content-Type-Options",
            HeaderValue::from_static("nosniff"),
        )
}

/// [`image_response`] for a request known not to be conditional, of a file whose headers
/// are made: a 200.
pub(super) fn unconditional_image_response(
    body: Bytes,
    content_type: &'static str,
    headers: &FileHeaders,
    cache: CacheStatus,
    cache_control: HeaderValue,
) -> Response {
    caching_headers(headers, cache, cache_control)
        .header(header::CONTENT_TYPE, HeaderValue::from_static(content_type))
        .header(header::CONTENT_LENGTH, headers.content_length.clone())
        .body(body)
}
