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
//!   at `cache.max_age` (an explicit purge by key reaches them).

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
            // Sent to the CDNs once the files are gone here (when `_held` is dropped).
            let _held = self.cdns.purging(&selector);
            let purged = self
                .cache
                .purge(selector.clone())
                .map_err(|e| crate::admin::ops::write_failed("purge failed", e))?;
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
}

impl SourceChanges {
    /// Changes purge through `purger`, reading `cache`'s index.
    pub fn new(purger: Arc<Purger>, cache: Cache, metrics: Arc<Metrics>) -> SourceChanges {
        SourceChanges {
            purger,
            cache,
            metrics,
        }
    }

    /// The original of `key` is now at version `now` (`None`: removed, or its version not
    /// known). Purges its renders everywhere unless every one cached here is of that version
    /// (or none is cached); `Noticed::Render` always purges (the renderer saw the original
    /// change under it). Whether it purged. Blocking.
    pub fn changed(
        &self,
        key: &str,
        now: Option<&str>,
        noticed: Noticed,
    ) -> Result<bool, AppError> {
        let selector = Selector::Key(key.to_owned());
        let stale = noticed == Noticed::Render || {
            let entries = self
                .cache
                .entries(&selector, VARIANTS_READ)
                .map_err(|e| crate::admin::ops::store_failed("cannot read the index", e))?;
            entries
                .iter()
                .any(|(_, meta)| now.is_none_or(|v| meta.source != v))
        };
        // The start-up check looks at every cached key: only changes count.
        if stale || noticed != Noticed::Scan {
            self.metrics.source_change(noticed.label(), stale);
        }
        if !stale {
            tracing::debug!(
                key,
                noticed = noticed.label(),
                "original changed: renders current"
            );
            return Ok(false);
        }
        let purged = self.purger.purge(selector)?;
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
