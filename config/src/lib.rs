//! ross settings: the typed [`Settings`] every other crate reads, and the only place that looks
//! at the process environment.
//!
//! Layers, lowest first: built-in defaults, one TOML file (`--config FILE`, else `ROSS_CONFIG`),
//! then `ROSS__SECTION__KEY` environment variables (lists comma-separated). Loading validates
//! every key into its type and reports every bad or unknown key at once, each naming the key,
//! where the value came from and what is allowed. It does not create folders or open sockets.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod reader;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors, Origin};
pub use reader::env_name;
use reader::{Reader, ENV_PREFIX};

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "ROSS_CONFIG";

/// Widths and heights above this are refused whatever the limits say: libjpeg cannot write a
/// JPEG wider or taller (`JPEG_MAX_DIMENSION`), and JPEG is every render's fallback.
pub const HARD_MAX_SIDE: i64 = 65_500;
/// Ceilings on the other limits, so that no accepted setting lets one request allocate more
/// than a machine has: 100 megapixels out (300 MB of pixels), 2 GiB and 500 megapixels in.
const HARD_MAX_OUTPUT_PIXELS: i64 = 100_000_000;
const HARD_MAX_SOURCE_BYTES: i64 = 2 << 30;
const HARD_MAX_SOURCE_PIXELS: i64 = 500_000_000;

/// Every setting, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// HTTP listener.
    pub server: ServerSettings,
    /// Where originals are read from.
    pub source: SourceSettings,
    /// How ross hears of originals that change (`source.watch`, `source.events_secret`).
    pub changes: ChangeSettings,
    /// Rendered variants on disk.
    pub cache: CacheSettings,
    /// Folder for the server's own state (loaded plugin copies, later the sled index).
    pub data_dir: PathBuf,
    /// Mode plugins.
    pub plugins: PluginSettings,
    /// Which sizes may be rendered.
    pub whitelist: WhitelistSettings,
    /// Bounds on requests and work.
    pub limits: Limits,
    /// Encoding of rendered images.
    pub output: OutputSettings,
    /// Whether `GET /{key}` serves the original file unchanged.
    pub serve_originals: bool,
    /// The admin JSON API (and later page).
    pub admin: AdminSettings,
    /// Where metrics are pushed as statsd, if anywhere.
    pub statsd: Option<StatsdSettings>,
    /// How log lines are written.
    pub log: LogSettings,
    /// Where 5xx responses and plugin failures are reported, if anywhere.
    pub sentry: Option<SentrySettings>,
    /// The state shared with the other nodes of a cluster, if this node is in one.
    pub cluster: Option<ClusterSettings>,
    /// Where nginx in front reports the hits it serves itself (`hit_log.listen`), if anywhere.
    pub hit_log: Option<HitLogListen>,
    /// The CDNs and caches in front that purges are sent to (`[cdn.NAME]`), by name.
    pub cdns: Vec<CdnSettings>,
    /// Where each key that was given came from (the file or a variable); a key not here
    /// has its built-in default.
    pub origins: BTreeMap<String, Origin>,
}

/// A Sentry project that receives every 5xx and every plugin failure.
#[derive(Clone, PartialEq)]
pub struct SentrySettings {
    /// The project's DSN, `https://key@host/project`.
    pub dsn: String,
    /// Tags every event (production, staging...); unset: none.
    pub environment: Option<String>,
}

impl fmt::Debug for SentrySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentrySettings")
            .field("dsn", &"<set>")
            .field("environment", &self.environment)
            .finish()
    }
}

/// A statsd server that receives timers and counters over UDP.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsdSettings {
    /// Host name or address.
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// Prepended to every metric name (`<prefix>.fetch`).
    pub prefix: String,
}

/// Log output.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// One JSON object a line (for log shippers) instead of text.
    pub json: bool,
    /// A line for every request served; off, only refused and failed ones are logged.
    pub access: bool,
}

/// The admin interface under `/admin`.
#[derive(Clone, PartialEq)]
pub struct AdminSettings {
    /// Serve `/admin` at all.
    pub enabled: bool,
    /// The bearer token; `None`: one is generated on first start and kept in `data_dir`.
    pub token: Option<String>,
    /// How long an admin page session lasts after logging in.
    pub session: Duration,
    /// Mark the session cookie `Secure` (sent over HTTPS only) even when the request does not
    /// say it came over TLS (`X-Forwarded-Proto: https`).
    pub secure_cookies: bool,
    /// The networks nginx (`ross nginx-config`) lets reach `/admin`, `/metrics` and `/ready`:
    /// addresses or CIDR blocks, as nginx's `allow` takes them.
    pub networks: Vec<String>,
}

impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSettings")
            .field("enabled", &self.enabled)
            .field("networks", &self.networks)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("session", &self.session)
            .field("secure_cookies", &self.secure_cookies)
            .finish()
    }
}

/// Shortest admin token accepted: anything shorter could be guessed.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// HTTP listener settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Address to bind; loopback by default because ross normally sits behind nginx.
    pub listen: SocketAddr,
    /// A request head not complete this long after its first byte is answered 408 and its
    /// connection closed: a client trickling bytes cannot hold a connection forever.
    pub header_timeout: Duration,
    /// A connection idle this long between requests is closed.
    pub keep_alive_timeout: Duration,
    /// Connections open at once; beyond it ross stops accepting until one closes, so idle or
    /// slow clients cannot take every file descriptor.
    pub max_connections: usize,
    /// Largest request head (request line and headers); larger is 431.
    pub max_header_bytes: usize,
    /// A response that cannot send a byte for this long (the client stopped reading) is
    /// abandoned and its connection closed.
    pub send_timeout: Duration,
}

/// Where originals come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSettings {
    /// A folder on local disk; keys are paths under it.
    Local {
        /// The media root. Nothing outside it is ever read.
        root: PathBuf,
        /// Bound on one read of an original; past it the request is 504.
        timeout: Duration,
    },
    /// An S3 bucket, or any S3-compatible store (MinIO, Ceph, R2).
    S3(S3Settings),
}

/// An S3 bucket as a source. Credentials are not settings: they come from the standard AWS
/// chain (environment, shared profile, container or instance role).
#[derive(Debug, Clone, PartialEq)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Region; `None` takes it from the AWS chain (`AWS_REGION`, profile), else `us-east-1`.
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible stores; `None` is AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    /// Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key`; most
    /// self-hosted stores need it.
    pub force_path_style: bool,
    /// Folder prepended to every key: empty, or ending in `/`.
    pub prefix: String,
    /// Bound on one whole fetch (every attempt and the body); past it the request is 504.
    pub timeout: Duration,
    /// Retries after a failed first attempt, for 5xx, throttling and connection errors.
    pub retries: u32,
}

impl SourceSettings {
    /// `"local"` or `"s3"`, as written in `source.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSettings::Local { .. } => "local",
            SourceSettings::S3(_) => "s3",
        }
    }
}

/// How ross hears of originals replaced or removed at the source, to purge their renders.
#[derive(Clone, PartialEq)]
pub struct ChangeSettings {
    /// With a local source: watch the media root, and check the cached keys' originals at
    /// start-up (`source.watch`).
    pub watch: bool,
    /// A secret S3 event notifications may be posted to `/admin/api/source-events` with,
    /// besides the admin token (`source.events_secret`); `None`: the admin token only.
    pub events_secret: Option<String>,
    /// The URL of an SQS queue the source bucket sends its events to, read by ross
    /// (`source.events_queue`); `None`: none.
    pub events_queue: Option<String>,
}

impl fmt::Debug for ChangeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeSettings")
            .field("watch", &self.watch)
            .field(
                "events_secret",
                &self.events_secret.as_ref().map(|_| "<set>"),
            )
            .field("events_queue", &self.events_queue)
            .finish()
    }
}

/// Disk cache of rendered variants.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// Root folder; a variant lives at `{dir}/{width}/{height}/{mode}/{key}` so nginx can serve
    /// hits straight from disk.
    pub dir: PathBuf,
    /// `Cache-Control: max-age` sent with every image.
    pub max_age: Duration,
    /// Bound on the bytes of cached files; the least recently served go first.
    pub max_bytes: u64,
    /// Bound on the bytes of hot variants also kept in memory (0: none).
    pub memory_bytes: u64,
    /// Bound on the bytes of originals fetched and decoded in the last minute, kept in memory
    /// to render other sizes of them (0: none).
    pub decoded_bytes: u64,
    /// Bound on the disk taken by reduced originals: the first decode of an original also
    /// keeps a copy of its pixels, reduced for the largest size asked for, so that later
    /// sizes render from the copy without decoding the original again (0: none).
    pub originals_bytes: u64,
    /// Bound on the files and folders deleted per second from the trash, where a purge of
    /// everything, a mode or a size moves what it matches at once (deleting them competes
    /// with hits for the disk).
    pub purge_deletes_per_second: u64,
    /// Bytes kept free on `cache.dir`'s file system: below it, the least recently served
    /// entries are evicted, whatever `max_bytes` allows (the disk is shared, and a full disk
    /// fails more than the cache).
    pub min_free_bytes: u64,
    /// Share renders between the nodes of a cluster through its S3 folder: a node that misses
    /// on disk asks the folder before rendering, and every render is written there too.
    pub shared: bool,
    /// For developing modes: every plugin load purges its mode's renders whatever its
    /// version, and images say `Cache-Control: no-store`, so browsers, nginx and CDNs keep
    /// nothing (`cache.development`).
    pub development: bool,
}

/// Mode plugins.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    /// Folder scanned for `*.so` mode plugins at start-up.
    pub dir: PathBuf,
    /// Watch the folder and load, replace and remove plugins while serving.
    pub hot_reload: bool,
}

/// A width and height, written `WxH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size {
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a size like 300x200");
        let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let side = |t: &str| -> Result<u32, String> {
            match t.parse::<u32>() {
                Ok(n) if n > 0 && !t.starts_with('0') && !t.starts_with('+') => Ok(n),
                _ => Err(bad()),
            }
        };
        Ok(Size {
            width: side(w)?,
            height: side(h)?,
        })
    }
}

/// The size whitelist as configured: it seeds the live whitelist, or (with
/// [`WhitelistSource::Config`]) is the whitelist.
#[derive(Debug, Clone, PartialEq)]
pub struct WhitelistSettings {
    /// When false any size within the limits is rendered (internal development use).
    pub enabled: bool,
    /// Sizes that may be rendered when enabled.
    pub sizes: Vec<Size>,
    /// Which is the truth: the admin page (and API) or these settings.
    pub source: WhitelistSource,
}

/// Where the whitelist is kept (`whitelist.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhitelistSource {
    /// Edited from the admin page and API while serving; the settings seed a new `data_dir`.
    Admin,
    /// The settings file is the truth: applied at every start, read-only on the admin page.
    Config,
}

impl WhitelistSource {
    /// As written in `whitelist.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            WhitelistSource::Admin => "admin",
            WhitelistSource::Config => "config",
        }
    }
}

/// The state nodes share through an S3 bucket (`[cluster]`): whitelist changes, purges and
/// every node's heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// The bucket and folder the state lives under (`prefix` is never empty and ends in `/`),
    /// and how to reach it: `source.*`'s connection settings unless `cluster.*` names others.
    pub store: S3Settings,
    /// How often each node looks for changes made on the others.
    pub poll_interval: Duration,
    /// How often each node says it is alive (and how it is doing).
    pub heartbeat_interval: Duration,
    /// The address other nodes and operators reach this node's admin pages and `/metrics` at.
    pub advertise: String,
    /// This node's name on the Cluster page.
    pub node_name: String,
}

/// A CDN or cache in front of ross that every purge is also sent to (`[cdn.NAME]`).
#[derive(Clone, PartialEq)]
pub struct CdnSettings {
    /// The table's name, for logs, metrics and the admin pages.
    pub name: String,
    /// What it is and how it is reached.
    pub target: CdnTarget,
}

impl fmt::Debug for CdnSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdnSettings")
            .field("name", &self.name)
            .field("kind", &self.target.kind())
            .finish_non_exhaustive()
    }
}

/// How purges reach one CDN.
#[derive(Clone, PartialEq)]
pub enum CdnTarget {
    /// Varnish with the xkey module (`deploy/varnish.vcl`): `PURGE` to `url` with the tags,
    /// space-separated, in the header `header`.
    Varnish {
        /// Where Varnish takes purges: `http://host:port/`.
        url: String,
        /// The request header that lists the tags (the VCL's: `xkey-purge`).
        header: String,
    },
    /// Fastly: purge by surrogate key through its API (at most 256 keys a request).
    Fastly {
        /// The service.
        service_id: String,
        /// An API token with purge rights.
        token: String,
        /// Mark stale rather than remove (`Fastly-Soft-Purge: 1`).
        soft: bool,
        /// The API's address (`https://api.fastly.com`; another for tests).
        api: String,
    },
    /// Cloudflare: purge by `Cache-Tag` through its API.
    Cloudflare {
        /// The zone.
        zone_id: String,
        /// An API token with the Cache Purge permission.
        token: String,
        /// Tags sent in one request (Cloudflare takes 100 at most; 30 on older plans).
        tags_per_request: u32,
        /// The API's address (`https://api.cloudflare.com/client/v4`; another for tests).
        api: String,
    },
    /// CloudFront: `CreateInvalidation` of the paths a purge names, with the AWS credentials
    /// of the environment.
    CloudFront {
        /// The distribution.
        distribution_id: String,
        /// The API's region (`us-east-1`).
        region: String,
        /// Another endpoint (an S3-compatible test server's CloudFront API).
        endpoint: Option<String>,
    },
}

impl CdnTarget {
    /// Its `kind` as the settings write it.
    pub fn kind(&self) -> &'static str {
        match self {
            CdnTarget::Varnish { .. } => "varnish",
            CdnTarget::Fastly { .. } => "fastly",
            CdnTarget::Cloudflare { .. } => "cloudflare",
            CdnTarget::CloudFront { .. } => "cloudfront",
        }
    }
}

/// Where ross takes nginx's hit log: syslog datagrams, one hit each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HitLogListen {
    /// A UDP address (loopback, normally).
    Udp(SocketAddr),
    /// A Unix datagram socket ross creates at this path (`unix:/path`).
    Unix(PathBuf),
}

impl fmt::Display for HitLogListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HitLogListen::Udp(addr) => write!(f, "{addr}"),
            HitLogListen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Default `cluster.prefix`.
pub const DEFAULT_CLUSTER_PREFIX: &str = "ross-cluster";

/// Bounds that keep one request, or many, from taking the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest width a URL may ask for.
    pub max_width: u32,
    /// Largest height a URL may ask for.
    pub max_height: u32,
    /// Largest output, in pixels (width x height): bounds the memory of one render however
    /// large the width and height limits are.
    pub max_output_pixels: u64,
    /// Largest source file read; bigger ones are refused with 413 before being read whole.
    pub max_source_bytes: u64,
    /// Largest source image, in pixels, read from the header before decoding: a 90 kB PNG can
    /// claim 400 megapixels.
    pub max_source_pixels: u64,
    /// Renders running at once (CPU-bound work); defaults to the number of cores.
    pub max_concurrent_renders: usize,
    /// Renders allowed to wait for a slot; beyond this requests get 503 with `Retry-After`.
    pub max_queue: usize,
    /// Originals (`GET /{key}`) being sent at once; beyond this 503 with `Retry-After`. Each
    /// holds an open file or store connection and one buffer, never the whole original.
    pub max_original_streams: usize,
    /// A render still running after this answers 503 and its worker is killed; bounds how
    /// long a client waits and how long a runaway plugin holds a core.
    pub render_timeout: Duration,
    /// Address space one render worker may map (`RLIMIT_AS`): a plugin or decoder that wants
    /// more fails its own request with 503 `out-of-memory` and the server never grows. The
    /// default is derived from the source limits ([`default_worker_memory`]).
    pub worker_memory_bytes: u64,
}

/// Encoding of rendered images.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutputSettings {
    /// Baseline JPEG quality, 1..=100.
    pub jpeg_quality: u8,
    /// The formats served, in order of preference; JPEG, what every client takes, is always
    /// last (added when not listed).
    pub formats: Vec<OutputFormat>,
    /// WebP quality, 1..=100 (libwebp's scale).
    pub webp_quality: u8,
    /// AVIF quality, 1..=100 (libavif's scale: 100 is lossless colour).
    pub avif_quality: u8,
    /// AVIF encoder speed, 0 (slowest, smallest) ..= 10 (fastest).
    pub avif_speed: u8,
    /// The headers that carry an image's surrogate keys (tags a CDN purges by), each once;
    /// empty: none.
    pub surrogate_keys: Vec<SurrogateHeader>,
    /// `Access-Control-Allow-Origin` on every image: `*` or one origin; `None`: not sent.
    pub cors_origin: Option<String>,
}

/// A header that carries surrogate keys, as a CDN or cache reads it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum SurrogateHeader {
    /// `Surrogate-Key`, space-separated: Fastly; Varnish with the VCL in `deploy/`.
    SurrogateKey,
    /// `Cache-Tag`, comma-separated: Cloudflare; CloudFront's tag invalidation.
    CacheTag,
    /// `xkey`, space-separated: Varnish's xkey module as it comes.
    Xkey,
}

impl SurrogateHeader {
    /// Every header, in the order the settings name them.
    pub const ALL: [SurrogateHeader; 3] = [
        SurrogateHeader::SurrogateKey,
        SurrogateHeader::CacheTag,
        SurrogateHeader::Xkey,
    ];

    /// The header's name, as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            SurrogateHeader::SurrogateKey => "Surrogate-Key",
            SurrogateHeader::CacheTag => "Cache-Tag",
            SurrogateHeader::Xkey => "xkey",
        }
    }

    /// What separates keys in it.
    pub fn separator(self) -> &'static str {
        match self {
            SurrogateHeader::CacheTag => ",",
            SurrogateHeader::SurrogateKey | SurrogateHeader::Xkey => " ",
        }
    }
}

impl fmt::Display for SurrogateHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SurrogateHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SurrogateHeader::ALL
            .into_iter()
            .find(|h| h.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a surrogate-key header: one of Surrogate-Key (Fastly, \
                     Varnish), Cache-Tag (Cloudflare, CloudFront), xkey (Varnish)"
                )
            })
    }
}

/// An encoding ross can serve.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Baseline JPEG, what every client accepts.
    Jpeg,
    /// WebP (lossy, with alpha).
    Webp,
    /// AVIF (AV1 still image, with alpha).
    Avif,
}

impl OutputFormat {
    /// Every format.
    pub const ALL: [OutputFormat; 3] = [OutputFormat::Jpeg, OutputFormat::Webp, OutputFormat::Avif];

    /// The longest side its encoder can write: libjpeg's 65,500, WebP's 16,383 (14 bits),
    /// AV1's 65,536.
    pub fn max_side(self) -> u32 {
        match self {
            OutputFormat::Jpeg => 65_500,
            OutputFormat::Webp => 16_383,
            OutputFormat::Avif => 65_536,
        }
    }

    /// Whether its encoder can write an image of `size`.
    pub fn fits(self, size: Size) -> bool {
        size.width <= self.max_side() && size.height <= self.max_side()
    }

    /// Its name in settings and in cache paths, also the subtype of its media type.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Webp => "webp",
            OutputFormat::Avif => "avif",
        }
    }

    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Webp => "image/webp",
            OutputFormat::Avif => "image/avif",
        }
    }

    /// Whether it can hold transparency.
    pub fn has_alpha(self) -> bool {
        self != OutputFormat::Jpeg
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        let name = if name == "jpg" {
            "jpeg".to_owned()
        } else {
            name
        };
        OutputFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == name)
            .ok_or_else(|| format!("{s:?} is not a format ross serves (jpeg, webp, avif)"))
    }
}

/// Defaults of the output section, from the measurements in docs/formats.md.
pub const DEFAULT_WEBP_QUALITY: u8 = 86;
/// See [`DEFAULT_WEBP_QUALITY`].
pub const DEFAULT_AVIF_QUALITY: u8 = 75;
/// See [`DEFAULT_WEBP_QUALITY`].
pub const DEFAULT_AVIF_SPEED: u8 = 9;

/// The media root when nobody configured one: the sample images bundled with ross.
pub const DEFAULT_MEDIA_ROOT: &str = "samples";

/// Sizes in the whitelist when nobody configured any (OpenRoss's list plus 300x300).
pub const DEFAULT_WHITELIST: [&str; 4] = ["72x72", "200x250", "300x300", "1024x768"];

impl Settings {
    /// Loads settings the way the `ross` binary does: the file named by `config` or else by
    /// `ROSS_CONFIG` (none: defaults only), then the process's `ROSS__*` variables.
    #[allow(clippy::disallowed_methods)] // the one place that reads the environment
    pub fn from_process(config: Option<&Path>) -> Result<Settings, ConfigErrors> {
        let file = config.map(Path::to_path_buf).or_else(|| {
            std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let env = std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX));
        Settings::load(file.as_deref(), env)
    }

    /// Loads settings from an optional TOML file and the given `ROSS__*` variables.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigErrors> {
        let text = match file {
            None => None,
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| whole_file_error(path, format!("cannot read config file: {e}")))?,
            ),
        };
        Settings::from_parts(file, text.as_deref(), env)
    }

    /// Loads settings from TOML text (as if read from `file`) and `ROSS__*` variables.
    pub fn from_parts(
        file: Option<&Path>,
        text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigErrors> {
        let path_text = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "config".into());
        let table = match text {
            None => None,
            Some(t) => Some(t.parse::<toml::Table>().map_err(|e| {
                let msg = e.to_string().replace('\n', " ");
                whole_file_error(Path::new(&path_text), format!("not valid TOML: {msg}"))
            })?),
        };
        let env: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let mut r = Reader::new(table.as_ref().map(|t| (path_text.as_str(), t)), env);
        let mut settings = read_settings(&mut r);
        settings.origins = r.take_origins();
        r.finish()?;
        Ok(settings)
    }

    /// The effective settings as `key = value` lines in TOML syntax, for `ross check-config`.
    pub fn effective(&self) -> Vec<(String, String)> {
        let q = |s: &dyn fmt::Display| format!("{:?}", s.to_string());
        let p = |p: &Path| format!("{:?}", p.display().to_string());
        let sizes: Vec<String> = self.whitelist.sizes.iter().map(|s| q(s)).collect();
        let l = &self.limits;
        let sv = &self.server;
        let mut lines = vec![
            ("server.listen", q(&sv.listen)),
            (
                "server.header_timeout_ms",
                sv.header_timeout.as_millis().to_string(),
            ),
            (
                "server.keep_alive_timeout_ms",
                sv.keep_alive_timeout.as_millis().to_string(),
            ),
            ("server.max_connections", sv.max_connections.to_string()),
            ("server.max_header_bytes", sv.max_header_bytes.to_string()),
            (
                "server.send_timeout_ms",
                sv.send_timeout.as_millis().to_string(),
            ),
            ("source.kind", q(&self.source.kind())),
        ];
        match &self.source {
            SourceSettings::Local { root, timeout } => lines.extend([
                ("source.root", p(root)),
                ("source.timeout_ms", timeout.as_millis().to_string()),
            ]),
            SourceSettings::S3(s3) => {
                let opt = |v: &Option<String>| v.as_ref().map_or_else(|| "\"\"".into(), |v| q(v));
                lines.extend([
                    ("source.bucket", q(&s3.bucket)),
                    ("source.region", opt(&s3.region)),
                    (
                        "source.endpoint",
                        opt(&s3.endpoint.as_deref().map(redact_userinfo)),
                    ),
                    ("source.force_path_style", s3.force_path_style.to_string()),
                    ("source.prefix", q(&s3.prefix)),
                    ("source.timeout_ms", s3.timeout.as_millis().to_string()),
                    ("source.retries", s3.retries.to_string()),
                ]);
            }
        }
        lines.extend([
            ("cache.dir", p(&self.cache.dir)),
            ("cache.max_age", self.cache.max_age.as_secs().to_string()),
            ("cache.max_bytes", self.cache.max_bytes.to_string()),
            ("cache.memory_bytes", self.cache.memory_bytes.to_string()),
            ("cache.decoded_bytes", self.cache.decoded_bytes.to_string()),
            (
                "cache.originals_bytes",
                self.cache.originals_bytes.to_string(),
            ),
            (
                "cache.purge_deletes_per_second",
                self.cache.purge_deletes_per_second.to_string(),
            ),
            (
                "cache.min_free_bytes",
                self.cache.min_free_bytes.to_string(),
            ),
            ("cache.shared", self.cache.shared.to_string()),
            ("cache.development", self.cache.development.to_string()),
            ("source.watch", self.changes.watch.to_string()),
            (
                "source.events_secret",
                if self.changes.events_secret.is_some() {
                    "\"<set, not shown>\"".into()
                } else {
                    "\"\"".into()
                },
            ),
            (
                "source.events_queue",
                q(&self.changes.events_queue.as_deref().unwrap_or("")),
            ),
            ("data_dir", p(&self.data_dir)),
            ("plugins.dir", p(&self.plugins.dir)),
            ("plugins.hot_reload", self.plugins.hot_reload.to_string()),
            ("whitelist.enabled", self.whitelist.enabled.to_string()),
            ("whitelist.sizes", format!("[{}]", sizes.join(", "))),
            ("whitelist.source", q(&self.whitelist.source.as_str())),
            ("limits.max_width", l.max_width.to_string()),
            ("limits.max_height", l.max_height.to_string()),
            ("limits.max_output_pixels", l.max_output_pixels.to_string()),
            ("limits.max_source_bytes", l.max_source_bytes.to_string()),
            ("limits.max_source_pixels", l.max_source_pixels.to_string()),
            (
                "limits.max_concurrent_renders",
                l.max_concurrent_renders.to_string(),
            ),
            ("limits.max_queue", l.max_queue.to_string()),
            (
                "limits.max_original_streams",
                l.max_original_streams.to_string(),
            ),
            (
                "limits.render_timeout_ms",
                l.render_timeout.as_millis().to_string(),
            ),
            (
                "limits.worker_memory_bytes",
                l.worker_memory_bytes.to_string(),
            ),
            ("output.jpeg_quality", self.output.jpeg_quality.to_string()),
            (
                "output.formats",
                format!(
                    "[{}]",
                    self.output
                        .formats
                        .iter()
                        .map(|f| q(f))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            ("output.webp_quality", self.output.webp_quality.to_string()),
            ("output.avif_quality", self.output.avif_quality.to_string()),
            ("output.avif_speed", self.output.avif_speed.to_string()),
            (
                "output.cors_origin",
                q(&self.output.cors_origin.as_deref().unwrap_or_default()),
            ),
            (
                "output.surrogate_keys",
                format!(
                    "[{}]",
                    self.output
                        .surrogate_keys
                        .iter()
                        .map(|h| q(h))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            ("serve_originals", self.serve_originals.to_string()),
            ("admin.enabled", self.admin.enabled.to_string()),
            (
                "admin.session_minutes",
                (self.admin.session.as_secs() / 60).to_string(),
            ),
            (
                "admin.secure_cookies",
                self.admin.secure_cookies.to_string(),
            ),
            (
                "admin.networks",
                format!(
                    "[{}]",
                    self.admin
                        .networks
                        .iter()
                        .map(|n| q(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            (
                "statsd.host",
                q(&self
                    .statsd
                    .as_ref()
                    .map_or(String::new(), |s| redact_userinfo(&s.host))),
            ),
            (
                "statsd.port",
                self.statsd.as_ref().map_or(8125, |s| s.port).to_string(),
            ),
            (
                "statsd.prefix",
                q(&self.statsd.as_ref().map_or("ross", |s| s.prefix.as_str())),
            ),
            (
                "sentry.dsn",
                if self.sentry.is_some() {
                    "\"<set, not shown>\"".into()
                } else {
                    "\"\"".into()
                },
            ),
            (
                "sentry.environment",
                q(&self
                    .sentry
                    .as_ref()
                    .and_then(|s| s.environment.as_deref())
                    .unwrap_or("")),
            ),
            (
                "log.format",
                q(&if self.log.json { "json" } else { "text" }),
            ),
            ("log.access", self.log.access.to_string()),
            (
                "admin.token",
                if self.admin.token.is_some() {
                    "\"<set, not shown>\"".into()
                } else {
                    "\"\" # generated, kept in data_dir/admin-token".into()
                },
            ),
        ]);
        let mut lines: Vec<(String, String)> =
            lines.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        lines.extend(self.effective_cluster());
        lines.extend(self.effective_cdns());
        lines.push((
            "hit_log.listen".to_owned(),
            format!(
                "{:?}",
                self.hit_log
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        ));
        lines
    }

    fn effective_cdns(&self) -> Vec<(String, String)> {
        let q = |s: &str| format!("{s:?}");
        let secret = || "\"<set>\"".to_owned();
        let mut lines = Vec::new();
        for cdn in &self.cdns {
            let mut line = |k: &str, v: String| lines.push((format!("cdn.{}.{k}", cdn.name), v));
            line("kind", q(cdn.target.kind()));
            match &cdn.target {
                CdnTarget::Varnish { url, header } => {
                    line("url", q(url));
                    line("header", q(header));
                }
                CdnTarget::Fastly {
                    service_id,
                    soft,
                    api,
                    ..
                } => {
                    line("service_id", q(service_id));
                    line("token", secret());
                    line("soft", soft.to_string());
                    line("api", q(api));
                }
                CdnTarget::Cloudflare {
                    zone_id,
                    tags_per_request,
                    api,
                    ..
                } => {
                    line("zone_id", q(zone_id));
                    line("token", secret());
                    line("tags_per_request", tags_per_request.to_string());
                    line("api", q(api));
                }
                CdnTarget::CloudFront {
                    distribution_id,
                    region,
                    endpoint,
                } => {
                    line("distribution_id", q(distribution_id));
                    line("region", q(region));
                    line("endpoint", q(endpoint.as_deref().unwrap_or_default()));
                }
            }
        }
        lines
    }

    fn effective_cluster(&self) -> Vec<(String, String)> {
        let q = |s: &str| format!("{s:?}");
        let Some(c) = &self.cluster else {
            return vec![("cluster.enabled".into(), "false".into())];
        };
        let s3 = &c.store;
        [
            ("cluster.enabled", "true".to_owned()),
            ("cluster.bucket", q(&s3.bucket)),
            ("cluster.prefix", q(s3.prefix.trim_end_matches('/'))),
            ("cluster.region", q(s3.region.as_deref().unwrap_or(""))),
            (
                "cluster.endpoint",
                q(&s3
                    .endpoint
                    .as_deref()
                    .map(redact_userinfo)
                    .unwrap_or_default()),
            ),
            ("cluster.force_path_style", s3.force_path_style.to_string()),
            (
                "cluster.poll_interval_ms",
                c.poll_interval.as_millis().to_string(),
            ),
            (
                "cluster.heartbeat_interval_ms",
                c.heartbeat_interval.as_millis().to_string(),
            ),
            ("cluster.advertise", q(&c.advertise)),
            ("cluster.node_name", q(&c.node_name)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_parts(None, None, std::iter::empty()).expect("built-in defaults are valid")
    }
}

fn whole_file_error(path: &Path, message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        key: path.display().to_string(),
        origin: Origin::Whole,
        message,
    }])
}

/// The folder holding the running executable: built-in mode plugins are built next to the
/// `ross` binary, so this finds them without configuration.
fn executable_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn read_settings(r: &mut Reader<'_>) -> Settings {
    let listen = r.parsed(
        "server.listen",
        SocketAddr::from(([127, 0, 0, 1], 8080)),
        "ip:port",
    );
    let source = read_source(r);
    let data_dir = PathBuf::from(r.string("data_dir", "ross-data"));
    let cache_dir = r.optional_string("cache.dir").map(PathBuf::from);
    let cache = CacheSettings {
        dir: cache_dir.unwrap_or_else(|| data_dir.join("cache")),
        max_age: Duration::from_secs(r.int("cache.max_age", 604_800u64, 0..=i64::from(u32::MAX))),
        max_bytes: r.int("cache.max_bytes", 10u64 << 30, 1..=i64::MAX),
        memory_bytes: r.int("cache.memory_bytes", 64u64 << 20, 0..=1 << 40),
        decoded_bytes: r.int("cache.decoded_bytes", 256u64 << 20, 0..=1 << 40),
        originals_bytes: r.int("cache.originals_bytes", 2u64 << 30, 0..=i64::MAX),
        purge_deletes_per_second: r.int("cache.purge_deletes_per_second", 2000u64, 1..=1_000_000),
        min_free_bytes: r.int("cache.min_free_bytes", 256u64 << 20, 0..=i64::MAX),
        shared: r.bool("cache.shared", false),
        development: r.bool("cache.development", false),
    };
    let changes = ChangeSettings {
        watch: r.bool("source.watch", true),
        events_secret: r
            .optional_string("source.events_secret")
            .filter(|s| !s.is_empty()),
        events_queue: r
            .optional_string("source.events_queue")
            .filter(|s| !s.is_empty()),
    };
    if let Some(queue) = &changes.events_queue {
        let shaped = queue
            .strip_prefix("https://")
            .or_else(|| queue.strip_prefix("http://"))
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(host, path)| !host.is_empty() && !path.is_empty());
        if !matches!(source, SourceSettings::S3(_)) {
            r.invalid(
                "source.events_queue",
                "needs source.kind = \"s3\": the queue carries the bucket's events".into(),
            );
        } else if !shaped {
            r.invalid(
                "source.events_queue",
                format!(
                    "expected the queue's URL, https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, \
                     got {queue:?}"
                ),
            );
        }
    }
    if let Some(secret) = &changes.events_secret {
        if secret.chars().count() < MIN_ADMIN_TOKEN_LEN || secret.chars().any(char::is_whitespace) {
            r.invalid(
                "source.events_secret",
                format!(
                    "must be at least {MIN_ADMIN_TOKEN_LEN} characters without spaces \
                     (anything shorter could be guessed)"
                ),
            );
        }
    }
    let plugins = PluginSettings {
        dir: r
            .optional_string("plugins.dir")
            .map(PathBuf::from)
            .unwrap_or_else(executable_dir),
        hot_reload: r.bool("plugins.hot_reload", true),
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let limits = Limits {
        max_width: r.int("limits.max_width", 2000u32, 1..=HARD_MAX_SIDE),
        max_height: r.int("limits.max_height", 2000u32, 1..=HARD_MAX_SIDE),
        max_output_pixels: r.int(
            "limits.max_output_pixels",
            16_000_000u64,
            1..=HARD_MAX_OUTPUT_PIXELS,
        ),
        max_source_bytes: r.int(
            "limits.max_source_bytes",
            50u64 << 20,
            1..=HARD_MAX_SOURCE_BYTES,
        ),
        max_source_pixels: r.int(
            "limits.max_source_pixels",
            50_000_000u64,
            1..=HARD_MAX_SOURCE_PIXELS,
        ),
        max_concurrent_renders: r.int("limits.max_concurrent_renders", cores, 1..=1024),
        max_queue: r.int("limits.max_queue", 256usize, 0..=1_000_000),
        max_original_streams: r.int("limits.max_original_streams", 64usize, 1..=100_000),
        render_timeout: Duration::from_millis(r.int(
            "limits.render_timeout_ms",
            10_000u64,
            1..=3_600_000,
        )),
        worker_memory_bytes: 0,
    };
    // Derived from the limits above, so read once they are known.
    let limits = Limits {
        worker_memory_bytes: r.int(
            "limits.worker_memory_bytes",
            default_worker_memory(&limits, cache.decoded_bytes),
            MIN_WORKER_MEMORY as i64..=1 << 46,
        ),
        ..limits
    };
    // What is not given and not a constant says what it was computed from.
    r.derived("cache.dir", "data_dir");
    r.derived("plugins.dir", "the folder of the ross executable");
    r.derived("limits.max_concurrent_renders", "the cores of the machine");
    r.derived(
        "limits.worker_memory_bytes",
        "limits.max_source_bytes, max_source_pixels, max_concurrent_renders and \
         cache.decoded_bytes",
    );

    let enabled = r.bool("whitelist.enabled", true);
    let whitelist_source = match r.string("whitelist.source", "admin").as_str() {
        "admin" => WhitelistSource::Admin,
        "config" => WhitelistSource::Config,
        other => {
            r.invalid(
                "whitelist.source",
                format!("expected \"admin\" or \"config\", got {other:?}"),
            );
            WhitelistSource::Admin
        }
    };
    let mut sizes = Vec::new();
    for text in r.list("whitelist.sizes", &DEFAULT_WHITELIST) {
        match text.parse::<Size>() {
            Ok(s)
                if s.width <= limits.max_width
                    && s.height <= limits.max_height
                    && u64::from(s.width) * u64::from(s.height) <= limits.max_output_pixels =>
            {
                sizes.push(s)
            }
            Ok(s) => r.invalid(
                "whitelist.sizes",
                format!(
                    "{s} is larger than limits.max_width x limits.max_height, or has more \
                     pixels than limits.max_output_pixels"
                ),
            ),
            Err(e) => r.invalid("whitelist.sizes", e),
        }
    }
    if let SourceSettings::Local { root, .. } = &source {
        check_folders(r, root, &cache.dir, &data_dir);
    }
    check_plugin_folder(r, &plugins.dir, &cache.dir, &data_dir);
    let admin = AdminSettings {
        enabled: r.bool("admin.enabled", true),
        token: r.optional_string("admin.token").filter(|t| !t.is_empty()),
        session: Duration::from_secs(60 * r.int("admin.session_minutes", 720u64, 5..=43_200)),
        secure_cookies: r.bool("admin.secure_cookies", false),
        networks: r.list("admin.networks", &["127.0.0.1", "::1"]),
    };
    for network in &admin.networks {
        if let Err(e) = check_network(network) {
            r.invalid("admin.networks", e);
        }
    }
    if let Some(token) = &admin.token {
        if token.chars().count() < MIN_ADMIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
            r.invalid(
                "admin.token",
                format!(
                    "must be at least {MIN_ADMIN_TOKEN_LEN} characters without spaces \
                     (leave it unset to have one generated)"
                ),
            );
        }
    }
    let server = ServerSettings {
        listen,
        header_timeout: Duration::from_millis(r.int(
            "server.header_timeout_ms",
            10_000u64,
            100..=600_000,
        )),
        keep_alive_timeout: Duration::from_millis(r.int(
            "server.keep_alive_timeout_ms",
            30_000u64,
            100..=3_600_000,
        )),
        max_connections: r.int("server.max_connections", 512usize, 1..=1_000_000),
        max_header_bytes: r.int("server.max_header_bytes", 16_384usize, 1024..=1_048_576),
        send_timeout: Duration::from_millis(r.int(
            "server.send_timeout_ms",
            30_000u64,
            100..=3_600_000,
        )),
    };
    let statsd_host = r.optional_string("statsd.host").filter(|h| !h.is_empty());
    let statsd_port = r.int("statsd.port", 8125u16, 1..=65_535);
    let statsd_prefix = r.string("statsd.prefix", "ross");
    let log_format = r.string("log.format", "text");
    let json = match log_format.as_str() {
        "text" => false,
        "json" => true,
        other => {
            r.invalid(
                "log.format",
                format!("expected \"text\" or \"json\", got {other:?}"),
            );
            false
        }
    };
    let sentry_dsn = r.optional_string("sentry.dsn").filter(|d| !d.is_empty());
    let sentry_environment = r
        .optional_string("sentry.environment")
        .filter(|e| !e.is_empty());
    if let Some(dsn) = &sentry_dsn {
        let shaped =
            (dsn.starts_with("https://") || dsn.starts_with("http://")) && dsn.contains('@');
        if !shaped {
            r.invalid(
                "sentry.dsn",
                "expected a DSN like https://key@o0.ingest.sentry.io/0".into(),
            );
        }
    }
    let cluster = read_cluster(r, &source, listen);
    if cache.shared && cluster.is_none() {
        r.invalid(
            "cache.shared",
            "needs cluster.enabled = true: renders are shared through the cluster's bucket".into(),
        );
    }
    let hit_log = match r.string("hit_log.listen", "").as_str() {
        "" => None,
        text => match text.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Some(HitLogListen::Unix(PathBuf::from(path))),
            Some(_) => {
                r.invalid(
                    "hit_log.listen",
                    format!("expected unix:/absolute/path, got {text:?}"),
                );
                None
            }
            None => match text.parse::<SocketAddr>() {
                Ok(addr) => Some(HitLogListen::Udp(addr)),
                Err(_) => {
                    r.invalid(
                        "hit_log.listen",
                        format!("expected ip:port (UDP) or unix:/path, got {text:?}"),
                    );
                    None
                }
            },
        },
    };
    let cdns = read_cdns(r);
    Settings {
        cluster,
        hit_log,
        cdns,
        sentry: sentry_dsn.map(|dsn| SentrySettings {
            dsn,
            environment: sentry_environment,
        }),
        statsd: statsd_host.map(|host| StatsdSettings {
            host,
            port: statsd_port,
            prefix: statsd_prefix,
        }),
        log: LogSettings {
            json,
            access: r.bool("log.access", true),
        },
        admin,
        server,
        source,
        changes,
        cache,
        data_dir,
        plugins,
        whitelist: WhitelistSettings {
            enabled,
            sizes,
            source: whitelist_source,
        },
        limits,
        output: read_output(r),
        serve_originals: r.bool("serve_originals", true),
        origins: BTreeMap::new(),
    }
}

/// An address or a CIDR block (`10.0.0.0/8`, `::1`, `fd00::/8`), as nginx's `allow` takes it.
fn check_network(text: &str) -> Result<(), String> {
    let (address, bits) = text.split_once('/').unwrap_or((text, ""));
    let max = match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => {
            return Err(format!(
                "{text:?} is not an address or a CIDR block (10.0.0.0/8, ::1)"
            ))
        }
    };
    if !bits.is_empty() && bits.parse::<u8>().map_or(true, |b| b > max) {
        return Err(format!("{text:?}: the prefix length must be 0 to {max}"));
    }
    Ok(())
}

/// `*`, or one origin as browsers send it: `https://shop.example` (a scheme, a host, perhaps a
/// port; no path).
fn check_origin(text: &str) -> Result<(), String> {
    if text == "*" {
        return Ok(());
    }
    let host = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    match host {
        Some(host)
            if !host.is_empty()
                && host.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                }) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{text:?} is not \"*\" or an origin such as \"https://shop.example\" (a scheme and \
             a host, no path)"
        )),
    }
}

fn read_output(r: &mut Reader<'_>) -> OutputSettings {
    let mut formats = Vec::new();
    let mut after_jpeg = false;
    for text in r.list("output.formats", &["jpeg"]) {
        match text.parse::<OutputFormat>() {
            Ok(f) if formats.contains(&f) => {
                r.invalid("output.formats", format!("{f} is listed twice"));
            }
            Ok(f) => {
                after_jpeg |= formats.contains(&OutputFormat::Jpeg);
                formats.push(f);
            }
            Err(e) => r.invalid("output.formats", e),
        }
    }
    if after_jpeg {
        r.invalid(
            "output.formats",
            "jpeg must come last: every client accepts it, so a format after it would never \
             be served"
                .to_owned(),
        );
    }
    if !formats.contains(&OutputFormat::Jpeg) {
        formats.push(OutputFormat::Jpeg);
    }
    let mut surrogate_keys = Vec::new();
    for text in r.list("output.surrogate_keys", &["Surrogate-Key"]) {
        match text.parse::<SurrogateHeader>() {
            Ok(h) if surrogate_keys.contains(&h) => {
                r.invalid("output.surrogate_keys", format!("{h} is listed twice"));
            }
            Ok(h) => surrogate_keys.push(h),
            Err(e) => r.invalid("output.surrogate_keys", e),
        }
    }
    let cors_origin = r
        .optional_string("output.cors_origin")
        .filter(|o| !o.is_empty());
    if let Some(origin) = &cors_origin {
        if let Err(e) = check_origin(origin) {
            r.invalid("output.cors_origin", e);
        }
    }
    OutputSettings {
        surrogate_keys,
        cors_origin,
        jpeg_quality: r.int("output.jpeg_quality", 90u8, 1..=100),
        formats,
        webp_quality: r.int("output.webp_quality", DEFAULT_WEBP_QUALITY, 1..=100),
        avif_quality: r.int("output.avif_quality", DEFAULT_AVIF_QUALITY, 1..=100),
        avif_speed: r.int("output.avif_speed", DEFAULT_AVIF_SPEED, 0..=10),
    }
}

/// The least address space a render worker can start in: the `ross` binary, its libraries and
/// the plugins mapped, with room for a small render (measured: a worker with the seven
/// built-in plugins maps 80 MiB before its first image).
pub const MIN_WORKER_MEMORY: u64 = 384 << 20;

/// The default of `limits.worker_memory_bytes`: what the largest source the limits admit can
/// take in a worker (its bytes; its pixels decoded as RGBA, a flattened copy and the mode's
/// output of the same order), the worker's share of decoded pixels kept for reuse, and the
/// worker's own mappings. With the defaults (50 MiB, 50 megapixels, 256 MiB kept, 2 workers)
/// about 1.1 GiB.
pub fn default_worker_memory(limits: &Limits, decoded_bytes: u64) -> u64 {
    let workers = limits.max_concurrent_renders.max(1) as u64;
    MIN_WORKER_MEMORY
        + limits.max_source_bytes
        + limits.max_source_pixels.saturating_mul(12)
        + decoded_bytes / workers
}

/// `value` (a URL or `host:port`) with any credentials written into it (`user:password@`)
/// replaced, for everywhere settings are shown (check-config, the admin settings page).
pub fn redact_userinfo(value: &str) -> String {
    let start = value.find("://").map_or(0, |i| i + 3);
    let authority_end = value[start..]
        .find(['/', '?', '#'])
        .map_or(value.len(), |i| start + i);
    match value[start..authority_end].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &value[..start], &value[start + at..]),
        None => value.to_owned(),
    }
}

/// `plugins.dir` must stay clear of ross's own folders: it may not be `data_dir` (or the
/// folder of plugin copies in it) or the cache folder, nor lie inside the cache folder (whose
/// unknown files ross deletes), nor hold either of them (the watcher would read ross's state
/// as plugins).
fn check_plugin_folder(r: &mut Reader<'_>, plugins: &Path, cache: &Path, data: &Path) {
    let plugins = resolved(plugins);
    let (cache, data) = (resolved(cache), resolved(data));
    let copies = data.join("loaded-plugins");
    for (key, dir) in [("data_dir", &data), ("cache.dir", &cache)] {
        let clash = plugins == *dir
            || dir.starts_with(&plugins)
            || (key == "cache.dir" && plugins.starts_with(dir))
            || plugins == copies;
        if clash {
            r.invalid(
                "plugins.dir",
                format!(
                    "{} and {key} {} overlap: keep the plugin folder apart from ross's own \
                     folders",
                    plugins.display(),
                    dir.display()
                ),
            );
            return;
        }
    }
}

/// `cache.dir` and `data_dir` must stay clear of the media root, and of each other: ross
/// deletes what its index does not know from the cache folder, and would serve its renders
/// and state as originals from inside the media root.
fn check_folders(r: &mut Reader<'_>, root: &Path, cache: &Path, data: &Path) {
    let (root, cache, data) = (resolved(root), resolved(cache), resolved(data));
    for (key, dir) in [("cache.dir", &cache), ("data_dir", &data)] {
        if let Some(relation) = overlap(dir, &root) {
            r.invalid(
                key,
                format!(
                    "{} {relation} the media root source.root {}: keep ross's folders \
                     outside the originals",
                    dir.display(),
                    root.display()
                ),
            );
        }
    }
    if cache == data || data.starts_with(&cache) {
        r.invalid(
            "data_dir",
            format!(
                "{} is or lies inside cache.dir {}: the cache folder holds renders only",
                data.display(),
                cache.display()
            ),
        );
    }
}

/// How `dir` stands to `root`, if they overlap.
fn overlap(dir: &Path, root: &Path) -> Option<&'static str> {
    if dir == root {
        Some("is")
    } else if dir.starts_with(root) {
        Some("lies inside")
    } else if root.starts_with(dir) {
        Some("contains")
    } else {
        None
    }
}

/// `path` made absolute, with `.` and `..` applied and symbolic links in its existing part
/// resolved, so two spellings of one folder compare equal.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut clean = PathBuf::new();
    for c in absolute.components() {
        match c {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            other => clean.push(other),
        }
    }
    // Resolve the longest existing ancestor; the rest does not exist yet.
    let mut existing = clean.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return clean,
        }
    }
}

/// `cluster.*`. Read (and type-checked) whether or not the cluster is on; only checked for
/// completeness when it is. The connection settings default to `source.*`'s when the source
/// is S3.
/// The `[cdn.NAME]` tables.
fn read_cdns(r: &mut Reader<'_>) -> Vec<CdnSettings> {
    let mut cdns = Vec::new();
    for name in r.table_names("cdn") {
        let key = |k: &str| format!("cdn.{name}.{k}");
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            r.invalid(
                &key("kind"),
                format!("{name:?}: a CDN's name is lower-case letters, digits, '_' and '-'"),
            );
            continue;
        }
        let required = |r: &mut Reader<'_>, k: &str| -> String {
            let value = r.optional_string(&key(k)).unwrap_or_default();
            if value.is_empty() {
                r.invalid(&key(k), "is required for this kind of CDN".into());
            }
            value
        };
        let url = |r: &mut Reader<'_>, k: &str, default: &str| -> String {
            let value = r.string(&key(k), default);
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                r.invalid(
                    &key(k),
                    format!("expected a URL like http://host:port/, got {value:?}"),
                );
            }
            value
        };
        let target = match r.string(&key("kind"), "").as_str() {
            "varnish" => CdnTarget::Varnish {
                url: url(r, "url", ""),
                header: r.string(&key("header"), "xkey-purge"),
            },
            "fastly" => CdnTarget::Fastly {
                service_id: required(r, "service_id"),
                token: required(r, "token"),
                soft: r.bool(&key("soft"), false),
                api: url(r, "api", "https://api.fastly.com"),
            },
            "cloudflare" => CdnTarget::Cloudflare {
                zone_id: required(r, "zone_id"),
                token: required(r, "token"),
                tags_per_request: r.int(&key("tags_per_request"), 30u32, 1..=100),
                api: url(r, "api", "https://api.cloudflare.com/client/v4"),
            },
            "cloudfront" => CdnTarget::CloudFront {
                distribution_id: required(r, "distribution_id"),
                region: r.string(&key("region"), "us-east-1"),
                endpoint: r
                    .optional_string(&key("endpoint"))
                    .filter(|e| !e.is_empty()),
            },
            other => {
                r.invalid(
                    &key("kind"),
                    format!(
                        "{other:?}: expected \"varnish\", \"fastly\", \"cloudflare\" or \
                         \"cloudfront\""
                    ),
                );
                continue;
            }
        };
        cdns.push(CdnSettings { name, target });
    }
    cdns
}

fn read_cluster(
    r: &mut Reader<'_>,
    source: &SourceSettings,
    listen: SocketAddr,
) -> Option<ClusterSettings> {
    let enabled = r.bool("cluster.enabled", false);
    let from_source = match source {
        SourceSettings::S3(s3) => Some(s3),
        SourceSettings::Local { .. } => None,
    };
    let bucket = r
        .optional_string("cluster.bucket")
        .filter(|b| !b.is_empty())
        .or_else(|| from_source.map(|s| s.bucket.clone()));
    let prefix = r.string("cluster.prefix", DEFAULT_CLUSTER_PREFIX);
    let region = r
        .optional_string("cluster.region")
        .filter(|s| !s.is_empty())
        .or_else(|| from_source.and_then(|s| s.region.clone()));
    let endpoint = r
        .optional_string("cluster.endpoint")
        .filter(|s| !s.is_empty())
        .or_else(|| from_source.and_then(|s| s.endpoint.clone()));
    let path_style_default = from_source.is_some_and(|s| s.force_path_style);
    let force_path_style = r.bool("cluster.force_path_style", path_style_default);
    let poll = r.int("cluster.poll_interval_ms", 2_000u64, 100..=60_000);
    let heartbeat = r.int("cluster.heartbeat_interval_ms", 5_000u64, 500..=300_000);
    let advertise = r.string("cluster.advertise", &listen.to_string());
    let node_name = r
        .optional_string("cluster.node_name")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| host_name().unwrap_or_else(|| advertise.clone()));
    if !enabled {
        return None;
    }
    let bucket = match bucket {
        Some(b) if !b.contains('/') => b,
        Some(b) => {
            r.invalid("cluster.bucket", format!("{b:?} is not a bucket name"));
            b
        }
        None => {
            r.invalid(
                "cluster.bucket",
                "is required when cluster.enabled = true and source.kind is not \"s3\"".into(),
            );
            String::new()
        }
    };
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        r.invalid(
            "cluster.prefix",
            "must name a folder: the cluster's state never shares the bucket's root with \
             originals"
                .into(),
        );
    }
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            r.invalid(
                "cluster.endpoint",
                format!("expected a URL like https://s3.example.com, got {e:?}"),
            );
        }
    }
    let (timeout, retries) =
        from_source.map_or((Duration::from_secs(5), 2), |s| (s.timeout, s.retries));
    Some(ClusterSettings {
        store: S3Settings {
            bucket,
            region,
            endpoint,
            force_path_style,
            prefix: format!("{prefix}/"),
            timeout,
            retries,
        },
        poll_interval: Duration::from_millis(poll),
        heartbeat_interval: Duration::from_millis(heartbeat),
        advertise,
        node_name,
    })
}

/// The machine's host name, if it has one.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// `source.*`. The keys of both kinds are read and type-checked, so one file can hold both and
/// `ROSS__SOURCE__KIND` switches between them; only the chosen kind's keys take effect.
fn read_source(r: &mut Reader<'_>) -> SourceSettings {
    let kind = r.string("source.kind", "local");
    let root = PathBuf::from(r.string("source.root", DEFAULT_MEDIA_ROOT));
    let bucket = r.optional_string("source.bucket");
    let region = r.optional_string("source.region").filter(|s| !s.is_empty());
    let endpoint = r
        .optional_string("source.endpoint")
        .filter(|s| !s.is_empty());
    let force_path_style = r.bool("source.force_path_style", false);
    let prefix = r.string("source.prefix", "");
    let timeout = Duration::from_millis(r.int("source.timeout_ms", 5_000u64, 1..=600_000));
    let retries = r.int("source.retries", 2u32, 0..=10);
    match kind.as_str() {
        "local" => SourceSettings::Local { root, timeout },
        "s3" => {
            let bucket = match bucket {
                Some(b) if !b.is_empty() && !b.contains('/') => b,
                Some(b) => {
                    r.invalid("source.bucket", format!("{b:?} is not a bucket name"));
                    b
                }
                None => {
                    r.invalid(
                        "source.bucket",
                        "is required when source.kind = \"s3\"".into(),
                    );
                    String::new()
                }
            };
            if let Some(e) = &endpoint {
                let host = e
                    .strip_prefix("http://")
                    .or_else(|| e.strip_prefix("https://"));
                if host.is_none_or(str::is_empty) {
                    r.invalid(
                        "source.endpoint",
                        format!("expected a URL like https://s3.example.com, got {e:?}"),
                    );
                }
            }
            let prefix = prefix.trim_matches('/');
            SourceSettings::S3(S3Settings {
                bucket,
                region,
                endpoint,
                force_path_style,
                prefix: if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                },
                timeout,
                retries,
            })
        }
        other => {
            r.invalid(
                "source.kind",
                format!("expected \"local\" or \"s3\", got {other:?}"),
            );
            SourceSettings::Local { root, timeout }
        }
    }
}

#[cfg(test)]
mod tests;
