//! The render path of one variant, in the SPEC's stages: cache check, fetch, decode, render,
//! encode, cache write. A miss is admitted by the [`RenderGate`] before anything is fetched,
//! its CPU work (decode, render, encode) runs in a render worker process while the miss holds
//! a render slot, and identical concurrent misses share one run through [`SingleFlight`].

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use ross_config::{Limits, Settings};
use tokio::sync::OwnedSemaphorePermit;

use crate::cache::{
    Cache, CachedFile, OncePerMinute, OutputFormat, PutOutcome, VariantKey, WriteTicket,
};
use crate::changes::{Noticed, SourceChanges};
use crate::error::{AppError, ErrorCode};
use crate::gate::RenderGate;
use crate::plugins::{LoadedMode, ModeRef, ModeRegistry};
use crate::recent::{Recent, ORIGINALS_SHARE};
use crate::reduced::{NewCopy, ReducedTier, StoredCopy};
use crate::render::report_timings;
use crate::request::{RenderRequest, SourceKey};
use crate::shapes::Shapes;
use crate::singleflight::{FlightPanicked, SingleFlight};
use crate::source::{Source, SourceError, SourceObject};
use crate::telemetry::{stage, Count, Metrics};
use crate::whitelist::Whitelist;
use crate::worker::pool::{Failure, JobFiles, JobOutcome};
use crate::worker::protocol::{RenderJob, Sent, Stage};
use crate::worker::WorkerPool;

/// Whether a response came from the cache or from a render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the disk cache.
    Hit,
    /// Rendered for this request (or for an identical one in flight).
    Miss,
}

/// An encoded variant ready to send.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The JPEG.
    pub body: Bytes,
    /// Modification time of the cached file (or of the render, if it could not be cached).
    pub modified: SystemTime,
    /// Hit or miss.
    pub cache: CacheStatus,
}

/// A source epoch, and the version of the original the source vouched for in it (a stat, a
/// `HeadObject`), if it was asked: a reduced copy is used only when it is of that version.
#[derive(Debug, Clone)]
struct Verified {
    epoch: u64,
    version: Option<String>,
}

/// What a render made.
struct Made {
    /// The encoded image.
    encoded: Vec<u8>,
    /// The reduced copy the worker wrote of its decode, and its length, if it was asked for one.
    copy: Option<(Writing, u64)>,
    /// The version of the original whose reduced copy it was rendered from, if it was.
    from_copy: Option<String>,
}

/// What a miss renders from.
enum Found {
    /// The pixels a worker holds.
    Held,
    /// The original's bytes.
    Object(SourceObject),
    /// A reduced copy of the original's vouched version is stored: it is opened once the
    /// render slot is held, for the worker to read.
    Stored,
}

/// A reduced copy's file being written by a worker, and its turn among those.
struct Writing {
    new: NewCopy,
    _turn: OwnedSemaphorePermit,
}

/// The render path: the cache, merged misses, and what a miss needs.
pub struct Pipeline {
    shared: Arc<Shared>,
    flights: SingleFlight<String, Result<Rendered, AppError>>,
}

/// What a miss needs; shared with the task that runs it (a miss outlives its first caller).
struct Shared {
    source: Arc<dyn Source>,
    modes: Arc<ModeRegistry>,
    cache: Cache,
    gate: RenderGate,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// The source key of the latest render, for examples on the admin pages.
    last_rendered: arc_swap::ArcSwapOption<String>,
    /// The live whitelist: a decode is made for the largest of the sizes asked for lately
    /// that it allows.
    whitelist: Arc<Whitelist>,
    /// The sizes of modes asked for lately.
    shapes: Shapes,
    /// Originals fetched in the last seconds.
    recent: Recent,
    /// The render workers.
    workers: Arc<WorkerPool>,
    /// The renders shared between the nodes of a cluster, if they are.
    renders: Option<Arc<crate::cluster::SharedRenders>>,
    /// Where a replaced original found by a miss is purged, if anywhere.
    changes: Option<Arc<SourceChanges>>,
    /// Checks of kept originals' versions in progress, by key and epoch: one at a time.
    checks: SingleFlight<String, Result<Verified, AppError>>,
    /// Sources that failed to decode, by key, with the version that failed: a costly failure
    /// is paid once, not on every request for it, and a request for it costs a look at the
    /// source's version, not a fetch.
    failures: moka::sync::Cache<String, (Option<String>, AppError)>,
    /// Reduced copies' files being written, and waiting to be kept.
    copy_writes: Arc<tokio::sync::Semaphore>,
}

/// Reduced copies' files being kept (after their render) at once, at most, besides one per
/// render slot: each may take up to the largest copy's room on the disk before the tier
/// counts it.
const COPY_WRITES_KEPT: usize = 2;

/// How many failed sources are remembered, and for how long: long enough to absorb a burst
/// of requests for one bad file, short enough that a fixed file is served soon.
const FAILURES_KEPT: u64 = 10_000;
const FAILURE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl Pipeline {
    /// A pipeline reading from `source`, rendering with the modes of `modes` and caching in
    /// `cache`.
    pub fn new(
        source: Arc<dyn Source>,
        modes: Arc<ModeRegistry>,
        workers: Arc<WorkerPool>,
        cache: Cache,
        whitelist: Arc<Whitelist>,
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limits = settings.limits.clone();
        Pipeline {
            shared: Arc::new(Shared {
                source,
                modes,
                gate: RenderGate::new(limits.max_concurrent_renders, limits.max_queue),
                cache,
                limits,
                metrics,
                last_rendered: Default::default(),
                whitelist,
                shapes: Shapes::default(),
                recent: Recent::new(settings.cache.decoded_bytes / ORIGINALS_SHARE),
                workers,
                renders: None,
                changes: None,
                checks: SingleFlight::default(),
                failures: moka::sync::Cache::builder()
                    .max_capacity(FAILURES_KEPT)
                    .time_to_live(FAILURE_TTL)
                    .build(),
                copy_writes: Arc::new(tokio::sync::Semaphore::new(
                    settings.limits.max_concurrent_renders.max(1) + COPY_WRITES_KEPT,
                )),
            }),
            flights: SingleFlight::default(),
        }
    }

    /// The same pipeline, asking `renders` (shared between the nodes of a cluster) before
    /// rendering, and sharing its renders there.
    pub fn sharing(mut self, renders: Option<Arc<crate::cluster::SharedRenders>>) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("not yet shared");
        shared.renders = renders;
        self
    }

    /// The same pipeline, purging through `changes` an original it finds replaced before
    /// reusing its bytes or pixels from moments ago.
    pub fn noticing(mut self, changes: Arc<SourceChanges>) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("not yet shared");
        shared.changes = Some(changes);
        self
    }

    /// The source of originals.
    pub fn source(&self) -> &dyn Source {
        self.shared.source.as_ref()
    }

    /// The registry it reports to.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The source key of the latest render, for examples on the admin pages.
    pub fn last_rendered_key(&self) -> Option<Arc<String>> {
        self.shared.last_rendered.load_full()
    }

    /// The cache's purges so far: taken when a request begins, so that a render is not cached
    /// if a purge that matches it (or a whitelist change) started while it was being made.
    pub fn ticket(&self) -> WriteTicket {
        self.shared.cache.ticket()
    }

    /// Renders in progress now (holding a render slot).
    pub fn renders_in_flight(&self) -> usize {
        self.shared.gate.running()
    }

    /// Misses admitted and waiting: for a turn to fetch, for the fetch, or for a slot.
    pub fn renders_waiting(&self) -> usize {
        self.shared.gate.waiting()
    }

    /// The render workers.
    pub fn workers(&self) -> &WorkerPool {
        &self.shared.workers
    }

    /// Bytes of the originals kept from the last minute (their pixels are in the workers).
    pub fn recent_bytes(&self) -> u64 {
        self.shared.recent.held_bytes()
    }

    /// The variant for `req` rendered with `mode`: from the cache when there, else rendered,
    /// cached (unless a purge began after `ticket`) and returned. Waits at most
    /// `limits.render_timeout`; a render still running then finishes (and is cached) without
    /// this caller.
    pub async fn variant(
        &self,
        req: &RenderRequest,
        format: OutputFormat,
        mode: ModeRef,
        ticket: WriteTicket,
    ) -> Result<Rendered, AppError> {
        let shared = &self.shared;
        let variant = VariantKey::new(req, format);
        let started = Instant::now();
        let cached = shared.cache.get(&variant).await;
        shared.metrics.stage(stage::CACHE_CHECK, started);
        let result = match cached {
            Some(hit) => Ok(Rendered::hit(hit)),
            None => match shared.current_epoch(&variant).await {
                Err(e) => Err(e),
                Ok(verified) => {
                    let epoch = verified.epoch;
                    let deadline = tokio::time::Instant::now() + shared.limits.render_timeout;
                    // Keyed by the mode's load too: a request that arrives after a plugin was
                    // replaced never waits for a render by the old version; and by the source
                    // epoch, so one that arrives after its original was purged never waits for a
                    // render of the one before.
                    let flight = format!("{variant}@{}#{epoch}", mode.id);
                    let miss = shared.clone();
                    let work = move || miss.miss(variant, mode, ticket, verified, deadline);
                    match tokio::time::timeout_at(deadline, self.flights.run(flight, work)).await {
                        Ok(Ok(result)) => result,
                        Ok(Err(FlightPanicked)) => Err(AppError::new(
                            ErrorCode::RenderFailed,
                            "The image could not be rendered.",
                        )
                        .detailed("the render's task panicked (logged)")),
                        Err(_) => Err(AppError::of(ErrorCode::RenderTimeout)),
                    }
                }
            },
        };
        match &result {
            Ok(Rendered {
                cache: CacheStatus::Hit,
                ..
            }) => shared.metrics.count(Count::Hit),
            Ok(_) => shared.metrics.count(Count::Miss),
            Err(_) => {}
        }
        result
    }
}

impl Rendered {
    fn hit(file: CachedFile) -> Rendered {
        Rendered {
            body: file.bytes,
            modified: file.modified,
            cache: CacheStatus::Hit,
        }
    }
}

impl Shared {
    /// The source epoch a miss of `variant` renders in, and the version of its original the
    /// source vouched for, if it was asked. When bytes or pixels of its original from moments
    /// ago, or a reduced copy of it, would be reused, the source is asked first whether it
    /// changed since (a stat, a `HeadObject`; once for all the misses of the key arriving
    /// together): a replaced (or removed) original is purged as a changed one, which moves the
    /// epoch on and drops its copy, so nothing read before is used. A source that does not
    /// answer leaves the bytes and pixels be (the fetch, if any, will tell), but no copy is
    /// used unchecked; a purge that fails fails the miss.
    async fn current_epoch(self: &Arc<Self>, variant: &VariantKey) -> Result<Verified, AppError> {
        let key = variant.key.as_str();
        let epoch = self.cache.source_epoch(key);
        let unchecked = Verified {
            epoch,
            version: None,
        };
        if self.changes.is_none() {
            return Ok(unchecked);
        }
        let kept = self.recent.object(key, epoch);
        let copy = self.cache.reduced().and_then(|tier| tier.version(key));
        if kept.is_none() && !self.workers.holds(key, epoch) && copy.is_none() {
            return Ok(unchecked);
        }
        // The version of what would be reused: the kept bytes', else the one noted when the
        // pixels' original was fetched (noted again at each render from them), else the
        // copy's.
        let Some(seen) = kept
            .and_then(|o| o.version)
            .or_else(|| self.recent.version(key, epoch))
            .or(copy)
        else {
            return Ok(unchecked);
        };
        let shared = self.clone();
        let source_key = variant.key.clone();
        let check = move || async move { shared.verify(source_key, epoch, seen).await };
        self.checks
            .run(format!("{key}#{epoch}"), check)
            .await
            .unwrap_or(Ok(unchecked))
    }

    /// [`Shared::current_epoch`]'s question to the source.
    async fn verify(&self, key: SourceKey, epoch: u64, seen: String) -> Result<Verified, AppError> {
        let now = match self.source.version(&key).await {
            Ok(Some(now)) if now == seen => {
                return Ok(Verified {
                    epoch,
                    version: Some(seen),
                })
            }
            Ok(now) => now,
            Err(SourceError::NotFound { .. }) => None,
            Err(_) => {
                return Ok(Verified {
                    epoch,
                    version: None,
                })
            }
        };
        let Some(changes) = self.changes.clone() else {
            return Ok(Verified {
                epoch,
                version: None,
            });
        };
        let owned = key.as_str().to_owned();
        let purged = tokio::task::spawn_blocking(move || {
            changes.changed(&owned, now.as_deref(), None, Noticed::Render)
        })
        .await;
        match purged {
            Ok(Ok(_)) => Ok(Verified {
                epoch: self.cache.source_epoch(key.as_str()),
                version: None,
            }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(
                AppError::new(ErrorCode::StoreFailed, "The image could not be stored.")
                    .detailed(format_args!("the purge of a replaced original failed: {e}")),
            ),
        }
    }

    /// One miss, run once for every request waiting on it, in its steps: admitted, the
    /// original found (or a remembered failure), a render slot, the render on a worker, the
    /// cache write.
    async fn miss(
        self: Arc<Self>,
        variant: VariantKey,
        mode: ModeRef,
        ticket: WriteTicket,
        verified: Verified,
        deadline: tokio::time::Instant,
    ) -> Result<Rendered, AppError> {
        if let Some(quarantine) = mode.quarantine() {
            return Err(AppError::mode_quarantined(&mode.name, &quarantine.reason));
        }
        let epoch = verified.epoch;
        // Admitted before anything is fetched: a refused request costs no source read.
        let _admission = self.gate.admit().map_err(|_| AppError::overloaded())?;
        let key = variant.key.as_str().to_owned();
        // Another node may have rendered it: taken from the cluster's shared renders.
        let began = self.renders.as_ref().map(|r| r.now_ms());
        if let Some(renders) = &self.renders {
            if let Some(body) = renders.fetch(&variant, &mode.version).await {
                self.metrics.count(Count::SharedHit);
                // Which version of the original it was made from is not known here.
                let (rendered, _) = self.store(variant, ticket, &mode, "", body).await?;
                return Ok(rendered);
            }
        }
        let (found, turn) = self.find_original(&variant, &verified, deadline).await?;
        let slot = tokio::time::timeout_at(deadline, self.gate.render_slot())
            .await
            .map_err(|_| AppError::of(ErrorCode::RenderTimeout))?;
        // A flight that ended as this one began may have cached the variant.
        if let Some(hit) = self.cache.get(&variant).await {
            return Ok(Rendered::hit(hit));
        }
        let (outcome, original) = self.render(&variant, &mode, &verified, found).await;
        drop(slot);
        drop(turn);
        let Made {
            encoded,
            copy,
            from_copy,
        } = match outcome {
            Ok(done) => done,
            Err(e) => {
                if e.code.blames_the_source() {
                    self.remember_failure(&key, original.as_ref(), &e);
                }
                return Err(e);
            }
        };
        // The version of the original it was rendered from: the one sent, or its copy's, or
        // the one whose pixels the worker held.
        let source = original
            .as_ref()
            .and_then(|o| o.version.clone())
            .or(from_copy)
            .or_else(|| self.recent.version(&key, epoch))
            .unwrap_or_default();
        // Noted again: it vouches for the pixels as long as they are used.
        if !source.is_empty() {
            self.recent.note_version(&key, epoch, Some(&source));
        }
        if let (Some((written, len)), Some(tier)) = (copy, self.cache.reduced()) {
            self.keep_copy(tier.clone(), written, &key, &source, epoch, len);
        }
        // Kept once it rendered: a bad file is fetched again (to see it fixed).
        if let Some(object) = original {
            self.recent.keep_object(&key, epoch, object);
        }
        let sharing = self
            .renders
            .clone()
            .zip(began)
            .map(|(r, b)| (r, b, variant.clone()));
        let (rendered, stored) = self.store(variant, ticket, &mode, &source, encoded).await?;
        if let (Some((renders, began, variant)), true) = (sharing, stored) {
            renders.offer(variant, mode.version.clone(), rendered.body.clone(), began);
        }
        Ok(rendered)
    }

    /// Keeps the reduced copy of `key`'s original (version `version`, fetched in `epoch`) a
    /// worker wrote (`len` bytes), in the background: unless a purge of the original began
    /// meanwhile.
    fn keep_copy(
        &self,
        tier: ReducedTier,
        written: Writing,
        key: &str,
        version: &str,
        epoch: u64,
        len: u64,
    ) {
        let (cache, metrics) = (self.cache.clone(), self.metrics.clone());
        let (key, version) = (key.to_owned(), version.to_owned());
        tokio::task::spawn_blocking(move || {
            let Writing { new, _turn } = written;
            let current = || cache.source_epoch(&key) == epoch;
            match tier.keep(new, &key, &version, len, current) {
                Ok(true) => metrics.count(Count::ReducedKept),
                Ok(false) => {}
                Err(e) => {
                    static SAID: OncePerMinute = OncePerMinute::new();
                    if SAID.due() {
                        tracing::warn!(error = %e, key, "cannot keep a reduced original");
                    }
                }
            }
        });
    }

    /// A file for a worker to write a reduced copy into, unless as many are being written as
    /// allowed, or the tier has no room.
    async fn new_copy(&self, tier: &ReducedTier) -> Option<Writing> {
        let turn = self.copy_writes.clone().try_acquire_owned().ok()?;
        let tier = tier.clone();
        let created = tokio::task::spawn_blocking(move || tier.create()).await;
        match created {
            Ok(Ok(Some(new))) => Some(Writing { new, _turn: turn }),
            Ok(Ok(None)) | Err(_) => None,
            Ok(Err(e)) => {
                static SAID: OncePerMinute = OncePerMinute::new();
                if SAID.due() {
                    tracing::warn!(error = %e, "cannot create a reduced original's file");
                }
                None
            }
        }
    }

    /// What a miss renders from: the pixels a worker holds from moments ago (nothing is
    /// fetched unless they do not serve this size), else a reduced copy of the original's
    /// version the source vouched for (read later, in the render slot), else the bytes fetched
    /// moments ago, else a fetch (with the fetch turn it took, held until the render ends). A remembered failure of the same
    /// original is answered instead of a fetch.
    async fn find_original(
        &self,
        variant: &VariantKey,
        verified: &Verified,
        deadline: tokio::time::Instant,
    ) -> Result<(Found, Option<OwnedSemaphorePermit>), AppError> {
        let key = variant.key.as_str();
        let epoch = verified.epoch;
        if self.workers.holds(key, epoch) {
            return Ok((Found::Held, None));
        }
        // A copy is read back in a fraction of what decoding kept bytes again costs; one of
        // another version than the source vouched for is stale, and dropped (so that this
        // miss's decode makes the copy anew).
        if let (Some(tier), Some(vouched)) = (self.cache.reduced(), &verified.version) {
            match tier.version(key) {
                Some(stored) if &stored == vouched => return Ok((Found::Stored, None)),
                Some(_) => {
                    let (tier, key, vouched) = (tier.clone(), key.to_owned(), vouched.clone());
                    let _ =
                        tokio::task::spawn_blocking(move || tier.drop_stale(&key, &vouched)).await;
                }
                None => {}
            }
        }
        let (object, turn) = match self.recent.object(key, epoch) {
            Some(object) => (object, None),
            None => {
                if let Some(failed) = self.remembered_failure(variant).await {
                    return Err(failed);
                }
                let turn = tokio::time::timeout_at(deadline, self.gate.fetch_turn())
                    .await
                    .map_err(|_| AppError::of(ErrorCode::RenderTimeout))?;
                (self.fetch(variant, epoch).await?, Some(turn))
            }
        };
        if let Some((version, failed)) = self.failures.get(key) {
            if version.is_some() && version == object.version {
                return Err(failed);
            }
        }
        Ok((Found::Object(object), turn))
    }

    /// The reduced copy of `key`'s original, opened, if the tier holds one of the version the
    /// source vouched for (on the blocking pool).
    async fn stored_copy(&self, key: &str, verified: &Verified) -> Option<StoredCopy> {
        let tier = self.cache.reduced()?.clone();
        let version = verified.version.clone()?;
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || tier.open_copy(&key, &version))
            .await
            .ok()
            .flatten()
    }

    /// Drops `key`'s reduced copy `copy`, which a worker found unusable (`why`), in the
    /// background.
    fn drop_unusable(&self, key: &str, copy: &StoredCopy, why: String) {
        if let Some(tier) = self.cache.reduced() {
            let (tier, key, id) = (tier.clone(), key.to_owned(), copy.id);
            tokio::task::spawn_blocking(move || tier.drop_unusable(&key, id, &why));
        }
    }

    /// Renders `variant` on a worker of `mode`'s generation from what was found, sending a
    /// reduced copy or the original when the worker asks for one: what it made, or the error;
    /// and the original as far as it was needed (given, or fetched for the worker).
    async fn render(
        &self,
        variant: &VariantKey,
        mode: &ModeRef,
        verified: &Verified,
        found: Found,
    ) -> (Result<Made, AppError>, Option<SourceObject>) {
        let epoch = verified.epoch;
        let key = variant.key.as_str().to_owned();
        self.metrics.count(Count::Render);
        self.last_rendered.store(Some(Arc::new(key.clone())));
        let allowed = self.whitelist.snapshot();
        if allowed.enabled {
            self.shapes
                .note(&mode.name, variant.size.width, variant.size.height);
        }
        let tier = self.cache.reduced();
        // A copy serves the sizes asked for lately; with any size allowed, none is made.
        let mut wants_copy = allowed.enabled && tier.is_some_and(|t| t.version(&key).is_none());
        let mut job = RenderJob {
            key: key.clone(),
            epoch,
            mode: mode.name.clone(),
            width: variant.size.width,
            height: variant.size.height,
            format: variant.format,
            shapes: self.shapes.current(&allowed),
            copy: false,
        };
        let original = match found {
            Found::Object(object) => Some(object),
            // A copy is looked for below (also where the pixels are found not held).
            Found::Stored | Found::Held => None,
        };
        let mut copy: Option<StoredCopy> = None;
        // The file for the copy of this job's decode, once the original is sent.
        let mut writing: Option<Writing> = None;
        let plan = mode.generation.plan();
        let mut lease = match self.workers.checkout(plan, &key, epoch).await {
            Ok(lease) => lease,
            Err(e) => return (Err(e), original),
        };
        // What goes with the job: nothing to a worker holding the pixels, else the copy (opened
        // now, the render slot held), else the original. A copy is looked for once and sent
        // once: if it does not serve this size, the worker asks for the original.
        let mut copy_looked_for = false;
        let mut copy_sent = false;
        let mut sent = None;
        if !lease.holds && copy.is_none() && original.is_none() {
            copy_looked_for = true;
            copy = self.stored_copy(&key, verified).await;
        }
        if !lease.holds && copy.is_none() {
            match &original {
                Some(object) => sent = Some(object.clone()),
                None => match self.original(variant, epoch).await {
                    Ok(object) => sent = Some(object),
                    Err(e) => return (Err(e), original),
                },
            }
        }
        let outcome = loop {
            let (kind, blob) = match (&sent, &copy) {
                (Some(object), _) => (Sent::Original, &object.bytes[..]),
                (None, Some(_)) if !lease.holds || copy_sent => {
                    copy_sent = true;
                    (Sent::Copy, &[][..])
                }
                (None, _) => (Sent::Nothing, &[][..]),
            };
            let sent_copy = kind == Sent::Copy;
            // A file for the copy of the decode goes with the original.
            if kind == Sent::Original && wants_copy && writing.is_none() {
                if let Some(tier) = tier {
                    writing = self.new_copy(tier).await;
                }
            }
            job.copy = kind == Sent::Original && writing.is_some();
            let files = JobFiles {
                copy_to_read: copy.as_ref().filter(|_| sent_copy).map(|c| c.file.as_fd()),
                copy_to_write: writing
                    .as_ref()
                    .filter(|_| job.copy)
                    .map(|w| w.new.file.as_fd()),
            };
            match lease.render(&job, kind, blob, files).await {
                Ok(JobOutcome::NeedOriginal { unusable }) if sent.is_none() => {
                    if sent_copy {
                        // A copy too small for this size (one asked for since it was made), or
                        // not a copy at all (dropped): the decode for it makes a larger one,
                        // which replaces it.
                        if let (Some(why), Some(stored)) = (unusable, &copy) {
                            self.drop_unusable(&key, stored, why);
                        }
                        copy = None;
                        wants_copy = allowed.enabled;
                    } else if copy.is_some() {
                        // The held pixels do not serve: the copy, then.
                        copy_sent = true;
                        continue;
                    } else if !copy_looked_for {
                        // The worker no longer holds the pixels the pool thought it did.
                        copy_looked_for = true;
                        copy = self.stored_copy(&key, verified).await;
                        if copy.is_some() {
                            copy_sent = true;
                            continue;
                        }
                    }
                    match self.original(variant, epoch).await {
                        Ok(object) => sent = Some(object),
                        Err(e) => break Err(e),
                    }
                }
                Ok(JobOutcome::NeedOriginal { .. }) => {
                    break Err(AppError::new(
                        ErrorCode::RenderFailed,
                        "The image could not be rendered.",
                    )
                    .detailed("a worker asked again for the original it was sent"));
                }
                Ok(JobOutcome::Rendered {
                    encoded,
                    timings,
                    copy: made,
                    ..
                }) => {
                    report_timings(&self.metrics, &timings);
                    if timings.copy_us.is_some() {
                        self.metrics.count(Count::ReducedRender);
                    }
                    mode.note_render(&self.metrics, true);
                    // Rendered from the copy sent, if the worker read it back.
                    let from_copy = timings
                        .copy_us
                        .and(copy.as_ref())
                        .map(|c| c.version.clone());
                    // A file with no copy in it stays for the removal below.
                    let copy = match made {
                        Some(len) => writing.take().map(|written| (written, len)),
                        None => None,
                    };
                    break Ok(Made {
                        encoded,
                        copy,
                        from_copy,
                    });
                }
                Ok(JobOutcome::Failed(e)) => {
                    if e.code == ErrorCode::RenderFailed {
                        mode.note_render(&self.metrics, false);
                    }
                    break Err(e);
                }
                Err(failure) => {
                    if failure.stage == Stage::Render {
                        mode.note_render(&self.metrics, false);
                    }
                    if let Some(quarantine) = mode.note_failure(&failure) {
                        self.modes.quarantined(&mode.name, &quarantine);
                    }
                    let error = failure.to_app_error(&mode.name);
                    if failure.stage == Stage::Decode && failure.failure == Failure::Crashed {
                        // The file (or its decoder) crashed it: not tried again for a while.
                        // (A timeout or a memory limit may be the load's, not the file's.)
                        self.remember_failure(&key, sent.as_ref().or(original.as_ref()), &error);
                    }
                    break Err(error);
                }
            }
        };
        // A file the worker wrote no copy into goes (off the runtime: it is a file removal).
        if let Some(unused) = writing {
            tokio::task::spawn_blocking(move || drop(unused));
        }
        (outcome, sent.or(original))
    }

    /// Writes the render to the cache, on the blocking pool (the write and its fsync wait
    /// on the disk, not a core: outside the render slot).
    async fn store(
        &self,
        variant: VariantKey,
        ticket: WriteTicket,
        mode: &ModeRef,
        source: &str,
        encoded: Vec<u8>,
    ) -> Result<(Rendered, bool), AppError> {
        let store = StoreJob {
            variant,
            source: source.to_owned(),
            ticket,
            mode: mode.mode.clone(),
            modes: self.modes.clone(),
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
        };
        match tokio::task::spawn_blocking(move || store.store(encoded)).await {
            Ok(rendered) => Ok(rendered),
            Err(join) => Err(AppError::new(
                ErrorCode::StoreFailed,
                "The image could not be stored.",
            )
            .detailed(format_args!("the cache write task failed: {join}"))),
        }
    }

    /// Remembers that `object`, the original of `key`, failed with `error`.
    fn remember_failure(&self, key: &str, object: Option<&SourceObject>, error: &AppError) {
        if let Some(object) = object {
            self.failures
                .insert(key.to_owned(), (object.version.clone(), error.clone()));
        }
    }

    /// The failure remembered for `variant`'s original, if the original has not changed
    /// since (asked of the source: a stat or a `HeadObject`, not a fetch).
    async fn remembered_failure(&self, variant: &VariantKey) -> Option<AppError> {
        let key = variant.key.as_str();
        let (version, error) = self.failures.get(key)?;
        match self.source.version(&variant.key).await {
            Ok(now) if now.is_some() && now == version => Some(error),
            // Changed, gone or not answering: forgotten, and the fetch tells.
            _ => {
                self.failures.invalidate(key);
                None
            }
        }
    }

    /// Fetches the original of `variant` in `epoch`, noting its version.
    async fn fetch(&self, variant: &VariantKey, epoch: u64) -> Result<SourceObject, AppError> {
        self.metrics.count(Count::Fetch);
        let started = Instant::now();
        let object = self
            .source
            .fetch(&variant.key, self.limits.max_source_bytes)
            .await?;
        self.metrics.stage(stage::FETCH, started);
        self.recent
            .note_version(variant.key.as_str(), epoch, object.version.as_deref());
        Ok(object)
    }

    /// The original of `variant`: kept from moments ago, else fetched (within a render slot
    /// already: a worker asked for it).
    async fn original(&self, variant: &VariantKey, epoch: u64) -> Result<SourceObject, AppError> {
        match self.recent.object(variant.key.as_str(), epoch) {
            Some(object) => Ok(object),
            None => self.fetch(variant, epoch).await,
        }
    }
}

/// A render's cache write, run on the blocking pool.
struct StoreJob {
    variant: VariantKey,
    /// The version of the original it was rendered from (empty: not known).
    source: String,
    ticket: WriteTicket,
    mode: Arc<LoadedMode>,
    modes: Arc<ModeRegistry>,
    cache: Cache,
    metrics: Arc<Metrics>,
}

impl StoreJob {
    /// The render, and whether it was cached.
    fn store(self, encoded: Vec<u8>) -> (Rendered, bool) {
        // A render by a version that was replaced meanwhile, or begun before a purge, is
        // served but not cached.
        let current = || {
            self.modes
                .get(&self.mode.name)
                .is_some_and(|m| m.version == self.mode.version)
        };
        let started = Instant::now();
        let stored = self.cache.put(
            &self.variant,
            &self.mode.version,
            &self.source,
            &encoded,
            self.ticket,
            current,
        );
        self.metrics.stage(stage::CACHE_WRITE, started);
        let cached = matches!(stored, Ok(PutOutcome::Stored(_)));
        let modified = match stored {
            Ok(PutOutcome::Stored(modified)) => modified,
            Ok(PutOutcome::Stale | PutOutcome::NoRoom | PutOutcome::NoSpace) => SystemTime::now(),
            Err(e) => {
                // Once a minute: a disk that fails does so for every request.
                static SAID: OncePerMinute = OncePerMinute::new();
                if SAID.due() {
                    tracing::warn!(error = %e, "serving a render that could not be cached");
                }
                SystemTime::now()
            }
        };
        let rendered = Rendered {
            body: encoded.into(),
            modified,
            cache: CacheStatus::Miss,
        };
        (rendered, cached)
    }
}
