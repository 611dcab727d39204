//! The media folder's watcher: originals replaced, changed or removed under `source.root`
//! purge their renders everywhere ([`SourceChanges`]), and so do changes made while ross was
//! stopped, found by a check of the cached keys' originals at start-up.
//!
//! - **Events only say where to look.** Paths named by events are gathered until the folder
//!   has been quiet for 150 ms (at most 1 s after the first: a folder written to without pause
//!   is still looked at), then each is looked at: the file's version now (modification time
//!   and length), or gone. A file still being written is looked at again on its next event,
//!   and a render made from half of it is purged then, its version being another.
//! - **Folders.** A path that is a folder now, or is gone, stands for every cached key under
//!   it too (a folder renamed, replaced or removed).
//! - **Lost events** (the kernel's queue overflowed) start a check of every cached key.
//! - **Bounds.** inotify watches one folder per watch: a tree with more folders than
//!   `fs.inotify.max_user_watches` allows is refused with a log line saying so, and ross goes
//!   on without watching (changes then need a purge by key, or a restart's check).
//! - The root is resolved once: a root that is a symlink flipped to a new release is a new
//!   release, purged by the operator (`POST /admin/api/purge` with `all`) or seen at the next
//!   start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use super::{LocalSource, SourceError};
use crate::changes::{Noticed, SourceChanges};
use crate::request::SourceKey;

/// How long the folder must be quiet before the paths gathered are looked at.
const QUIET: Duration = Duration::from_millis(150);
/// The longest paths wait to be looked at, however busy the folder.
const LONGEST_WAIT: Duration = Duration::from_secs(1);
/// Paths gathered at most before they are looked at: a whole tree copied in is looked at in
/// batches, not held in memory.
const BATCH: usize = 10_000;
/// Cached keys read from the index per page while checking them.
const PAGE: usize = 1_000;

/// Watches `source`'s root; changes go to `changes`. The watch lasts while the returned
/// guard is kept. Checks every cached key's original first, on the watcher's thread.
pub fn watch(
    source: Arc<LocalSource>,
    changes: Arc<SourceChanges>,
) -> Result<MediaWatch, notify::Error> {
    let root = std::fs::canonicalize(source.root()).map_err(notify::Error::io)?;
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx)?;
    watcher.watch(&root, RecursiveMode::Recursive)?;
    tracing::info!(root = %root.display(), "watching the media folder for changed originals");
    // Held weakly: the server's state (and its database lock) goes when the server stops,
    // not when this thread next wakes.
    let looker = Looker {
        root,
        source,
        changes: Arc::downgrade(&changes),
    };
    std::thread::Builder::new()
        .name("media-watch".into())
        .spawn(move || looker.run(&rx))
        .map_err(notify::Error::io)?;
    Ok(MediaWatch { _watcher: watcher })
}

/// Whether `event` says only that a file was opened: inotify's watch includes opens (the
/// watcher crate asks for them), and every fetch of an original is one.
fn opened_only(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, EventKind};
    matches!(event.kind, EventKind::Access(AccessKind::Open(_))) && !event.need_rescan()
}

/// The media folder's watch: dropped, it stops (and its thread ends).
pub struct MediaWatch {
    _watcher: notify::RecommendedWatcher,
}

struct Looker {
    /// The media root, resolved.
    root: PathBuf,
    source: Arc<LocalSource>,
    changes: Weak<SourceChanges>,
}

impl Looker {
    fn run(&self, rx: &mpsc::Receiver<notify::Result<notify::Event>>) {
        self.check_all(Noticed::Scan);
        let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
        let mut first: Option<Instant> = None;
        let mut rescan = false;
        loop {
            let wait = match first {
                Some(at) => QUIET.min(LONGEST_WAIT.saturating_sub(at.elapsed())),
                None => Duration::from_secs(3600),
            };
            match rx.recv_timeout(wait) {
                // Opened (by ross's own fetches, mostly): nothing changed; what was gathered
                // is looked at once due all the same.
                Ok(Ok(event)) if opened_only(&event) => {
                    if first.is_none_or(|at| at.elapsed() < LONGEST_WAIT) {
                        continue;
                    }
                }
                Ok(Ok(event)) => {
                    rescan |= event.need_rescan();
                    paths.extend(event.paths);
                    first.get_or_insert_with(Instant::now);
                    let due = first.is_some_and(|at| at.elapsed() >= LONGEST_WAIT);
                    if !due && paths.len() < BATCH {
                        continue;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "media folder watch error");
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let Some(changes) = self.changes.upgrade() else {
                return;
            };
            if rescan {
                tracing::warn!("the media folder's watch lost events: checking every cached key");
                self.check_all(Noticed::Watch);
                rescan = false;
            }
            for path in std::mem::take(&mut paths) {
                self.look(&changes, &path);
            }
            first = None;
        }
    }

    /// Looks at what is at `path` now: its own key, and the cached keys under it when it is
    /// a folder or gone.
    fn look(&self, changes: &SourceChanges, path: &Path) {
        let Ok(relative) = path.strip_prefix(&self.root) else {
            return;
        };
        let Some(name) = relative.to_str().filter(|n| !n.is_empty()) else {
            return;
        };
        let Ok(key) = SourceKey::new(name) else {
            return; // no request can name it
        };
        let is_file = std::fs::metadata(path).is_ok_and(|m| m.is_file());
        self.check(changes, &key, Noticed::Watch);
        if !is_file {
            self.check_under(&format!("{name}/"), Noticed::Watch);
        }
    }

    /// Compares the cached renders of `key` with its original now.
    fn check(&self, changes: &SourceChanges, key: &SourceKey, noticed: Noticed) {
        let (now, modified_ms) = match self.source.version_now(key) {
            Ok((version, modified_ms)) => (Some(version), modified_ms),
            Err(SourceError::NotFound { .. }) => (None, None),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "cannot look at a changed original");
                return;
            }
        };
        if let Err(e) = changes.changed(key.as_str(), now.as_deref(), modified_ms, noticed) {
            tracing::warn!(key = %key, error = ?e.detail, "cannot purge a changed original");
        }
    }

    /// Checks every cached key under `prefix`, a page at a time (the server's state held
    /// for one page at a time: a stop is not held up by a long check). How many were
    /// checked.
    fn check_under(&self, prefix: &str, noticed: Noticed) -> usize {
        let mut after: Option<String> = None;
        let mut checked = 0;
        loop {
            let Some(changes) = self.changes.upgrade() else {
                return checked;
            };
            let keys = match changes.cached_keys(prefix, after.as_deref(), PAGE) {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::warn!(error = ?e.detail, "cannot read the cached keys to check them");
                    return checked;
                }
            };
            for key in &keys {
                if let Ok(key) = SourceKey::new(key) {
                    self.check(&changes, &key, noticed);
                }
            }
            checked += keys.len();
            match keys.into_iter().last() {
                Some(last) => after = Some(last),
                None => return checked,
            }
        }
    }

    /// Checks every cached key's original: changes made while ross was stopped, or while
    /// events were lost.
    fn check_all(&self, noticed: Noticed) {
        let started = Instant::now();
        let checked = self.check_under("", noticed);
        tracing::info!(
            checked,
            took_ms = started.elapsed().as_millis() as u64,
            "checked the cached keys' originals for changes"
        );
    }
}
