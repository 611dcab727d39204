//! `GET /admin/api/whitelist`, `PUT /admin/api/whitelist` (`{"enabled": bool}`), and
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
    json(&super::whitelist(&state.whitelist.snapshot(), None))
}

/// Switches the whitelist on or off.
#[handler]
pub(super) async fn switch(Data(state): Data<&Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let Switch { enabled } = json_body(state, body).await?;
            ops::set_whitelist_enabled(state, enabled).await?;
            Ok(json(&super::whitelist(&state.whitelist.snapshot(), None)))
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
            Ok(json(&super::whitelist(&state.whitelist.snapshot(), None)))
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
                &whitelist,
                Some(super::purged(purged)),
            )))
        }
        .await,
    )
}
