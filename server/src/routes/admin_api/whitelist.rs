//! `GET /admin/api/whitelist`, `PUT /admin/api/whitelist` (`{"enabled": bool}`), and
//! `PUT`/`DELETE /admin/api/whitelist/{w}x{h}`. Removing a size purges its renders: nginx
//! would otherwise go on serving them.

use std::sync::Arc;

use poem::web::{Data, Path};
use poem::{handler, Body, Response};
use ross_config::Size;
use serde::Deserialize;

use super::{answer, bad_request, blocking, json, json_body, store_failed};
use crate::cache::{PurgeOutcome, Selector};
use crate::error::AppError;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Switch {
    enabled: bool,
}

/// The whitelist as JSON: `{"enabled": true, "sizes": ["72x72", ...]}`.
#[handler]
pub(super) fn show(Data(state): Data<&Arc<AppState>>) -> Response {
    json(&*state.whitelist.snapshot())
}

/// Switches the whitelist on or off.
#[handler]
pub(super) async fn switch(Data(state): Data<&Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let Switch { enabled } = json_body(state, body).await?;
            let st = state.clone();
            blocking(move || {
                st.whitelist.set_enabled(enabled).map_err(|e| {
                    tracing::error!(error = %e, "cannot switch the whitelist");
                    store_failed()
                })
            })
            .await?;
            tracing::info!(enabled, "whitelist switched");
            Ok(json(&*state.whitelist.snapshot()))
        }
        .await,
    )
}

/// Allows a size.
#[handler]
pub(super) async fn add(Data(state): Data<&Arc<AppState>>, Path(text): Path<String>) -> Response {
    answer(
        async {
            let size = parse_size(state, &text)?;
            let st = state.clone();
            let added = blocking(move || {
                st.whitelist.add(size).map_err(|e| {
                    tracing::error!(error = %e, "cannot add to the whitelist");
                    store_failed()
                })
            })
            .await?;
            if added {
                tracing::info!(size = %size, "size allowed");
            }
            Ok(json(&*state.whitelist.snapshot()))
        }
        .await,
    )
}

/// Stops allowing a size and purges its renders. The purge is journaled before the size
/// goes, so a crash in between still finishes it at the next start.
#[handler]
pub(super) async fn remove(
    Data(state): Data<&Arc<AppState>>,
    Path(text): Path<String>,
) -> Response {
    answer(
        async {
            let size = parse_size(state, &text)?;
            let st = state.clone();
            let purged: PurgeOutcome = blocking(move || {
                let failed = |e: &dyn std::fmt::Display| {
                    tracing::error!(error = %e, size = %size, "cannot remove from the whitelist");
                    store_failed()
                };
                let job = st
                    .cache
                    .begin_purge(Selector::size(size))
                    .map_err(|e| failed(&e))?;
                st.whitelist.remove(size).map_err(|e| failed(&e))?;
                st.cache.finish_purge(job).map_err(|e| failed(&e))
            })
            .await?;
            tracing::info!(size = %size, entries = purged.entries, "size no longer allowed");
            let mut body = serde_json::to_value(&*state.whitelist.snapshot()).expect("json");
            body["purged"] = serde_json::to_value(purged).expect("json");
            Ok(json(&body))
        }
        .await,
    )
}

/// A `WxH` size within the limits.
pub(super) fn parse_size(state: &AppState, text: &str) -> Result<Size, AppError> {
    let size: Size = text.parse().map_err(|e: String| {
        bad_request(format!(
            "{e}: give a width and height from 1 up, without leading zeros."
        ))
    })?;
    let limits = &state.settings.limits;
    if size.width > limits.max_width || size.height > limits.max_height {
        return Err(bad_request(format!(
            "{size} is larger than the largest size ross renders, {}x{} \
             (limits.max_width x limits.max_height).",
            limits.max_width, limits.max_height
        )));
    }
    Ok(size)
}
