//! `GET /{key}`: the original, unchanged, with the Content-Type its bytes show.

use std::sync::Arc;
use std::time::SystemTime;

use poem::http::StatusCode;
use poem::{Request, Response};

use super::respond::image_response;
use crate::error::AppError;
use crate::imaging::{sniff, DecodeError};
use crate::pipeline::CacheStatus;
use crate::request::SourceKey;
use crate::state::AppState;

pub(super) async fn original(
    http: &Request,
    state: &Arc<AppState>,
    key: SourceKey,
) -> Result<Response, AppError> {
    if !state.settings.serve_originals {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "originals-disabled",
            "Originals are not served here; request a size: /{width}/{height}/{mode}/{key}.",
        ));
    }
    let limit = state.settings.limits.max_source_bytes;
    let object = state.pipeline.source().fetch(&key, limit).await?;
    let format = sniff(&object.bytes).ok_or(DecodeError::UnsupportedFormat)?;
    Ok(image_response(
        http,
        object.bytes,
        format.mime(),
        object.modified.unwrap_or_else(SystemTime::now),
        CacheStatus::Miss,
        state.settings.cache.max_age,
    ))
}
