//! The cache index: one sled entry per cached file, and the running totals that bound the
//! cache.
//!
//! An entry holds what eviction and purges need and what the file cannot say: its size, when
//! it was written, when it was last served, and the plugin version that rendered it. Totals
//! (entries, bytes, disk use) are kept in memory and moved by the exact difference every insert or
//! removal makes (sled returns the value it replaced), so they never need a scan after
//! start-up.

use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::VariantKey;

/// What the index knows about one cached file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// File size.
    pub bytes: u64,
    /// What the file takes on disk: its allocated blocks (`st_blocks` × 512), what `du`
    /// counts.
    pub disk: u64,
    /// When the file was written, in milliseconds since the epoch.
    pub created_ms: u64,
    /// When it was last served (written, at first), in milliseconds since the epoch.
    pub last_served_ms: u64,
    /// The version of the mode's plugin that rendered it.
    pub version: String,
}

/// Leading byte of an encoded entry, so the encoding can change with the schema version.
const ENCODING: u8 = 2;
const HEADER: usize = 1 + 4 * 8;
/// The first encoding, without the disk use (still read: estimated from the size).
const ENCODING_1: u8 = 1;
const HEADER_1: usize = 1 + 3 * 8;

/// What a file of `bytes` takes on a file system of 4 KiB blocks (the usual), for entries
/// written before disk use was recorded; reconciliation puts the measured figure in.
pub fn estimated_disk(bytes: u64) -> u64 {
    bytes.div_ceil(4096) * 4096
}

impl EntryMeta {
    /// `[2][bytes][disk][created][last served][version...]`, integers big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.version.len());
        out.push(ENCODING);
        out.extend_from_slice(&self.bytes.to_be_bytes());
        out.extend_from_slice(&self.disk.to_be_bytes());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.last_served_ms.to_be_bytes());
        out.extend_from_slice(self.version.as_bytes());
        out
    }

    /// Reads [`EntryMeta::encode`]'s output, or the first encoding's
    /// (`[1][bytes][created][last served][version...]`); `None` for anything else.
    pub fn decode(raw: &[u8]) -> Option<EntryMeta> {
        let int = |at: usize| u64::from_be_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
        let text = |at: usize| std::str::from_utf8(&raw[at..]).ok().map(str::to_owned);
        match raw.first() {
            Some(&ENCODING) if raw.len() >= HEADER => Some(EntryMeta {
                bytes: int(1),
                disk: int(9),
                created_ms: int(17),
                last_served_ms: int(25),
                version: text(HEADER)?,
            }),
            Some(&ENCODING_1) if raw.len() >= HEADER_1 => Some(EntryMeta {
                bytes: int(1),
                disk: estimated_disk(int(1)),
                created_ms: int(9),
                last_served_ms: int(17),
                version: text(HEADER_1)?,
            }),
            _ => None,
        }
    }

    /// The same entry, last served at `ms` (never earlier than it was).
    pub fn served_at(raw: &[u8], ms: u64) -> Option<Vec<u8>> {
        let mut meta = EntryMeta::decode(raw)?;
        meta.last_served_ms = meta.last_served_ms.max(ms);
        Some(meta.encode())
    }
}

/// The entries tree with its totals.
pub struct Index {
    tree: sled::Tree,
    entries: AtomicU64,
    bytes: AtomicU64,
    disk: AtomicU64,
}

impl Index {
    /// The index over `tree`, counting what it holds (a scan: call once, at start-up).
    pub fn open(tree: sled::Tree) -> sled::Result<Index> {
        let (mut entries, mut bytes, mut disk) = (0, 0, 0);
        for item in tree.iter().values() {
            entries += 1;
            if let Some(m) = EntryMeta::decode(&item?) {
                bytes += m.bytes;
                disk += m.disk;
            }
        }
        Ok(Index {
            tree,
            entries: AtomicU64::new(entries),
            bytes: AtomicU64::new(bytes),
            disk: AtomicU64::new(disk),
        })
    }

    /// Entries indexed.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// Bytes of the files indexed.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// What the files indexed take on disk.
    pub fn disk(&self) -> u64 {
        self.disk.load(Ordering::Relaxed)
    }

    /// The entry for `variant`.
    pub fn get(&self, variant: &VariantKey) -> sled::Result<Option<EntryMeta>> {
        Ok(self
            .tree
            .get(variant.index_key())?
            .and_then(|v| EntryMeta::decode(&v)))
    }

    /// Records `meta` for `variant`, replacing what was there.
    pub fn insert(&self, variant: &VariantKey, meta: &EntryMeta) -> sled::Result<()> {
        let old = self.tree.insert(variant.index_key(), meta.encode())?;
        self.bytes.fetch_add(meta.bytes, Ordering::Relaxed);
        self.disk.fetch_add(meta.disk, Ordering::Relaxed);
        match old.and_then(|o| EntryMeta::decode(&o)) {
            Some(old) => {
                self.bytes.fetch_sub(old.bytes, Ordering::Relaxed);
                self.disk.fetch_sub(old.disk, Ordering::Relaxed);
            }
            None => {
                self.entries.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Removes the entry for `variant`; returns it if there was one.
    pub fn remove(&self, variant: &VariantKey) -> sled::Result<Option<EntryMeta>> {
        self.remove_raw(&variant.index_key())
    }

    /// Removes the entry under the raw index key `key` (which may not name a variant at all).
    pub fn remove_raw(&self, key: &[u8]) -> sled::Result<Option<EntryMeta>> {
        let old = self.tree.remove(key)?;
        let Some(old) = old else { return Ok(None) };
        self.entries.fetch_sub(1, Ordering::Relaxed);
        let meta = EntryMeta::decode(&old);
        if let Some(m) = &meta {
            self.bytes.fetch_sub(m.bytes, Ordering::Relaxed);
            self.disk.fetch_sub(m.disk, Ordering::Relaxed);
        }
        Ok(meta)
    }

    /// Moves `variant`'s last-served time to `ms`, if it is still indexed.
    pub fn touch(&self, key: &[u8], ms: u64) -> sled::Result<()> {
        self.tree
            .fetch_and_update(key, |old| old.and_then(|v| EntryMeta::served_at(v, ms)))?;
        Ok(())
    }

    /// Every entry, in key order. Entries that do not decode come back as `None` (they are
    /// dropped by reconciliation).
    pub fn iter(&self) -> impl Iterator<Item = sled::Result<(sled::IVec, Option<EntryMeta>)>> {
        self.tree
            .iter()
            .map(|r| r.map(|(k, v)| (k, EntryMeta::decode(&v))))
    }

    /// Entries whose index key starts with `prefix`.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = sled::Result<(sled::IVec, Option<EntryMeta>)>> {
        self.tree
            .scan_prefix(prefix)
            .map(|r| r.map(|(k, v)| (k, EntryMeta::decode(&v))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_served_never_goes_back() {
        let m = EntryMeta {
            bytes: 1234,
            disk: 4096,
            created_ms: 10,
            last_served_ms: 20,
            version: "1.2.3".into(),
        };
        assert_eq!(EntryMeta::decode(&m.encode()), Some(m.clone()));
        let later = EntryMeta::decode(&EntryMeta::served_at(&m.encode(), 30).unwrap()).unwrap();
        assert_eq!(later.last_served_ms, 30);
        let earlier = EntryMeta::decode(&EntryMeta::served_at(&m.encode(), 5).unwrap()).unwrap();
        assert_eq!(earlier.last_served_ms, 20);
        assert_eq!(EntryMeta::decode(b"\x02junk"), None);
        assert_eq!(EntryMeta::decode(b"\x03"), None);
    }

    /// Entries written before disk use was recorded still read, their disk use estimated.
    #[test]
    fn first_encoding_entries_still_read() {
        let mut raw = vec![1u8];
        for n in [5000u64, 10, 20] {
            raw.extend_from_slice(&n.to_be_bytes());
        }
        raw.extend_from_slice(b"0.1.0");
        let m = EntryMeta::decode(&raw).unwrap();
        assert_eq!(
            (m.bytes, m.disk, m.created_ms, m.last_served_ms),
            (5000, 8192, 10, 20)
        );
        assert_eq!(m.version, "0.1.0");
        assert_eq!(EntryMeta::decode(&m.encode()), Some(m));
    }
}
