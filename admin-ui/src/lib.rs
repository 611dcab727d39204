//! ross's admin pages: askama templates and the plain view structs they read. This crate
//! knows nothing of the server (no sled, no plugins, no state): the server fills the
//! [`views`] from its state in one place, renders a [`pages`] struct, and serves the two
//! [`static`](STYLESHEET) files. The admin JSON API sends the same views as JSON.

#![forbid(unsafe_code)]

pub mod chart;
pub mod format;
pub mod pages;
pub mod views;

pub use askama::Template;

/// The one stylesheet, served at `/admin/static/admin.css`.
pub const STYLESHEET: &str = include_str!("../static/admin.css");

/// The dashboard's refresh, served at `/admin/static/admin.js` (the only script; every
/// action works without it).
pub const SCRIPT: &str = include_str!("../static/admin.js");

/// The pages' icon, served at `/admin/static/favicon.svg`.
pub const ICON: &str = include_str!("../static/favicon.svg");
