//! The one request middleware: every request gets an id (`X-Request-Id`, taken from the
//! client or generated, and echoed), is counted by status, and logged once, in one access
//! line: method, path, status, HIT/MISS, milliseconds, id, and for a failure its code, the
//! reason the client was given and what went wrong inside (carried here in the response's
//! [`Failure`]). Errors are logged here and nowhere else. [`note`] is the one place a
//! response is counted, listed, reported and logged: the middleware calls it for every
//! response of the router, and the memory fast path for the hits it answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use poem::http::{HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::error::{AppError, ErrorCode, Failure};
use crate::routes;
use crate::state::AppState;
use crate::telemetry;

/// The header that carries a request's id.
pub const REQUEST_ID: &str = "X-Request-Id";

/// Longest client-given request id kept; longer (or odd) ones are replaced.
const MAX_ID_LEN: usize = 128;

/// Serves `req` through `endpoint` with the id, the counts and the access line.
pub async fn observe<E: Endpoint>(
    endpoint: Arc<E>,
    req: Request,
    state: Arc<AppState>,
) -> poem::Result<Response> {
    let started = Instant::now();
    let id = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut response = in_spec_format(endpoint.get_response(req).await, &path);
    let failure = response.extensions_mut().remove::<Failure>();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let cache = response
        .headers()
        .get("X-Cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    note(
        &state,
        &Outcome {
            id: &id,
            method: &method,
            path: &path,
            status: response.status(),
            cache,
            started: Some(started),
            failure,
        },
    );
    Ok(response)
}

/// One response, as the observer notes it.
pub struct Outcome<'a> {
    /// The request's id (`X-Request-Id`).
    pub id: &'a str,
    /// Method asked for.
    pub method: &'a poem::http::Method,
    /// Path asked for.
    pub path: &'a str,
    /// Status sent.
    pub status: StatusCode,
    /// `HIT`, `MISS` or `-`.
    pub cache: &'a str,
    /// When the request began; `None` for an answer the connection layer gave before a
    /// request was read (counted, not timed).
    pub started: Option<Instant>,
    /// What failed, for an error.
    pub failure: Option<Failure>,
}

/// Counts, lists, reports and logs one response. Every response is noted here once: the
/// router's (through [`observe`]) and the memory fast path's.
pub fn note(state: &AppState, outcome: &Outcome<'_>) {
    let &Outcome {
        id,
        method,
        path,
        status,
        cache,
        started,
        ref failure,
    } = outcome;
    let took = started.map(|s| s.elapsed());
    state.metrics.response(status.as_u16(), took);
    if status.is_client_error() || status.is_server_error() {
        state.recent_errors.note(
            std::time::SystemTime::now(),
            admin_api::RecentError {
                status: status.as_u16(),
                code: failure.as_ref().map_or("", |f| f.code.as_str()).to_owned(),
                reason: failure
                    .as_ref()
                    .map_or_else(String::new, |f| f.reason.clone()),
                method: method.to_string(),
                path: path.to_owned(),
                request_id: id.to_owned(),
                ..admin_api::RecentError::default()
            },
        );
    }
    let ms = took.unwrap_or_default().as_secs_f64() * 1e3;
    if status.is_server_error() {
        let cause = failure.as_ref().and_then(|f| f.cause.as_deref());
        report(state, method, path, id, status, cause);
    }
    match failure {
        Some(f) if status.is_server_error() => tracing::error!(
            target: "access", request_id = %id, %method, path = %path, status = status.as_u16(),
            cache = %cache, ms = format_args!("{ms:.1}"), code = %f.code,
            reason = %f.reason, error = f.cause.as_deref().map(tracing::field::display),
            "request failed"
        ),
        Some(f) if REFUSALS.admit(&state.metrics) => tracing::warn!(
            target: "access", request_id = %id, %method, path = %path,
            status = status.as_u16(), cache = %cache, ms = format_args!("{ms:.1}"),
            code = %f.code, reason = %f.reason,
            error = f.cause.as_deref().map(tracing::field::display), "request refused"
        ),
        None if status.is_server_error() => tracing::error!(
            target: "access", request_id = %id, %method, path = %path, status = status.as_u16(),
            cache = %cache, ms = format_args!("{ms:.1}"), "request failed"
        ),
        // A refusal past the line rate is counted by `admit`, not written.
        None if status.is_client_error() && REFUSALS.admit(&state.metrics) => {
            log_served(id, method, path, status, cache, ms);
        }
        None if !status.is_client_error() && state.settings.log.access => {
            log_served(id, method, path, status, cache, ms);
        }
        Some(_) | None => {}
    }
}

/// Notes an answer the connection layer gave itself, before any request reached the router (a
/// head too slow, too large or malformed): counted, listed and logged like every response,
/// with `-` for what was never read.
pub fn refused_by_connection(state: &AppState, code: ErrorCode, message: &str) {
    static UNREAD: std::sync::LazyLock<poem::http::Method> = std::sync::LazyLock::new(|| {
        poem::http::Method::from_bytes(b"-").expect("a token is a method")
    });
    note(
        state,
        &Outcome {
            id: "-",
            method: &UNREAD,
            path: "-",
            status: code.status(),
            cache: "-",
            started: None,
            failure: Some(Failure {
                code,
                reason: message.to_owned(),
                cause: None,
            }),
        },
    );
}

/// Refusal (4xx) lines written per second at most. Clients decide how many refusals there
/// are (a run of guessed URLs wrote 389 MB of log); past this the lines are counted, and the
/// count is logged when a refusal comes in a later second. `/metrics` and the admin page's
/// recent errors still count every one.
const REFUSAL_LINES_PER_SECOND: u64 = 100;

/// The refusal lines of the current second, and those dropped since the last report.
struct RefusalLog {
    second: AtomicU64,
    lines: AtomicU64,
    dropped: AtomicU64,
}

static REFUSALS: RefusalLog = RefusalLog {
    second: AtomicU64::new(0),
    lines: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
};

impl RefusalLog {
    /// Whether a refusal line may be written now; one that may not is counted in `metrics`.
    fn admit(&self, metrics: &telemetry::Metrics) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (admitted, dropped) = self.admit_at(now, metrics);
        if let Some(dropped) = dropped {
            tracing::warn!(
                target: "access", dropped,
                "refusal lines dropped (more than {REFUSAL_LINES_PER_SECOND} a second)"
            );
        }
        admitted
    }

    /// [`RefusalLog::admit`] at `now` (seconds): whether to write the line, and the count of
    /// lines dropped to report first, if any. A line dropped is counted in `metrics`.
    fn admit_at(&self, now: u64, metrics: &telemetry::Metrics) -> (bool, Option<u64>) {
        let mut report = None;
        let second = self.second.load(Ordering::Relaxed);
        if now != second
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.lines.store(0, Ordering::Relaxed);
            report = Some(self.dropped.swap(0, Ordering::Relaxed)).filter(|&n| n > 0);
        }
        if self.lines.fetch_add(1, Ordering::Relaxed) < REFUSAL_LINES_PER_SECOND {
            (true, report)
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics.count(telemetry::Count::RefusalLineDropped);
            (false, report)
        }
    }
}

/// The request's id: the client's `X-Request-Id` if it is a sane one, else a new one.
pub fn request_id(headers: &poem::http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_id(v.as_bytes()))
        .map_or_else(new_id, str::to_owned)
}

/// [`request_id`] as a header value, the client's own (no copy) when it is valid.
pub fn request_id_value(headers: &poem::http::HeaderMap) -> HeaderValue {
    match headers.get(REQUEST_ID) {
        Some(v) if valid_id(v.as_bytes()) => v.clone(),
        _ => HeaderValue::from_maybe_shared(bytes::Bytes::from(new_id())).expect("hex and a dash"),
    }
}

fn valid_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.iter().all(u8::is_ascii_graphic)
}

/// The access line of a request served (or refused without a detail).
pub fn log_served(
    id: &str,
    method: &poem::http::Method,
    path: &str,
    status: StatusCode,
    cache: &str,
    ms: f64,
) {
    tracing::info!(
        target: "access", request_id = %id, %method, path = %path, status = status.as_u16(),
        cache = %cache, ms = format_args!("{ms:.1}"), "request"
    );
}

/// Tells Sentry about a 5xx, with the request's key, size, mode and plugin version.
fn report(
    state: &AppState,
    method: &poem::http::Method,
    path: &str,
    id: &str,
    status: StatusCode,
    detail: Option<&str>,
) {
    let limits = &state.settings.limits;
    let render = match crate::request::parse(path, limits.max_width, limits.max_height) {
        Ok(crate::request::Target::Render(r)) => Some(r),
        _ => None,
    };
    let plugin_version = render
        .as_ref()
        .and_then(|r| state.modes.get(&r.mode))
        .map(|m| m.version.clone());
    telemetry::report_failure(&telemetry::FailedRequest {
        status: status.as_u16(),
        method: method.as_str(),
        path,
        request_id: id,
        key: render.as_ref().map(|r| r.key.as_str()),
        size: render.as_ref().map(|r| r.size.to_string()),
        mode: render.as_ref().map(|r| r.mode.as_str()),
        plugin_version,
        detail,
    });
}

/// A new request id: this process's random prefix and a sequence number.
fn new_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut random = [0u8; 6];
        let _ = getrandom::getrandom(&mut random);
        random.iter().map(|b| format!("{b:02x}")).collect()
    });
    format!("{prefix}-{:x}", SEQUENCE.fetch_add(1, Ordering::Relaxed))
}

/// Errors poem produces itself (a method a route does not take, an extractor that fails)
/// come as plain text: they get the SPEC's JSON body, and a 405 its `Allow` header. JSON
/// errors, and the admin pages' own HTML ones, pass as they are.
fn in_spec_format(response: Response, path: &str) -> Response {
    let status = response.status();
    let ours = response
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || ours {
        return response;
    }
    let mut fixed = AppError::from_status(status).into_response();
    // The status is never changed: one without a code of its own (a 409 or 412 from poem)
    // gets the nearest code, bad-request or internal-error, and keeps its status.
    fixed.set_status(status);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = routes::allowed_methods(path);
        fixed
            .headers_mut()
            .insert(poem::http::header::ALLOW, HeaderValue::from_static(allow));
    }
    fixed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a 4xx poem produced without a code of its own was sent as 400.
    #[test]
    fn a_framework_error_keeps_its_status_in_the_json_format() {
        for status in [
            StatusCode::CONFLICT,
            StatusCode::NOT_FOUND,
            StatusCode::BAD_GATEWAY,
        ] {
            let plain = Response::builder().status(status).body("plain text");
            let fixed = in_spec_format(plain, "/x");
            assert_eq!(fixed.status(), status);
            assert_eq!(
                fixed.headers()[poem::http::header::CONTENT_TYPE],
                "application/json"
            );
        }
    }

    #[test]
    fn refusal_lines_are_bounded_per_second_and_the_rest_counted() {
        let log = RefusalLog {
            second: AtomicU64::new(0),
            lines: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        };
        let metrics = telemetry::Metrics::new();
        let written = (0..150).filter(|_| log.admit_at(10, &metrics).0).count() as u64;
        assert_eq!(written, REFUSAL_LINES_PER_SECOND);
        assert_eq!(log.admit_at(10, &metrics), (false, None));
        // The next second: written again, and the 51 dropped reported once.
        assert_eq!(log.admit_at(11, &metrics), (true, Some(51)));
        assert_eq!(log.admit_at(11, &metrics), (true, None));
        assert_eq!(metrics.counts().refusal_lines_dropped, 51);
        assert!(metrics
            .encode()
            .contains("ross_log_refusals_dropped_total 51\n"));
    }
}
