//! The one way in for an image request: the path parsed once, and a sized request admitted
//! (output limits, whitelist, mode in service, format negotiated) or refused, here and
//! nowhere else. The memory fast path admits before the router; what it learned travels to
//! the router in the request's extensions, so a request it does not answer is neither parsed
//! nor checked again.

use poem::http::HeaderMap;
use ross_config::OutputFormat;

use crate::cache::WriteTicket;
use crate::error::{AppError, ErrorCode};
use crate::negotiate::negotiate_for;
use crate::plugins::ModeRef;
use crate::request::{parse, RenderRequest, RequestError, SourceKey, Target};
use crate::state::AppState;

/// A sized request that may be served: what to render, by which mode, in which format.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The purges run when it was admitted (taken before the whitelist was read: a render
    /// begun before a purge that matches it, or before its size's removal, is served but
    /// never cached).
    pub ticket: WriteTicket,
    /// The size, mode and key asked for.
    pub req: RenderRequest,
    /// The mode, in the generation of plugins it was found in.
    pub mode: ModeRef,
    /// The format negotiated from `Accept`.
    pub format: OutputFormat,
    /// Whether answers vary by `Accept` (more than one format is served).
    pub vary: bool,
}

/// What an image path asks for, admitted.
#[derive(Debug, Clone)]
pub enum Admission {
    /// A sized render, admitted or refused.
    Render(Result<Box<Admitted>, AppError>),
    /// `/{key}`: the original.
    Original(SourceKey),
    /// The path is malformed.
    Invalid(RequestError),
}

/// Parses `path` and, for a sized request, admits it.
pub fn admit_path(state: &AppState, path: &str, headers: &HeaderMap) -> Admission {
    let limits = &state.settings.limits;
    match parse(path, limits.max_width, limits.max_height) {
        Err(e) => Admission::Invalid(e),
        Ok(Target::Original(key)) => Admission::Original(key),
        Ok(Target::Render(req)) => Admission::Render(admit(state, req, headers).map(Box::new)),
    }
}

/// Admits the sized request `req`, or says why not.
pub fn admit(
    state: &AppState,
    req: RenderRequest,
    headers: &HeaderMap,
) -> Result<Admitted, AppError> {
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
    let format = negotiate_for(headers, formats, req.size);
    Ok(Admitted {
        ticket,
        req,
        mode,
        format,
        vary: formats.len() > 1,
    })
}
