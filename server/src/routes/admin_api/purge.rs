//! `POST /admin/api/purge` with exactly one of `{"key": k}`, `{"prefix": p}`, `{"mode": m}`,
//! `{"size": "WxH"}` or `{"all": true}`; answers the entries and bytes removed.

use std::sync::Arc;

use poem::web::Data;
use poem::{handler, Body, Response};
use serde::Deserialize;

use super::{answer, json, json_body};
use crate::admin::ops::{self, bad_request, PurgeTarget};
use crate::error::AppError;
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
            let request: PurgeRequest = json_body(state, body).await?;
            let selector = ops::selector(state, target(&request)?)?;
            Ok(json(&super::purged(ops::purge(state, selector).await?)))
        }
        .await,
    )
}

/// The one selection the request makes.
fn target(req: &PurgeRequest) -> Result<PurgeTarget<'_>, AppError> {
    let given = [
        req.key.as_deref().map(PurgeTarget::Key),
        req.prefix.as_deref().map(PurgeTarget::Prefix),
        req.mode.as_deref().map(PurgeTarget::Mode),
        req.size.as_deref().map(PurgeTarget::Size),
        req.all.map(|_| PurgeTarget::All),
    ];
    let mut chosen = given.into_iter().flatten();
    match (chosen.next(), chosen.next()) {
        (Some(_), None) if req.all == Some(false) => {
            Err(bad_request("\"all\" must be true to purge everything."))
        }
        (Some(target), None) => Ok(target),
        _ => Err(bad_request(
            "Give exactly one of \"key\", \"prefix\", \"mode\", \"size\" or \"all\": true.",
        )),
    }
}
