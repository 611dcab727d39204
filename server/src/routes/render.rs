//! A sized request, admitted: the pipeline, then the image response.

use std::sync::Arc;

use poem::{Request, Response};

use super::admission::Admitted;
use super::respond::image_response;
use crate::error::AppError;
use crate::state::AppState;

pub(super) async fn render(
    http: &Request,
    state: &Arc<AppState>,
    admitted: Admitted,
) -> Result<Response, AppError> {
    let Admitted {
        ticket,
        req,
        mode,
        format,
        vary,
    } = admitted;
    let rendered = state.pipeline.variant(&req, format, mode, ticket).await?;
    let mut response = image_response(
        http,
        rendered.body,
        format,
        rendered.modified,
        rendered.cache,
        &state.settings.cache,
        vary,
    );
    state.image_headers.add_render(
        response.headers_mut(),
        req.key.as_str(),
        &req.mode,
        req.size,
    );
    Ok(response)
}
