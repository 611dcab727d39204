//! Reduced originals: the first time an original is decoded, the worker also makes a copy of
//! its pixels reduced for the largest size the whitelist shows it at ([`copy`]), and
//! the server keeps it on disk ([`tier`]); later sizes of that original render from the copy
//! (read back, not decoded) when it is large enough for them, and from the original otherwise.

pub mod copy;
pub mod tier;

pub use tier::{ReducedTier, StoredCopy, TierStats};
