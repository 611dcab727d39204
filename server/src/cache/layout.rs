//! Where a variant lives: its path under `cache.dir` and its key in the index.
//!
//! A variant is `{format}/{width}/{height}/{mode}/{key}` under `cache.dir`, derived only from
//! the canonical request and the output format, so nginx finds a hit from the URL alone
//! (`try_files /jpeg$uri`), and from the URL and the `Accept` header once more formats are
//! served (`/$format$uri`). Folders whose name starts with a dot belong to ross
//! (`.tmp` for files being written); nothing else in `cache.dir` is outside this layout.
//!
//! The index key puts the source key first, `{key}\0{format}/{width}/{height}/{mode}`, so the
//! variants of one key, or of every key under a prefix, are one range scan.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use ross_config::Size;

use crate::request::{RenderRequest, SourceKey};

/// Folder under the cache root for files being written.
pub const TMP_DIR: &str = ".tmp";

/// The encoding of a cached variant: the first folder of its path.
pub use ross_config::OutputFormat;

/// The format a cache folder is named after.
fn parse_format(s: &str) -> Option<OutputFormat> {
    OutputFormat::ALL.into_iter().find(|f| f.as_str() == s)
}

/// One cached variant: what was rendered and how it was encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VariantKey {
    /// How it is encoded.
    pub format: OutputFormat,
    /// Its size.
    pub size: Size,
    /// The mode that rendered it.
    pub mode: String,
    /// The source it was rendered from.
    pub key: SourceKey,
}

impl VariantKey {
    /// The variant `req` asks for, encoded as `format`.
    pub fn new(req: &RenderRequest, format: OutputFormat) -> VariantKey {
        VariantKey {
            format,
            size: req.size,
            mode: req.mode.clone(),
            key: req.key.clone(),
        }
    }

    /// The path under `cache.dir`.
    pub fn relative_path(&self) -> PathBuf {
        PathBuf::from(self.to_string())
    }

    /// The key of its entry in the index.
    pub fn index_key(&self) -> Vec<u8> {
        format!(
            "{}\0{}/{}/{}/{}",
            self.key,
            self.format.as_str(),
            self.size.width,
            self.size.height,
            self.mode
        )
        .into_bytes()
    }

    /// Reads an index key back; `None` for anything [`VariantKey::index_key`] did not write.
    pub fn from_index_key(raw: &[u8]) -> Option<VariantKey> {
        let text = std::str::from_utf8(raw).ok()?;
        let (key, rest) = text.split_once('\0')?;
        let mut parts = rest.split('/');
        let (format, w, h, mode) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        VariantKey::from_parts(format, w, h, mode, key)
    }

    /// Reads a path relative to `cache.dir` back; `None` for anything outside the layout.
    pub fn from_relative_path(path: &Path) -> Option<VariantKey> {
        let mut parts = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_str()?),
                _ => return None,
            }
        }
        if parts.len() < 5 {
            return None;
        }
        let key = parts[4..].join("/");
        VariantKey::from_parts(parts[0], parts[1], parts[2], parts[3], &key)
    }

    fn from_parts(format: &str, w: &str, h: &str, mode: &str, key: &str) -> Option<VariantKey> {
        let size: Size = format!("{w}x{h}").parse().ok()?;
        if !plugin_api::is_mode_name(mode) || size.to_string() != format!("{w}x{h}") {
            return None;
        }
        Some(VariantKey {
            format: parse_format(format)?,
            size,
            mode: mode.to_owned(),
            key: SourceKey::new(key).ok()?,
        })
    }
}

impl fmt::Display for VariantKey {
    /// The path under `cache.dir`, `/`-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/{}",
            self.format.as_str(),
            self.size.width,
            self.size.height,
            self.mode,
            self.key
        )
    }
}

/// The JPEG variant a request path names, for tests (`/10/10/crop/a.jpg`).
#[cfg(test)]
pub fn test_variant(path: &str) -> VariantKey {
    match crate::request::parse(path, 2000, 2000).unwrap() {
        crate::request::Target::Render(r) => VariantKey::new(&r, OutputFormat::Jpeg),
        crate::request::Target::Original(_) => unreachable!(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_variant as variant;

    #[test]
    fn paths_and_index_keys_round_trip() {
        let v = variant("/300/200/crop/products/a%20b/c+%C3%BC.jpg");
        assert_eq!(
            v.relative_path(),
            PathBuf::from("jpeg/300/200/crop/products/a b/c+ü.jpg")
        );
        assert_eq!(
            VariantKey::from_relative_path(&v.relative_path()),
            Some(v.clone())
        );
        assert_eq!(VariantKey::from_index_key(&v.index_key()), Some(v.clone()));
        assert!(v.index_key().starts_with(b"products/a b/c+\xc3\xbc.jpg\0"));
    }

    #[test]
    fn anything_outside_the_layout_is_not_a_variant() {
        for path in [
            ".tmp/1-1.part",
            "300/200/crop/a.jpg",
            "jpeg/300/200/crop",
            "jpeg/0300/200/crop/a.jpg",
            "jpeg/300/200/Crop/a.jpg",
            "png/300/200/crop/a.jpg",
            "jpeg/300/200/crop/../a.jpg",
        ] {
            assert_eq!(
                VariantKey::from_relative_path(Path::new(path)),
                None,
                "{path}"
            );
        }
        assert_eq!(VariantKey::from_index_key(b"a.jpg\0jpeg/1/1"), None);
    }
}
