//! Surrogate keys: the tags every image response carries so that a CDN or cache in front can
//! purge by them (`output.surrogate_keys` names the headers: `Surrogate-Key` for Fastly and
//! Varnish, `Cache-Tag` for Cloudflare and CloudFront, `xkey` for Varnish's module as it comes).
//!
//! Every tag is short, printable ASCII without spaces or commas, so that it is valid in every
//! one of those headers and purge APIs:
//!
//! | tag | on | purged by |
//! | --- | --- | --- |
//! | `ross` | every image | a purge of everything |
//! | `k-{key}` or `kh-{hash}` | every render of a key, and the original | a purge of the key |
//! | `m-{mode}` | every render by a mode | a purge of the mode, a new version of it |
//! | `s-{w}x{h}` | every render of a size | a purge of the size, its removal |
//!
//! A key made only of letters, digits and `._/-`, 200 bytes at most, is its own tag
//! (`k-shoes/red.jpg`): nginx, which cannot hash, sends the same for its hits (see
//! `ross nginx-config`). Any other key is tagged by the first 128 bits of its SHA-256, in hex
//! (`kh-…`). Cloudflare and CloudFront compare tags without case: a purge of `k-A.jpg` there
//! also purges `k-a.jpg`'s renders, which costs renders, never freshness.

use poem::http::header::ACCESS_CONTROL_ALLOW_ORIGIN;
use poem::http::{HeaderMap, HeaderName, HeaderValue};
use ross_config::Size;
use sha2::{Digest, Sha256};

use crate::cache::Selector;

/// The tag on every image.
pub const ALL: &str = "ross";

/// The longest key that is its own tag.
pub const PLAIN_KEY_MAX: usize = 200;

/// Whether `key` is its own tag (`k-{key}`): letters, digits and `._/-` only, and short.
pub fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= PLAIN_KEY_MAX
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
}

/// The tag of every image of the source key `key`.
pub fn key_tag(key: &str) -> String {
    if plain_key(key) {
        return format!("k-{key}");
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut tag = String::with_capacity(3 + 32);
    tag.push_str("kh-");
    for byte in &digest[..16] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag
}

/// The tag of every render by `mode`.
pub fn mode_tag(mode: &str) -> String {
    format!("m-{mode}")
}

/// The tag of every render of `size`.
pub fn size_tag(size: Size) -> String {
    format!("s-{}x{}", size.width, size.height)
}

/// The tags a purge by `selector` is sent to a CDN as; `None` for a prefix, which no tag
/// names (the keys it purged are sent instead).
pub fn purge_tags(selector: &Selector) -> Option<Vec<String>> {
    Some(match selector {
        Selector::All => vec![ALL.to_owned()],
        Selector::Key(key) => vec![key_tag(key)],
        Selector::Prefix(_) => return None,
        Selector::Mode(mode) | Selector::Retired(mode) | Selector::OtherVersions { mode, .. } => {
            vec![mode_tag(mode)]
        }
        Selector::Size { width, height } => vec![size_tag(Size {
            width: *width,
            height: *height,
        })],
    })
}

/// The headers of the settings that every image response carries besides the SPEC's: the
/// surrogate keys (`output.surrogate_keys`) and CORS (`output.cors_origin`). nginx sends the
/// same for its hits (`ross nginx-config`).
#[derive(Debug, Clone, Default)]
pub struct ImageHeaders {
    surrogate: Vec<(HeaderName, &'static str)>,
    cors: Option<HeaderValue>,
}

impl ImageHeaders {
    /// The headers `output` asks for.
    pub fn new(output: &ross_config::OutputSettings) -> ImageHeaders {
        ImageHeaders {
            surrogate: output
                .surrogate_keys
                .iter()
                .map(|h| {
                    let name = HeaderName::from_bytes(h.as_str().as_bytes())
                        .expect("surrogate-key header names are valid");
                    (name, h.separator())
                })
                .collect(),
            // Checked by the settings: "*" or an origin, ASCII.
            cors: output
                .cors_origin
                .as_deref()
                .and_then(|o| HeaderValue::from_str(o).ok()),
        }
    }

    /// Adds the headers of a render of `key` by `mode` at `size` to `headers`.
    pub fn add_render(&self, headers: &mut HeaderMap, key: &str, mode: &str, size: Size) {
        if !self.surrogate.is_empty() {
            self.add_tags(
                headers,
                &[ALL, &key_tag(key), &mode_tag(mode), &size_tag(size)],
            );
        }
        self.add_cors(headers);
    }

    /// Adds the headers of the original `key`, served unchanged, to `headers`.
    pub fn add_original(&self, headers: &mut HeaderMap, key: &str) {
        if !self.surrogate.is_empty() {
            self.add_tags(headers, &[ALL, &key_tag(key)]);
        }
        self.add_cors(headers);
    }

    fn add_cors(&self, headers: &mut HeaderMap) {
        if let Some(origin) = &self.cors {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
    }

    fn add_tags(&self, headers: &mut HeaderMap, tags: &[&str]) {
        for (name, separator) in &self.surrogate {
            // Every tag is printable ASCII (a mode name is [a-z0-9_-]).
            if let Ok(value) = HeaderValue::from_str(&tags.join(separator)) {
                headers.insert(name.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ross_config::SurrogateHeader;

    use super::*;

    #[test]
    fn plain_keys_are_their_own_tags_and_others_are_hashed() {
        assert_eq!(key_tag("shoes/red-1_a.jpg"), "k-shoes/red-1_a.jpg");
        for key in [
            "red shoes.jpg",
            "a,b.jpg",
            "caf\u{e9}.jpg",
            "a+b.jpg",
            &"a".repeat(PLAIN_KEY_MAX + 1),
        ] {
            let tag = key_tag(key);
            assert!(tag.starts_with("kh-") && tag.len() == 35, "{key}: {tag}");
            assert!(tag[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        }
        // Stable: the same key, the same tag, on every node and release.
        assert_eq!(
            key_tag("red shoes.jpg"),
            "kh-8471bcefa4da8bd017eb82767bbb820a"
        );
        assert_ne!(key_tag("a b"), key_tag("a  b"));
        assert_eq!(key_tag(&"a".repeat(PLAIN_KEY_MAX)).len(), PLAIN_KEY_MAX + 2);
    }

    fn output(headers: &[SurrogateHeader], cors: Option<&str>) -> ross_config::OutputSettings {
        let mut settings = ross_config::Settings::default().output;
        settings.surrogate_keys = headers.to_vec();
        settings.cors_origin = cors.map(str::to_owned);
        settings
    }

    #[test]
    fn responses_carry_every_tag_in_each_headers_form() {
        let both = ImageHeaders::new(&output(
            &[SurrogateHeader::SurrogateKey, SurrogateHeader::CacheTag],
            None,
        ));
        let mut headers = HeaderMap::new();
        let size = Size {
            width: 200,
            height: 250,
        };
        both.add_render(&mut headers, "shoes/red.jpg", "crop", size);
        assert_eq!(
            headers["surrogate-key"],
            "ross k-shoes/red.jpg m-crop s-200x250"
        );
        assert_eq!(
            headers["cache-tag"],
            "ross,k-shoes/red.jpg,m-crop,s-200x250"
        );
        assert!(!headers.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        let mut original = HeaderMap::new();
        let xkey = ImageHeaders::new(&output(&[SurrogateHeader::Xkey], Some("*")));
        xkey.add_original(&mut original, "a b.png");
        assert_eq!(original["xkey"], format!("ross {}", key_tag("a b.png")));
        assert_eq!(original[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let mut none = HeaderMap::new();
        ImageHeaders::new(&output(&[], None)).add_render(&mut none, "a.png", "crop", size);
        assert!(none.is_empty());
    }

    #[test]
    fn every_purge_but_a_prefix_has_its_tag() {
        assert_eq!(purge_tags(&Selector::All).unwrap(), ["ross"]);
        assert_eq!(
            purge_tags(&Selector::Key("a/b.jpg".into())).unwrap(),
            ["k-a/b.jpg"]
        );
        assert_eq!(
            purge_tags(&Selector::Mode("crop".into())).unwrap(),
            ["m-crop"]
        );
        assert_eq!(
            purge_tags(&Selector::OtherVersions {
                mode: "crop".into(),
                version: "2".into()
            })
            .unwrap(),
            ["m-crop"]
        );
        assert_eq!(
            purge_tags(&Selector::Size {
                width: 72,
                height: 72
            })
            .unwrap(),
            ["s-72x72"]
        );
        assert_eq!(purge_tags(&Selector::Prefix("a/".into())), None);
    }
}
