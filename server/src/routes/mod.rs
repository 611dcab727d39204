//! Request handlers, one file each, and the response helpers they share.

pub mod admin_api;
pub mod health;
pub mod image;
pub mod metrics;
mod original;
mod render;
mod respond;
