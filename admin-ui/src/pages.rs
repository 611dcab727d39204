//! The pages, one askama template each (in `templates/`), all but the login and welcome pages
//! inside `base.html`'s frame: navigation, the logout form and a notice line.

use askama::Template;

use crate::views::{CacheText, ModeText, RefusedText, StageText, StatsText, WorkersText};
use crate::views::{ClusterText, ClusterView, NodeText};
use crate::views::{PluginsView, SettingsView, StatsView, WhitelistView};

/// The sections of the admin pages, in the navigation's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Counters, timings and recent errors.
    Dashboard,
    /// The live whitelist.
    Whitelist,
    /// Purges.
    Cache,
    /// Modes and plugin files.
    Plugins,
    /// Every node of the cluster.
    Cluster,
    /// The effective settings.
    Settings,
}

impl Section {
    /// Every section, in order.
    pub const ALL: [Section; 6] = [
        Section::Dashboard,
        Section::Whitelist,
        Section::Cache,
        Section::Plugins,
        Section::Cluster,
        Section::Settings,
    ];

    /// Its name in the navigation.
    pub fn label(self) -> &'static str {
        match self {
            Section::Dashboard => "Dashboard",
            Section::Whitelist => "Whitelist",
            Section::Cache => "Cache",
            Section::Plugins => "Plugins",
            Section::Cluster => "Cluster",
            Section::Settings => "Settings",
        }
    }

    /// Its address.
    pub fn href(self) -> &'static str {
        match self {
            Section::Dashboard => "/admin",
            Section::Whitelist => "/admin/whitelist",
            Section::Cache => "/admin/cache",
            Section::Plugins => "/admin/plugins",
            Section::Cluster => "/admin/cluster",
            Section::Settings => "/admin/settings",
        }
    }
}

/// What every page inside the frame needs.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The section shown.
    pub active: Section,
    /// The session's CSRF token, for every form.
    pub csrf: String,
    /// A line saying what the last action did, if anything.
    pub notice: Option<String>,
    /// The server's version, for the footer.
    pub version: String,
}

impl Chrome {
    /// Whether `section` is the one shown.
    pub fn is(&self, section: &Section) -> bool {
        self.active == *section
    }

    /// The navigation's sections.
    pub fn sections(&self) -> &'static [Section] {
        &Section::ALL
    }

    /// The page's title.
    pub fn title(&self) -> &'static str {
        self.active.label()
    }
}

/// `GET /admin/login`.
#[derive(Debug, Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// The login form's CSRF token.
    pub csrf: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// `GET /admin`.
#[derive(Debug, Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    /// The frame.
    pub chrome: Chrome,
    /// Everything counted.
    pub stats: StatsView,
    /// Seconds between refreshes.
    pub refresh_seconds: u32,
}

/// `GET /admin/whitelist`, and its forms' answers.
#[derive(Debug, Template)]
#[template(path = "whitelist.html")]
pub struct WhitelistPage {
    /// The frame.
    pub chrome: Chrome,
    /// The sizes.
    pub whitelist: WhitelistView,
    /// What was typed into the add form (kept when it was refused).
    pub input: String,
    /// Why the add form's size was refused.
    pub error: Option<String>,
    /// A change that breaks images at once, waiting to be confirmed.
    pub confirm: Option<WhitelistConfirm>,
}

/// A whitelist change shown for confirmation before it is made.
#[derive(Debug, Clone)]
pub enum WhitelistConfirm {
    /// Removing `size`: its requests are refused with 403 and its renders purged.
    Remove {
        /// The size, `WxH`.
        size: String,
        /// What is cached of it now.
        cached: PurgeCount,
    },
    /// Turning the whitelist off: every size within the limits is rendered.
    TurnOff,
}

/// What a cache purge selects, as the form gives it.
#[derive(Debug, Clone, Default)]
pub struct PurgeForm {
    /// `key`, `prefix`, `mode`, `size` or `all`.
    pub kind: String,
    /// The key, prefix, mode or size (empty for `all`).
    pub value: String,
}

impl PurgeForm {
    /// The kinds the form offers: value, label and what the value field means.
    pub const KINDS: [(&'static str, &'static str, &'static str); 5] = [
        ("key", "One image", "the key, e.g. products/1/photo.jpg"),
        ("prefix", "A folder", "a key prefix, e.g. products/1/"),
        ("mode", "A mode", "a mode name, e.g. crop"),
        ("size", "A size", "a size, e.g. 300x300"),
        ("all", "Everything", "leave the field empty"),
    ];

    /// Whether `kind` is the one chosen.
    pub fn is(&self, kind: &&str) -> bool {
        self.kind == *kind
    }

    /// The selection in words: "every variant of products/1/photo.jpg".
    pub fn describe(&self) -> String {
        match self.kind.as_str() {
            "key" => format!("every variant of {}", self.value),
            "prefix" => format!("every variant of the keys under {}", self.value),
            "mode" => format!("every variant rendered by {}", self.value),
            "size" => format!("every variant at {}", self.value),
            _ => "every variant in the cache".into(),
        }
    }
}

/// How much a purge would take.
#[derive(Debug, Clone, Default)]
pub struct PurgeCount {
    /// Variants.
    pub entries: u64,
    /// Bytes.
    pub bytes: u64,
}

impl PurgeCount {
    /// The bytes, readable.
    pub fn bytes_text(&self) -> String {
        crate::format::bytes(self.bytes)
    }
}

/// `GET /admin/cache` and the purge's steps.
#[derive(Debug, Template)]
#[template(path = "cache.html")]
pub struct CachePage {
    /// The frame.
    pub chrome: Chrome,
    /// The cache's totals.
    pub cache: crate::views::CacheView,
    /// The selection (as typed, or being confirmed).
    pub form: PurgeForm,
    /// Why the selection was refused.
    pub error: Option<String>,
    /// The confirmation step: what the purge would remove.
    pub preview: Option<PurgeCount>,
    /// The CDNs in front and what waits for them (none configured: empty).
    pub cdn: admin_api::Cdns,
}

/// `GET /admin/plugins`.
#[derive(Debug, Template)]
#[template(path = "plugins.html")]
pub struct PluginsPage {
    /// The frame.
    pub chrome: Chrome,
    /// Modes and refusals.
    pub plugins: PluginsView,
}

/// `GET /admin/cluster`.
#[derive(Debug, Template)]
#[template(path = "cluster.html")]
pub struct ClusterPage {
    /// The frame.
    pub chrome: Chrome,
    /// This node's standing and every node.
    pub cluster: ClusterView,
}

/// `GET /admin/settings`.
#[derive(Debug, Template)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    /// The frame.
    pub chrome: Chrome,
    /// The effective settings.
    pub settings: SettingsView,
}

/// A refusal inside the admin pages (a form without a valid CSRF token, say).
#[derive(Debug, Template)]
#[template(path = "refused.html")]
pub struct RefusedPage {
    /// What happened.
    pub title: String,
    /// What to do about it.
    pub message: String,
    /// Where to go back to.
    pub back: String,
}

/// `GET /` while the bundled samples are served.
#[derive(Debug, Template)]
#[template(path = "welcome.html")]
pub struct WelcomePage {
    /// Renders to try, one a mode.
    pub samples: Vec<Sample>,
    /// The original they are made from.
    pub original: String,
    /// Whether the admin pages are on.
    pub admin: bool,
}

/// A sample render on the welcome page.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The mode.
    pub mode: String,
    /// What it does.
    pub description: String,
    /// The render's URL.
    pub url: String,
}
