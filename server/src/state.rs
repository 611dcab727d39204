//! Everything a request handler can reach, built once at start-up from [`Settings`].

use std::sync::Arc;

use ross_config::{Settings, SourceSettings};

use crate::admin::session::Sessions;
use crate::admin_token::{AdminToken, TokenError};
use crate::cache::{Cache, CacheError};
use crate::db::{Database, DbError};
use crate::pipeline::Pipeline;
use crate::plugins::ModeRegistry;
use crate::reload::Reloader;
use crate::source::{LocalSource, S3Source, Source};
use crate::stats::Stats;
use crate::whitelist::Whitelist;

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
}

/// Shared server state.
pub struct AppState {
    /// The settings the server started with.
    pub settings: Settings,
    /// Loaded modes.
    pub modes: Arc<ModeRegistry>,
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
    /// Counters and timings, read by `/metrics`, the admin API and the admin page.
    pub stats: Arc<Stats>,
    /// Admin page sessions.
    pub sessions: Sessions,
    /// Originals being sent (`limits.max_original_streams` permits).
    pub original_streams: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Opens the source, the database and the cache, and loads the plugins. A plugin that
    /// fails to load is logged and skipped; a missing media root, a `data_dir` in use or an
    /// unusable cache folder stops start-up. An S3 bucket is not contacted here: whether it
    /// answers shows in `GET /ready`.
    pub async fn new(settings: Settings) -> Result<Arc<AppState>, StartupError> {
        let source: Arc<dyn Source> = match &settings.source {
            SourceSettings::Local { root, timeout } => {
                Arc::new(LocalSource::new(root, *timeout).map_err(StartupError::Source)?)
            }
            SourceSettings::S3(s3) => Arc::new(S3Source::connect(s3, None).await),
        };
        tokio::task::spawn_blocking(move || AppState::with_source(settings, source))
            .await
            .expect("start-up does not panic")
    }

    /// Like [`AppState::new`], with the source given instead of built from `settings.source`
    /// (tests use it to give an S3 source its own credentials). Blocking.
    pub fn with_source(
        settings: Settings,
        source: Arc<dyn Source>,
    ) -> Result<Arc<AppState>, StartupError> {
        tracing::info!(source = %source.describe(), "serving originals");
        // The database first: its lock keeps a second process off everything in data_dir.
        let db = Database::open(&settings.data_dir)?;
        let cache = Cache::open(
            &settings.cache.dir,
            settings.cache.max_bytes,
            settings.cache.memory_bytes,
            &db,
        )?;
        let whitelist = Arc::new(Whitelist::open(&db, &settings.whitelist)?);
        let admin_token = AdminToken::resolve(&settings.admin, &settings.data_dir)?;
        let modes = Arc::new(ModeRegistry::new(&settings.data_dir.join("loaded-plugins")));
        let reloader = Arc::new(Reloader::new(
            &settings.plugins.dir,
            modes.clone(),
            cache.clone(),
        ));
        reloader.load_all();
        if settings.plugins.hot_reload {
            if let Err(e) = reloader.watch() {
                tracing::error!(
                    dir = %settings.plugins.dir.display(), error = %e,
                    "cannot watch the plugin folder: plugins load at start-up only"
                );
            }
        }
        let stats = Arc::new(Stats::default());
        let pipeline = Pipeline::new(
            source,
            modes.clone(),
            cache.clone(),
            whitelist.clone(),
            &settings,
            stats.clone(),
        );
        Ok(Arc::new(AppState {
            whitelist,
            modes,
            reloader,
            pipeline,
            cache,
            admin_token,
            stats,
            sessions: Sessions::new(settings.admin.session),
            original_streams: Arc::new(tokio::sync::Semaphore::new(
                settings.limits.max_original_streams,
            )),
            settings,
        }))
    }
}
