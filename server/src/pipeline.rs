//! The render path of one variant, in the SPEC's stages: cache check, fetch, decode, render,
//! encode, cache write. A miss is admitted by the [`RenderGate`] before anything is fetched,
//! its CPU work runs on the blocking pool in a render slot, and identical concurrent misses
//! share one run through [`SingleFlight`].

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use plugin_api::{ImageView, PixelFormat, TargetSize};
use ross_config::{Limits, OutputSettings, Settings};

use crate::cache::{Cache, CachedFile, OutputFormat, PutOutcome, VariantKey, WriteTicket};
use crate::error::AppError;
use crate::gate::RenderGate;
use crate::imaging::{decode, encode, sniff, Decoded, Format};
use crate::plugins::{LoadedMode, ModeRegistry};
use crate::recent::{DecodedSource, Recent};
use crate::request::RenderRequest;
use crate::singleflight::SingleFlight;
use crate::source::{Source, SourceObject};
use crate::stats::{stage, Stats};
use crate::whitelist::Whitelist;

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
    output: Arc<OutputSettings>,
    stats: Arc<Stats>,
    /// The live whitelist: a decode is made for the largest size it allows.
    whitelist: Arc<Whitelist>,
    /// Originals fetched and decoded in the last seconds.
    recent: Recent,
    /// Sources that failed to decode, by key and version (modification time), so that a
    /// costly failure is paid once, not on every request for it.
    failures: moka::sync::Cache<(String, SystemTime), AppError>,
}

/// How many failed sources are remembered, and for how long: long enough to absorb a burst
/// of requests for one bad file, short enough that a fixed file is served soon.
const FAILURES_KEPT: u64 = 10_000;
const FAILURE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Errors that say the source itself is bad (so remembering them is safe).
fn source_is_bad(e: &AppError) -> bool {
    matches!(
        e.code,
        "undecodable-image" | "unsupported-format" | "source-too-many-pixels"
    )
}

impl Pipeline {
    /// A pipeline reading from `source`, rendering with the modes of `modes` and caching in
    /// `cache`.
    pub fn new(
        source: Arc<dyn Source>,
        modes: Arc<ModeRegistry>,
        cache: Cache,
        whitelist: Arc<Whitelist>,
        settings: &Settings,
        stats: Arc<Stats>,
    ) -> Self {
        let limits = settings.limits.clone();
        Pipeline {
            shared: Arc::new(Shared {
                source,
                modes,
                gate: RenderGate::new(limits.max_concurrent_renders, limits.max_queue),
                cache,
                limits,
                output: Arc::new(settings.output.clone()),
                stats,
                whitelist,
                recent: Recent::new(settings.cache.decoded_bytes),
                failures: moka::sync::Cache::builder()
                    .max_capacity(FAILURES_KEPT)
                    .time_to_live(FAILURE_TTL)
                    .build(),
            }),
            flights: SingleFlight::default(),
        }
    }

    /// The source of originals.
    pub fn source(&self) -> &dyn Source {
        self.shared.source.as_ref()
    }

    /// The counters and timings it reports to.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The cache's purge epoch now: taken when a request begins, so that a render is not
    /// cached if a purge (or a whitelist change) started while it was being made.
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

    /// Bytes of the originals (and their pixels) kept from the last minute.
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
        mode: Arc<LoadedMode>,
        ticket: WriteTicket,
    ) -> Result<Rendered, AppError> {
        let shared = &self.shared;
        let variant = VariantKey::new(req, format);
        let started = Instant::now();
        let cached = shared.cache.get(&variant).await;
        shared.stats.stage(stage::CACHE_CHECK, started);
        let result = match cached {
            Some(hit) => Ok(Rendered::hit(hit)),
            None => {
                let deadline = tokio::time::Instant::now() + shared.limits.render_timeout;
                // Keyed by the mode's load too: a request that arrives after a plugin was
                // replaced never waits for a render by the old version.
                let flight = format!("{variant}@{}", mode.id);
                let miss = shared.clone();
                let work = move || miss.miss(variant, mode, ticket, deadline);
                tokio::time::timeout_at(deadline, self.flights.run(flight, work))
                    .await
                    .unwrap_or_else(|_| Err(AppError::render_timeout()))
            }
        };
        match &result {
            Ok(Rendered {
                cache: CacheStatus::Hit,
                ..
            }) => shared.stats.hit(),
            Ok(_) => shared.stats.miss(),
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
    /// One miss, run once for every request waiting on it.
    async fn miss(
        self: Arc<Self>,
        variant: VariantKey,
        mode: Arc<LoadedMode>,
        ticket: WriteTicket,
        deadline: tokio::time::Instant,
    ) -> Result<Rendered, AppError> {
        // Admitted before anything is fetched: a refused request costs no source read.
        let admission = self.gate.admit().map_err(|_| AppError::overloaded())?;
        let timed_out = |_| AppError::render_timeout();
        let epoch = ticket.epoch();
        let key = variant.key.as_str().to_owned();
        let need = mode.decode_box(TargetSize {
            width: variant.size.width,
            height: variant.size.height,
        });
        // Pixels decoded for this size or a larger one moments ago, else the bytes fetched
        // moments ago, else a fetch.
        let mut turn = None;
        let input = match self.recent.pixels(&key, epoch, need) {
            Some(pixels) => Input::Pixels(pixels),
            None => match self.recent.object(&key, epoch) {
                Some(object) => Input::Object(object),
                None => {
                    turn = Some(
                        tokio::time::timeout_at(deadline, self.gate.fetch_turn())
                            .await
                            .map_err(timed_out)?,
                    );
                    self.stats.fetch();
                    let started = Instant::now();
                    let object = self
                        .source
                        .fetch(&variant.key, self.limits.max_source_bytes)
                        .await?;
                    self.stats.stage(stage::FETCH, started);
                    Input::Object(object)
                }
            },
        };
        let version = match &input {
            Input::Object(object) => object.modified.map(|m| (key.clone(), m)),
            Input::Pixels(_) => None,
        };
        if let Some(failed) = version.as_ref().and_then(|v| self.failures.get(v)) {
            return Err(failed);
        }
        let slot = tokio::time::timeout_at(deadline, self.gate.render_slot())
            .await
            .map_err(timed_out)?;
        self.stats.render();
        self.stats.rendered_key(&key);
        // The largest size the whitelist allows may be asked for next: decode for it (as
        // this mode needs it). No box at all: the full size.
        let allowed = self.whitelist.snapshot();
        let mut needs = vec![need];
        if allowed.enabled {
            needs.extend(allowed.sizes.iter().map(|s| {
                mode.decode_box(TargetSize {
                    width: s.width,
                    height: s.height,
                })
            }));
        }
        let boxes: Vec<(u32, u32)> = needs.into_iter().collect::<Option<_>>().unwrap_or_default();
        let job = RenderJob {
            variant,
            ticket,
            mode,
            modes: self.modes.clone(),
            cache: self.cache.clone(),
            max_pixels: self.limits.max_source_pixels,
            output: self.output.clone(),
            stats: self.stats.clone(),
        };
        let shared = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _admitted = admission;
            // A flight that ended as this one began may have cached the variant: checked
            // here, on the blocking pool already, rather than by one more trip to it before
            // the fetch (under load each trip waits for a core).
            if let Some(hit) = job.cache.get_blocking(&job.variant) {
                return Ok(Rendered::hit(hit));
            }
            let pixels = match input {
                Input::Pixels(pixels) => Ok(pixels),
                Input::Object(object) => {
                    let decoded = job.decode(&object.bytes, &boxes);
                    // Kept once it decodes: a bad file is fetched again (to see it fixed).
                    if let Ok(pixels) = &decoded {
                        shared.recent.keep_object(&key, epoch, object);
                        shared.recent.keep_pixels(&key, epoch, pixels.clone());
                    }
                    decoded
                }
            };
            drop(turn);
            let encoded = pixels.and_then(|p| job.render(&p.image));
            // The slot covers CPU work only: the cache write waits on the disk, not a core.
            drop(slot);
            job.store(encoded?)
        });
        match task.await {
            Err(join) => {
                tracing::error!(error = %join, "render task failed");
                Err(AppError::internal(
                    "render-failed",
                    "The image could not be rendered.",
                ))
            }
            Ok(Err(e)) if source_is_bad(&e) => {
                if let Some(version) = version {
                    self.failures.insert(version, e.clone());
                }
                Err(e)
            }
            Ok(result) => result,
        }
    }
}

/// What a miss renders from.
enum Input {
    /// The original's bytes, to decode.
    Object(SourceObject),
    /// Its pixels, decoded for this size or a larger one.
    Pixels(Arc<DecodedSource>),
}

/// The CPU-bound part of a miss, and its cache write, run on the blocking pool.
struct RenderJob {
    variant: VariantKey,
    ticket: WriteTicket,
    mode: Arc<LoadedMode>,
    modes: Arc<ModeRegistry>,
    cache: Cache,
    max_pixels: u64,
    output: Arc<OutputSettings>,
    stats: Arc<Stats>,
}

impl RenderJob {
    /// Decodes `source` for the largest of `boxes` (the variant's size first).
    fn decode(&self, source: &[u8], boxes: &[(u32, u32)]) -> Result<Arc<DecodedSource>, AppError> {
        let started = Instant::now();
        let image = decode(source, boxes, self.max_pixels)?;
        self.stats.stage(stage::DECODE, started);
        // Only a JPEG is shrunk (and trimmed) for the boxes; other formats are full size.
        let good_up_to = (sniff(source) == Some(Format::Jpeg))
            .then(|| largest_box(&image, boxes))
            .flatten();
        Ok(Arc::new(DecodedSource { image, good_up_to }))
    }

    fn render(&self, image: &Decoded) -> Result<Vec<u8>, AppError> {
        let target = TargetSize {
            width: self.variant.size.width,
            height: self.variant.size.height,
        };
        let format = self.variant.format;
        render_decoded(image, &self.mode, target, format, &self.output, &self.stats)
    }

    fn store(self, encoded: Vec<u8>) -> Result<Rendered, AppError> {
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
            &encoded,
            self.ticket,
            current,
        );
        self.stats.stage(stage::CACHE_WRITE, started);
        let modified = match stored {
            Ok(PutOutcome::Stored(modified)) => modified,
            Ok(PutOutcome::Stale | PutOutcome::NoRoom) => SystemTime::now(),
            Err(e) => {
                tracing::warn!(error = %e, "serving a render that could not be cached");
                SystemTime::now()
            }
        };
        Ok(Rendered {
            body: encoded.into(),
            modified,
            cache: CacheStatus::Miss,
        })
    }
}

/// Decode, render and encode, in memory: the whole CPU cost of a variant. Public for the
/// benchmark, which measures exactly what a cache miss costs.
pub fn render_bytes(
    source: &[u8],
    mode: &LoadedMode,
    target: TargetSize,
    max_pixels: u64,
    format: OutputFormat,
    output: &OutputSettings,
    stats: &Stats,
) -> Result<Vec<u8>, AppError> {
    let started = Instant::now();
    let boxes: Vec<_> = mode.decode_box(target).into_iter().collect();
    let decoded = decode(source, &boxes, max_pixels)?;
    stats.stage(stage::DECODE, started);
    render_decoded(&decoded, mode, target, format, output, stats)
}

/// The box of `boxes` shown largest over `image` (covers keep the image's shape).
fn largest_box(image: &Decoded, boxes: &[(u32, u32)]) -> Option<(u32, u32)> {
    let scale = |&(w, h): &(u32, u32)| {
        (f64::from(w) / f64::from(image.width.max(1)))
            .max(f64::from(h) / f64::from(image.height.max(1)))
    };
    boxes
        .iter()
        .copied()
        .max_by(|a, b| scale(a).total_cmp(&scale(b)))
}

/// Render and encode from decoded pixels.
pub fn render_decoded(
    decoded: &Decoded,
    mode: &LoadedMode,
    target: TargetSize,
    format: OutputFormat,
    output: &OutputSettings,
    stats: &Stats,
) -> Result<Vec<u8>, AppError> {
    // Transparency goes to the mode only if it takes it and the format keeps it.
    let keeps_alpha = format.has_alpha() && mode.takes_alpha();
    let image = if keeps_alpha {
        std::borrow::Cow::Borrowed(decoded)
    } else {
        decoded.flattened()?
    };
    let pixel_format = if image.alpha {
        PixelFormat::Rgba8
    } else {
        PixelFormat::Rgb8
    };
    let view =
        ImageView::new(&image.pixels, image.width, image.height, pixel_format).map_err(|e| {
            tracing::error!(error = %e, "decoder produced an invalid buffer");
            AppError::internal("decode-failed", "The image could not be decoded.")
        })?;
    let started = Instant::now();
    let out = mode.render(view, target)?;
    stats.stage(stage::RENDER, started);
    let started = Instant::now();
    let encoded = encode(out.view(), format, output)?;
    stats.stage(stage::ENCODE, started);
    Ok(encoded)
}
