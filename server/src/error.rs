//! The HTTP edge of every failure: [`AppError`] maps each subsystem's error to a status and the
//! SPEC's JSON body `{"error": {"code", "message"}}` with a stable kebab-case code. Bodies of
//! 5xx errors never carry internals; the details go to the log instead.

use poem::http::{header, StatusCode};
use poem::{IntoResponse, Response};

use crate::imaging::{DecodeError, EncodeError};
use crate::plugins::PluginRenderError;
use crate::request::RequestError;
use crate::source::SourceError;

/// Declares [`ErrorCode`] from one table: variant, status, code, `Retry-After` and the
/// message sent when the error has no more specific one.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $status:ident, $code:literal, $retry:expr, $message:literal;)*) => {
        /// Every error ross sends: the one table that statuses, codes, `Retry-After`,
        /// default messages and the README's error table (checked by `tests/requests.rs`)
        /// come from.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the table's order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable kebab-case code of the JSON body.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status.
            pub const fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status,)* }
            }

            /// Seconds for `Retry-After`, for errors worth retrying.
            pub const fn retry_after(self) -> Option<u32> {
                match self { $(ErrorCode::$variant => $retry,)* }
            }

            /// The message sent when nothing more specific is known.
            pub const fn message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message,)* }
            }
        }
    };
}

error_codes! {
    /// A malformed width or height, or a size over the output limits.
    InvalidSize = BAD_REQUEST, "invalid-size", None, "The size is not valid.";
    /// A malformed source key.
    InvalidKey = BAD_REQUEST, "invalid-key", None, "The image key is not valid.";
    /// A bad admin call (the message names what is wrong).
    InvalidRequest = BAD_REQUEST, "invalid-request", None, "The request is not valid.";
    /// Not valid HTTP/1.1.
    BadRequest = BAD_REQUEST, "bad-request", None, "The request is not valid HTTP/1.1.";
    /// The admin API without the right token; a wrong token on the login page.
    Unauthorized = UNAUTHORIZED, "unauthorized", None, "This path needs credentials.";
    /// The size is not in the whitelist.
    SizeNotAllowed = FORBIDDEN, "size-not-allowed", None, "The size is not in the whitelist.";
    /// An admin form without the session's security token.
    CsrfTokenInvalid = FORBIDDEN, "csrf-token-invalid", None,
        "The form's security token is missing or stale; nothing was changed.";
    /// No loaded plugin provides the mode.
    UnknownMode = NOT_FOUND, "unknown-mode", None, "No mode of that name is loaded.";
    /// No source object has the key.
    SourceNotFound = NOT_FOUND, "source-not-found", None, "No source image has that key.";
    /// Originals are not served (`originals.enabled` is off).
    OriginalsDisabled = NOT_FOUND, "originals-disabled", None, "Originals are not served.";
    /// Nothing is served at the path.
    NotFound = NOT_FOUND, "not-found", None, "Nothing is served at this path.";
    /// A method the path does not take.
    MethodNotAllowed = METHOD_NOT_ALLOWED, "method-not-allowed", None,
        "This path does not take that method; see the Allow header.";
    /// A whitelist edit while the settings file holds the whitelist.
    WhitelistFromConfig = CONFLICT, "whitelist-from-config", None,
        "The whitelist is kept in the settings file (whitelist.source = \"config\"): edit the \
         file and restart ross.";
    /// The request (head or admin body) did not arrive in time.
    RequestTimeout = REQUEST_TIMEOUT, "request-timeout", None,
        "The request did not arrive in time.";
    /// The source is over `limits.max_source_bytes`.
    SourceTooLarge = PAYLOAD_TOO_LARGE, "source-too-large", None,
        "The source image is larger than ross reads.";
    /// The source is over `limits.max_source_pixels` by its header.
    SourceTooManyPixels = PAYLOAD_TOO_LARGE, "source-too-many-pixels", None,
        "The source image has more pixels than ross decodes.";
    /// An admin request body over its limit.
    BodyTooLarge = PAYLOAD_TOO_LARGE, "body-too-large", None, "The request body is too large.";
    /// A URL over hyper's limit.
    UriTooLong = URI_TOO_LONG, "uri-too-long", None, "The request's URL is too long.";
    /// The source is not an image in a format ross decodes.
    UnsupportedFormat = UNSUPPORTED_MEDIA_TYPE, "unsupported-format", None,
        "The source is not an image in a supported format (JPEG, PNG, GIF, WebP).";
    /// The source is damaged or truncated.
    UndecodableImage = UNSUPPORTED_MEDIA_TYPE, "undecodable-image", None,
        "The source image is damaged and cannot be decoded.";
    /// An admin request body of a type the path does not take.
    UnsupportedMediaType = UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", None,
        "The request body is not of a type this path takes.";
    /// Too many wrong admin tokens from one address.
    TooManyLogins = TOO_MANY_REQUESTS, "too-many-logins", None,
        "Too many wrong tokens from this address; try again later.";
    /// A request head over `server.max_header_bytes`.
    HeadersTooLarge = REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large", None,
        "The request's headers are too large.";
    /// A plugin failed or panicked, or a worker said something ross does not know.
    RenderFailed = INTERNAL_SERVER_ERROR, "render-failed", None,
        "The image could not be rendered.";
    /// The render's worker process died.
    RenderCrashed = INTERNAL_SERVER_ERROR, "render-crashed", None,
        "Rendering this image crashed its worker; the server is unaffected.";
    /// The rendered image could not be encoded.
    EncodeFailed = INTERNAL_SERVER_ERROR, "encode-failed", None,
        "The rendered image could not be encoded.";
    /// The decoder failed in a way that is not the file's fault.
    DecodeFailed = INTERNAL_SERVER_ERROR, "decode-failed", None,
        "The image could not be decoded.";
    /// ross's database or cache folder failed.
    StoreFailed = INTERNAL_SERVER_ERROR, "store-failed", None,
        "ross could not read or write its database; see the server log.";
    /// The disk holding ross's database is full: the change was not made.
    StorageFull = SERVICE_UNAVAILABLE, "storage-full", Some(60),
        "ross's data_dir is full, so the change was not made; try again once there is room.";
    /// Anything else inside the server.
    InternalError = INTERNAL_SERVER_ERROR, "internal-error", None,
        "The server failed; try again later.";
    /// The media folder could not be read.
    SourceFailed = BAD_GATEWAY, "source-failed", None,
        "The image source could not be read; try again later.";
    /// The object store refused access (403).
    SourceDenied = BAD_GATEWAY, "source-denied", None,
        "The image store refused ross access to this image.";
    /// The object store rejected the request (another 4xx).
    SourceRejected = BAD_GATEWAY, "source-rejected", None,
        "The image store rejected the request for this image.";
    /// The object store failed or could not be reached, after the retries.
    SourceUnavailable = BAD_GATEWAY, "source-unavailable", Some(1),
        "The image store failed or could not be reached; try again later.";
    /// Too many renders (or originals) in progress.
    Overloaded = SERVICE_UNAVAILABLE, "overloaded", Some(1),
        "Too many images are being rendered; retry in a moment.";
    /// A render over `limits.render_timeout_ms`.
    RenderTimeout = SERVICE_UNAVAILABLE, "render-timeout", Some(1),
        "The image took too long to render; retry in a moment.";
    /// A render or decode over its memory.
    OutOfMemory = SERVICE_UNAVAILABLE, "out-of-memory", Some(5),
        "Rendering this image needs more memory than a render may take.";
    /// A mode out of service until its plugin is replaced.
    ModeQuarantined = SERVICE_UNAVAILABLE, "mode-quarantined", Some(QUARANTINE_RETRY_AFTER),
        "The mode is out of service until its plugin is replaced.";
    /// The source did not deliver in time.
    SourceTimeout = GATEWAY_TIMEOUT, "source-timeout", Some(1),
        "The image store did not answer in time; try again later.";
}

impl ErrorCode {
    /// The code named `code`, if ross has one.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code)
    }

    /// Whether the error says the source itself is bad (so remembering it is safe: the same
    /// bytes fail the same way).
    pub fn blames_the_source(self) -> bool {
        matches!(
            self,
            ErrorCode::UndecodableImage
                | ErrorCode::UnsupportedFormat
                | ErrorCode::SourceTooManyPixels
        )
    }

    /// The code of an answer the HTTP framework produced with only a status.
    pub fn for_status(status: StatusCode) -> ErrorCode {
        match status.as_u16() {
            400 => ErrorCode::BadRequest,
            401 => ErrorCode::Unauthorized,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            408 => ErrorCode::RequestTimeout,
            413 => ErrorCode::BodyTooLarge,
            414 => ErrorCode::UriTooLong,
            415 => ErrorCode::UnsupportedMediaType,
            431 => ErrorCode::HeadersTooLarge,
            s if s >= 500 => ErrorCode::InternalError,
            _ => ErrorCode::BadRequest,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SPEC's JSON error body, written here and nowhere else.
pub fn json_body(code: ErrorCode, message: &str) -> String {
    serde_json::json!({"error": {"code": code.as_str(), "message": message}}).to_string()
}

/// `Retry-After` of a quarantined mode's answers: a quarantine lasts until an operator
/// replaces the plugin, which takes minutes, not seconds.
pub const QUARANTINE_RETRY_AFTER: u32 = 300;

/// A failed request, ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    /// What failed: the status, the code and the `Retry-After` come from it.
    pub code: ErrorCode,
    /// One sentence a user can act on.
    pub message: String,
    /// Seconds for `Retry-After` (the code's, unless an error knows better).
    pub retry_after: Option<u32>,
    /// What went wrong inside, for the log line of the request (never sent).
    pub detail: Option<String>,
}

/// What the observer logs and lists of a failed response, carried to it in the response's
/// extensions: the code, the message sent (the reason) and the cause inside, never sent.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What failed.
    pub code: ErrorCode,
    /// The message the client got.
    pub reason: String,
    /// What went wrong inside, if anything did.
    pub cause: Option<String>,
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Failure {
        Failure {
            code: e.code,
            reason: e.message,
            cause: e.detail,
        }
    }
}

impl AppError {
    /// An error `code` with `message` (its status and `Retry-After` are the code's).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError {
            code,
            message: message.into(),
            retry_after: code.retry_after(),
            detail: None,
        }
    }

    /// An error `code` with the code's own message.
    pub fn of(code: ErrorCode) -> Self {
        AppError::new(code, code.message())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The same error, with what went wrong inside for the log.
    pub fn detailed(mut self, detail: impl std::fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    /// The size is not in the whitelist.
    pub fn not_whitelisted(size: ross_config::Size) -> Self {
        AppError::new(
            ErrorCode::SizeNotAllowed,
            format!(
                "The size {size} is not in the whitelist; an administrator can allow it on the \
                 admin page or with PUT /admin/api/whitelist/{size}."
            ),
        )
    }

    /// No loaded plugin provides the mode.
    pub fn unknown_mode(mode: &str) -> Self {
        AppError::new(
            ErrorCode::UnknownMode,
            format!("No mode named {mode:?} is loaded."),
        )
    }

    /// Too many renders are waiting.
    pub fn overloaded() -> Self {
        AppError::of(ErrorCode::Overloaded)
    }

    /// As many originals are being sent as `limits.max_original_streams` allows.
    pub fn originals_busy() -> Self {
        AppError::new(
            ErrorCode::Overloaded,
            "Too many originals are being sent; retry in a moment.",
        )
    }

    /// The mode kept crashing or hanging its workers and is out of service until its plugin
    /// file changes.
    pub fn mode_quarantined(mode: &str, reason: &str) -> Self {
        AppError::new(
            ErrorCode::ModeQuarantined,
            format!(
                "The mode {mode:?} is out of service ({reason}) until its plugin is \
                 replaced; cached images stay served."
            ),
        )
    }

    /// An error a render worker answered with. A code that is not ross's, or not with its
    /// status (a worker that a crafted file took over can say anything), becomes
    /// render-failed.
    pub fn from_wire(wire: crate::worker::protocol::WireError) -> Self {
        match ErrorCode::parse(&wire.code).filter(|c| c.status().as_u16() == wire.status) {
            Some(code) => AppError {
                code,
                message: wire.message,
                retry_after: wire.retry_after,
                detail: wire.detail,
            },
            None => AppError::of(ErrorCode::RenderFailed).detailed(format!(
                "a worker answered the unknown error {:?}",
                wire.code
            )),
        }
    }

    /// The SPEC's form of an error the HTTP framework produced with only a status.
    pub fn from_status(status: StatusCode) -> Self {
        AppError::of(ErrorCode::for_status(status))
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        json_body(self.code, &self.message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = Response::builder()
            .status(self.status())
            .content_type("application/json")
            .header(header::CACHE_CONTROL, "no-store")
            .header("X-Content-Type-Options", "nosniff")
            .body(self.body());
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.into());
        }
        response.extensions_mut().insert(Failure::from(self));
        response
    }
}

impl From<RequestError> for AppError {
    fn from(e: RequestError) -> Self {
        let code = match e {
            RequestError::InvalidSize(_) => ErrorCode::InvalidSize,
            RequestError::InvalidKey(_) => ErrorCode::InvalidKey,
        };
        AppError::new(code, e.to_string())
    }
}

impl From<SourceError> for AppError {
    fn from(e: SourceError) -> Self {
        let error = match &e {
            SourceError::NotFound { key } => AppError::new(
                ErrorCode::SourceNotFound,
                format!("No source image has the key {key:?}."),
            ),
            SourceError::KeyTooLong { limit, .. } => AppError::new(
                ErrorCode::InvalidKey,
                format!("The image key is longer than the {limit} bytes the image store allows."),
            ),
            SourceError::TooLarge { key, limit, .. } => AppError::new(
                ErrorCode::SourceTooLarge,
                format!("The source {key:?} is larger than the {limit} bytes allowed."),
            ),
            SourceError::Io { .. } => AppError::of(ErrorCode::SourceFailed),
            SourceError::Denied { .. } => AppError::of(ErrorCode::SourceDenied),
            SourceError::Rejected { .. } => AppError::of(ErrorCode::SourceRejected),
            SourceError::Unavailable { .. } => AppError::of(ErrorCode::SourceUnavailable),
            SourceError::Timeout { after, .. } => AppError::new(
                ErrorCode::SourceTimeout,
                format!(
                    "The image store did not answer within {} ms; try again later.",
                    after.as_millis()
                ),
            ),
        };
        error.detailed(&e)
    }
}

impl From<DecodeError> for AppError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::UnsupportedFormat => AppError::of(ErrorCode::UnsupportedFormat),
            DecodeError::Malformed { format, .. } => AppError::new(
                ErrorCode::UndecodableImage,
                format!("The source {format:?} image is damaged and cannot be decoded."),
            )
            .detailed(&e),
            DecodeError::TooManyPixels { .. } => {
                AppError::new(ErrorCode::SourceTooManyPixels, e.to_string())
            }
            DecodeError::OutOfMemory { .. } => AppError::new(
                ErrorCode::OutOfMemory,
                "The server has not enough memory free to decode this image now; retry later.",
            )
            .detailed(&e),
        }
    }
}

impl From<PluginRenderError> for AppError {
    fn from(e: PluginRenderError) -> Self {
        AppError::new(
            ErrorCode::RenderFailed,
            "The mode failed to render this image.",
        )
        .detailed(&e)
    }
}

impl From<EncodeError> for AppError {
    fn from(e: EncodeError) -> Self {
        AppError::of(ErrorCode::EncodeFailed).detailed(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let status = code.status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code}"
            );
            // Retry-After only where retrying can help: 429 has its own, per address.
            if code.retry_after().is_some() {
                assert!(status.is_server_error(), "{code}");
            }
            assert!(code.message().ends_with('.'), "{code}");
        }
    }

    #[test]
    fn framework_statuses_map_to_their_codes() {
        // The statuses poem and hyper produce on their own.
        for status in [400, 401, 404, 405, 408, 413, 414, 415, 431, 500] {
            let e = AppError::from_status(StatusCode::from_u16(status).unwrap());
            assert_eq!(e.status().as_u16(), status.min(500), "{}", e.code);
        }
    }

    #[test]
    fn a_worker_cannot_invent_codes_or_statuses() {
        let wire = |status, code: &str| crate::worker::protocol::WireError {
            status,
            code: code.to_owned(),
            message: "m".into(),
            retry_after: None,
            detail: None,
        };
        let known = AppError::from_wire(wire(415, "undecodable-image"));
        assert_eq!(known.code, ErrorCode::UndecodableImage);
        for (status, code) in [(200, "undecodable-image"), (415, "pwned"), (302, "x")] {
            assert_eq!(
                AppError::from_wire(wire(status, code)).code,
                ErrorCode::RenderFailed
            );
        }
    }
}
