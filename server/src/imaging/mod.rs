//! Bytes to upright RGB pixels and back: format sniffing, header checks against the limits,
//! decoding (with DCT-domain shrinking for JPEG) and encoding (JPEG, WebP, AVIF). Knows nothing of HTTP,
//! sources or plugins.

mod avif;
mod buffers;
mod decode;
mod encode;
mod jpeg;
mod scans;
mod sniff;

pub use avif::{decode_avif, encode_avif_with, AvifEncoder, Rows};
pub use decode::{decode, decode_every_scan, DecodeError, Decoded};
pub use encode::{encode, encode_jpeg, EncodeError};
pub use sniff::{sniff, Format};
