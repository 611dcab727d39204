//! Every path other than the fixed routes: parsed into a sized render or an original.

use std::sync::Arc;

use poem::web::Data;
use poem::{handler, IntoResponse, Request, Response};

use super::{original, render};
use crate::error::AppError;
use crate::request::{parse, Target};
use crate::state::AppState;

/// `GET`/`HEAD /{width}/{height}/{mode}/{key}` and `/{key}`.
#[handler]
pub async fn image(req: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    let limits = &state.settings.limits;
    let result = match parse(req.uri().path(), limits.max_width, limits.max_height) {
        Err(e) => Err(AppError::from(e)),
        Ok(Target::Render(render_req)) => render::render(req, state, render_req).await,
        Ok(Target::Original(key)) => original::original(req, state, key).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}
