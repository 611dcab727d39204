//! Purges made here, sent everywhere they must go, and changed originals turned into purges.
//!
//! - [`Purger`]: a purge made on this node (admin page, API, a changed original) removes the
//!   cache's files and memory here, is kept for every other node of a cluster, and is sent
//!   to the CDNs in front (once for the cluster: by the node it was made on).
//! - [`SourceChanges`]: an original replaced or removed, as the media folder's watcher, an S3
//!   event (posted, or read from the events queue) or a render noticed it. Every cached variant records the
//!   version of the original it was rendered from ([`crate::cache::EntryMeta::source`]): the
//!   key is purged (everywhere) when one of its variants was rendered from another version,
//!   or from an original now gone, and left alone when every one is of the version now there
//!   (an event delivered twice, or after its renders were made again). A key with nothing
//!   cached here is left alone too: the CDNs' copies of renders ross no longer holds expire
//!   at `cache.max_age` (an explicit purge by key reaches them). A render whose original's
//!   version is not known (cached before versions were kept, or taken from another node's
//!   shared renders) counts as current when the original has not changed since it was
//!   cached (by its modification time, where the change says it), else as stale. In a
//!   cluster, an S3 event purges the key whatever this node holds: the other nodes' renders
//!   are not known here, and one node reads each event.

use std::sync::Arc;

use crate::cache::{Cache, PurgeOutcome, Selector};
use crate::cdn::Notifier;
use crate::cluster::{Change, Cluster, Purge};
use crate::error::AppError;
use crate::telemetry::Metrics;

/// Purges made on this node, sent to the cache, the cluster and the CDNs.
pub struct Purger {
    cache: Cache,
    cdns: Notifier,
    cluster: Option<Arc<Cluster>>,
}

impl Purger {
    /// Purges go to `cache`, `cdns` and `cluster`'s other nodes.
    pub fn new(cache: Cache, cdns: Notifier, cluster: Option<Arc<Cluster>>) -> Purger {
        Purger {
            cache,
            cdns,
            cluster,
        }
    }

    /// Tells the renders shared between nodes, if they are, of a purge made here.
    pub fn note_shared(&self, selector: &Selector) {
        if let Some(renders) = self.cluster.as_ref().and_then(|c| c.renders()) {
            renders.note_purge(selector);
        }
    }

    /// Purges what `selector` names, here, on every node of the cluster and in the CDNs.
    /// Blocking.
    pub fn purge(&self, selector: Selector) -> Result<PurgeOutcome, AppError> {
        let here = || {
            // Sent to the CDNs once the files are gone here (when `held` is dropped); a purge
            // that failed here is tried again in the background, and the CDNs wait for it.
            let held = self.cdns.purging(&selector);
            let purged = match self.cache.purge(selector.clone()) {
                Ok(purged) => purged,
                Err(e) => {
                    held.release_when_done(
                        self.cache.clone(),
                        selector.clone(),
                        crate::cdn::HOLD_LIMIT,
                    );
                    return Err(crate::admin::ops::write_failed("purge failed", e));
                }
            };
            drop(held);
            self.note_shared(&selector);
            Ok(purged)
        };
        match (Purge::of(&selector), &self.cluster) {
            (Some(purge), Some(cluster)) => cluster.change(&Change::Purge(purge), here),
            _ => here(),
        }
    }
}

/// What noticed a changed original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noticed {
    /// The media folder's watcher.
    Watch,
    /// An S3 event posted to `POST /admin/api/source-events`.
    Event,
    /// An S3 event read from the events queue (`source.events_queue`).
    Queue,
    /// A miss about to reuse an original read moments ago found it replaced.
    Render,
    /// The scan of the cached keys' originals at start-up.
    Scan,
}

impl Noticed {
    /// Its label in `ross_source_changes_total` and the log.
    pub fn label(self) -> &'static str {
        match self {
            Noticed::Watch => "watch",
            Noticed::Event => "event",
            Noticed::Queue => "queue",
            Noticed::Render => "render",
            Noticed::Scan => "scan",
        }
    }
}

/// Variants of one key read to decide whether it changed, at most: far more sizes and modes
/// than one original is asked in.
const VARIANTS_READ: usize = 10_000;

/// Changed originals, turned into purges.
pub struct SourceChanges {
    purger: Arc<Purger>,
    cache: Cache,
    metrics: Arc<Metrics>,
    /// Whether this node is in a cluster.
    clustered: bool,
}

impl SourceChanges {
    /// Changes purge through `purger`, reading `cache`'s index.
    pub fn new(purger: Arc<Purger>, cache: Cache, metrics: Arc<Metrics>) -> SourceChanges {
        let clustered = purger.cluster.is_some();
        SourceChanges {
            purger,
            cache,
            metrics,
            clustered,
        }
    }

    /// The original of `key` is now at version `now` (`None`: removed, or its version not
    /// known), last modified at `modified_ms` (milliseconds since the epoch) if the change
    /// says. Purges its renders everywhere unless every one cached here is of that version
    /// (or none is cached); `Noticed::Render` always purges (the renderer saw the original
    /// change under it), and so does an S3 event in a cluster. Whether it purged. Blocking.
    pub fn changed(
        &self,
        key: &str,
        now: Option<&str>,
        modified_ms: Option<u64>,
        noticed: Noticed,
    ) -> Result<bool, AppError> {
        let selector = Selector::Key(key.to_owned());
        let everywhere = self.clustered && matches!(noticed, Noticed::Event | Noticed::Queue);
        let stale = noticed == Noticed::Render || everywhere || {
            let entries = self
                .cache
                .entries(&selector, VARIANTS_READ)
                .map_err(|e| crate::admin::ops::store_failed("cannot read the index", e))?;
            entries.iter().any(|(_, meta)| match now {
                None => true,
                // Not known: stale if the original changed after it was cached, or if the
                // change does not say when.
                Some(_) if meta.source.is_empty() => {
                    modified_ms.is_none_or(|m| m >= meta.created_ms)
                }
                Some(v) => meta.source != v,
            })
        };
        if !stale {
            if noticed != Noticed::Scan {
                self.metrics.source_change(noticed.label(), false);
            }
            tracing::debug!(
                key,
                noticed = noticed.label(),
                "original changed: renders current"
            );
            return Ok(false);
        }
        let purged = self.purger.purge(selector)?;
        self.metrics.source_change(noticed.label(), true);
        tracing::info!(
            key,
            version = now.unwrap_or("gone"),
            noticed = noticed.label(),
            purged = purged.entries,
            "original changed: its renders purged"
        );
        Ok(true)
    }

    /// The keys cached here whose names start with `prefix`, each once, in order, after
    /// `after`, `limit` at most. Blocking.
    pub fn cached_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, AppError> {
        self.cache
            .keys(prefix, after, limit)
            .map_err(|e| crate::admin::ops::store_failed("cannot read the index", e))
    }

    /// The versions of the original of `key` its cached renders were made from.
    pub fn cached_versions(&self, key: &str) -> Result<Vec<String>, AppError> {
        let entries = self
            .cache
            .entries(&Selector::Key(key.to_owned()), VARIANTS_READ)
            .map_err(|e| crate::admin::ops::store_failed("cannot read the index", e))?;
        let mut versions: Vec<String> = entries.into_iter().map(|(_, m)| m.source).collect();
        versions.sort_unstable();
        versions.dedup();
        Ok(versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::db::Database;

    use crate::cache::layout::test_variant as variant;

    fn changes(dir: &std::path::Path) -> (SourceChanges, Cache) {
        let db = Database::open(&dir.join("data")).unwrap();
        let metrics = Arc::new(Metrics::new());
        let cache = Cache::open(&dir.join("cache"), 1 << 30, 0, &db, metrics.clone()).unwrap();
        let whitelist = Arc::new(
            crate::whitelist::Whitelist::open(&db, &ross_config::Settings::default().whitelist)
                .unwrap(),
        );
        let notifier = Notifier::new(None, cache.clone(), whitelist);
        let purger = Arc::new(Purger::new(cache.clone(), notifier, None));
        (SourceChanges::new(purger, cache.clone(), metrics), cache)
    }

    fn cached(cache: &Cache, path: &str, source: &str) {
        let put = cache.put(
            &variant(path),
            "1.0.0",
            source,
            b"x",
            cache.ticket(),
            || true,
        );
        assert!(matches!(put, Ok(crate::cache::PutOutcome::Stored(_))));
    }

    fn count(cache: &Cache, key: &str) -> usize {
        cache
            .entries(&Selector::Key(key.into()), 100)
            .unwrap()
            .len()
    }

    /// A key is purged when a render is of another version (or the original is gone), and
    /// left alone when every render is of the version named, or none is cached.
    #[test]
    fn only_renders_of_another_version_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let (changes, cache) = changes(dir.path());
        cached(&cache, "/10/10/crop/a.jpg", "v1");
        cached(&cache, "/20/20/crop/a.jpg", "v1");
        cached(&cache, "/10/10/crop/b.jpg", "v1");
        assert!(!changes
            .changed("a.jpg", Some("v1"), None, Noticed::Event)
            .unwrap());
        assert_eq!(count(&cache, "a.jpg"), 2);
        assert!(!changes
            .changed("new.jpg", Some("v9"), None, Noticed::Event)
            .unwrap());
        assert!(changes
            .changed("a.jpg", Some("v2"), None, Noticed::Event)
            .unwrap());
        assert_eq!((count(&cache, "a.jpg"), count(&cache, "b.jpg")), (0, 1));
        assert!(changes
            .changed("b.jpg", None, None, Noticed::Watch)
            .unwrap());
        assert_eq!(count(&cache, "b.jpg"), 0);
        // A miss that saw the original change purges whatever is cached.
        cached(&cache, "/10/10/crop/c.jpg", "v1");
        assert!(changes
            .changed("c.jpg", Some("v1"), None, Noticed::Render)
            .unwrap());
        assert_eq!(count(&cache, "c.jpg"), 0);
    }

    /// Renders whose original's version is not known (cached before versions were kept)
    /// are current while the original is older than them: an upgrade's start-up check
    /// does not empty the cache.
    #[test]
    fn renders_of_unknown_versions_go_by_modification_time() {
        let dir = tempfile::tempdir().unwrap();
        let (changes, cache) = changes(dir.path());
        cached(&cache, "/10/10/crop/a.jpg", "");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let older = Some(now_ms - 60_000);
        assert!(!changes
            .changed("a.jpg", Some("v1"), older, Noticed::Scan)
            .unwrap());
        assert_eq!(count(&cache, "a.jpg"), 1);
        // Changed after it was cached, or when is not said: stale.
        assert!(!changes
            .changed("a.jpg", Some("v1"), older, Noticed::Watch)
            .unwrap());
        assert!(changes
            .changed("a.jpg", Some("v1"), None, Noticed::Event)
            .unwrap());
        cached(&cache, "/10/10/crop/a.jpg", "");
        assert!(changes
            .changed("a.jpg", Some("v1"), Some(now_ms + 60_000), Noticed::Scan)
            .unwrap());
    }
}
