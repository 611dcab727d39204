//! `POST /admin/api/purge` with exactly one of `{"key": k}`, `{"prefix": p}`, `{"mode": m}`,
//! `{"size": "WxH"}` or `{"all": true}`; answers the entries and bytes removed.

use std::sync::Arc;

use poem::web::Data;
use poem::{handler, Body, Response};
use serde::Deserialize;

use super::whitelist::parse_size;
use super::{answer, bad_request, blocking, json, json_body, store_failed};
use crate::cache::{PurgeOutcome, Selector};
use crate::error::AppError;
use crate::request::{is_mode_word, SourceKey};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    key: Option<String>,
    prefix: Option<String>,
    mode: Option<String>,
    size: Option<String>,
    all: Option<bool>,
}

/// Purges what the body selects.
#[handler]
pub(super) async fn purge(Data(state): Data<&Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let selector = selector(state, json_body(state, body).await?)?;
            let st = state.clone();
            let outcome: PurgeOutcome = blocking(move || {
                st.cache.purge(selector).map_err(|e| {
                    tracing::error!(error = %e, "purge failed");
                    store_failed()
                })
            })
            .await?;
            Ok(json(&outcome))
        }
        .await,
    )
}

fn selector(state: &AppState, req: PurgeRequest) -> Result<Selector, AppError> {
    const ONE: &str =
        "Give exactly one of \"key\", \"prefix\", \"mode\", \"size\" or \"all\": true.";
    let given = [
        req.key.is_some(),
        req.prefix.is_some(),
        req.mode.is_some(),
        req.size.is_some(),
        req.all.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(bad_request(ONE));
    }
    if let Some(key) = req.key {
        let key = SourceKey::new(&key).map_err(|e| bad_request(format!("{e}.")))?;
        return Ok(Selector::Key(key.as_str().to_owned()));
    }
    if let Some(prefix) = req.prefix {
        if prefix.is_empty() {
            return Err(bad_request(
                "An empty prefix would purge everything; use {\"all\": true} for that.",
            ));
        }
        return Ok(Selector::Prefix(prefix));
    }
    if let Some(mode) = req.mode {
        if !is_mode_word(&mode) {
            return Err(bad_request(format!(
                "{mode:?} is not a mode name (lower-case letters, digits, '_' and '-')."
            )));
        }
        return Ok(Selector::Mode(mode));
    }
    if let Some(size) = req.size {
        return Ok(Selector::size(parse_size(state, &size)?));
    }
    match req.all {
        Some(true) => Ok(Selector::All),
        _ => Err(bad_request("\"all\" must be true to purge everything.")),
    }
}
