//! The cache index: one sled entry per cached file, and the running totals that bound the
//! cache.
//!
//! An entry holds what eviction and purges need and what the file cannot say: its size and
//! disk use, when it was written, when it was last served, the purge sequence it was written
//! in, and the plugin version that rendered it. Totals (entries, bytes, disk use, per mode and
//! size too) are kept in memory and moved by the exact difference every insert or removal
//! makes (sled returns the value it replaced), so they never need a scan after start-up.
//!
//! **Dead entries.** A purge of everything, a mode or a size moves the folders it matches to
//! the trash at once and leaves their entries to be removed in the background: an entry is
//! dead once a [`DeadRule`] matches it (the purge's selector, and the entry written before
//! the purge). Dead entries are not in the totals; [`Index::take`] moves what a new rule
//! kills out of them, under the same lock that classifies every insert and removal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use ross_config::Size;

use super::layout::VariantKey;
use super::purge::Selector;

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
    /// The cache's purge sequence when it was written: a purge with a later sequence that
    /// matches it removed it (see [`DeadRule`]). 0 for entries from before sequences.
    pub seq: u64,
    /// The version of the mode's plugin that rendered it.
    pub version: String,
    /// The version of the original it was rendered from: its ETag in S3, its modification
    /// time and length on local disk; empty when not known (a render taken from another
    /// node, an entry from before versions were kept). A changed original's event purges its
    /// key's renders unless every one was rendered from the version the event names.
    pub source: String,
}

/// Leading byte of an encoded entry, so the encoding can change with the schema version.
const ENCODING: u8 = 3;
/// The fixed part: the leading byte, five integers and the version's length (two bytes).
const HEADER: usize = 1 + 5 * 8 + 2;
/// The second encoding, without the original's version (still read: it is unknown).
const ENCODING_2: u8 = 2;
const HEADER_2: usize = 1 + 5 * 8;
/// The first encoding, without the disk use (still read: estimated from the size).
const ENCODING_1: u8 = 1;
const HEADER_1: usize = 1 + 3 * 8;

/// What a file of `bytes` takes on a file system of 4 KiB blocks (the usual), for entries
/// written before disk use was recorded; reconciliation puts the measured figure in.
pub fn estimated_disk(bytes: u64) -> u64 {
    bytes.div_ceil(4096) * 4096
}

impl EntryMeta {
    /// `[3][bytes][disk][created][last served][seq][version length (2 bytes)][version]
    /// [source...]`, integers big-endian. A plugin version longer than 65,535 bytes is cut
    /// there (the registry refuses such versions long before).
    pub fn encode(&self) -> Vec<u8> {
        let version = &self.version.as_bytes()[..self.version.len().min(u16::MAX as usize)];
        let mut out = Vec::with_capacity(HEADER + version.len() + self.source.len());
        out.push(ENCODING);
        out.extend_from_slice(&self.bytes.to_be_bytes());
        out.extend_from_slice(&self.disk.to_be_bytes());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.last_served_ms.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&(version.len() as u16).to_be_bytes());
        out.extend_from_slice(version);
        out.extend_from_slice(self.source.as_bytes());
        out
    }

    /// Reads [`EntryMeta::encode`]'s output, or an earlier encoding's (the second:
    /// `[2][bytes][disk][created][last served][seq][version...]`; the first:
    /// `[1][bytes][created][last served][version...]`); `None` for anything else.
    pub fn decode(raw: &[u8]) -> Option<EntryMeta> {
        let int = |at: usize| u64::from_be_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
        let text = |from: usize, to: usize| {
            std::str::from_utf8(raw.get(from..to)?)
                .ok()
                .map(str::to_owned)
        };
        match raw.first() {
            Some(&ENCODING) if raw.len() >= HEADER => {
                let split = HEADER + usize::from(u16::from_be_bytes([raw[41], raw[42]]));
                Some(EntryMeta {
                    bytes: int(1),
                    disk: int(9),
                    created_ms: int(17),
                    last_served_ms: int(25),
                    seq: int(33),
                    version: text(HEADER, split)?,
                    source: text(split, raw.len())?,
                })
            }
            Some(&ENCODING_2) if raw.len() >= HEADER_2 => Some(EntryMeta {
                bytes: int(1),
                disk: int(9),
                created_ms: int(17),
                last_served_ms: int(25),
                seq: int(33),
                version: text(HEADER_2, raw.len())?,
                source: String::new(),
            }),
            Some(&ENCODING_1) if raw.len() >= HEADER_1 => Some(EntryMeta {
                bytes: int(1),
                disk: estimated_disk(int(1)),
                created_ms: int(9),
                last_served_ms: int(17),
                seq: 0,
                version: text(HEADER_1, raw.len())?,
                source: String::new(),
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

/// A purge whose matches are in the trash: entries it matches written before `seq` are dead.
#[derive(Debug, Clone)]
pub struct DeadRule {
    /// The purge's sequence.
    pub seq: u64,
    /// Its journal id.
    pub id: u64,
    /// What it purged (everything, a mode or a size).
    pub selector: Selector,
}

impl DeadRule {
    /// Whether the entry `meta` for `variant` is dead by this rule.
    pub fn kills(&self, variant: &VariantKey, meta: &EntryMeta) -> bool {
        meta.seq < self.seq && self.selector.may_match(variant)
    }
}

/// The rules in force, read lock-free.
pub type DeadRules = Arc<ArcSwap<Vec<DeadRule>>>;

/// Entries, file bytes and disk use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Entries.
    pub entries: u64,
    /// Bytes of their files.
    pub bytes: u64,
    /// What their files take on disk.
    pub disk: u64,
}

impl Totals {
    fn add(&mut self, meta: &EntryMeta) {
        self.entries += 1;
        self.bytes += meta.bytes;
        self.disk += meta.disk;
    }

    fn sub(&mut self, meta: &EntryMeta) {
        self.entries = self.entries.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(meta.bytes);
        self.disk = self.disk.saturating_sub(meta.disk);
    }

    fn sub_totals(&mut self, other: &Totals) {
        self.entries = self.entries.saturating_sub(other.entries);
        self.bytes = self.bytes.saturating_sub(other.bytes);
        self.disk = self.disk.saturating_sub(other.disk);
    }

    fn add_totals(&mut self, other: &Totals) {
        self.entries += other.entries;
        self.bytes += other.bytes;
        self.disk += other.disk;
    }
}

/// The live entries' totals, all together and per mode and size.
#[derive(Debug, Default)]
struct Live {
    all: Totals,
    groups: HashMap<(String, Size), Totals>,
}

impl Live {
    fn add(&mut self, variant: &VariantKey, meta: &EntryMeta) {
        self.all.add(meta);
        self.groups
            .entry((variant.mode.clone(), variant.size))
            .or_default()
            .add(meta);
    }

    fn sub(&mut self, variant: &VariantKey, meta: &EntryMeta) {
        self.all.sub(meta);
        let group = (variant.mode.clone(), variant.size);
        if let Some(g) = self.groups.get_mut(&group) {
            g.sub(meta);
            if g.entries == 0 {
                self.groups.remove(&group);
            }
        }
    }

    /// The totals of the groups `selector` (everything, a mode or a size) matches.
    fn matching(&self, selector: &Selector) -> Option<Totals> {
        if !matches!(
            selector,
            Selector::All | Selector::Mode(_) | Selector::Size { .. }
        ) {
            return None;
        }
        let mut sum = Totals::default();
        for ((mode, size), totals) in &self.groups {
            if group_matches(selector, mode, *size) == Some(true) {
                sum.add_totals(totals);
            }
        }
        Some(sum)
    }
}

/// Whether `selector` matches every entry of the mode and size given (`None` for a selector
/// that does not go by mode and size alone).
fn group_matches(selector: &Selector, mode: &str, size: Size) -> Option<bool> {
    match selector {
        Selector::All => Some(true),
        Selector::Mode(m) => Some(m == mode),
        Selector::Size { width, height } => Some((size.width, size.height) == (*width, *height)),
        _ => None,
    }
}

/// The entries tree with its totals.
pub struct Index {
    tree: sled::Tree,
    dead: DeadRules,
    live: Mutex<Live>,
}

fn is_dead(rules: &[DeadRule], variant: &VariantKey, meta: &EntryMeta) -> bool {
    rules.iter().any(|r| r.kills(variant, meta))
}

impl Index {
    /// The index over `tree`, counting what it holds that `dead` does not kill (a scan:
    /// call once, at start-up).
    pub fn open(tree: sled::Tree, dead: DeadRules) -> sled::Result<Index> {
        let mut live = Live::default();
        let rules = dead.load();
        for item in tree.iter() {
            let (key, value) = item?;
            let (Some(variant), Some(meta)) =
                (VariantKey::from_index_key(&key), EntryMeta::decode(&value))
            else {
                continue; // dropped by reconciliation
            };
            if !is_dead(&rules, &variant, &meta) {
                live.add(&variant, &meta);
            }
        }
        drop(rules);
        Ok(Index {
            tree,
            dead,
            live: Mutex::new(live),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live entries' totals.
    pub fn totals(&self) -> Totals {
        self.live().all
    }

    /// Entries indexed (live ones).
    pub fn entries(&self) -> u64 {
        self.totals().entries
    }

    /// Bytes of the files indexed.
    pub fn bytes(&self) -> u64 {
        self.totals().bytes
    }

    /// What the files indexed take on disk.
    pub fn disk(&self) -> u64 {
        self.totals().disk
    }

    /// The live totals a purge by `selector` (everything, a mode or a size) would take, or
    /// `None` for other selectors.
    pub fn matching_totals(&self, selector: &Selector) -> Option<Totals> {
        self.live().matching(selector)
    }

    /// Adds `rule`, moving what it kills out of the live totals; returns those. The caller
    /// holds off every writer (no entry is inserted meanwhile).
    pub fn take(&self, rule: DeadRule) -> Totals {
        let mut live = self.live();
        let taken = live.matching(&rule.selector).unwrap_or_default();
        live.groups
            .retain(|(mode, size), _| group_matches(&rule.selector, mode, *size) != Some(true));
        live.all.sub_totals(&taken);
        self.dead.rcu(|rules| {
            let mut rules = (**rules).clone();
            rules.push(rule.clone());
            rules
        });
        taken
    }

    /// Drops the rule of the purge `id` run as `seq` (its dead entries are all removed).
    pub fn drop_rule(&self, id: u64, seq: u64) {
        let _live = self.live();
        self.dead.rcu(|rules| {
            rules
                .iter()
                .filter(|r| (r.id, r.seq) != (id, seq))
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    /// Whether the entry `meta` for `variant` is dead.
    pub fn is_dead(&self, variant: &VariantKey, meta: &EntryMeta) -> bool {
        is_dead(&self.dead.load(), variant, meta)
    }

    /// Moves the live totals by an entry replaced (`old`) or added (`new`), each counted
    /// only if no rule kills it, under the lock rules are added under.
    fn account(&self, key: &[u8], old: Option<&[u8]>, new: Option<&EntryMeta>) {
        let Some(variant) = VariantKey::from_index_key(key) else {
            return;
        };
        let old = old.and_then(EntryMeta::decode);
        let mut live = self.live();
        let rules = self.dead.load();
        if let Some(old) = old.filter(|o| !is_dead(&rules, &variant, o)) {
            live.sub(&variant, &old);
        }
        if let Some(new) = new.filter(|n| !is_dead(&rules, &variant, n)) {
            live.add(&variant, new);
        }
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
        let key = variant.index_key();
        let old = self.tree.insert(&key, meta.encode())?;
        self.account(&key, old.as_deref(), Some(meta));
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
        self.account(key, Some(&old), None);
        Ok(EntryMeta::decode(&old))
    }

    /// The entry under `key`, raw.
    pub fn get_raw(&self, key: &[u8]) -> sled::Result<Option<sled::IVec>> {
        self.tree.get(key)
    }

    /// Removes the entry under `key` if it is still `raw` (a dead entry, which the totals
    /// leave out); whether it did.
    pub fn remove_dead(&self, key: &[u8], raw: &[u8]) -> sled::Result<bool> {
        Ok(self
            .tree
            .compare_and_swap(key, Some(raw), None as Option<&[u8]>)?
            .is_ok())
    }

    /// Every entry from `key` on, raw, in key order (for removing dead ones).
    pub fn iter_raw_from(
        &self,
        key: &[u8],
    ) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> {
        self.tree.range(key.to_vec()..)
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

    /// The source keys of entries whose keys start with `prefix`, each once, after `after`
    /// (not included), `limit` at most, in order.
    pub fn keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> sled::Result<Vec<String>> {
        let start = match after {
            // Every index key of `after` is `after\0...`: the next key's entries sort after
            // `after\x01`.
            Some(after) if after >= prefix => format!("{after}\x01").into_bytes(),
            _ => prefix.as_bytes().to_vec(),
        };
        let mut keys: Vec<String> = Vec::new();
        let mut from = start;
        while keys.len() < limit {
            let Some((raw, _)) = self.tree.range(from.as_slice()..).next().transpose()? else {
                break;
            };
            if !raw.starts_with(prefix.as_bytes()) {
                break;
            }
            let key = raw.split(|&b| b == 0).next().unwrap_or_default();
            let key = String::from_utf8_lossy(key).into_owned();
            from = format!("{key}\x01").into_bytes();
            keys.push(key);
        }
        Ok(keys)
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
            seq: 7,
            version: "1.2.3".into(),
            source: "\"9b2cf535f27731c974343645a3985328\"".into(),
        };
        assert_eq!(EntryMeta::decode(&m.encode()), Some(m.clone()));
        let unknown = EntryMeta {
            source: String::new(),
            ..m.clone()
        };
        assert_eq!(EntryMeta::decode(&unknown.encode()), Some(unknown));
        let later = EntryMeta::decode(&EntryMeta::served_at(&m.encode(), 30).unwrap()).unwrap();
        assert_eq!(later.last_served_ms, 30);
        let earlier = EntryMeta::decode(&EntryMeta::served_at(&m.encode(), 5).unwrap()).unwrap();
        assert_eq!(earlier.last_served_ms, 20);
        assert_eq!(EntryMeta::decode(b"\x03junk"), None);
        assert_eq!(EntryMeta::decode(b"\x04"), None);
        // A version length past the end is not read as an entry.
        let mut bad = m.encode();
        bad[41] = 0xff;
        assert_eq!(EntryMeta::decode(&bad), None);
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

    /// Entries written before the original's version was kept read with it unknown.
    #[test]
    fn second_encoding_entries_still_read() {
        let mut raw = vec![2u8];
        for n in [5000u64, 8192, 10, 20, 3] {
            raw.extend_from_slice(&n.to_be_bytes());
        }
        raw.extend_from_slice(b"0.2.0");
        let m = EntryMeta::decode(&raw).unwrap();
        assert_eq!(
            (m.seq, m.version.as_str(), m.source.as_str()),
            (3, "0.2.0", "")
        );
        assert_eq!(EntryMeta::decode(&m.encode()), Some(m));
    }
}
