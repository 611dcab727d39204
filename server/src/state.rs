//! Everything a request handler can reach, built once at start-up from [`Settings`].

use std::sync::Arc;

use ross_config::{Settings, SourceSettings};

use crate::admin::session::Sessions;
use crate::admin_token::{AdminToken, TokenError};
use crate::cache::{Cache, CacheError};
use crate::cdn::{Cdns, Notifier};
use crate::changes::{Purger, SourceChanges};
use crate::cluster::{Cluster, S3Store, Store};
use crate::db::{Database, DbError};
use crate::pipeline::Pipeline;
use crate::plugins::ModeRegistry;
use crate::reload::Reloader;
use crate::source::watch::{self, MediaWatch};
use crate::source::{LocalSource, S3Source, Source};
use crate::surrogate::ImageHeaders;
use crate::telemetry::{Metrics, RecentErrors};
use crate::whitelist::Whitelist;
use crate::worker::protocol::WorkerSettings;
use crate::worker::{Spawner, WorkerPool};

/// What every render worker is told: the source limits, its memory and its share of the
/// decoded pixels kept for reuse, the encoders' settings.
pub fn worker_settings(settings: &Settings) -> WorkerSettings {
    let decoded = settings.cache.decoded_bytes;
    let for_pixels = decoded - decoded / crate::recent::ORIGINALS_SHARE;
    WorkerSettings {
        max_source_pixels: settings.limits.max_source_pixels,
        memory_bytes: settings.limits.worker_memory_bytes,
        decoded_bytes: for_pixels / settings.limits.max_concurrent_renders.max(1) as u64,
        output: settings.output.clone(),
        max_copy_bytes: max_copy_bytes(settings),
        sandbox: true,
    }
}

/// The largest reduced original kept: an eighth of `cache.originals_bytes`, and never more
/// than 256 MiB (a 9,000 x 9,000 RGB copy).
fn max_copy_bytes(settings: &Settings) -> u64 {
    (settings.cache.originals_bytes / 8).min(256 << 20)
}

/// Checks that `dir` is a readable folder holding at least one plugin file (`*.so`, not
/// hidden): a misspelt `plugins.dir` must stop start-up, not start a server with no modes.
pub fn check_plugins_dir(dir: &std::path::Path) -> Result<(), String> {
    match crate::plugins::plugin_files(dir) {
        Ok(files) if !files.is_empty() => Ok(()),
        Ok(_) => Err(format!(
            "{} holds no mode plugin (*.so): point it at the folder of the built plugins (a \
             release build leaves them in target/release)",
            dir.display()
        )),
        Err(e) => Err(format!(
            "{} cannot be read ({e}): point it at the folder holding the mode plugins (*.so)",
            dir.display()
        )),
    }
}

/// The largest answer read from a worker: an encoded image of the largest output allowed,
/// with room for an encoder that grows noise (never more than 1 GiB). Reduced copies are not
/// answers: the worker writes them to a file.
fn max_reply(settings: &Settings) -> usize {
    let bound = settings.limits.max_output_pixels.saturating_mul(8) + (1 << 20);
    usize::try_from(bound.min(1 << 30)).unwrap_or(1 << 30)
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The media root is missing or unreadable.
    #[error("source.root: {0}")]
    Source(std::io::Error),
    /// The database in `data_dir` cannot be used.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The cache folder cannot be used.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The admin token cannot be read or kept.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Render workers cannot be started.
    #[error("cannot start render workers: {0}")]
    Workers(std::io::Error),
    /// `plugins.dir` is missing, unreadable or holds no plugin file.
    #[error("plugins.dir: {0}")]
    PluginsDir(String),
    /// No plugin in `plugins.dir` loaded: the server would answer 404 to every render.
    #[error(
        "plugins.dir: no mode loaded from {dir} ({refused} plugin files refused; see the lines \
         above): point it at the folder of the built mode plugins"
    )]
    NoModes {
        /// The folder.
        dir: std::path::PathBuf,
        /// Files refused.
        refused: usize,
    },
}

/// Shared server state.
pub struct AppState {
    /// The settings the server started with.
    pub settings: Settings,
    /// Loaded modes.
    pub modes: Arc<ModeRegistry>,
    /// The render workers.
    pub workers: Arc<WorkerPool>,
    /// Keeps the modes in step with the plugin folder (and the cache with the modes).
    pub reloader: Arc<Reloader>,
    /// The render path.
    pub pipeline: Pipeline,
    /// Allowed sizes.
    pub whitelist: Arc<Whitelist>,
    /// The cache of rendered variants.
    pub cache: Cache,
    /// The admin API's token.
    pub admin_token: AdminToken,
    /// Every counter, gauge and latency: read by `/metrics`, the admin API and the admin page.
    pub metrics: Arc<Metrics>,
    /// The error responses most recently sent, for the dashboard.
    pub recent_errors: RecentErrors,
    /// Admin page sessions.
    pub sessions: Sessions,
    /// Originals being sent (`limits.max_original_streams` permits).
    pub original_streams: Arc<tokio::sync::Semaphore>,
    /// The cluster this node shares whitelist changes and purges with, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// The surrogate keys and CORS header images carry.
    pub image_headers: ImageHeaders,
    /// Where purges made here are sent besides the disk: the CDNs in front.
    pub purges: Notifier,
    /// Purges made here, sent to the disk, the cluster and the CDNs.
    pub purger: Arc<Purger>,
    /// Changed originals, purged.
    pub changes: Arc<SourceChanges>,
    /// The media folder's watch, while it lasts.
    _media_watch: Option<MediaWatch>,
}

impl AppState {
    /// Opens the source, the database and the cache, and loads the plugins (each checked by a
    /// render worker). A plugin that fails to load is logged and skipped; a missing media
    /// root, a `data_dir` in use, an unusable cache folder or no loadable mode stops start-up.
    /// An S3 bucket is not contacted here: whether it answers shows in `GET /ready`.
    pub async fn new(settings: Settings) -> Result<Arc<AppState>, StartupError> {
        let source: Arc<dyn Source> = match &settings.source {
            SourceSettings::Local { root, timeout } => {
                Arc::new(LocalSource::new(root, *timeout).map_err(StartupError::Source)?)
            }
            SourceSettings::S3(s3) => {
                let source = S3Source::connect(s3, None).await;
                match &settings.cluster {
                    // The cluster's state shares the originals' bucket: never served.
                    Some(c) if c.store.bucket == s3.bucket => {
                        Arc::new(source.hiding(&c.store.prefix))
                    }
                    _ => Arc::new(source),
                }
            }
        };
        let store: Option<Arc<dyn Store>> = match &settings.cluster {
            Some(cluster) => Some(Arc::new(S3Store::connect(&cluster.store, None).await)),
            None => None,
        };
        tokio::task::spawn_blocking(move || AppState::with_parts(settings, source, store))
            .await
            .expect("start-up does not panic")
    }

    /// Like [`AppState::new`], with the source given instead of built from `settings.source`
    /// (tests use it to give an S3 source its own credentials). Blocking.
    pub fn with_source(
        settings: Settings,
        source: Arc<dyn Source>,
    ) -> Result<Arc<AppState>, StartupError> {
        AppState::with_parts(settings, source, None)
    }

    /// Like [`AppState::with_source`], with the cluster's store given too (`None`: no
    /// cluster, whatever the settings say). Blocking.
    pub fn with_parts(
        settings: Settings,
        source: Arc<dyn Source>,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Arc<AppState>, StartupError> {
        tracing::info!(source = %source.describe(), "serving originals");
        // The database first: its lock keeps a second process off everything in data_dir.
        let db = Database::open(&settings.data_dir)?;
        let metrics = Arc::new(Metrics::new());
        let originals = settings.data_dir.join("reduced");
        let cache = Cache::open_keeping_originals(
            &settings.cache.dir,
            settings.cache.max_bytes,
            settings.cache.memory_bytes,
            (
                &originals,
                settings.cache.originals_bytes,
                settings.cache.min_free_bytes,
            ),
            &db,
            metrics.clone(),
        )?;
        cache.set_render_timeout(settings.limits.render_timeout);
        cache.set_purge_deletes_per_second(settings.cache.purge_deletes_per_second);
        cache.set_min_free_bytes(settings.cache.min_free_bytes);
        let whitelist = Arc::new(Whitelist::open(&db, &settings.whitelist)?);
        let cdns = Cdns::open(&settings.cdns, &db, metrics.clone())?;
        let purges = Notifier::new(cdns, cache.clone(), whitelist.clone());
        let cluster = match (&settings.cluster, store) {
            (Some(shared), Some(store)) => Some(Arc::new(Cluster::open(
                shared,
                store,
                &db,
                whitelist.clone(),
                cache.clone(),
                settings.cache.shared,
            )?)),
            _ => None,
        };
        let purger = Arc::new(Purger::new(cache.clone(), purges.clone(), cluster.clone()));
        let changes = Arc::new(SourceChanges::new(
            purger.clone(),
            cache.clone(),
            metrics.clone(),
        ));
        let admin_token = AdminToken::resolve(&settings.admin, &settings.data_dir)?;
        let spawner = Spawner::new().map_err(StartupError::Workers)?;
        let worker_settings = worker_settings(&settings);
        let workers = WorkerPool::new(
            spawner.clone(),
            worker_settings.clone(),
            settings.limits.max_concurrent_renders,
            settings.limits.render_timeout,
            max_reply(&settings),
            metrics.clone(),
        );
        let modes = Arc::new(ModeRegistry::new(
            &settings.data_dir.join("loaded-plugins"),
            spawner,
            worker_settings,
            tokio::runtime::Handle::current(),
            metrics.clone(),
        ));
        let pool = workers.clone();
        modes.on_generation(move |plan| pool.serve_generation(plan));
        let mut reloader = Reloader::new(
            &settings.plugins.dir,
            modes.clone(),
            cache.clone(),
            purges.clone(),
            metrics.clone(),
        );
        if settings.cache.development {
            tracing::warn!(
                "cache.development = true: every plugin load purges its mode's renders, and \
                 images say Cache-Control: no-store (not for production)"
            );
            reloader = reloader.developing(purger.clone());
        }
        let reloader = Arc::new(reloader);
        if let Err(e) = check_plugins_dir(&settings.plugins.dir) {
            return Err(StartupError::PluginsDir(e));
        }
        reloader.load_all();
        if modes.modes().is_empty() {
            return Err(StartupError::NoModes {
                dir: settings.plugins.dir.clone(),
                refused: modes.failures().len(),
            });
        }
        if settings.plugins.hot_reload {
            if let Err(e) = reloader.watch() {
                tracing::error!(
                    dir = %settings.plugins.dir.display(), error = %e,
                    "cannot watch the plugin folder: plugins load at start-up only"
                );
            }
        }
        let pipeline = Pipeline::new(
            source,
            modes.clone(),
            workers.clone(),
            cache.clone(),
            whitelist.clone(),
            &settings,
            metrics.clone(),
        )
        .sharing(cluster.as_ref().and_then(|c| c.renders().cloned()))
        .noticing(changes.clone());
        let media_watch = match &settings.source {
            SourceSettings::Local { root, timeout } if settings.changes.watch => {
                match LocalSource::new(root, *timeout)
                    .map_err(notify::Error::io)
                    .and_then(|local| watch::watch(Arc::new(local), changes.clone()))
                {
                    Ok(watching) => Some(watching),
                    Err(e) => {
                        tracing::error!(
                            root = %root.display(), error = %e,
                            "cannot watch the media folder: a replaced original keeps its \
                             renders until purged (if the error is about watches, raise \
                             fs.inotify.max_user_watches)"
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        Ok(Arc::new(AppState {
            whitelist,
            modes,
            workers,
            reloader,
            pipeline,
            cache,
            admin_token,
            metrics,
            recent_errors: RecentErrors::default(),
            sessions: Sessions::new(settings.admin.session),
            original_streams: Arc::new(tokio::sync::Semaphore::new(
                settings.limits.max_original_streams,
            )),
            cluster,
            image_headers: ImageHeaders::new(&settings.output),
            purges,
            purger,
            changes,
            _media_watch: media_watch,
            settings,
        }))
    }
}
