//! Cache hits held in memory, answered before the router: a hit is the request ross serves
//! most, and poem's request, router and middleware took about 12% of its CPU (the HTTP stack
//! alone serves the same bytes faster than nginx; see docs/performance.md). Only a plain
//! `GET` of a sized URL whose variant is in memory, whitelisted and of a mode in service, and
//! that is not conditional, is answered here; everything else, errors included, goes through
//! the router. The answer is the image route's, byte for byte, with the same request id,
//! counts and access line as `observe` gives every request.

use std::sync::Arc;
use std::time::Instant;

use poem::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use poem::Response;

use super::respond::{cache_control, unconditional_image_response};
use crate::cache::VariantKey;
use crate::negotiate::negotiate_for;
use crate::observe::{log_served, request_id_value, REQUEST_ID};
use crate::pipeline::CacheStatus;
use crate::request::{parse, Target};
use crate::state::AppState;
use crate::stats::stage;

/// Answers memory hits for one server.
pub struct MemoryHits {
    state: Arc<AppState>,
    /// `Cache-Control`, made once.
    cache_control: HeaderValue,
}

impl MemoryHits {
    /// Memory hits of `state`'s cache.
    pub fn new(state: Arc<AppState>) -> MemoryHits {
        let cache_control = cache_control(state.settings.cache.max_age);
        MemoryHits {
            state,
            cache_control,
        }
    }

    /// The response to a memory hit, or `None` for the router to answer.
    pub fn answer(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
        let started = Instant::now();
        let conditional = headers.contains_key(header::IF_NONE_MATCH)
            || headers.contains_key(header::IF_MODIFIED_SINCE);
        if method != Method::GET || conditional {
            return None;
        }
        let state = &self.state;
        let limits = &state.settings.limits;
        let path = uri.path();
        let Ok(Target::Render(req)) = parse(path, limits.max_width, limits.max_height) else {
            return None;
        };
        let pixels = u64::from(req.size.width) * u64::from(req.size.height);
        if pixels > limits.max_output_pixels || !state.whitelist.allows(req.size) {
            return None;
        }
        if !state.modes.contains(&req.mode) {
            return None;
        }
        let formats = &state.settings.output.formats;
        let format = negotiate_for(headers, formats, req.size);
        let variant = VariantKey::new(&req, format);
        let file = state.cache.get_in_memory(&variant)?;
        let stats = &state.stats;
        stats.stage(stage::CACHE_CHECK, started);
        stats.hit();
        let mut response = unconditional_image_response(
            file.bytes,
            format.media_type(),
            &file.headers,
            CacheStatus::Hit,
            self.cache_control.clone(),
        );
        let id = request_id_value(headers);
        stats.response(StatusCode::OK.as_u16(), started.elapsed());
        if state.settings.log.access {
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let shown = id.to_str().unwrap_or_default();
            log_served(shown, method, path, StatusCode::OK, "HIT", ms);
        }
        response.headers_mut().insert(REQUEST_ID, id);
        if formats.len() > 1 {
            let vary = HeaderValue::from_static("Accept");
            response.headers_mut().insert(header::VARY, vary);
        }
        Some(response)
    }
}
