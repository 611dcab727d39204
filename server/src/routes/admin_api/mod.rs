//! The admin JSON API under `/admin/api`: the live whitelist, cache purges, stats and
//! plugins. Every request needs `Authorization: Bearer <admin.token>` (401 otherwise); bad
//! input is a 400 naming what is wrong, and changes nothing. Handlers that touch sled run
//! it on the blocking pool.

mod info;
mod purge;
mod whitelist;

use std::sync::Arc;

use poem::http::{header, StatusCode};
use poem::{get, post, put, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use serde::de::DeserializeOwned;

use crate::admin::ops::bad_request;
use crate::error::AppError;
use crate::state::AppState;

/// The API's routes, behind the token check.
pub fn routes() -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/whitelist", get(whitelist::show).put(whitelist::switch))
        .at(
            "/whitelist/:size",
            put(whitelist::add).delete(whitelist::remove),
        )
        .at("/purge", post(purge::purge))
        .at("/stats", get(info::stats))
        .at("/plugins", get(info::plugins))
        .around(|endpoint, req| async move {
            if !authorised(&req) {
                return Ok(unauthorised());
            }
            Ok(endpoint.call(req).await?.into_response())
        })
        .map_to_response()
}

/// Whether `req` carries the admin token as a bearer token.
fn authorised(req: &Request) -> bool {
    let Some(state) = req.data::<Arc<AppState>>() else {
        return false;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110); the token is not.
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    presented.is_some_and(|t| state.admin_token.verify(t))
}

fn unauthorised() -> Response {
    let mut response = AppError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "The admin API needs the header Authorization: Bearer <admin token>; the token is \
         admin.token, or the one ross generated in data_dir/admin-token.",
    )
    .into_response();
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

/// Answers `result`, whether value or error.
fn answer(result: Result<Response, AppError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}
