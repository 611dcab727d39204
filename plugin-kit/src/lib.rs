//! What ross mode plugins are built from: pixel operations ([`ops`]: Lanczos resampling with
//! SIMD, white canvases, pasting), the geometry of the built-in modes ([`geometry`]), and a
//! test kit (`testing`, with the feature of that name) that renders real images through a plugin in its
//! own tests, as the server does.
//!
//! Nothing here crosses the plugin boundary: the boundary is `ross-plugin-api` (the crate
//! `plugin_api`), frozen on its 0.1.x line, and this crate is versioned freely, so a breaking
//! change to a helper is an ordinary new version of this crate that plugins take up when they
//! choose. A plugin depends on both (and on `abi_stable`, which the export attribute names).
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod geometry;
pub mod ops;
#[cfg(feature = "testing")]
pub mod testing;

/// This crate's version, as `ross plugin new` writes it into a new plugin's requirements.
pub const PACKAGE_VERSION: &str = env!("CARGO_PKG_VERSION");
