//! `GET /admin/api/whitelist`, `PUT /admin/api/whitelist` (`{"enabled": bool}`),
//! `PATCH /admin/api/whitelist` (`{"add": [...], "remove": [...]}`), and
//! `PUT`/`DELETE /admin/api/whitelist/{w}x{h}`. Removing a size purges its renders: nginx
//! would otherwise go on serving them.

use std::sync::Arc;

use poem::web::{Data, Path};
use poem::{handler, Body, Response};
use serde::Deserialize;

use super::{answer, json, json_body};
use crate::admin::ops;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Switch {
    enabled: bool,
}

/// The whitelist as JSON: `{"enabled": true, "sizes": ["72x72", ...]}`.
#[handler]
pub(super) fn show(Data(state): Data<&Arc<AppState>>) -> Response {
    json(&super::whitelist(state, &state.whitelist.snapshot(), None))
}

/// Switches the whitelist on or off.
#[handler]
pub(super) async fn switch(Data(state): Data<&Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let Switch { enabled } = json_body(state, body).await?;
            ops::set_whitelist_enabled(state, enabled).await?;
            Ok(json(&super::whitelist(
                state,
                &state.whitelist.snapshot(),
                None,
            )))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Adds and removes sizes in bulk (`{"add": ["WxH", ...], "remove": [...]}`): every size is
/// checked before anything changes; the additions are made first.
#[handler]
pub(super) async fn edit(Data(state): Data<&Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let Edit {
                add: adding,
                remove: removing,
            } = json_body(state, body).await?;
            if adding.is_empty() && removing.is_empty() {
                return Err(ops::bad_request(
                    "Give sizes to \"add\" or \"remove\" (lists of \"WxH\").",
                ));
            }
            let adding: Vec<&str> = adding.iter().map(String::as_str).collect();
            let removing: Vec<&str> = removing.iter().map(String::as_str).collect();
            for text in adding.iter().chain(&removing) {
                ops::parse_size(state, text)?;
            }
            if !adding.is_empty() {
                ops::allow_sizes(state, &adding).await?;
            }
            let mut purged = None;
            if !removing.is_empty() {
                let (_, outcome) = ops::disallow_sizes(state, &removing).await?;
                purged = Some(super::purged(outcome));
            }
            let whitelist = state.whitelist.snapshot();
            Ok(json(&super::whitelist(state, &whitelist, purged)))
        }
        .await,
    )
}

/// Allows a size.
#[handler]
pub(super) async fn add(Data(state): Data<&Arc<AppState>>, Path(text): Path<String>) -> Response {
    answer(
        async {
            ops::allow_size(state, &text).await?;
            Ok(json(&super::whitelist(
                state,
                &state.whitelist.snapshot(),
                None,
            )))
        }
        .await,
    )
}

/// Stops allowing a size and purges its renders.
#[handler]
pub(super) async fn remove(
    Data(state): Data<&Arc<AppState>>,
    Path(text): Path<String>,
) -> Response {
    answer(
        async {
            let (_, purged) = ops::disallow_size(state, &text).await?;
            let whitelist = state.whitelist.snapshot();
            Ok(json(&super::whitelist(
                state,
                &whitelist,
                Some(super::purged(purged)),
            )))
        }
        .await,
    )
}
