//! Originals fetched in the last seconds, kept in memory as bytes and as decoded pixels: a
//! page asks for several sizes of one original at once (a listing's 300x300, the product
//! page's 1024x768, 72x72 thumbnails), and every size after the first is then rendered
//! without another fetch (an S3 GET saved) or decode (most of a render's CPU).
//!
//! - **Bounded** by `cache.decoded_bytes` over bytes and pixels together, least recently used
//!   out first, and by [`KEPT_FOR`]: an original changed at its source is fetched again within
//!   that time, as the variant cache would not notice the change anyway.
//! - **Purges**: every entry notes the cache's purge epoch when its original was fetched, and
//!   is used only by a request begun in the same epoch. An operator who replaced an original
//!   and purged its key gets renders of the new one: the purge moved the epoch on.
//! - **Decoded pixels** are kept with the box they were decoded for: a JPEG is shrunk in the
//!   DCT and its scans trimmed for the largest box, so the pixels serve any size up to it, and
//!   a larger size decodes again (from the kept bytes) and keeps that decode instead.

use std::sync::Arc;
use std::time::Duration;

use crate::imaging::Decoded;
use crate::source::SourceObject;

/// The longest an original stays in memory after it was fetched.
pub const KEPT_FOR: Duration = Duration::from_secs(60);

/// Pixels decoded from an original.
#[derive(Debug)]
pub struct DecodedSource {
    /// The pixels.
    pub image: Decoded,
    /// The largest box (upright width and height) they may be shown in; `None`: any (a
    /// full-size decode).
    pub good_up_to: Option<(u32, u32)>,
}

impl DecodedSource {
    /// Whether these pixels serve a render needing a decode that covers `need` (`None`: the
    /// full size) as a decode for it would: they cover it, and were decoded (shrunk, trimmed)
    /// for a box at least as large.
    pub fn serves(&self, need: Option<(u32, u32)>) -> bool {
        let (Some(limit), Some(need)) = (self.good_up_to, need) else {
            return self.good_up_to.is_none();
        };
        // The scale at which a box is shown, against these pixels (covers keep their shape).
        let scale = |(w, h): (u32, u32)| {
            (f64::from(w) / f64::from(self.image.width.max(1)))
                .max(f64::from(h) / f64::from(self.image.height.max(1)))
        };
        scale(need) <= scale(limit) * (1.0 + 1e-9)
    }

    fn weight(&self) -> usize {
        self.image.pixels.len()
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Kind {
    Bytes,
    Pixels,
}

#[derive(Clone)]
enum Held {
    Object(SourceObject),
    Pixels(Arc<DecodedSource>),
}

#[derive(Clone)]
struct Entry {
    epoch: u64,
    held: Held,
}

/// Recent originals. Cheap to share.
pub struct Recent {
    entries: Option<moka::sync::Cache<(String, Kind), Entry>>,
}

impl Recent {
    /// Up to `max_bytes` of originals and their pixels (0: none kept).
    pub fn new(max_bytes: u64) -> Recent {
        Recent {
            entries: (max_bytes > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(max_bytes)
                    .time_to_live(KEPT_FOR)
                    .weigher(|_, entry: &Entry| {
                        let len = match &entry.held {
                            Held::Object(o) => o.bytes.len(),
                            Held::Pixels(p) => p.weight(),
                        };
                        u32::try_from(len).unwrap_or(u32::MAX)
                    })
                    .build()
            }),
        }
    }

    fn get(&self, key: &str, kind: Kind, epoch: u64) -> Option<Held> {
        let entries = self.entries.as_ref()?;
        let entry_key = (key.to_owned(), kind);
        let entry = entries.get(&entry_key)?;
        if entry.epoch != epoch {
            // Fetched before a purge (or by a request begun before one): not to be used by
            // this request, and if this request is newer, by none to come.
            if entry.epoch < epoch {
                entries.invalidate(&entry_key);
            }
            return None;
        }
        Some(entry.held)
    }

    fn keep(&self, key: &str, kind: Kind, epoch: u64, held: Held) {
        if let Some(entries) = &self.entries {
            entries.insert((key.to_owned(), kind), Entry { epoch, held });
        }
    }

    /// The original, if fetched in `epoch` within [`KEPT_FOR`].
    pub fn object(&self, key: &str, epoch: u64) -> Option<SourceObject> {
        match self.get(key, Kind::Bytes, epoch)? {
            Held::Object(object) => Some(object),
            Held::Pixels(_) => None,
        }
    }

    /// The original's pixels, if decoded in `epoch` for what `need` asks (see
    /// [`DecodedSource::serves`]).
    pub fn pixels(
        &self,
        key: &str,
        epoch: u64,
        need: Option<(u32, u32)>,
    ) -> Option<Arc<DecodedSource>> {
        match self.get(key, Kind::Pixels, epoch)? {
            Held::Pixels(pixels) if pixels.serves(need) => Some(pixels),
            _ => None,
        }
    }

    /// Keeps the original, fetched in `epoch`.
    pub fn keep_object(&self, key: &str, epoch: u64, object: SourceObject) {
        self.keep(key, Kind::Bytes, epoch, Held::Object(object));
    }

    /// Keeps the original's pixels, fetched in `epoch`, unless pixels kept already serve a
    /// larger box.
    pub fn keep_pixels(&self, key: &str, epoch: u64, pixels: Arc<DecodedSource>) {
        if let Some(Held::Pixels(held)) = self.get(key, Kind::Pixels, epoch) {
            let larger = match (held.good_up_to, pixels.good_up_to) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(held_box), Some(new_box)) => {
                    held.serves(Some(new_box)) && held_box != new_box
                }
            };
            if larger {
                return;
            }
        }
        self.keep(key, Kind::Pixels, epoch, Held::Pixels(pixels));
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
        }
    }

    fn pixels(width: u32, height: u32, good_up_to: Option<(u32, u32)>) -> Arc<DecodedSource> {
        Arc::new(DecodedSource {
            image: Decoded::rgb(vec![0; (width * height * 3) as usize], width, height),
            good_up_to,
        })
    }

    #[test]
    fn pixels_serve_boxes_up_to_the_one_they_were_decoded_for() {
        // A 2400x1600 JPEG decoded at 1/4 for 300x300: 600x400, good up to 450x300.
        let p = pixels(600, 400, Some((300, 300)));
        assert!(p.serves(Some((300, 300))));
        assert!(p.serves(Some((72, 72))));
        assert!(p.serves(Some((450, 300))));
        assert!(!p.serves(Some((301, 301))));
        assert!(!p.serves(Some((1024, 768))));
        assert!(!p.serves(None));
        let whole = pixels(600, 400, None);
        assert!(whole.serves(Some((2000, 2000))) && whole.serves(None));
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
    fn larger_decodes_replace_smaller_ones_not_the_reverse() {
        let recent = Recent::new(1 << 24);
        recent.keep_pixels("a.jpg", 0, pixels(600, 400, Some((300, 300))));
        assert!(recent.pixels("a.jpg", 0, Some((200, 200))).is_some());
        assert!(recent.pixels("a.jpg", 0, Some((1024, 768))).is_none());
        recent.keep_pixels("a.jpg", 0, pixels(1200, 800, Some((1024, 768))));
        assert_eq!(
            recent
                .pixels("a.jpg", 0, Some((1024, 768)))
                .unwrap()
                .image
                .width,
            1200
        );
        recent.keep_pixels("a.jpg", 0, pixels(300, 200, Some((72, 72))));
        assert_eq!(
            recent
                .pixels("a.jpg", 0, Some((72, 72)))
                .unwrap()
                .image
                .width,
            1200
        );
    }

    #[test]
    fn nothing_is_kept_without_room() {
        let recent = Recent::new(0);
        recent.keep_object("a.jpg", 0, object(b"abc"));
        assert!(recent.object("a.jpg", 0).is_none());
        assert_eq!(recent.held_bytes(), 0);
    }
}
