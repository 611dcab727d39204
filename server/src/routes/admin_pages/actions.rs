//! The forms that change state: whitelist edits, purges and the plugin rescan. Each needs a
//! session and its CSRF token, goes through the same operations as the admin JSON API
//! (`crate::admin::ops`), and ends in a redirect to its page with a notice, or in the page
//! again with the refusal shown next to the field.

use std::sync::Arc;

use admin_ui::format;
use admin_ui::pages::{CachePage, PurgeCount, PurgeForm, Section, WhitelistConfirm, WhitelistPage};
use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Body, Request, Response};
use serde::Deserialize;

use super::{check_csrf, chrome, read_form, refused, render, session, with_notice};
use crate::admin::ops::{self, PurgeTarget};
use crate::admin::session::Session;
use crate::admin::views;
use crate::cache::Selector;
use crate::error::{AppError, Failure};
use crate::state::AppState;

/// The forms' fields (each form sends the ones it has).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Fields {
    csrf: String,
    size: String,
    enabled: String,
    kind: String,
    value: String,
    /// `yes` on the confirmation step's form: a change that breaks images is made only then.
    confirm: String,
}

impl Fields {
    fn confirmed(&self) -> bool {
        self.confirm == "yes"
    }
}

/// The whitelist page asking to confirm `change` before it is made.
fn confirm_whitelist(state: &AppState, session: &Session, change: WhitelistConfirm) -> Response {
    render(
        StatusCode::OK,
        &WhitelistPage {
            chrome: chrome(session, Section::Whitelist),
            whitelist: views::whitelist(state),
            input: String::new(),
            error: None,
            confirm: Some(change),
        },
    )
}

/// The session and the form, checked; or the answer to give instead.
async fn checked(
    req: &Request,
    state: &AppState,
    body: Body,
) -> Result<(Arc<Session>, Fields), Box<Response>> {
    let session = session(req, state)?;
    let fields: Fields = read_form(state, body).await?;
    check_csrf(&session, &fields.csrf)?;
    Ok((session, fields))
}

/// A form page shown again for bad input, with the refusal noted for the access line and the
/// dashboard's recent errors.
fn noting(mut page: Response, refusal: AppError) -> Response {
    // A page that failed to draw carries its own failure, which is what happened.
    if page.extensions().get::<Failure>().is_none() {
        page.extensions_mut().insert(Failure::from(refusal));
    }
    page
}

/// An operation's failure other than bad input.
fn failed(e: &AppError) -> Response {
    refused(e.clone(), "That did not work", "/admin")
}

/// `POST /admin/whitelist`: allows a size.
#[handler]
pub(super) async fn add_size(
    req: &Request,
    Data(state): Data<&Arc<AppState>>,
    body: Body,
) -> Response {
    let (session, fields) = match checked(req, state, body).await {
        Ok(pair) => pair,
        Err(answer) => return *answer,
    };
    let typed = fields.size.trim();
    match ops::allow_sizes(state, &ops::size_list(typed)).await {
        Ok((sizes, 0)) => with_notice(
            &session,
            "/admin/whitelist",
            format!("{} already allowed.", ops::list(&sizes)),
        ),
        Ok((sizes, _)) => with_notice(
            &session,
            "/admin/whitelist",
            format!("Added {}: rendered from now on.", ops::list(&sizes)),
        ),
        Err(e) if e.status() == StatusCode::BAD_REQUEST => noting(
            render(
                StatusCode::BAD_REQUEST,
                &WhitelistPage {
                    chrome: chrome(&session, Section::Whitelist),
                    whitelist: views::whitelist(state),
                    input: typed.to_owned(),
                    error: Some(e.message.clone()),
                    confirm: None,
                },
            ),
            e,
        ),
        Err(e) => failed(&e),
    }
}

/// `POST /admin/whitelist/remove`: stops allowing a size and purges its renders.
#[handler]
pub(super) async fn remove_size(
    req: &Request,
    Data(state): Data<&Arc<AppState>>,
    body: Body,
) -> Response {
    let (session, fields) = match checked(req, state, body).await {
        Ok(pair) => pair,
        Err(answer) => return *answer,
    };
    let typed = ops::size_list(fields.size.trim());
    if !fields.confirmed() {
        // Nothing changes yet: the page says what removing the sizes does, and asks.
        let mut sizes = Vec::new();
        for text in &typed {
            match ops::parse_size(state, text) {
                Ok(size) => sizes.push(size),
                Err(e) => return failed(&e),
            }
        }
        let mut cached = PurgeCount::default();
        for size in &sizes {
            match ops::count(state, Selector::size(*size)).await {
                Ok(count) => {
                    cached.entries += count.entries;
                    cached.bytes += count.bytes;
                }
                Err(e) => return failed(&e),
            }
        }
        if sizes.is_empty() {
            return failed(&ops::bad_request("Give at least one size."));
        }
        return confirm_whitelist(
            state,
            &session,
            WhitelistConfirm::Remove {
                size: ops::list(&sizes),
                cached,
            },
        );
    }
    match ops::disallow_sizes(state, &typed).await {
        Ok((sizes, purged)) => with_notice(
            &session,
            "/admin/whitelist",
            format!(
                "Removed {}; {} cached {} purged ({}).",
                ops::list(&sizes),
                purged.entries,
                if purged.entries == 1 {
                    "render"
                } else {
                    "renders"
                },
                format::bytes(purged.bytes)
            ),
        ),
        Err(e) => failed(&e),
    }
}

/// `POST /admin/whitelist/enabled`: turns the whitelist on or off.
#[handler]
pub(super) async fn switch_whitelist(
    req: &Request,
    Data(state): Data<&Arc<AppState>>,
    body: Body,
) -> Response {
    let (session, fields) = match checked(req, state, body).await {
        Ok(pair) => pair,
        Err(answer) => return *answer,
    };
    let enabled = match fields.enabled.as_str() {
        "true" => true,
        "false" => false,
        _ => {
            return failed(&ops::bad_request(
                "Say whether to turn the whitelist on or off.",
            ))
        }
    };
    if !enabled && !fields.confirmed() && state.whitelist.snapshot().enabled {
        return confirm_whitelist(state, &session, WhitelistConfirm::TurnOff);
    }
    match ops::set_whitelist_enabled(state, enabled).await {
        Ok(()) => with_notice(
            &session,
            "/admin/whitelist",
            if enabled {
                "The whitelist is on: only its sizes are rendered.".into()
            } else {
                "The whitelist is off: every size within the limits is rendered.".into()
            },
        ),
        Err(e) => failed(&e),
    }
}

/// The purge the form selects.
fn purge_selector(state: &AppState, form: &PurgeForm) -> Result<Selector, AppError> {
    let value = form.value.trim();
    let target = match form.kind.as_str() {
        "key" => PurgeTarget::Key(value),
        "prefix" => PurgeTarget::Prefix(value),
        "mode" => PurgeTarget::Mode(value),
        "size" => PurgeTarget::Size(value),
        "all" => PurgeTarget::All,
        _ => return Err(ops::bad_request("Choose what to purge.")),
    };
    if value.is_empty() && form.kind != "all" {
        return Err(ops::bad_request(format!(
            "Give the {} to purge.",
            form.kind
        )));
    }
    ops::selector(state, target)
}

/// A purge form's session, its fields and the purge they select (or why they select none).
async fn purge_form(
    req: &Request,
    state: &AppState,
    body: Body,
) -> Result<(Arc<Session>, PurgeForm, Result<Selector, AppError>), Box<Response>> {
    let (session, fields) = checked(req, state, body).await?;
    let form = PurgeForm {
        kind: fields.kind,
        value: fields.value.trim().to_owned(),
    };
    let selector = purge_selector(state, &form);
    Ok((session, form, selector))
}

/// The cache page at a step of a purge.
fn cache_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    form: PurgeForm,
    error: Option<String>,
    preview: Option<PurgeCount>,
) -> Response {
    render(
        status,
        &CachePage {
            chrome: super::chrome(session, Section::Cache),
            cache: views::cache_totals(state),
            form,
            error,
            preview,
            cdn: views::cdn(state),
        },
    )
}

/// `POST /admin/cache/preview`: the confirmation step, with what the purge would remove.
#[handler]
pub(super) async fn preview_purge(
    req: &Request,
    Data(state): Data<&Arc<AppState>>,
    body: Body,
) -> Response {
    let (session, form, selector) = match purge_form(req, state, body).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let counted = match selector {
        Ok(selector) => ops::count(state, selector).await,
        Err(e) => Err(e),
    };
    match counted {
        Ok(count) => cache_page(
            state,
            &session,
            StatusCode::OK,
            form,
            None,
            Some(PurgeCount {
                entries: count.entries,
                bytes: count.bytes,
            }),
        ),
        Err(e) if e.status() == StatusCode::BAD_REQUEST => noting(
            cache_page(
                state,
                &session,
                StatusCode::BAD_REQUEST,
                form,
                Some(e.message.clone()),
                None,
            ),
            e,
        ),
        Err(e) => failed(&e),
    }
}

/// `POST /admin/cache/purge`: the purge, then the cache page saying what it removed.
#[handler]
pub(super) async fn purge(
    req: &Request,
    Data(state): Data<&Arc<AppState>>,
    body: Body,
) -> Response {
    let (session, form, selector) = match purge_form(req, state, body).await {
        Ok(parts) => parts,
        Err(answer) => return *answer,
    };
    let purged = match selector {
        Ok(selector) => ops::purge(state, selector).await,
        Err(e) => Err(e),
    };
    match purged {
        Ok(outcome) => with_notice(
            &session,
            "/admin/cache",
            format!(
                "Purged {} {} ({}): {}.",
                outcome.entries,
                if outcome.entries == 1 {
                    "entry"
                } else {
                    "entries"
                },
                format::bytes(outcome.bytes),
                form.describe()
            ),
        ),
        Err(e) => failed(&e),
    }
}

/// `POST /admin/plugins/rescan`: loads, replaces and removes plugins as the folder says now.
#[handler]
pub(super) async fn rescan(
    req: &Request,
    Data(state): Data<&Arc<AppState>>,
    body: Body,
) -> Response {
    let (session, _) = match checked(req, state, body).await {
        Ok(pair) => pair,
        Err(answer) => return *answer,
    };
    match ops::rescan_plugins(state).await {
        Ok(()) => {
            let view = views::plugins(state);
            with_notice(
                &session,
                "/admin/plugins",
                format!(
                    "Rescanned the plugin folder: {} in service, {} refused so far.",
                    plural(view.modes.len(), "mode", "modes"),
                    plural(view.refused.len(), "file", "files"),
                ),
            )
        }
        Err(e) => failed(&e),
    }
}

/// `n` and the noun that goes with it: "1 file", "2 files".
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
