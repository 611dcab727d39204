//! What an operator can change, once for the admin JSON API and the admin pages: the
//! whitelist, purges and the plugin folder. Input is validated here (a 400 naming what is
//! wrong, nothing changed); sled work runs on the blocking pool.

use std::sync::Arc;

use ross_config::Size;

use crate::cache::{PurgeOutcome, Selector};
use crate::db::FullDisk;
use crate::error::{AppError, ErrorCode};
use crate::request::SourceKey;
use crate::state::AppState;

/// A 400 for bad admin input.
pub fn bad_request(message: impl Into<String>) -> AppError {
    AppError::new(ErrorCode::InvalidRequest, message)
}

/// The database failed while `doing` (logged with the request, not sent).
pub fn store_failed(doing: &str, cause: impl std::fmt::Display) -> AppError {
    AppError::of(ErrorCode::StoreFailed).detailed(format_args!("{doing}: {cause}"))
}

/// A write failed while `doing`: 503 `storage-full` when the disk is full (worth retrying
/// once there is room), else as [`store_failed`].
pub fn write_failed(doing: &str, cause: impl FullDisk) -> AppError {
    if cause.full_disk() {
        AppError::of(ErrorCode::StorageFull).detailed(format_args!("{doing}: {cause}"))
    } else {
        store_failed(doing, cause)
    }
}

/// Runs sled work on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(store_failed("the admin task failed", e)))
}

/// A `WxH` size within the limits.
pub fn parse_size(state: &AppState, text: &str) -> Result<Size, AppError> {
    let size: Size = text.parse().map_err(|e: String| {
        bad_request(format!(
            "{e}: give a width and height from 1 up, without leading zeros."
        ))
    })?;
    let limits = &state.settings.limits;
    if size.width > limits.max_width || size.height > limits.max_height {
        return Err(bad_request(format!(
            "{size} is larger than the largest size ross renders, {}x{} \
             (limits.max_width x limits.max_height).",
            limits.max_width, limits.max_height
        )));
    }
    if u64::from(size.width) * u64::from(size.height) > limits.max_output_pixels {
        return Err(bad_request(format!(
            "{size} has more pixels than ross renders, {} (limits.max_output_pixels).",
            limits.max_output_pixels
        )));
    }
    Ok(size)
}

/// Turns the whitelist on or off.
pub async fn set_whitelist_enabled(state: &Arc<AppState>, enabled: bool) -> Result<(), AppError> {
    let st = state.clone();
    blocking(move || {
        st.whitelist
            .set_enabled(enabled)
            .map_err(|e| write_failed("cannot switch the whitelist", e))
    })
    .await?;
    tracing::info!(enabled, "whitelist switched");
    Ok(())
}

/// Allows the size `text`; whether it was new.
pub async fn allow_size(state: &Arc<AppState>, text: &str) -> Result<(Size, bool), AppError> {
    let size = parse_size(state, text)?;
    let st = state.clone();
    let added = blocking(move || {
        st.whitelist
            .add(size)
            .map_err(|e| write_failed("cannot add to the whitelist", e))
    })
    .await?;
    if added {
        tracing::info!(size = %size, "size allowed");
    }
    Ok((size, added))
}

/// Stops allowing the size `text` and purges its renders (nginx would otherwise go on
/// serving them). The purge is journaled before the size goes, so a crash in between still
/// finishes it at the next start.
pub async fn disallow_size(
    state: &Arc<AppState>,
    text: &str,
) -> Result<(Size, PurgeOutcome), AppError> {
    let size = parse_size(state, text)?;
    let st = state.clone();
    let purged = blocking(move || {
        let failed =
            |e: &dyn FullDisk| write_failed(&format!("cannot remove {size} from the whitelist"), e);
        let job = st
            .cache
            .begin_purge(Selector::size(size))
            .map_err(|e| failed(&e))?;
        if let Err(e) = st.whitelist.remove(size) {
            // The size stays allowed: so do its renders.
            st.cache.abandon_purge(job);
            return Err(failed(&e));
        }
        st.cache.finish_purge(job).map_err(|e| failed(&e))
    })
    .await?;
    tracing::info!(size = %size, entries = purged.entries, "size no longer allowed");
    Ok((size, purged))
}

/// What a purge removes, as asked for.
#[derive(Debug, Clone, Copy)]
pub enum PurgeTarget<'a> {
    /// Every variant of one key.
    Key(&'a str),
    /// Every variant of the keys under a prefix.
    Prefix(&'a str),
    /// Every variant rendered by a mode.
    Mode(&'a str),
    /// Every variant at a size (`WxH`).
    Size(&'a str),
    /// Everything.
    All,
}

/// The cache selector for `target`, or a 400 saying what is wrong with it.
pub fn selector(state: &AppState, target: PurgeTarget<'_>) -> Result<Selector, AppError> {
    match target {
        PurgeTarget::Key(key) => {
            let key = SourceKey::new(key).map_err(|e| bad_request(format!("{e}.")))?;
            Ok(Selector::Key(key.as_str().to_owned()))
        }
        PurgeTarget::Prefix("") => Err(bad_request(
            "An empty prefix would purge everything; choose \"all\" for that.",
        )),
        PurgeTarget::Prefix(prefix) => Ok(Selector::Prefix(prefix.to_owned())),
        PurgeTarget::Mode(mode) if plugin_api::is_mode_name(mode) => {
            Ok(Selector::Mode(mode.to_owned()))
        }
        PurgeTarget::Mode(mode) => Err(bad_request(format!(
            "{mode:?} is not a mode name (lower-case letters, digits, '_' and '-')."
        ))),
        PurgeTarget::Size(size) => Ok(Selector::size(parse_size(state, size)?)),
        PurgeTarget::All => Ok(Selector::All),
    }
}

/// How much a purge by `selector` would remove now.
pub async fn count(state: &Arc<AppState>, selector: Selector) -> Result<PurgeOutcome, AppError> {
    let st = state.clone();
    blocking(move || {
        st.cache
            .count(&selector)
            .map_err(|e| store_failed("cannot count a purge", e))
    })
    .await
}

/// Purges what `selector` names.
pub async fn purge(state: &Arc<AppState>, selector: Selector) -> Result<PurgeOutcome, AppError> {
    let st = state.clone();
    blocking(move || {
        st.cache
            .purge(selector)
            .map_err(|e| write_failed("purge failed", e))
    })
    .await
}

/// Scans the plugin folder now, as the watcher would on a change.
pub async fn rescan_plugins(state: &Arc<AppState>) -> Result<(), AppError> {
    let reloader = state.reloader.clone();
    blocking(move || {
        reloader.scan();
        Ok(())
    })
    .await
}
