//! Bytes to upright RGB pixels and back: format sniffing, header checks against the limits,
//! decoding (shrunk for the sizes shown, colour-managed to sRGB) and encoding (JPEG, WebP, AVIF). Knows nothing of HTTP,
//! sources or plugins.

mod avif;
mod buffers;
mod colour;
mod decode;
mod encode;
mod gif;
mod jpeg;
mod png;
mod reduce;
mod scans;
mod shown;
mod sniff;
mod turbo;
mod webp;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use avif::{decode_avif, encode_avif_with, AvifEncoder, Rows};
pub use colour::MAX_PROFILE_BYTES;
pub use decode::{
    decode, decode_every_scan, decode_for, DecodeError, DecodeWarning, Decoded, Decoding, Pixels,
    WarningKind,
};
pub use encode::{encode, encode_jpeg, EncodeError};
pub use shown::{largest as largest_box, DecodeBox};
pub use sniff::{sniff, Format};
