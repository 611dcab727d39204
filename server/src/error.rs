//! The HTTP edge of every failure: [`AppError`] maps each subsystem's error to a status and the
//! SPEC's JSON body `{"error": {"code", "message"}}` with a stable kebab-case code. Bodies of
//! 5xx errors never carry internals; the details go to the log instead.

use poem::http::{header, StatusCode};
use poem::{IntoResponse, Response};

use crate::imaging::{DecodeError, EncodeError};
use crate::plugins::PluginRenderError;
use crate::request::RequestError;
use crate::source::SourceError;

/// Every error code ross sends, with its status: the one table the README's error table is
/// checked against (`tests/requests.rs`).
pub const CODES: &[(u16, &str)] = &[
    (400, "invalid-size"),
    (400, "invalid-key"),
    (400, "invalid-request"),
    (400, "bad-request"),
    (401, "unauthorized"),
    (403, "size-not-allowed"),
    (403, "csrf-token-invalid"),
    (404, "unknown-mode"),
    (404, "source-not-found"),
    (404, "originals-disabled"),
    (404, "not-found"),
    (405, "method-not-allowed"),
    (408, "request-timeout"),
    (413, "source-too-large"),
    (413, "source-too-many-pixels"),
    (413, "body-too-large"),
    (414, "uri-too-long"),
    (415, "unsupported-format"),
    (415, "undecodable-image"),
    (415, "unsupported-media-type"),
    (429, "too-many-logins"),
    (431, "headers-too-large"),
    (500, "render-failed"),
    (500, "render-crashed"),
    (500, "encode-failed"),
    (500, "decode-failed"),
    (500, "store-failed"),
    (500, "internal-error"),
    (502, "source-failed"),
    (502, "source-denied"),
    (502, "source-rejected"),
    (502, "source-unavailable"),
    (503, "overloaded"),
    (503, "render-timeout"),
    (503, "out-of-memory"),
    (503, "mode-quarantined"),
    (504, "source-timeout"),
];

/// `Retry-After` of a quarantined mode's answers: a quarantine lasts until an operator
/// replaces the plugin, which takes minutes, not seconds.
pub const QUARANTINE_RETRY_AFTER: u32 = 300;

/// A failed request, ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, kebab-case.
    pub code: &'static str,
    /// One sentence a user can act on.
    pub message: String,
    /// Seconds for `Retry-After` (503, and 502/504 when the source is down).
    pub retry_after: Option<u32>,
    /// What went wrong inside, for the log line of the request (never sent).
    pub detail: Option<String>,
}

/// The inside story of a failed response, carried to the request middleware in the
/// response's extensions: it logs it once, with the request's context.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

/// A failed response's error code, carried to the request middleware in the response's
/// extensions, for the admin page's list of recent errors.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl AppError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            detail: None,
        }
    }

    /// The same error, with what went wrong inside for the log.
    pub fn detailed(mut self, detail: impl std::fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    /// The size is not in the whitelist.
    pub fn not_whitelisted(size: ross_config::Size) -> Self {
        AppError::new(
            StatusCode::FORBIDDEN,
            "size-not-allowed",
            format!(
                "The size {size} is not in the whitelist; an administrator can allow it on the \
                 admin page or with PUT /admin/api/whitelist/{size}."
            ),
        )
    }

    /// No loaded plugin provides the mode.
    pub fn unknown_mode(mode: &str) -> Self {
        AppError::new(
            StatusCode::NOT_FOUND,
            "unknown-mode",
            format!("No mode named {mode:?} is loaded."),
        )
    }

    /// Too many renders are waiting.
    pub fn overloaded() -> Self {
        AppError {
            retry_after: Some(1),
            ..AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Too many images are being rendered; retry in a moment.",
            )
        }
    }

    /// As many originals are being sent as `limits.max_original_streams` allows.
    pub fn originals_busy() -> Self {
        AppError {
            retry_after: Some(1),
            ..AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Too many originals are being sent; retry in a moment.",
            )
        }
    }

    /// The render did not finish within `limits.render_timeout_ms`.
    pub fn render_timeout() -> Self {
        AppError {
            retry_after: Some(1),
            ..AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "render-timeout",
                "The image took too long to render; retry in a moment.",
            )
        }
    }

    /// The render's worker died (a crash in the mode's plugin, a decoder or an encoder).
    pub fn render_crashed() -> Self {
        AppError::internal(
            "render-crashed",
            "Rendering this image crashed its worker; the server is unaffected.",
        )
    }

    /// The render's worker went over `limits.worker_memory_bytes`.
    pub fn worker_out_of_memory() -> Self {
        AppError {
            retry_after: Some(5),
            ..AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "out-of-memory",
                "Rendering this image needs more memory than a render may take.",
            )
        }
    }

    /// The mode kept crashing or hanging its workers and is out of service until its plugin
    /// file changes.
    pub fn mode_quarantined(mode: &str, reason: &str) -> Self {
        AppError {
            retry_after: Some(QUARANTINE_RETRY_AFTER),
            ..AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "mode-quarantined",
                format!(
                    "The mode {mode:?} is out of service ({reason}) until its plugin is \
                     replaced; cached images stay served."
                ),
            )
        }
    }

    /// An error a render worker answered with. A code that is not ross's (a worker that a
    /// crafted file took over can say anything) becomes an internal error.
    pub fn from_wire(wire: crate::worker::protocol::WireError) -> Self {
        let known = CODES
            .iter()
            .find(|(status, code)| *status == wire.status && *code == wire.code);
        match known {
            Some(&(status, code)) => AppError {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code,
                message: wire.message,
                retry_after: wire.retry_after,
                detail: wire.detail,
            },
            None => {
                AppError::internal("render-failed", "The image could not be rendered.").detailed(
                    format!("a worker answered the unknown error {:?}", wire.code),
                )
            }
        }
    }

    /// The SPEC's form of an error the HTTP framework produced with only a status.
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status.as_u16() {
            400 => ("bad-request", "The request is malformed."),
            401 => ("unauthorized", "This path needs credentials."),
            408 => ("request-timeout", "The request did not arrive in time."),
            414 => ("uri-too-long", "The request's URL is too long."),
            431 => ("headers-too-large", "The request's headers are too large."),
            404 => ("not-found", "Nothing is served at this path."),
            405 => (
                "method-not-allowed",
                "This path does not take that method; see the Allow header.",
            ),
            413 => ("body-too-large", "The request body is too large."),
            415 => (
                "unsupported-media-type",
                "The request body is not of a type this path takes.",
            ),
            s if s >= 500 => ("internal-error", "The server failed; try again later."),
            _ => ("bad-request", "The request cannot be served."),
        };
        AppError::new(status, code, message)
    }

    /// Something inside the server failed; details are logged, not sent.
    pub fn internal(code: &'static str, message: &str) -> Self {
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = Response::builder()
            .status(self.status)
            .content_type("application/json")
            .header(header::CACHE_CONTROL, "no-store")
            .header("X-Content-Type-Options", "nosniff")
            .body(body.to_string());
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.into());
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        if let Some(detail) = self.detail {
            response.extensions_mut().insert(ErrorDetail(detail));
        }
        response
    }
}

impl From<RequestError> for AppError {
    fn from(e: RequestError) -> Self {
        let code = match e {
            RequestError::InvalidSize(_) => "invalid-size",
            RequestError::InvalidKey(_) => "invalid-key",
        };
        AppError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    }
}

impl From<SourceError> for AppError {
    fn from(e: SourceError) -> Self {
        let error = match &e {
            SourceError::NotFound { key } => AppError::new(
                StatusCode::NOT_FOUND,
                "source-not-found",
                format!("No source image has the key {key:?}."),
            ),
            SourceError::TooLarge { key, limit, .. } => AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "source-too-large",
                format!("The source {key:?} is larger than the {limit} bytes allowed."),
            ),
            SourceError::Io { .. } => AppError::new(
                StatusCode::BAD_GATEWAY,
                "source-failed",
                "The image source could not be read; try again later.",
            ),
            SourceError::Denied { .. } => AppError::new(
                StatusCode::BAD_GATEWAY,
                "source-denied",
                "The image store refused ross access to this image.",
            ),
            SourceError::Rejected { .. } => AppError::new(
                StatusCode::BAD_GATEWAY,
                "source-rejected",
                "The image store rejected the request for this image.",
            ),
            SourceError::Unavailable { .. } => AppError {
                retry_after: Some(1),
                ..AppError::new(
                    StatusCode::BAD_GATEWAY,
                    "source-unavailable",
                    "The image store failed or could not be reached; try again later.",
                )
            },
            SourceError::Timeout { after, .. } => AppError {
                retry_after: Some(1),
                ..AppError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "source-timeout",
                    format!(
                        "The image store did not answer within {} ms; try again later.",
                        after.as_millis()
                    ),
                )
            },
        };
        error.detailed(&e)
    }
}

impl From<DecodeError> for AppError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::UnsupportedFormat => AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-format",
                "The source is not an image in a supported format (JPEG, PNG, GIF, WebP).",
            ),
            DecodeError::Malformed { format, .. } => AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "undecodable-image",
                format!("The source {format:?} image is damaged and cannot be decoded."),
            )
            .detailed(&e),
            DecodeError::TooManyPixels { .. } => AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "source-too-many-pixels",
                e.to_string(),
            ),
            DecodeError::OutOfMemory { .. } => AppError {
                retry_after: Some(5),
                ..AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "out-of-memory",
                    "The server has not enough memory free to decode this image now; retry later.",
                )
                .detailed(&e)
            },
        }
    }
}

impl From<PluginRenderError> for AppError {
    fn from(e: PluginRenderError) -> Self {
        AppError::internal("render-failed", "The mode failed to render this image.").detailed(&e)
    }
}

impl From<EncodeError> for AppError {
    fn from(e: EncodeError) -> Self {
        AppError::internal("encode-failed", "The rendered image could not be encoded.").detailed(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framework_statuses_map_to_listed_codes() {
        // The statuses poem and hyper produce on their own.
        for status in [400, 401, 404, 405, 408, 413, 414, 415, 431, 500] {
            let e = AppError::from_status(StatusCode::from_u16(status).unwrap());
            assert!(
                CODES.contains(&(status, e.code)),
                "{status} gives unlisted {}",
                e.code
            );
        }
        for e in [AppError::overloaded(), AppError::render_timeout()] {
            assert!(CODES.contains(&(e.status.as_u16(), e.code)), "{}", e.code);
        }
    }
}
