//! `GET`/`POST /admin/login` and `POST /admin/logout`.

use std::sync::Arc;

use admin_ui::pages::LoginPage;
use poem::http::{header, HeaderValue, StatusCode};
use poem::web::Data;
use poem::{handler, Body, Request, Response};
use serde::Deserialize;

use super::{check_csrf, client_ip, read_form, refused, render, secure, see_other};
use crate::admin::session::{
    cookie, random_token, set_cookie, tokens_match, FAILURE_DELAY, LOGIN_COOKIE, SESSION_COOKIE,
};
use crate::error::{AppError, ErrorCode, Failure};
use crate::state::AppState;

/// How long the login form's CSRF cookie lasts.
const LOGIN_FORM_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// What the login form posts.
#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

/// What the logout form posts.
#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// The login form (or the dashboard, for a live session).
#[handler]
pub(super) fn page(req: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    if state.sessions.of(req.headers()).is_some() {
        return see_other("/admin");
    }
    login_page(req, state, StatusCode::OK, None)
}

/// The login page with its form token, kept in a cookie (the token of an open login page is
/// reused, so that two tabs work).
fn login_page(
    req: &Request,
    state: &AppState,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let token = cookie(req.headers(), LOGIN_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(random_token, str::to_owned);
    let mut response = render(
        status,
        &LoginPage {
            csrf: token.clone(),
            error,
        },
    );
    let cookie = set_cookie(LOGIN_COOKIE, &token, LOGIN_FORM_TTL, secure(req, state));
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Checks the token and starts a session. A wrong token is answered after a delay, and an
/// address with too many failures is refused for a while.
#[handler]
pub(super) async fn submit(
    req: &Request,
    Data(state): Data<&Arc<AppState>>,
    body: Body,
) -> Response {
    let client = client_ip(req);
    if let Err(wait) = state.sessions.may_try(client) {
        return too_many_logins(req, state, wait);
    }
    let form: LoginForm = match read_form(state, body).await {
        Ok(form) => form,
        Err(answer) => return *answer,
    };
    let expected = cookie(req.headers(), LOGIN_COOKIE).unwrap_or("");
    if !tokens_match(expected, &form.csrf) {
        return refused(
            AppError::new(
                ErrorCode::CsrfTokenInvalid,
                "Reload the login page and try again.",
            ),
            "The login form has expired",
            "/admin/login",
        );
    }
    // Counted before the token is checked: parallel guesses cannot pass the limit.
    if let Err(wait) = state.sessions.reserve(client) {
        return too_many_logins(req, state, wait);
    }
    if !state.admin_token.verify(form.token.trim()) {
        // Logged once, by the observer, with the address as the refusal's cause.
        tokio::time::sleep(FAILURE_DELAY).await;
        let mut response = login_page(
            req,
            state,
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token.".into()),
        );
        response.extensions_mut().insert(Failure::from(
            AppError::new(ErrorCode::Unauthorized, "That is not the admin token.")
                .detailed(format_args!("a wrong admin token from {client:?}")),
        ));
        return response;
    }
    state.sessions.succeeded(client);
    let (id, _) = state.sessions.start();
    tracing::info!(client = ?client, "admin logged in");
    let secure = secure(req, state);
    let mut response = see_other("/admin");
    for cookie in [
        set_cookie(SESSION_COOKIE, &id, state.sessions.ttl, secure),
        set_cookie(LOGIN_COOKIE, "", std::time::Duration::ZERO, secure),
    ] {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// The login page refusing an address with too many failed logins, with `Retry-After`.
fn too_many_logins(req: &Request, state: &AppState, wait: std::time::Duration) -> Response {
    let minutes = wait.as_secs().div_ceil(60);
    let reason = format!("Too many failed logins from your address: try again in {minutes} min.");
    let mut response = login_page(
        req,
        state,
        StatusCode::TOO_MANY_REQUESTS,
        Some(reason.clone()),
    );
    if let Ok(value) = HeaderValue::from_str(&wait.as_secs().to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
        .extensions_mut()
        .insert(Failure::from(AppError::new(
            ErrorCode::TooManyLogins,
            reason,
        )));
    response
}

/// Ends the session.
#[handler]
pub(super) async fn logout(
    req: &Request,
    Data(state): Data<&Arc<AppState>>,
    body: Body,
) -> Response {
    let Some((id, session)) = state.sessions.of(req.headers()) else {
        return see_other("/admin/login");
    };
    let form: LogoutForm = match read_form(state, body).await {
        Ok(form) => form,
        Err(answer) => return *answer,
    };
    if let Err(answer) = check_csrf(&session, &form.csrf) {
        return *answer;
    }
    state.sessions.end(&id);
    let mut response = see_other("/admin/login");
    let gone = set_cookie(
        SESSION_COOKIE,
        "",
        std::time::Duration::ZERO,
        secure(req, state),
    );
    if let Ok(value) = HeaderValue::from_str(&gone) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
