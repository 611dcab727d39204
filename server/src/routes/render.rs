//! A sized request: whitelist, mode lookup, then the pipeline.

use std::sync::Arc;

use poem::{Request, Response};

use super::respond::image_response;
use crate::error::{AppError, ErrorCode};
use crate::negotiate::negotiate_for;
use crate::request::RenderRequest;
use crate::state::AppState;

pub(super) async fn render(
    http: &Request,
    state: &Arc<AppState>,
    req: RenderRequest,
) -> Result<Response, AppError> {
    // Taken before the whitelist is read: a render begun before a purge (or a size's removal)
    // is served but never cached.
    let ticket = state.pipeline.ticket();
    let limits = &state.settings.limits;
    let pixels = u64::from(req.size.width) * u64::from(req.size.height);
    if pixels > limits.max_output_pixels {
        return Err(AppError::new(
            ErrorCode::InvalidSize,
            format!(
                "{} is {pixels} pixels, more than the {} allowed (limits.max_output_pixels).",
                req.size, limits.max_output_pixels
            ),
        ));
    }
    if !state.whitelist.allows(req.size) {
        return Err(AppError::not_whitelisted(req.size));
    }
    let mode = state
        .modes
        .get(&req.mode)
        .ok_or_else(|| AppError::unknown_mode(&req.mode))?;
    let formats = &state.settings.output.formats;
    let format = negotiate_for(http.headers(), formats, req.size);
    let rendered = state.pipeline.variant(&req, format, mode, ticket).await?;
    Ok(image_response(
        http,
        rendered.body,
        format,
        rendered.modified,
        rendered.cache,
        state.settings.cache.max_age,
        formats.len() > 1,
    ))
}
