//! Purges sent to the CDNs and caches in front (`[cdn.NAME]`): every purge ross does (the
//! admin page and API, a mode's new version, a changed original) is also sent to each of
//! them, by surrogate key ([`crate::surrogate`]) or, for CloudFront, by path.
//!
//! A purge is kept in the database ([`queue`]) before the local purge runs, and sent by a
//! thread of its own once the local purge is done ([`Held`]: were the CDN purged first, a
//! request between the two would fetch the old render from nginx's disk and the CDN keep it
//! again): it never delays the local purge, survives a restart, and is tried again (after
//! 1 s, doubling up to 5 minutes) until its CDN accepts it. Purges waiting for one CDN
//! are sent together (their tags in as few requests as its API takes).

pub mod queue;
pub mod targets;

use std::collections::BTreeSet;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ross_config::{CdnSettings, CdnTarget};

use crate::cache::{Selector, VariantKey};
use crate::db::{Database, DbError};
use crate::surrogate;
pub use queue::{Entry, Pending, Request};

/// The longest wait between tries.
const MAX_WAIT_MS: u64 = 5 * 60 * 1_000;

/// Purges of one CDN sent in one go, at most.
const BATCH: usize = 500;

/// Paths of one CloudFront invalidation, at most (CloudFront allows 3,000 in progress).
pub const PATHS_PER_INVALIDATION: usize = 1_000;

/// The wait after `failures` failed tries: 1 s, doubling, up to 5 minutes.
pub fn backoff_ms(failures: u32) -> u64 {
    (1_000u64 << failures.saturating_sub(1).min(20)).min(MAX_WAIT_MS)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a CDN said last, for the admin pages.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Purges it accepted since start.
    pub sent: u64,
    /// Tries that failed since start.
    pub failures: u64,
    /// The last failure, if the last try failed.
    pub failing: Option<String>,
}

/// The CDNs of the settings, their queue and the thread that sends it.
pub struct Cdns {
    settings: Vec<CdnSettings>,
    queue: queue::Queue,
    wake: Mutex<Option<mpsc::Sender<()>>>,
    /// Purges kept but not to be sent yet: their local purge is still running.
    held: Mutex<BTreeSet<u64>>,
    health: Mutex<Vec<Health>>,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl Cdns {
    /// The CDNs `settings` names, with their queue in `db`; `None` when there are none.
    /// Purges kept for CDNs no longer named are forgotten.
    pub fn open(
        settings: &[CdnSettings],
        db: &Database,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Result<Option<Arc<Cdns>>, DbError> {
        let queue = queue::Queue::open(db)?;
        let names: Vec<&str> = settings.iter().map(|c| c.name.as_str()).collect();
        match queue.forget_others(&names) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                purges = n,
                "purges kept for CDNs no longer configured forgotten"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot forget the purges of removed CDNs"),
        }
        if settings.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Cdns {
            settings: settings.to_vec(),
            queue,
            wake: Mutex::new(None),
            held: Mutex::default(),
            health: Mutex::new(vec![Health::default(); settings.len()]),
            metrics,
        })))
    }

    /// Whether a CDN takes paths (CloudFront): then purges name their paths too.
    pub fn wants_paths(&self) -> bool {
        self.settings
            .iter()
            .any(|c| matches!(c.target, CdnTarget::CloudFront { .. }))
    }

    /// Keeps `request` for every CDN, durably, to be sent once the returned hold is dropped.
    /// Blocking (one flushed write): call it before the local purge, and drop the hold once
    /// that is done. (After a crash nothing is held: the local purge's journal finishes it at
    /// start-up, before the sender starts.)
    pub fn purge(self: &Arc<Self>, request: &Request) -> sled::Result<Held> {
        let names: Vec<&str> = self.settings.iter().map(|c| c.name.as_str()).collect();
        // Kept and held under the lock the sender reads the queue under: it never sees the
        // purge before it is held.
        let mut held = self.lock_held();
        let id = self.queue.push(&names, request, now_ms())?;
        if let Some(id) = id {
            held.insert(id);
        }
        drop(held);
        Ok(Held {
            cdns: Some(self.clone()),
            id,
        })
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        if let Some(wake) = &*self.wake.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = wake.send(());
        }
    }

    /// Every purge waiting, by CDN, oldest first.
    pub fn pending(&self) -> Vec<(String, Vec<Entry>)> {
        self.settings
            .iter()
            .map(|c| (c.name.clone(), self.queue.of(&c.name).unwrap_or_default()))
            .collect()
    }

    /// How each CDN has answered since start, in the settings' order, with its name and kind.
    pub fn health(&self) -> Vec<(String, &'static str, Health)> {
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        self.settings
            .iter()
            .zip(health.iter())
            .map(|(c, h)| (c.name.clone(), c.target.kind(), h.clone()))
            .collect()
    }

    /// Starts the thread that sends the queue; it ends once these CDNs are dropped.
    pub fn spawn(self: &Arc<Self>) {
        let (send, receive) = mpsc::channel();
        *self.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(send);
        let cdns: Weak<Cdns> = Arc::downgrade(self);
        let started = std::thread::Builder::new()
            .name("ross-cdn".into())
            .spawn(move || {
                let agent = targets::agent();
                loop {
                    let Some(this) = cdns.upgrade() else { break };
                    let next = this.round(&agent);
                    drop(this);
                    let wait = next.saturating_sub(now_ms()).max(10);
                    match receive.recv_timeout(Duration::from_millis(wait)) {
                        Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the CDN purge thread: purges wait in the queue");
        }
    }

    /// Sends what is due to each CDN; returns when the next purge falls due.
    fn round(&self, agent: &ureq::Agent) -> u64 {
        let now = now_ms();
        let mut next = now + 60_000;
        for (i, cdn) in self.settings.iter().enumerate() {
            // Read under the lock purges are kept and held under (see `purge`), and only
            // read: the lock is not kept while the CDN is asked.
            let (entries, held) = {
                let held = self.lock_held();
                (self.queue.of(&cdn.name), held.clone())
            };
            let entries = match entries {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::error!(cdn = %cdn.name, error = %e, "cannot read the CDN purge queue");
                    continue;
                }
            };
            let waiting = entries.len() as u64;
            let (due, later): (Vec<Entry>, Vec<Entry>) = entries
                .into_iter()
                .filter(|e| !held.contains(&e.id))
                .partition(|e| e.pending.next_ms <= now);
            for entry in &later {
                next = next.min(entry.pending.next_ms);
            }
            let due: Vec<Entry> = due.into_iter().take(BATCH).collect();
            if due.is_empty() {
                self.metrics.cdn_pending(&cdn.name, waiting);
                continue;
            }
            let outcome = send(agent, &cdn.target, &due);
            let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                Ok(()) => {
                    let ids: Vec<u64> = due.iter().map(|e| e.id).collect();
                    if let Err(e) = self.queue.sent(&cdn.name, &ids) {
                        tracing::error!(cdn = %cdn.name, error = %e, "cannot note purges sent");
                    }
                    health[i].sent += due.len() as u64;
                    health[i].failing = None;
                    self.metrics.cdn_purges(&cdn.name, true, due.len() as u64);
                    self.metrics
                        .cdn_pending(&cdn.name, waiting.saturating_sub(due.len() as u64));
                    tracing::info!(
                        cdn = %cdn.name, purges = due.len(),
                        what = %due.iter().map(|e| e.pending.request.what.as_str()).collect::<Vec<_>>().join(", "),
                        "purges sent to the CDN"
                    );
                    // More may wait beyond this batch.
                    next = now;
                }
                Err(error) => {
                    // The queue first: what the admin API shows failing has its error noted.
                    if let Err(e) = self.queue.failed(&due, &error, now, backoff_ms) {
                        tracing::error!(cdn = %cdn.name, error = %e, "cannot note a failed purge");
                    }
                    health[i].failures += 1;
                    health[i].failing = Some(error.clone());
                    self.metrics.cdn_purges(&cdn.name, false, 1);
                    self.metrics.cdn_pending(&cdn.name, waiting);
                    let failures = due.iter().map(|e| e.pending.failures).max().unwrap_or(0) + 1;
                    tracing::warn!(
                        cdn = %cdn.name, purges = due.len(), error = %error,
                        retry_in_ms = backoff_ms(failures),
                        "the CDN did not take purges: they are tried again"
                    );
                    next = next.min(now + backoff_ms(failures));
                }
            }
        }
        next
    }
}

/// A purge kept for the CDNs and held back while its local purge runs: sent once dropped.
#[must_use = "the purge is sent to the CDNs once this is dropped"]
pub struct Held {
    cdns: Option<Arc<Cdns>>,
    id: Option<u64>,
}

impl Held {
    /// Nothing held (no CDN, or the purge could not be kept).
    pub fn none() -> Held {
        Held {
            cdns: None,
            id: None,
        }
    }
}

impl Held {
    /// Sends the purge once the cache's purge by `selector`, running in the background (or
    /// to be retried), is done, or after `limit` at most (an hour: a purge that keeps failing
    /// does not keep the CDNs from hearing of it for ever). A thread waits for it.
    pub fn release_when_done(
        self,
        cache: crate::cache::Cache,
        selector: Selector,
        limit: Duration,
    ) {
        if self.id.is_none() {
            return;
        }
        let started = std::time::Instant::now();
        let waiting = std::thread::Builder::new()
            .name("ross-cdn-hold".into())
            .spawn(move || {
                while cache.is_purging(&selector) && started.elapsed() < limit {
                    std::thread::sleep(Duration::from_millis(20));
                }
                drop(self);
            });
        if let Err(e) = waiting {
            tracing::warn!(error = %e, "cannot wait for a purge: the CDNs are told now");
        }
    }
}

/// How long a CDN purge waits for its local purge, at most.
pub const HOLD_LIMIT: Duration = Duration::from_secs(3600);

impl Drop for Held {
    fn drop(&mut self) {
        if let (Some(cdns), Some(id)) = (&self.cdns, self.id) {
            cdns.lock_held().remove(&id);
            cdns.wake();
        }
    }
}

/// Sends `entries` to `target`: their tags (each once) over HTTP, or their paths to
/// CloudFront.
fn send(agent: &ureq::Agent, target: &CdnTarget, entries: &[Entry]) -> Result<(), String> {
    match target {
        CdnTarget::CloudFront { .. } => {
            let mut seen = BTreeSet::new();
            let paths: Vec<String> = entries
                .iter()
                .flat_map(|e| e.pending.request.paths.iter())
                .filter(|p| seen.insert(p.as_str()))
                .cloned()
                .collect();
            let reference = format!(
                "ross-{}-{}",
                entries.first().map_or(0, |e| e.id),
                entries.len()
            );
            targets::cloudfront::invalidate(target, &paths, &reference)
        }
        _ => {
            let mut seen = BTreeSet::new();
            let tags: Vec<String> = entries
                .iter()
                .flat_map(|e| e.pending.request.tags.iter())
                .filter(|t| seen.insert(t.as_str()))
                .cloned()
                .collect();
            targets::send_http(agent, target, &tags)
        }
    }
}

/// Tells the CDNs of the purges made on this node, before they run. Cheap to clone; without
/// CDNs it does nothing.
#[derive(Clone)]
pub struct Notifier {
    cdns: Option<Arc<Cdns>>,
    cache: crate::cache::Cache,
    whitelist: Arc<crate::whitelist::Whitelist>,
}

/// Variants read to work out a purge's keys and paths, at most.
const VARIANTS_READ: usize = 10_000;

impl Notifier {
    /// Purges made with `cache` and `whitelist` go to `cdns`, if any.
    pub fn new(
        cdns: Option<Arc<Cdns>>,
        cache: crate::cache::Cache,
        whitelist: Arc<crate::whitelist::Whitelist>,
    ) -> Notifier {
        Notifier {
            cdns,
            cache,
            whitelist,
        }
    }

    /// The CDNs, if any.
    pub fn cdns(&self) -> Option<&Arc<Cdns>> {
        self.cdns.as_ref()
    }

    /// Keeps a purge by `selector` for every CDN: call it before the local purge (which
    /// removes what it reads), and drop what it returns once the local purge is done (the
    /// CDNs are sent it then). Blocking. A failure to keep it is logged: the local purge goes
    /// on regardless.
    pub fn purging(&self, selector: &Selector) -> Held {
        let Some(cdns) = &self.cdns else {
            return Held::none();
        };
        let paths = cdns.wants_paths();
        let variants = if paths || matches!(selector, Selector::Prefix(_)) {
            self.cache
                .variants(selector, VARIANTS_READ)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read the variants a purge names");
                    Vec::new()
                })
        } else {
            Vec::new()
        };
        let sizes: Vec<ross_config::Size> =
            self.whitelist.snapshot().sizes.iter().copied().collect();
        let request = request(selector, &variants, &sizes, paths);
        cdns.purge(&request).unwrap_or_else(|e| {
            tracing::error!(
                what = %request.what, error = %e,
                "cannot keep a purge for the CDNs: they keep serving it until it expires"
            );
            Held::none()
        })
    }
}

/// CloudFront allows this many wildcard paths in progress at once: a purge that would need
/// more invalidates everything instead.
pub const WILDCARDS: usize = 15;

/// The purge `selector` names, as CDNs take it. `variants` are the cached variants it
/// purges (read before the local purge) and `sizes` the whitelist's: a prefix is sent as the
/// tags of its keys, and CloudFront's paths are those of the sizes and modes concerned.
/// `paths`: whether paths are wanted at all (a CloudFront is configured).
pub fn request(
    selector: &Selector,
    variants: &[VariantKey],
    sizes: &[ross_config::Size],
    paths: bool,
) -> Request {
    let keys: BTreeSet<&str> = variants.iter().map(|v| v.key.as_str()).collect();
    let tags = surrogate::purge_tags(selector)
        .unwrap_or_else(|| keys.iter().map(|k| surrogate::key_tag(k)).collect());
    let what = selector.describe();
    if !paths {
        return Request {
            tags,
            paths: Vec::new(),
            what,
        };
    }
    let sized = |v: &VariantKey| format!("/{}/{}/{}", v.size.width, v.size.height, v.mode);
    let mut paths: BTreeSet<String> = BTreeSet::new();
    match selector {
        Selector::All => {
            paths.insert("/*".into());
        }
        Selector::Key(key) => {
            paths.insert(format!("/{key}"));
            paths.extend(variants.iter().map(|v| format!("{}/{key}", sized(v))));
        }
        Selector::Prefix(prefix) => {
            paths.insert(format!("/{prefix}*"));
            paths.extend(variants.iter().map(|v| format!("{}/{prefix}*", sized(v))));
        }
        Selector::Mode(mode) | Selector::Retired(mode) | Selector::OtherVersions { mode, .. } => {
            paths.extend(variants.iter().map(|v| format!("{}/*", sized(v))));
            paths.extend(
                sizes
                    .iter()
                    .map(|s| format!("/{}/{}/{mode}/*", s.width, s.height)),
            );
        }
        Selector::Size { width, height } => {
            paths.insert(format!("/{width}/{height}/*"));
        }
    }
    let wildcards = paths.iter().filter(|p| p.ends_with('*')).count();
    if paths.is_empty() || wildcards > WILDCARDS || paths.len() > PATHS_PER_INVALIDATION {
        paths = BTreeSet::from(["/*".to_owned()]);
    }
    Request {
        tags,
        paths: paths.into_iter().collect(),
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cache::layout::test_variant as variant;

    #[test]
    fn purges_become_tags_and_cloudfront_paths() {
        let cached = [
            variant("/200/250/crop/shoes/red.jpg"),
            variant("/72/72/crop/shoes/red.jpg"),
            variant("/72/72/resize/shoes/blue.jpg"),
        ];
        let key = request(
            &Selector::Key("shoes/red.jpg".into()),
            &cached[..2],
            &[],
            true,
        );
        assert_eq!(key.tags, ["k-shoes/red.jpg"]);
        assert_eq!(
            key.paths,
            [
                "/200/250/crop/shoes/red.jpg",
                "/72/72/crop/shoes/red.jpg",
                "/shoes/red.jpg"
            ]
        );
        let prefix = request(&Selector::Prefix("shoes/".into()), &cached, &[], true);
        assert_eq!(prefix.tags, ["k-shoes/blue.jpg", "k-shoes/red.jpg"]);
        assert!(prefix.paths.contains(&"/72/72/resize/shoes/*".to_owned()));
        let sizes = [ross_config::Size {
            width: 300,
            height: 300,
        }];
        let mode = request(&Selector::Mode("crop".into()), &cached[..2], &sizes, true);
        assert_eq!(mode.tags, ["m-crop"]);
        assert_eq!(
            mode.paths,
            ["/200/250/crop/*", "/300/300/crop/*", "/72/72/crop/*"]
        );
        assert!(request(&Selector::All, &[], &[], false).paths.is_empty());
        // More wildcards than CloudFront takes at once: everything.
        let many: Vec<ross_config::Size> = (1..=20)
            .map(|w| ross_config::Size {
                width: w,
                height: w,
            })
            .collect();
        let wide = request(&Selector::Mode("crop".into()), &[], &many, true);
        assert_eq!(wide.paths, ["/*"]);
    }

    #[test]
    fn waits_double_up_to_five_minutes() {
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(9), 256_000);
        assert_eq!(backoff_ms(10), MAX_WAIT_MS);
        assert_eq!(backoff_ms(1_000), MAX_WAIT_MS);
    }
}
