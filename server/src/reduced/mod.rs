//! Reduced originals: the first time an original is decoded, the worker also sends the server
//! that decode, reduced for the largest size asked for lately ([`copy`]), and the server keeps
//! it on disk ([`tier`]); later sizes of that original render from the copy (read back, not
//! decoded) when it is large enough for them, and from the original otherwise (whose decode
//! then replaces the copy).

pub mod copy;
pub mod tier;

pub use tier::{ReducedTier, StoredCopy, TierStats};
