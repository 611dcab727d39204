//! Originals fetched in the last seconds, kept in memory as bytes: a page asks for several
//! sizes of one original at once (a listing's 300x300, the product page's 1024x768, 72x72
//! thumbnails), and every size after the first is then rendered without another fetch (an S3
//! GET saved). Their decoded pixels are kept by the render worker that decoded them
//! (`crate::worker`), which the next sizes are sent to.
//!
//! - **Bounded** by a share of `cache.decoded_bytes` ([`ORIGINALS_SHARE`]; the rest is the
//!   workers' for pixels), least recently used out first, and by [`KEPT_FOR`]: an original
//!   changed at its source is fetched again within that time, as the variant cache would not
//!   notice the change anyway.
//! - **Purges**: every entry notes its key's source epoch when its original was fetched
//!   ([`crate::cache::Cache::source_epoch`]), and is used only by a request begun in the same
//!   one. An operator who replaced an original and purged its key gets renders of the new one:
//!   the purge moved the key's epoch on. A purge of another key, a mode or a size does not.
//!   Workers key their pixels by epoch the same way.
//! - **Changed originals**: the version of each original fetched ([`SourceObject::version`])
//!   is noted with its epoch, for as long as its bytes or pixels may be used. Before a miss
//!   reuses them, the pipeline asks the source for the version now (a stat, a `HeadObject`);
//!   one that differs is a replaced original, purged as such (which moves the epoch on), and
//!   the new one is fetched.

use std::time::Duration;

use crate::source::SourceObject;

/// The longest an original (or its pixels) stays in memory after it was fetched.
pub const KEPT_FOR: Duration = Duration::from_secs(60);

/// The share of `cache.decoded_bytes` kept as originals' bytes in the server; the rest is
/// split between the render workers for decoded pixels (an original's pixels take about ten
/// times its bytes).
pub const ORIGINALS_SHARE: u64 = 4;

#[derive(Clone)]
struct Entry {
    epoch: u64,
    object: SourceObject,
}

/// Versions of originals noted at most (older go first): far more than the originals whose
/// bytes or pixels fit in memory at once.
const VERSIONS_KEPT: u64 = 100_000;

/// Recent originals. Cheap to share.
pub struct Recent {
    entries: Option<moka::sync::Cache<String, Entry>>,
    /// The version of each original fetched in the last [`KEPT_FOR`], with its epoch.
    versions: moka::sync::Cache<String, (u64, String)>,
}

impl Recent {
    /// Up to `max_bytes` of originals (0: none kept).
    pub fn new(max_bytes: u64) -> Recent {
        Recent {
            entries: (max_bytes > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(max_bytes)
                    .time_to_live(KEPT_FOR)
                    .weigher(|_, entry: &Entry| {
                        u32::try_from(entry.object.bytes.len()).unwrap_or(u32::MAX)
                    })
                    .build()
            }),
            versions: moka::sync::Cache::builder()
                .max_capacity(VERSIONS_KEPT)
                // A little longer than the bytes and pixels it vouches for.
                .time_to_live(KEPT_FOR + Duration::from_secs(5))
                .build(),
        }
    }

    /// Notes that the original of `key` fetched in `epoch` is at `version`.
    pub fn note_version(&self, key: &str, epoch: u64, version: Option<&str>) {
        match version {
            Some(version) => self
                .versions
                .insert(key.to_owned(), (epoch, version.to_owned())),
            None => self.versions.invalidate(key),
        }
    }

    /// The version of the original of `key` last fetched in `epoch`, if noted.
    pub fn version(&self, key: &str, epoch: u64) -> Option<String> {
        self.versions
            .get(key)
            .filter(|(e, _)| *e == epoch)
            .map(|(_, v)| v)
    }

    /// The original, if fetched in `epoch` within [`KEPT_FOR`].
    pub fn object(&self, key: &str, epoch: u64) -> Option<SourceObject> {
        let entries = self.entries.as_ref()?;
        let entry = entries.get(key)?;
        if entry.epoch != epoch {
            // Fetched before a purge (or by a request begun before one): not to be used by
            // this request, and if this request is newer, by none to come.
            if entry.epoch < epoch {
                entries.invalidate(key);
            }
            return None;
        }
        Some(entry.object)
    }

    /// Keeps the original, fetched in `epoch`.
    pub fn keep_object(&self, key: &str, epoch: u64, object: SourceObject) {
        if let Some(entries) = &self.entries {
            entries.insert(key.to_owned(), Entry { epoch, object });
        }
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> u64 {
        self.entries.as_ref().map_or(0, |e| {
            e.run_pending_tasks();
            e.weighted_size()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn object(bytes: &'static [u8]) -> SourceObject {
        SourceObject {
            bytes: Bytes::from_static(bytes),
            modified: None,
            version: None,
        }
    }

    #[test]
    fn entries_are_used_in_their_epoch_only() {
        let recent = Recent::new(1 << 20);
        recent.keep_object("a.jpg", 3, object(b"abc"));
        assert_eq!(recent.object("a.jpg", 3).unwrap().bytes, &b"abc"[..]);
        // A request begun before the entry's epoch does not see it, nor does it remove it.
        assert!(recent.object("a.jpg", 2).is_none());
        assert!(recent.object("a.jpg", 3).is_some());
        // A request after a purge neither: and the entry is gone.
        assert!(recent.object("a.jpg", 4).is_none());
        assert!(recent.object("a.jpg", 3).is_none());
        assert!(recent.object("b.jpg", 3).is_none());
    }

    #[test]
    fn versions_are_noted_per_epoch() {
        let recent = Recent::new(0);
        recent.note_version("a.jpg", 3, Some("v1"));
        assert_eq!(recent.version("a.jpg", 3).as_deref(), Some("v1"));
        assert_eq!(recent.version("a.jpg", 4), None);
        recent.note_version("a.jpg", 4, Some("v2"));
        assert_eq!(recent.version("a.jpg", 3), None);
        recent.note_version("a.jpg", 4, None);
        assert_eq!(recent.version("a.jpg", 4), None);
    }

    #[test]
    fn nothing_is_kept_without_room() {
        let recent = Recent::new(0);
        recent.keep_object("a.jpg", 0, object(b"abc"));
        assert!(recent.object("a.jpg", 0).is_none());
        assert_eq!(recent.held_bytes(), 0);
    }
}
