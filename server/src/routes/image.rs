//! Every path other than the fixed routes: parsed into a sized render or an original.

use std::sync::Arc;

use poem::web::Data;
use poem::{handler, IntoResponse, Request, Response};

use super::admission::{admit_path, Admission};
use super::{original, render};
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

/// `GET`/`HEAD /{width}/{height}/{mode}/{key}` and `/{key}`.
#[handler]
pub async fn image(req: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    if req.uri().path() == "/" && crate::admin::views::serves_samples(state) {
        return welcome(state);
    }
    // Admitted once: by the fast path when the request came through it, else here.
    let admission = match req.extensions().get::<Admission>() {
        Some(admission) => admission.clone(),
        None => admit_path(state, req.uri().path(), req.headers()),
    };
    let result = match admission {
        Admission::Invalid(e) => Err(AppError::from(e)),
        Admission::Render(Err(e)) => Err(e),
        Admission::Render(Ok(admitted)) => render::render(req, state, *admitted).await,
        Admission::Original(key) => original::original(req, state, key).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The bundled sample rendered in each mode.
const WELCOME_SAMPLE: &str = "ladybird.jpg";

/// `GET /` while the bundled samples are served: what ross is, with a render in each mode.
fn welcome(state: &AppState) -> Response {
    use admin_ui::pages::{Sample, WelcomePage};
    use admin_ui::Template;
    let page = WelcomePage {
        samples: state
            .modes
            .modes()
            .iter()
            .map(|m| Sample {
                mode: m.name.clone(),
                description: m.description.clone(),
                url: format!("/300/300/{}/{WELCOME_SAMPLE}", m.name),
            })
            .collect(),
        original: WELCOME_SAMPLE.into(),
        admin: state.settings.admin.enabled,
    };
    match page.render() {
        Ok(body) => Response::builder()
            .content_type("text/html; charset=utf-8")
            .header("Cache-Control", "no-store")
            .header("X-Content-Type-Options", "nosniff")
            .body(body),
        Err(e) => AppError::new(ErrorCode::InternalError, "The page could not be drawn.")
            .detailed(e)
            .into_response(),
    }
}
