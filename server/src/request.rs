//! Parsing request paths into what to serve: a sized render (`/{width}/{height}/{mode}/{key}`)
//! or an original (`/{key}`). All validation of untrusted path input happens here, so later
//! stages only ever see canonical sizes and keys that cannot leave the media root.

use std::fmt;

use percent_encoding::percent_decode_str;
use ross_config::Size;

/// A validated object key: relative, percent-decoded once, no `..` segment, `\`, NUL, control
/// characters or empty segments. Safe to join onto a root folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceKey(String);

impl SourceKey {
    /// Validates an already-decoded key.
    pub fn new(key: &str) -> Result<SourceKey, RequestError> {
        let bad = |why: &str| Err(RequestError::InvalidKey(format!("{why}: {key:?}")));
        if key.is_empty() {
            return bad("the key is empty");
        }
        if key.len() > 1024 {
            return bad("the key is longer than 1024 bytes");
        }
        if key.starts_with('/') {
            return bad("the key is absolute");
        }
        if key.contains('\\') {
            return bad("the key contains a backslash");
        }
        if key.chars().any(char::is_control) {
            return bad("the key contains a control character");
        }
        for segment in key.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return bad("the key has an empty, \".\" or \"..\" path segment");
            }
            if segment.len() > 255 {
                return bad("a path segment of the key is longer than 255 bytes");
            }
        }
        Ok(SourceKey(key.to_owned()))
    }

    /// Percent-decodes `raw` once, then validates it.
    pub fn from_raw(raw: &str) -> Result<SourceKey, RequestError> {
        let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| {
            RequestError::InvalidKey(format!("the key is not UTF-8 once decoded: {raw:?}"))
        })?;
        SourceKey::new(&decoded)
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request to render `key` in `mode` at `size`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RenderRequest {
    /// Requested width and height, within the limits.
    pub size: Size,
    /// Mode name (shape-checked; whether it is loaded is checked later).
    pub mode: String,
    /// The source object.
    pub key: SourceKey,
}

/// What a path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A rendered variant.
    Render(RenderRequest),
    /// The original object, unchanged.
    Original(SourceKey),
}

/// A malformed request path: always a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Width or height is not a canonical integer within the limits.
    #[error("{0}")]
    InvalidSize(String),
    /// The key is empty, absolute, or could leave the media root.
    #[error("{0}")]
    InvalidKey(String),
}

/// `[+-]?[0-9]+`: looks like a width or height, valid or not.
fn looks_numeric(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `s` has the shape of a mode name, whatever its length (the ABI's rule,
/// [`plugin_api::has_mode_shape`]): a sized request's third segment.
pub fn is_mode_word(s: &str) -> bool {
    plugin_api::has_mode_shape(s)
}

fn side(text: &str, what: &str, max: u32) -> Result<u32, RequestError> {
    let err = || {
        RequestError::InvalidSize(format!(
            "{what} must be a whole number from 1 to {max} without sign or leading zero, \
             got {text:?}"
        ))
    };
    if text.starts_with(['0', '+', '-']) {
        return Err(err());
    }
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(err()),
    }
}

/// Parses a raw (still percent-encoded) request path.
///
/// A path whose first two segments look numeric and whose third is mode-shaped is always a
/// sized request, never an original: `/2024/01/photos/a.jpg` is a 400 (or a render), so keys
/// shaped like that must be requested through a sized URL or renamed.
pub fn parse(raw_path: &str, max_width: u32, max_height: u32) -> Result<Target, RequestError> {
    let path = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let mut parts = path.splitn(4, '/');
    let (a, b, c) = (parts.next(), parts.next(), parts.next());
    if let (Some(w), Some(h), Some(mode)) = (a, b, c) {
        if looks_numeric(w) && looks_numeric(h) && is_mode_word(mode) {
            let size = Size {
                width: side(w, "width", max_width)?,
                height: side(h, "height", max_height)?,
            };
            let key = SourceKey::from_raw(parts.next().unwrap_or(""))?;
            return Ok(Target::Render(RenderRequest {
                size,
                mode: mode.to_owned(),
                key,
            }));
        }
    }
    Ok(Target::Original(SourceKey::from_raw(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(path: &str) -> Result<RenderRequest, RequestError> {
        match parse(path, 2000, 2000)? {
            Target::Render(r) => Ok(r),
            Target::Original(k) => panic!("{path} parsed as original {k}"),
        }
    }

    #[test]
    fn sized_paths_parse() {
        let r = render("/300/200/crop/products/1/a%20b+%C3%BC.jpg").unwrap();
        assert_eq!(
            r.size,
            Size {
                width: 300,
                height: 200
            }
        );
        assert_eq!(r.mode, "crop");
        assert_eq!(r.key.as_str(), "products/1/a b+ü.jpg");
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for path in [
            "/0/300/crop/a.jpg",
            "/-1/300/crop/a.jpg",
            "/007/300/crop/a.jpg",
            "/2001/300/crop/a.jpg",
            "/300/2001/crop/a.jpg",
            "/99999999999/3/crop/a.jpg",
            "/+5/3/crop/a.jpg",
        ] {
            assert!(
                matches!(render(path), Err(RequestError::InvalidSize(_))),
                "{path}"
            );
        }
        assert!(render("/2000/2000/crop/a.jpg").is_ok());
    }

    #[test]
    fn traversal_and_odd_keys_are_rejected() {
        for path in [
            "/300/300/crop/../../etc/passwd",
            "/300/300/crop/%2e%2e/%2e%2e/etc/passwd",
            "/300/300/crop//etc/passwd",
            "/300/300/crop/photos%5c..%5cx.jpg",
            "/300/300/crop/a%5cb.jpg",
            "/300/300/crop/a%00.jpg",
            "/300/300/crop/a%0a.jpg",
            "/300/300/crop/",
            "/300/300/crop",
            "/300/300/crop/a//b.jpg",
            "/300/300/crop/./a.jpg",
            "/300/300/crop/%ff.jpg",
            "/300/300/crop/%2Fetc%2Fpasswd",
        ] {
            assert!(
                matches!(render(path), Err(RequestError::InvalidKey(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn other_paths_are_originals() {
        assert_eq!(
            parse("/photos/Dune.jpg", 2000, 2000).unwrap(),
            Target::Original(SourceKey::new("photos/Dune.jpg").unwrap())
        );
        // Not mode-shaped: an original whose key starts with digits.
        assert!(matches!(
            parse("/2024/01/Photo.jpg", 2000, 2000),
            Ok(Target::Original(_))
        ));
        assert!(matches!(
            parse("/../etc/passwd", 2000, 2000),
            Err(RequestError::InvalidKey(_))
        ));
    }

    #[test]
    fn percent_decoding_happens_once() {
        let r = render("/1/1/crop/a%2520b.jpg").unwrap();
        assert_eq!(r.key.as_str(), "a%20b.jpg");
        // Spaces, `+`, unicode and runs of dots inside a name are ordinary S3 keys.
        let r = render("/1/1/crop/a.b/lady%20bird+%C3%BCn%C3%AF..v2.jpg").unwrap();
        assert_eq!(r.key.as_str(), "a.b/lady bird+ünï..v2.jpg");
    }
}
