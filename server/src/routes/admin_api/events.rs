//! `POST /admin/api/source-events`: S3 event notifications (S3's JSON, or SNS's notification
//! around it) for the source bucket. Each key created, replaced or removed has its renders
//! purged everywhere unless they are all of the version the event names. Authorised by the
//! admin token or by `source.events_secret`, as a bearer token or as the password of HTTP
//! basic authentication (an SNS HTTPS subscription to `https://ross:SECRET@host/...`).

use std::sync::Arc;

use poem::web::Data;
use poem::{handler, Body, Response};
use ross_config::SourceSettings;

use super::{answer, json};
use crate::admin::ops::{self, bad_request};
use crate::changes::Noticed;
use crate::error::AppError;
use crate::request::SourceKey;
use crate::source::events::{self, SourceEvent};
use crate::state::AppState;

/// Reads the events of the body and purges the keys they changed.
#[handler]
pub(super) async fn receive(Data(state): Data<&Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let SourceSettings::S3(s3) = &state.settings.source else {
                return Err(bad_request(
                    "S3 events are for an S3 source; this server reads a local folder, which \
                     it watches itself (source.watch).",
                ));
            };
            let body = super::super::read_small_body(state, body).await?;
            let parsed = events::parse(&body, &s3.bucket, &s3.prefix)
                .map_err(|e| bad_request(format!("{e}.")))?;
            if let Some(url) = &parsed.confirm {
                tracing::warn!(
                    url = %url,
                    "an SNS subscription to ross's S3 events asks to be confirmed: open the \
                     URL once (ross does not fetch URLs it is sent)"
                );
            }
            let (purged, invalid) = apply(state, parsed.events.clone(), Noticed::Event).await?;
            Ok(json(&admin_api::SourceEvents {
                keys: parsed.events.len() as u64,
                purged,
                skipped: (parsed.skipped + invalid) as u64,
                confirm: parsed.confirm,
            }))
        }
        .await,
    )
}

/// Purges the keys `events` changed, as `noticed`: how many were purged, and how many named
/// no key a request could ask for (skipped).
pub async fn apply(
    state: &Arc<AppState>,
    events: Vec<SourceEvent>,
    noticed: Noticed,
) -> Result<(u64, usize), AppError> {
    let changes = state.changes.clone();
    ops::blocking(move || {
        let mut purged = 0;
        let mut invalid = 0;
        for event in events {
            if SourceKey::new(&event.key).is_err() {
                invalid += 1;
                continue;
            }
            if changes.changed(&event.key, event.version.as_deref(), None, noticed)? {
                purged += 1;
            }
        }
        Ok((purged, invalid))
    })
    .await
}
