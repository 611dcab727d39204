//! What an operator can change, once for the admin JSON API and the admin pages: the
//! whitelist, purges and the plugin folder. Input is validated here (a 400 naming what is
//! wrong, nothing changed); sled work runs on the blocking pool.

use std::sync::Arc;

use ross_config::{Size, WhitelistSource};

use crate::cache::{Cache, PurgeJob, PurgeOutcome, Selector};
use crate::cluster::Change;
use crate::db::FullDisk;
use crate::error::{AppError, ErrorCode};
use crate::request::SourceKey;
use crate::state::AppState;
use crate::whitelist::Whitelist;

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

/// A 409 while the settings file holds the whitelist.
fn editable(state: &AppState) -> Result<(), AppError> {
    if state.whitelist.source() == WhitelistSource::Config {
        return Err(AppError::of(ErrorCode::WhitelistFromConfig));
    }
    Ok(())
}

/// Does `apply` here and, in a cluster, keeps `change` for every other node (kept first, so a
/// stop between the two still sends it, and applies it again here at the next start).
/// Blocking.
fn shared<T>(
    state: &AppState,
    change: Change,
    apply: impl FnOnce() -> Result<T, AppError>,
) -> Result<T, AppError> {
    match &state.cluster {
        Some(cluster) => cluster.change(&change, apply),
        None => apply(),
    }
}

/// Turns the whitelist on or off.
pub async fn set_whitelist_enabled(state: &Arc<AppState>, enabled: bool) -> Result<(), AppError> {
    editable(state)?;
    let st = state.clone();
    blocking(move || {
        shared(&st, Change::Whitelist(enabled), || {
            st.whitelist
                .set_enabled(enabled)
                .map_err(|e| write_failed("cannot switch the whitelist", e))
        })
    })
    .await?;
    tracing::info!(enabled, "whitelist switched");
    Ok(())
}

/// Parses every size of `texts`: all of them, or a 400 naming the first bad one.
fn parse_sizes(state: &AppState, texts: &[&str]) -> Result<Vec<Size>, AppError> {
    if texts.is_empty() {
        return Err(bad_request("Give at least one size."));
    }
    let mut sizes: Vec<Size> = texts
        .iter()
        .map(|t| parse_size(state, t))
        .collect::<Result<_, _>>()?;
    sizes.sort_unstable();
    sizes.dedup();
    Ok(sizes)
}

/// Allows the size `text`; whether it was new.
pub async fn allow_size(state: &Arc<AppState>, text: &str) -> Result<(Size, bool), AppError> {
    let (sizes, added) = allow_sizes(state, &[text]).await?;
    Ok((sizes[0], added == 1))
}

/// Allows every size of `texts` (`WxH`), in one change; how many were new.
pub async fn allow_sizes(
    state: &Arc<AppState>,
    texts: &[&str],
) -> Result<(Vec<Size>, usize), AppError> {
    editable(state)?;
    let sizes = parse_sizes(state, texts)?;
    let st = state.clone();
    let asked = sizes.clone();
    let added = blocking(move || {
        shared(&st, Change::Allow(asked.clone()), || {
            st.whitelist
                .add_all(&asked)
                .map_err(|e| write_failed("cannot add to the whitelist", e))
        })
    })
    .await?;
    if added > 0 {
        tracing::info!(sizes = %list(&sizes), added, "sizes allowed");
    }
    Ok((sizes, added))
}

/// Stops allowing the size `text` and purges its renders (nginx would otherwise go on
/// serving them).
pub async fn disallow_size(
    state: &Arc<AppState>,
    text: &str,
) -> Result<(Size, PurgeOutcome), AppError> {
    let (sizes, purged) = disallow_sizes(state, &[text]).await?;
    Ok((sizes[0], purged))
}

/// Stops allowing every size of `texts`, in one change, and purges their renders.
pub async fn disallow_sizes(
    state: &Arc<AppState>,
    texts: &[&str],
) -> Result<(Vec<Size>, PurgeOutcome), AppError> {
    editable(state)?;
    let sizes = parse_sizes(state, texts)?;
    let st = state.clone();
    let asked = sizes.clone();
    let purged = blocking(move || {
        // The purges run after the change is made (and kept to be sent), out of it: a long
        // one holds up neither the cluster nor other whitelist edits. They run even if
        // keeping the change failed after the edit was made.
        // Sent to the CDNs once the sizes' files are gone here (when `held` is dropped).
        let held: Vec<_> = asked
            .iter()
            .map(|size| st.purges.purging(&Selector::size(*size)))
            .collect();
        let mut begun = Vec::new();
        let made = shared(&st, Change::Disallow(asked.clone()), || {
            begun = remove_sizes(&st.whitelist, &st.cache, &asked)?;
            Ok(())
        });
        let purged = finish_removal(&st.cache, begun);
        drop(held);
        made?;
        for size in &asked {
            st.purger.note_shared(&Selector::size(*size));
        }
        Ok(purged)
    })
    .await?;
    tracing::info!(sizes = %list(&sizes), entries = purged.entries, "sizes no longer allowed");
    Ok((sizes, purged))
}

/// Stops allowing `sizes`, in one edit, and returns their purges, each journaled before the
/// edit (a crash after it still finishes them at the next start), for [`finish_removal`] or
/// another thread to run: the whitelist edit is quick, the purges may be long. On a failure
/// nothing changed. Blocking.
pub fn remove_sizes(
    whitelist: &Whitelist,
    cache: &Cache,
    sizes: &[Size],
) -> Result<Vec<PurgeJob>, AppError> {
    let failed = |e: &dyn FullDisk| {
        write_failed(
            &format!("cannot remove {} from the whitelist", list(sizes)),
            e,
        )
    };
    let mut jobs = Vec::with_capacity(sizes.len());
    let abandon = |jobs: Vec<PurgeJob>| jobs.into_iter().for_each(|j| cache.abandon_purge(j));
    for &size in sizes {
        match cache.begin_purge(Selector::size(size)) {
            Ok(job) => jobs.push(job),
            Err(e) => {
                abandon(jobs);
                return Err(failed(&e));
            }
        }
    }
    if let Err(e) = whitelist.remove_all(sizes) {
        // The sizes stay allowed: so do their renders.
        abandon(jobs);
        return Err(failed(&e));
    }
    Ok(jobs)
}

/// Runs the purges [`remove_sizes`] began. One that fails stays in force and is tried again
/// in the background (the cache logs it); what the others removed is counted. Blocking.
pub fn finish_removal(cache: &Cache, jobs: Vec<PurgeJob>) -> PurgeOutcome {
    let mut total = PurgeOutcome::default();
    for job in jobs {
        if let Ok(purged) = cache.finish_purge(job) {
            total.entries += purged.entries;
            total.bytes += purged.bytes;
        }
    }
    total
}

/// `sizes` as people read them: `72x72, 300x300`.
pub fn list(sizes: &[Size]) -> String {
    sizes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sizes typed into a form, separated by commas or spaces.
pub fn size_list(text: &str) -> Vec<&str> {
    text.split([',', ' ', '\n', '\t', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
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

/// Purges what `selector` names, here and (in a cluster) on every node.
pub async fn purge(state: &Arc<AppState>, selector: Selector) -> Result<PurgeOutcome, AppError> {
    let purger = state.purger.clone();
    blocking(move || purger.purge(selector)).await
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
