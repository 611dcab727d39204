//! The admin pages under `/admin`: a login with the admin token, then the dashboard, the
//! whitelist, the cache, the plugins and the settings. Pages are rendered on the server from
//! the admin views (`crate::admin::views`) and every action is a plain form POST with the
//! session's CSRF token, so everything works without JavaScript.
//!
//! Every answer carries a strict `Content-Security-Policy` (scripts and styles from ross
//! only, no inline script, no framing), `X-Content-Type-Options: nosniff`, a same-origin
//! `Referrer-Policy` and `Cache-Control: no-store`.

mod actions;
mod login;

use std::sync::Arc;

use admin_ui::pages::{
    CachePage, Chrome, ClusterPage, DashboardPage, PluginsPage, PurgeForm, RefusedPage, Section,
    SettingsPage, WhitelistPage,
};
use admin_ui::Template;
use poem::http::{header, HeaderValue, StatusCode};
use poem::web::Data;
use poem::{get, handler, post, Request, Response, Route};

use crate::admin::session::Session;
use crate::admin::views;
use crate::error::{AppError, ErrorCode, Failure};
use crate::state::AppState;

/// Seconds between the dashboard's refreshes.
const REFRESH_SECONDS: u32 = 5;

/// The pages' `Content-Security-Policy`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// Adds the admin pages to `route`.
pub fn mount(route: Route) -> Route {
    route
        .at("/admin", get(dashboard))
        .at("/admin/login", get(login::page).post(login::submit))
        .at("/admin/logout", post(login::logout))
        .at("/admin/whitelist", get(whitelist).post(actions::add_size))
        .at("/admin/whitelist/remove", post(actions::remove_size))
        .at("/admin/whitelist/enabled", post(actions::switch_whitelist))
        .at("/admin/cache", get(cache))
        .at("/admin/cache/preview", post(actions::preview_purge))
        .at("/admin/cache/purge", post(actions::purge))
        .at("/admin/plugins", get(plugins))
        .at("/admin/plugins/rescan", post(actions::rescan))
        .at("/admin/cluster", get(cluster))
        .at("/admin/settings", get(settings))
}

/// Adds the pages' static files (stylesheet, script, icon) to `route`. They are served even
/// with the admin pages off: the welcome page uses the stylesheet too.
pub fn mount_static(route: Route) -> Route {
    route
        .at("/admin/static/admin.css", get(stylesheet))
        .at("/admin/static/admin.js", get(script))
        .at("/admin/static/favicon.svg", get(icon))
}

/// The methods an admin page path takes, for the `Allow` header of a 405; `None` for paths
/// that are not admin pages.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    Some(match path {
        "/admin" | "/admin/cache" | "/admin/plugins" | "/admin/cluster" | "/admin/settings" => {
            "GET"
        }
        "/admin/static/admin.css" | "/admin/static/admin.js" | "/admin/static/favicon.svg" => "GET",
        "/admin/login" | "/admin/whitelist" => "GET, POST",
        "/admin/logout"
        | "/admin/whitelist/remove"
        | "/admin/whitelist/enabled"
        | "/admin/cache/preview"
        | "/admin/cache/purge"
        | "/admin/plugins/rescan" => "POST",
        _ => return None,
    })
}

/// An HTML answer with the pages' security headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .body(body);
    protect(&mut response);
    response
}

/// The headers every admin page answer carries.
fn protect(response: &mut Response) {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// A page rendered, or a 500 when its template fails (it cannot, short of a bug).
fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => refused(
            AppError::new(
                ErrorCode::InternalError,
                "The page could not be drawn; the server log says why.",
            )
            .detailed(format_args!("the admin page failed to render: {e}")),
            "Something went wrong",
            "/admin",
        ),
    }
}

/// A 303 to `to`.
fn see_other(to: &str) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .finish();
    protect(&mut response);
    response
}

/// A page saying why an action was refused: `error`'s message under `title`, its status,
/// and its code and cause for the access line and the dashboard's list of recent errors.
fn refused(error: AppError, title: &str, back: &str) -> Response {
    let page = RefusedPage {
        title: title.into(),
        message: error.message.clone(),
        back: back.into(),
    };
    let body = page
        .render()
        .unwrap_or_else(|_| format!("{title}: {}", error.message));
    let mut response = html(error.status(), body);
    response.extensions_mut().insert(Failure::from(error));
    response
}

/// The logged-in session of `req`, or the answer to give instead: a redirect to the login
/// page.
fn session(req: &Request, state: &AppState) -> Result<Arc<Session>, Box<Response>> {
    state
        .sessions
        .of(req.headers())
        .map(|(_, session)| session)
        .ok_or_else(|| Box::new(see_other("/admin/login")))
}

/// The frame of a page in `section`, with the session's notice, if any.
fn chrome(session: &Session, section: Section) -> Chrome {
    Chrome {
        active: section,
        csrf: session.csrf.clone(),
        notice: session.take_notice(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// A redirect to `page`, which will show `notice`.
fn with_notice(session: &Session, page: &str, notice: String) -> Response {
    session.tell(notice);
    see_other(page)
}

/// The address a request came from: the peer, or, when the peer is on this host (nginx in
/// front, as deployed), the client it names in `X-Real-IP`.
pub(crate) fn client_ip(req: &Request) -> Option<std::net::IpAddr> {
    let peer = req.remote_addr().as_socket_addr()?.ip();
    if !peer.is_loopback() {
        return Some(peer);
    }
    req.headers()
        .get("X-Real-IP")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(Some(peer))
}

/// Whether the session cookie gets `Secure`: configured so, or the request came over TLS to
/// the proxy in front.
fn secure(req: &Request, state: &AppState) -> bool {
    state.settings.admin.secure_cookies
        || req
            .headers()
            .get("X-Forwarded-Proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// A form body, or the page saying why it cannot be read.
async fn read_form<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: poem::Body,
) -> Result<T, Box<Response>> {
    let bytes = super::read_small_body(state, body)
        .await
        .map_err(|e| Box::new(refused(e, "The form did not arrive", "/admin")))?;
    serde_urlencoded::from_bytes(&bytes).map_err(|e| {
        Box::new(refused(
            crate::admin::ops::bad_request(format!("It could not be read: {e}.")),
            "The form is not one of these pages'",
            "/admin",
        ))
    })
}

/// `Ok` when `given` is the session's CSRF token; else the 403 page, and nothing changes.
fn check_csrf(session: &Session, given: &str) -> Result<(), Box<Response>> {
    if crate::admin::session::tokens_match(&session.csrf, given) {
        return Ok(());
    }
    Err(Box::new(refused(
        AppError::new(
            ErrorCode::CsrfTokenInvalid,
            "It did not carry this session's security token (it may come from another site, or \
         from before you last logged in), so nothing was changed. Reload the page and try \
             again.",
        ),
        "This form has expired",
        "/admin",
    )))
}

/// A page of `section` for a logged-in session (else the redirect to the login page).
fn page<T: Template>(
    req: &Request,
    state: &AppState,
    section: Section,
    build: impl FnOnce(Chrome) -> T,
) -> Response {
    match session(req, state) {
        Ok(session) => render(StatusCode::OK, &build(chrome(&session, section))),
        Err(answer) => *answer,
    }
}

#[handler]
fn dashboard(req: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    page(req, state, Section::Dashboard, |chrome| DashboardPage {
        chrome,
        stats: views::stats(state),
        refresh_seconds: REFRESH_SECONDS,
    })
}

#[handler]
fn whitelist(req: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    page(req, state, Section::Whitelist, |chrome| WhitelistPage {
        chrome,
        whitelist: views::whitelist(state),
        input: String::new(),
        error: None,
        confirm: None,
    })
}

#[handler]
fn cache(req: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    page(req, state, Section::Cache, |chrome| CachePage {
        chrome,
        cache: views::cache_totals(state),
        form: PurgeForm {
            kind: "key".into(),
            value: String::new(),
        },
        error: None,
        preview: None,
        cdn: views::cdn(state),
    })
}

#[handler]
fn plugins(req: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    page(req, state, Section::Plugins, |chrome| PluginsPage {
        chrome,
        plugins: views::plugins(state),
    })
}

#[handler]
fn cluster(req: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    page(req, state, Section::Cluster, |chrome| ClusterPage {
        chrome,
        cluster: views::cluster(state),
    })
}

#[handler]
fn settings(req: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    page(req, state, Section::Settings, |chrome| SettingsPage {
        chrome,
        settings: views::settings(state),
    })
}

/// A static file, cached by browsers for an hour.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = Response::builder().content_type(content_type).body(body);
    protect(&mut response);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

#[handler]
fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", admin_ui::STYLESHEET)
}

#[handler]
fn script() -> Response {
    asset("text/javascript; charset=utf-8", admin_ui::SCRIPT)
}

#[handler]
fn icon() -> Response {
    asset("image/svg+xml", admin_ui::ICON)
}
