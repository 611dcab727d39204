//! The admin JSON API under `/admin/api`: the live whitelist, cache purges, stats and
//! plugins. Every request needs `Authorization: Bearer <admin.token>` (401 otherwise); bad
//! input is a 400 naming what is wrong, and changes nothing. Handlers that touch sled run
//! it on the blocking pool.

pub mod events;
mod info;
mod purge;
mod whitelist;

use std::sync::Arc;

use poem::http::header;
use poem::{get, post, put, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use serde::de::DeserializeOwned;

use crate::admin::ops::bad_request;
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

/// The API's routes, behind the token check.
pub fn routes() -> impl Endpoint<Output = Response> {
    Route::new()
        .at(
            "/whitelist",
            get(whitelist::show)
                .put(whitelist::switch)
                .patch(whitelist::edit),
        )
        .at(
            "/whitelist/:size",
            put(whitelist::add).delete(whitelist::remove),
        )
        .at("/purge", post(purge::purge))
        .at("/stats", get(info::stats))
        .at("/plugins", get(info::plugins))
        .at("/cluster", get(info::cluster))
        .at("/cdn", get(info::cdn))
        .at("/source-events", post(events::receive))
        .around(|endpoint, req| async move {
            match authorise(&req) {
                Access::Granted => Ok(endpoint.call(req).await?.into_response()),
                Access::NoToken => Ok(unauthorised(None)),
                Access::WrongToken(client) => {
                    // Slowed, as a failed login is: a guess a second per connection at most.
                    tokio::time::sleep(crate::admin::session::FAILURE_DELAY).await;
                    Ok(unauthorised(Some(format!(
                        "a wrong admin token from {client}"
                    ))))
                }
                Access::LockedOut(wait) => Ok(locked_out(wait)),
            }
        })
        .map_to_response()
}

/// What a request's `Authorization` gets it.
enum Access {
    Granted,
    /// No bearer token: not a guess.
    NoToken,
    /// A wrong bearer token: counted against the address, as a failed login is.
    WrongToken(String),
    /// The address guessed wrong too often (logins and API calls together): refused until
    /// its window has passed.
    LockedOut(std::time::Duration),
}

/// Checks `req`'s bearer token. A guess is counted before it is checked (so parallel
/// guesses cannot pass the limit) and forgotten when right.
fn authorise(req: &Request) -> Access {
    let Some(state) = req.data::<Arc<AppState>>() else {
        return Access::NoToken;
    };
    // S3 events may come with `source.events_secret` instead of the admin token, and as a
    // basic authentication password (SNS sends the credentials of its endpoint's URL so).
    let events = req.original_uri().path() == "/admin/api/source-events";
    let Some(token) = presented(req, events) else {
        return Access::NoToken;
    };
    let client = super::admin_pages::client_ip(req);
    if let Err(wait) = state.sessions.reserve(client) {
        return Access::LockedOut(wait);
    }
    let secret = state.settings.changes.events_secret.as_deref();
    let by_secret = events
        && secret
            .is_some_and(|s| subtle::ConstantTimeEq::ct_eq(s.as_bytes(), token.as_bytes()).into());
    if by_secret || state.admin_token.verify(&token) {
        state.sessions.succeeded(client);
        Access::Granted
    } else {
        // Logged once, by the observer, with the address as the refusal's cause.
        Access::WrongToken(format!("{client:?}"))
    }
}

/// The token `req` presents: a bearer token, or (when `basic` is allowed) the password of
/// basic authentication. The scheme is case-insensitive (RFC 9110); the token is not.
fn presented(req: &Request, basic: bool) -> Option<String> {
    use base64::Engine;
    let (scheme, value) = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().to_owned());
    }
    if basic && scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text
            .split_once(':')
            .map(|(_, password)| password.to_owned());
    }
    None
}

fn locked_out(wait: std::time::Duration) -> Response {
    let mut response = AppError::new(
        ErrorCode::TooManyLogins,
        format!(
            "Too many wrong admin tokens from your address (logins and API calls): try again \
             in {} min.",
            wait.as_secs().div_ceil(60)
        ),
    )
    .into_response();
    if let Ok(value) = wait.as_secs().max(1).to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn unauthorised(cause: Option<String>) -> Response {
    let mut error = AppError::new(
        ErrorCode::Unauthorized,
        "The admin API needs the header Authorization: Bearer <admin token>; the token is \
         admin.token, or the one ross generated in data_dir/admin-token.",
    );
    if let Some(cause) = cause {
        error = error.detailed(cause);
    }
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
    response
}

/// Reads a JSON body into `T` (whose fields are all it may hold), bounded as
/// [`read_small_body`] says.
async fn json_body<T: DeserializeOwned>(state: &AppState, body: poem::Body) -> Result<T, AppError> {
    let bytes = super::read_small_body(state, body).await?;
    let wrong = |e: serde_json::Error| {
        bad_request(format!(
            "The request body is not what this call takes: {e}."
        ))
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(wrong)?;
    if !value.is_object() {
        return Err(bad_request("The request body must be a JSON object."));
    }
    serde_json::from_value(value).map_err(wrong)
}

/// A 200 with `value` as JSON.
fn json(value: &impl serde::Serialize) -> Response {
    Response::builder()
        .content_type("application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(serde_json::to_string(value).expect("serialises"))
}

/// The whitelist `allowed` as the API answers it, with what a change of it purged.
fn whitelist(
    state: &AppState,
    allowed: &crate::whitelist::Allowed,
    purged: Option<admin_api::Purged>,
) -> admin_api::Whitelist {
    admin_api::Whitelist {
        enabled: allowed.enabled,
        sizes: allowed.sizes.iter().map(ToString::to_string).collect(),
        source: state.whitelist.source().as_str().to_owned(),
        shared: state.cluster.is_some(),
        purged,
    }
}

/// What a purge removed, as the API answers it.
fn purged(outcome: crate::cache::PurgeOutcome) -> admin_api::Purged {
    admin_api::Purged {
        entries: outcome.entries,
        bytes: outcome.bytes,
    }
}

/// Answers `result`, whether value or error.
fn answer(result: Result<Response, AppError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}
