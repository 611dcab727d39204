//! Cache hits held in memory, answered before the router: a hit is the request ross serves
//! most, and poem's request, router and middleware took about 12% of its CPU (the HTTP stack
//! alone serves the same bytes faster than nginx; see docs/performance.md). Every request is
//! admitted here, once ([`super::admission`]); only a plain `GET` of an admitted sized URL
//! whose variant is in memory, and that is not conditional, is answered here; everything
//! else, errors included, goes to the router with its admission. The answer is the image
//! route's, byte for byte, and is noted by the one observer ([`crate::observe::note`]) as
//! every response is.

use std::sync::Arc;
use std::time::Instant;

use poem::http::{header, Extensions, HeaderMap, HeaderValue, Method, StatusCode, Uri};

use super::admission::{admit_path, Admission};
use super::respond::{cache_control, unconditional_image_response};
use crate::cache::VariantKey;
use crate::http::Fast;
use crate::observe::{self, request_id_value, Outcome, REQUEST_ID};
use crate::pipeline::CacheStatus;
use crate::state::AppState;
use crate::telemetry::{stage, Count};

/// Answers memory hits for one server.
pub struct MemoryHits {
    state: Arc<AppState>,
    /// `Cache-Control`, made once.
    cache_control: HeaderValue,
}

impl MemoryHits {
    /// Memory hits of `state`'s cache.
    pub fn new(state: Arc<AppState>) -> MemoryHits {
        let cache_control = cache_control(&state.settings.cache);
        MemoryHits {
            state,
            cache_control,
        }
    }

    /// The response to a memory hit, or what the router needs to answer: the request's
    /// admission, made here once.
    pub fn answer(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Fast {
        let started = Instant::now();
        let state = &self.state;
        let path = uri.path();
        let admission = admit_path(state, path, headers);
        let conditional = headers.contains_key(header::IF_NONE_MATCH)
            || headers.contains_key(header::IF_MODIFIED_SINCE);
        let hit = match &admission {
            Admission::Render(Ok(admitted)) if method == Method::GET && !conditional => {
                let variant = VariantKey::new(&admitted.req, admitted.format);
                state
                    .cache
                    .get_in_memory(&variant)
                    .map(|file| (file, variant, admitted.vary))
            }
            _ => None,
        };
        let Some((file, variant, vary)) = hit else {
            let mut learned = Extensions::new();
            learned.insert(admission);
            return Fast::Pass(learned);
        };
        state.metrics.stage(stage::CACHE_CHECK, started);
        state.metrics.count(Count::Hit);
        let mut response = unconditional_image_response(
            file.bytes,
            variant.format.media_type(),
            &file.headers,
            CacheStatus::Hit,
            self.cache_control.clone(),
        );
        let id = request_id_value(headers);
        observe::note(
            state,
            &Outcome {
                id: id.to_str().unwrap_or_default(),
                method,
                path,
                status: StatusCode::OK,
                cache: "HIT",
                started: Some(started),
                failure: None,
            },
        );
        response.headers_mut().insert(REQUEST_ID, id);
        if vary {
            let vary = HeaderValue::from_static("Accept");
            response.headers_mut().insert(header::VARY, vary);
        }
        state.image_headers.add_render(
            response.headers_mut(),
            variant.key.as_str(),
            &variant.mode,
            variant.size,
        );
        Fast::Answered(response)
    }
}
