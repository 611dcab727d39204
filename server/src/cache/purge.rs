//! What a purge removes, and the journal that lets an interrupted purge finish.
//!
//! A purge is written to the meta tree (and flushed) before any file is removed, and deleted
//! from it once every matching file and entry is gone; a purge found in the journal at
//! start-up is run again. Running one twice is harmless: it removes what still matches.

use ross_config::Size;
use serde::{Deserialize, Serialize};

use super::layout::VariantKey;

/// Which cached variants a purge removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selector {
    /// Every variant of one source key.
    Key(String),
    /// Every variant of every source key that starts with this text.
    Prefix(String),
    /// Every variant rendered by a mode.
    Mode(String),
    /// Every variant of a size.
    Size {
        /// Pixels across.
        width: u32,
        /// Pixels down.
        height: u32,
    },
    /// Everything.
    All,
    /// A mode's plugin changed version: every variant another version rendered. Once done,
    /// `version` is recorded as the version behind the mode's renders.
    OtherVersions {
        /// The mode.
        mode: String,
        /// The version now serving it.
        version: String,
    },
    /// A mode no plugin provides any more: all its variants. Once done, its version record
    /// is forgotten.
    Retired(String),
}

impl Selector {
    /// What it purges, for people: `key shoes/red.jpg`, `mode crop`, `everything`...
    pub fn describe(&self) -> String {
        match self {
            Selector::Key(key) => format!("key {key}"),
            Selector::Prefix(prefix) => format!("prefix {prefix}"),
            Selector::Mode(mode) => format!("mode {mode}"),
            Selector::Size { width, height } => format!("size {width}x{height}"),
            Selector::All => "everything".into(),
            Selector::OtherVersions { mode, version } => {
                format!("mode {mode} but version {version}")
            }
            Selector::Retired(mode) => format!("retired mode {mode}"),
        }
    }

    /// A size purge.
    pub fn size(size: Size) -> Selector {
        Selector::Size {
            width: size.width,
            height: size.height,
        }
    }

    /// Whether a variant, rendered by `version` (if known), is to be removed.
    pub fn matches(&self, variant: &VariantKey, version: Option<&str>) -> bool {
        match self {
            Selector::Key(k) => variant.key.as_str() == k,
            Selector::Prefix(p) => variant.key.as_str().starts_with(p.as_str()),
            Selector::Mode(m) | Selector::Retired(m) => &variant.mode == m,
            Selector::Size { width, height } => {
                variant.size.width == *width && variant.size.height == *height
            }
            Selector::All => true,
            Selector::OtherVersions { mode, version: v } => {
                &variant.mode == mode && version != Some(v.as_str())
            }
        }
    }

    /// Whether a variant might be removed whatever its version: a hit on it must not be
    /// served while the purge runs.
    pub fn may_match(&self, variant: &VariantKey) -> bool {
        match self {
            Selector::OtherVersions { mode, .. } => &variant.mode == mode,
            other => other.matches(variant, None),
        }
    }

    /// Whether the purge concerns the original of `key`, not only renders of it: a purge of the
    /// key, of a prefix of it, or of everything (an operator who replaced an original purges
    /// it so). Originals fetched or decoded before such a purge are not used after it; a purge
    /// by mode or size leaves them be.
    pub fn touches_original(&self, key: &str) -> bool {
        match self {
            Selector::Key(k) => k == key,
            Selector::Prefix(p) => key.starts_with(p.as_str()),
            Selector::All => true,
            Selector::Mode(_)
            | Selector::Size { .. }
            | Selector::OtherVersions { .. }
            | Selector::Retired(_) => false,
        }
    }

    /// Whether renders begun before the purge must not be cached after it. Not for a mode's
    /// version change or retirement: there the writer's own check that its mode is still
    /// served by its version keeps old renders out, and renders by the version in service may
    /// go on being cached while the purge runs.
    pub fn bars_earlier_renders(&self) -> bool {
        !matches!(self, Selector::OtherVersions { .. } | Selector::Retired(_))
    }

    /// The index-key prefix every match starts with, when there is one narrower than the
    /// whole index.
    pub fn index_prefix(&self) -> Option<Vec<u8>> {
        match self {
            Selector::Key(k) => Some(format!("{k}\0").into_bytes()),
            Selector::Prefix(p) => Some(p.as_bytes().to_vec()),
            _ => None,
        }
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Entries (files) removed.
    pub entries: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// Journal keys: `purge/` and the job's id, big-endian, so jobs replay in the order they
/// were started.
pub const JOURNAL_PREFIX: &[u8] = b"purge/";

/// The journal key of job `id`.
pub fn journal_key(id: u64) -> Vec<u8> {
    let mut key = JOURNAL_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The job id in a journal key.
pub fn journal_id(key: &[u8]) -> Option<u64> {
    let raw = key.strip_prefix(JOURNAL_PREFIX)?;
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::layout::OutputFormat;
    use crate::request::SourceKey;

    fn v(mode: &str, key: &str, w: u32) -> VariantKey {
        VariantKey {
            format: OutputFormat::Jpeg,
            size: Size {
                width: w,
                height: 10,
            },
            mode: mode.into(),
            key: SourceKey::new(key).unwrap(),
        }
    }

    #[test]
    fn selectors_match_what_they_name() {
        let a = v("crop", "photos/a.jpg", 10);
        assert!(Selector::Key("photos/a.jpg".into()).matches(&a, None));
        assert!(!Selector::Key("photos/a".into()).matches(&a, None));
        assert!(Selector::Prefix("photos/".into()).matches(&a, None));
        assert!(Selector::Mode("crop".into()).matches(&a, None));
        assert!(!Selector::Mode("resize".into()).matches(&a, None));
        assert!(Selector::Size {
            width: 10,
            height: 10
        }
        .matches(&a, None));
        assert!(!Selector::Size {
            width: 10,
            height: 11
        }
        .matches(&a, None));
        let other = Selector::OtherVersions {
            mode: "crop".into(),
            version: "2".into(),
        };
        assert!(other.matches(&a, Some("1")) && other.matches(&a, None));
        assert!(!other.matches(&a, Some("2")));
        assert!(other.may_match(&a));
        assert_eq!(
            Selector::Key("photos/a.jpg".into()).index_prefix().unwrap(),
            b"photos/a.jpg\0"
        );
    }

    #[test]
    fn journal_keys_sort_by_id() {
        assert!(journal_key(2) < journal_key(256));
        assert_eq!(journal_id(&journal_key(77)), Some(77));
        let json = serde_json::to_string(&Selector::size(Size {
            width: 3,
            height: 4,
        }))
        .unwrap();
        assert_eq!(
            serde_json::from_str::<Selector>(&json).unwrap(),
            Selector::Size {
                width: 3,
                height: 4
            }
        );
    }
}
