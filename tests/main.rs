//! End-to-end tests of ross: real corpus images through the whole server, over HTTP on
//! 127.0.0.1. A `TestServer` runs `ross::run` in this process on a port of its own (so its
//! state can be looked at); a test that needs a real process (start-up, crashes) starts the
//! `ross` binary. Either way every request passes the HTTP layer: the connection bounds, the
//! memory-hit fast path and the router.

mod process;
mod s3_support;
mod util;

/// The admin JSON API: the token, whitelist edits, bad input, persistence, stats, plugins.
mod admin_api;
mod admin_pages;
/// Bad source files get their SPEC status and the server keeps serving.
mod bad_inputs;
/// The `ross` binary: configuration errors, broken plugins at start-up.
mod binary;
/// The disk cache: hits without the source, headers, conditional requests, crash safety.
mod cache;
/// The cache index: eviction within the bound, purges, kills mid-render and mid-purge, the
/// data_dir lock and refused cache folders.
mod cache_index;
/// Purges sent to the CDN in front: Varnish with xkey, and an endpoint that was down.
mod cdn;
/// Several nodes behind `deploy/nginx-cluster.conf` sharing whitelist changes, purges and
/// heartbeats through the S3-compatible test server; a balancer no client can empty.
mod cluster;
/// Every corpus image in every mode and several sizes, including enlargement and extremes.
mod corpus_matrix;
mod deploy;
/// A full disk: the cache's, headroom kept, and a full data_dir.
mod disk_pressure;
/// Image correctness: EXIF orientation, CMYK and greyscale colours, OpenRoss's goldens.
mod fidelity;
/// WebP and AVIF by `Accept`: every mode in every format, defaults, caching per format.
mod formats;
/// Abuse and careless operation: memory under bursts of large misses.
mod hardening;
/// Renders in sandboxed workers: hangs, crashes, memory, escapes, kills, reload generations,
/// plugin folders without modes.
mod isolation;
/// Originals served unchanged.
mod originals;
/// Plugin loading failures and plugin panics.
mod plugins;
/// Reduced originals: later sizes from a copy, within an error bound; purges, changed
/// originals and kills while a copy is kept.
mod reduced;
/// Hot reload: plugins added, replaced under load, removed and refused while serving; cache
/// purges on a new version.
mod reload;
/// Malformed URLs, traversal attempts, sizes and the whitelist.
mod requests;
/// Originals from a real S3-compatible server: status mapping, odd keys, timeouts, limits.
mod s3;
