//! ross: an on-the-fly image resizing server.
//!
//! A request `/{width}/{height}/{mode}/{key}` is parsed ([`request`]), checked against the
//! whitelist ([`whitelist`]), and served from the disk cache ([`cache`]) or rendered by the
//! [`pipeline`]: fetch from a [`source`], decode ([`imaging`]), transform with a mode plugin
//! ([`plugins`]), encode, cache. [`app`](mod@app) wires it to HTTP; `main.rs` only parses the command
//! line and starts things.
#![deny(missing_docs)]

pub mod admin;
pub mod admin_token;
pub mod app;
pub mod cache;
pub mod cdn;
pub mod changes;
pub mod cluster;
pub mod crash;
pub mod db;
pub mod error;
pub mod file_headers;
pub mod gate;
pub mod hitlog;
pub mod http;
pub mod imaging;
pub mod negotiate;
pub mod nginx_config;
pub mod observe;
pub mod pipeline;
pub mod plugins;
pub mod recent;
pub mod reduced;
pub mod reload;
pub mod render;
pub mod request;
pub mod routes;
pub mod scaffold;
pub mod shapes;
pub mod singleflight;
pub mod source;
pub mod stall;
pub mod state;
pub mod surrogate;
pub mod telemetry;
pub mod whitelist;
pub mod worker;

pub use app::{app, run};
pub use state::{AppState, StartupError};
