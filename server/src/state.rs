//! Everything a request handler can reach, built once at start-up from [`Settings`].

use std::sync::Arc;

use ross_config::{Settings, SourceSettings};

use crate::cache::DiskCache;
use crate::pipeline::Pipeline;
use crate::plugins::ModeRegistry;
use crate::reload::Reloader;
use crate::source::{LocalSource, S3Source, Source};
use crate::whitelist::Whitelist;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The media root is missing or unreadable.
    #[error("source.root: {0}")]
    Source(std::io::Error),
    /// The cache folder cannot be created.
    #[error("cache.dir {path}: {source}")]
    Cache {
        /// The folder.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
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
    pub whitelist: Whitelist,
}

impl AppState {
    /// Opens the source and cache and loads the plugins. A plugin that fails to load is
    /// logged and skipped; a missing media root or unusable cache folder stops start-up. An S3
    /// bucket is not contacted here: whether it answers shows in `GET /ready`.
    pub async fn new(settings: Settings) -> Result<Arc<AppState>, StartupError> {
        let source: Arc<dyn Source> = match &settings.source {
            SourceSettings::Local { root } => {
                Arc::new(LocalSource::new(root).map_err(StartupError::Source)?)
            }
            SourceSettings::S3(s3) => Arc::new(S3Source::connect(s3, None).await),
        };
        AppState::with_source(settings, source)
    }

    /// Like [`AppState::new`], with the source given instead of built from `settings.source`
    /// (tests use it to give an S3 source its own credentials).
    pub fn with_source(
        settings: Settings,
        source: Arc<dyn Source>,
    ) -> Result<Arc<AppState>, StartupError> {
        tracing::info!(source = %source.describe(), "serving originals");
        let cache = DiskCache::open(&settings.cache.dir).map_err(|source| StartupError::Cache {
            path: settings.cache.dir.display().to_string(),
            source,
        })?;
        let modes = Arc::new(ModeRegistry::new(&settings.data_dir.join("loaded-plugins")));
        let reloader = Arc::new(Reloader::new(
            &settings.plugins.dir,
            modes.clone(),
            cache.clone(),
            &settings.data_dir.join("cached-mode-versions.json"),
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
        let pipeline = Pipeline::new(
            source,
            modes.clone(),
            cache,
            settings.limits.clone(),
            settings.output.jpeg_quality,
        );
        Ok(Arc::new(AppState {
            whitelist: Whitelist::from_settings(&settings.whitelist),
            modes,
            reloader,
            pipeline,
            settings,
        }))
    }
}
