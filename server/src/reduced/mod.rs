//! Reduced originals: the first time an original is decoded, the worker also writes that
//! decode, reduced for the largest size asked for lately ([`copy`]), into a file the server
//! keeps on disk ([`tier`]); later sizes of that original render from the copy (read back by
//! a worker, not decoded) when it is large enough for them, and from the original otherwise
//! (whose decode then replaces the copy). Copies bypass the page cache ([`direct`]).

pub mod copy;
pub mod direct;
pub mod tier;

pub use tier::{NewCopy, ReducedTier, StoredCopy, TierStats};
