//! Renders shared between the nodes of a cluster (`cache.shared`): `renders/{key}/{format}/
//! {w}x{h}/{mode}` in the cluster's folder. A node that misses on disk asks here before
//! rendering; every render a node caches is written here too, in the background.
//!
//! A shared render carries the mode version that made it and the store time its render began.
//! It is taken only if the version is the mode's version now and no purge that matches it was
//! made after that time (with [`MARGIN_MS`] for the nodes' clocks): purges of everything, a
//! mode or a size are remembered (in the cluster's tree, so across restarts) as the time they
//! were applied; purges of a key or a prefix also delete the matching renders here (the key
//! leads the name, so one listing finds them), and are remembered for [`KEY_PURGES_KEPT`]
//! to refuse a render written while the deletion ran.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cache::{Selector, VariantKey};

use super::local::Local;
use super::store::{Meta, Store};

/// The folder of shared renders.
pub const RENDERS: &str = "renders/";

/// Renders begun this close after a matching purge are not trusted (the nodes' clocks agree
/// to about a second).
pub const MARGIN_MS: u64 = 2_000;

/// How long purges of a key or a prefix are remembered.
pub const KEY_PURGES_KEPT: Duration = Duration::from_secs(600);

/// At most this many bytes of renders wait to be written at once; beyond, renders are not
/// shared.
const UPLOAD_BYTES: u64 = 64 << 20;

/// At most this many renders are written at once.
const UPLOADS: usize = 4;

const VERSION: &str = "ross-version";
const RENDERED: &str = "ross-rendered-ms";

/// The purges a shared render is checked against.
#[derive(Debug, Default)]
struct Horizons {
    all: u64,
    modes: HashMap<String, u64>,
    sizes: HashMap<(u32, u32), u64>,
    /// Keys and prefixes (`prefix` true), with when they were purged, oldest first.
    keys: Vec<(String, bool, u64)>,
}

/// The shared renders.
pub struct SharedRenders {
    store: Arc<dyn Store>,
    local: Local,
    horizons: Mutex<Horizons>,
    uploads: Arc<tokio::sync::Semaphore>,
    waiting: Arc<std::sync::atomic::AtomicU64>,
}

/// The name of `variant` in the store, if it has one (a key too long for S3 has none).
pub fn name(variant: &VariantKey) -> Option<String> {
    let name = format!(
        "{RENDERS}{}/{}/{}x{}/{}",
        variant.key.as_str(),
        variant.format.as_str(),
        variant.size.width,
        variant.size.height,
        variant.mode
    );
    (name.len() <= 900).then_some(name)
}

impl SharedRenders {
    /// The shared renders in `store`, with the purges `local` remembers.
    pub fn new(store: Arc<dyn Store>, local: Local) -> SharedRenders {
        let mut horizons = Horizons::default();
        for (what, ms) in local.horizons().unwrap_or_default() {
            match what.split_once('/') {
                Some(("mode", mode)) => {
                    horizons.modes.insert(mode.to_owned(), ms);
                }
                Some(("size", size)) => {
                    if let Ok(s) = size.parse::<ross_config::Size>() {
                        horizons.sizes.insert((s.width, s.height), ms);
                    }
                }
                _ if what == "all" => horizons.all = ms,
                _ => {}
            }
        }
        SharedRenders {
            store,
            local,
            horizons: Mutex::new(horizons),
            uploads: Arc::new(tokio::sync::Semaphore::new(UPLOADS)),
            waiting: Arc::default(),
        }
    }

    /// The store's time now: a render's start, to be given to [`SharedRenders::offer`].
    pub fn now_ms(&self) -> u64 {
        self.store.now_ms()
    }

    /// The latest purge that matches `variant`, as a store time.
    fn horizon(&self, variant: &VariantKey) -> u64 {
        let h = self.horizons.lock().unwrap_or_else(|e| e.into_inner());
        let key = variant.key.as_str();
        let keys = h
            .keys
            .iter()
            .filter(|(k, prefix, _)| {
                if *prefix {
                    key.starts_with(k.as_str())
                } else {
                    k == key
                }
            })
            .map(|(_, _, ms)| *ms)
            .max()
            .unwrap_or(0);
        h.all
            .max(h.modes.get(&variant.mode).copied().unwrap_or(0))
            .max(
                h.sizes
                    .get(&(variant.size.width, variant.size.height))
                    .copied()
                    .unwrap_or(0),
            )
            .max(keys)
    }

    /// A purge was applied on this node: renders it matches are no longer taken, and those of
    /// a key or a prefix are deleted. Blocking (a write to the database).
    pub fn note_purge(&self, selector: &Selector) {
        let now = self.store.now_ms();
        let mut h = self.horizons.lock().unwrap_or_else(|e| e.into_inner());
        let kept = match selector {
            Selector::All => {
                h.all = now;
                Some("all".to_owned())
            }
            Selector::Mode(mode) | Selector::Retired(mode) => {
                h.modes.insert(mode.clone(), now);
                Some(format!("mode/{mode}"))
            }
            Selector::Size { width, height } => {
                h.sizes.insert((*width, *height), now);
                Some(format!("size/{width}x{height}"))
            }
            Selector::Key(key) | Selector::Prefix(key) => {
                let prefix = matches!(selector, Selector::Prefix(_));
                let horizon = now.saturating_sub(KEY_PURGES_KEPT.as_millis() as u64);
                h.keys.retain(|(_, _, ms)| *ms >= horizon);
                h.keys.push((key.clone(), prefix, now));
                let folder = if prefix {
                    format!("{RENDERS}{key}")
                } else {
                    format!("{RENDERS}{key}/")
                };
                if let Err(e) = self.local.queue_delete(&folder) {
                    tracing::warn!(error = %e, "cannot keep a deletion of shared renders");
                }
                None
            }
            // The version is checked on every shared render.
            Selector::OtherVersions { .. } => None,
        };
        drop(h);
        if let Some(what) = kept {
            if let Err(e) = self.local.set_horizon(&what, now) {
                tracing::warn!(error = %e, "cannot keep a purge of shared renders");
            }
        }
    }

    /// The shared render of `variant` by `version` of its mode, if there is one to trust.
    pub async fn fetch(&self, variant: &VariantKey, version: &str) -> Option<Vec<u8>> {
        let name = name(variant)?;
        let (body, meta) = match self.store.get_with(&name).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::debug!(error = %e, "shared render not read");
                return None;
            }
        };
        let rendered: u64 = meta.get(RENDERED)?.parse().ok()?;
        let same_version = meta.get(VERSION).is_some_and(|v| v == version);
        (same_version && rendered > self.horizon(variant) + MARGIN_MS).then_some(body)
    }

    /// Writes `body`, `variant` rendered by `version` from a render begun at `began_ms`, in
    /// the background; dropped when too much waits already, or if a matching purge came since.
    pub fn offer(
        self: &Arc<Self>,
        variant: VariantKey,
        version: String,
        body: bytes::Bytes,
        began_ms: u64,
    ) {
        use std::sync::atomic::Ordering;
        let Some(name) = name(&variant) else { return };
        let size = body.len() as u64;
        if self.waiting.fetch_add(size, Ordering::SeqCst) + size > UPLOAD_BYTES {
            self.waiting.fetch_sub(size, Ordering::SeqCst);
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _turn = this.uploads.clone().acquire_owned().await;
            if began_ms > this.horizon(&variant) {
                let meta: Meta = [
                    (VERSION.to_owned(), version),
                    (RENDERED.to_owned(), began_ms.to_string()),
                ]
                .into();
                match this.store.put_with(&name, body.to_vec(), meta).await {
                    // A purge noted while it was written may have listed the folder before
                    // it landed: it goes (a purge noted after this is deleted by the purge).
                    Ok(()) if began_ms <= this.horizon(&variant) => {
                        if let Err(e) = this.store.delete(std::slice::from_ref(&name)).await {
                            tracing::warn!(error = %e, "a render purged while shared stays");
                        }
                    }
                    Ok(()) => {}
                    Err(e) => tracing::debug!(error = %e, "render not shared"),
                }
            }
            this.waiting.fetch_sub(size, Ordering::SeqCst);
        });
    }

    /// Deletes the shared renders of the key and prefix purges kept, oldest first (from the
    /// cluster thread); stops at the first failure, to try again at the next round.
    pub async fn run_deletions(&self) -> Result<(), super::StoreError> {
        for (seq, folder) in self
            .local
            .deletions()
            .map_err(|e| super::StoreError(e.to_string()))?
        {
            let names: Vec<String> = self
                .store
                .list(&folder, "")
                .await?
                .into_iter()
                .map(|n| format!("{folder}{n}"))
                .collect();
            if !names.is_empty() {
                self.store.delete(&names).await?;
            }
            self.local
                .deleted(seq)
                .map_err(|e| super::StoreError(e.to_string()))?;
        }
        Ok(())
    }
}
