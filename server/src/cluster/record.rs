//! What the cluster's log holds: change records, each named by its [`Stamp`] (its place in the
//! one order every node applies), and the snapshots that fold old records together.

use std::collections::BTreeMap;

use ross_config::Size;
use serde::{Deserialize, Serialize};

use crate::cache::Selector;

/// Format version of records and snapshots. A node refuses (and reports) a newer one rather
/// than misread it.
pub const FORMAT: u32 = 1;

/// A record's place in the cluster's order: `{ms:016}-{node}-{seq:016}`, so that names sort as
/// stamps do. `ms` is the time on the store's clock (never before a stamp the node has seen),
/// `node` the writer's id and `seq` its own count, which makes every stamp unique. A local
/// change not yet sent carries a *pending* stamp (`~{seq}`), which sorts after every real one:
/// nothing another node did before it was sent can undo it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Stamp(String);

impl Stamp {
    /// The stamp of a record written at `ms` by `node`, its `seq`th change.
    pub fn new(ms: u64, node: &str, seq: u64) -> Stamp {
        Stamp(format!("{ms:016}-{node}-{seq:016}"))
    }

    /// The stamp of a local change not yet sent.
    pub fn pending(seq: u64) -> Stamp {
        Stamp(format!("~{seq:016}"))
    }

    /// Whether this is a local change not yet sent.
    pub fn is_pending(&self) -> bool {
        self.0.starts_with('~')
    }

    /// The store time it was written at (0 for a pending one).
    pub fn ms(&self) -> u64 {
        self.0.get(..16).and_then(|ms| ms.parse().ok()).unwrap_or(0)
    }

    /// What identifies the change whatever it was stamped: `{node}-{seq}`.
    pub fn id(&self) -> &str {
        self.0.get(17..).unwrap_or(&self.0)
    }

    /// The stamp as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Stamp {
    type Error = String;

    fn try_from(text: String) -> Result<Stamp, String> {
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        let shaped = if let Some(seq) = text.strip_prefix('~') {
            digits(seq, 16)
        } else {
            let mut parts = text.splitn(3, '-');
            matches!(
                (parts.next(), parts.next(), parts.next()),
                (Some(ms), Some(node), Some(seq))
                    if digits(ms, 16) && is_node_id(node) && digits(seq, 16)
            )
        };
        if shaped {
            Ok(Stamp(text))
        } else {
            Err(format!("{text:?} is not a change stamp"))
        }
    }
}

impl From<Stamp> for String {
    fn from(stamp: Stamp) -> String {
        stamp.0
    }
}

/// Length of a node id: hex digits of a random number, made once per `data_dir`.
pub const NODE_ID_LEN: usize = 12;

/// Whether `text` is a node id.
pub fn is_node_id(text: &str) -> bool {
    text.len() == NODE_ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The first name after every stamp of store time `ms` or earlier: records are listed from it.
pub fn after_ms(ms: u64) -> String {
    format!("{ms:016}-~")
}

/// A change to the state the nodes share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Sizes allowed.
    Allow(#[serde(with = "sizes")] Vec<Size>),
    /// Sizes no longer allowed (and their renders purged).
    Disallow(#[serde(with = "sizes")] Vec<Size>),
    /// The whitelist switched on or off.
    Whitelist(bool),
    /// A purge.
    Purge(Purge),
}

impl Change {
    /// What the change sets, for last-writer-wins: `enabled`, or `size/WxH` per size.
    pub fn items(&self) -> Vec<String> {
        match self {
            Change::Allow(sizes) | Change::Disallow(sizes) => {
                sizes.iter().map(|s| format!("size/{s}")).collect()
            }
            Change::Whitelist(_) => vec![ENABLED_ITEM.to_owned()],
            Change::Purge(_) => Vec::new(),
        }
    }

    /// Said in the log and on the Cluster page.
    pub fn describe(&self) -> String {
        let list = |sizes: &[Size]| {
            sizes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Change::Allow(sizes) => format!("allow {}", list(sizes)),
            Change::Disallow(sizes) => format!("disallow {}", list(sizes)),
            Change::Whitelist(true) => "whitelist on".into(),
            Change::Whitelist(false) => "whitelist off".into(),
            Change::Purge(p) => format!("purge {}", p.describe()),
        }
    }
}

/// The item a whitelist switch sets.
pub const ENABLED_ITEM: &str = "enabled";

/// A purge, as the admin API names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purge {
    /// Every variant of one key.
    Key(String),
    /// Every variant of the keys under a prefix.
    Prefix(String),
    /// Every variant rendered by a mode.
    Mode(String),
    /// Every variant of a size.
    Size(#[serde(with = "size")] Size),
    /// Everything.
    All,
}

impl Purge {
    /// The purge an operator's selector asks for; `None` for the purges a node makes on its
    /// own (a mode's new version, a mode retired), which every node makes for itself.
    pub fn of(selector: &Selector) -> Option<Purge> {
        Some(match selector {
            Selector::Key(k) => Purge::Key(k.clone()),
            Selector::Prefix(p) => Purge::Prefix(p.clone()),
            Selector::Mode(m) => Purge::Mode(m.clone()),
            Selector::Size { width, height } => Purge::Size(Size {
                width: *width,
                height: *height,
            }),
            Selector::All => Purge::All,
            Selector::OtherVersions { .. } | Selector::Retired(_) => return None,
        })
    }

    /// The cache's selector for it.
    pub fn selector(&self) -> Selector {
        match self {
            Purge::Key(k) => Selector::Key(k.clone()),
            Purge::Prefix(p) => Selector::Prefix(p.clone()),
            Purge::Mode(m) => Selector::Mode(m.clone()),
            Purge::Size(s) => Selector::size(*s),
            Purge::All => Selector::All,
        }
    }

    /// As said in the log.
    pub fn describe(&self) -> String {
        match self {
            Purge::Key(k) => format!("key {k:?}"),
            Purge::Prefix(p) => format!("prefix {p:?}"),
            Purge::Mode(m) => format!("mode {m}"),
            Purge::Size(s) => format!("size {s}"),
            Purge::All => "everything".into(),
        }
    }
}

/// One change as stored at `log/{stamp}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`FORMAT`].
    pub format: u32,
    /// The name of the node that made it (for people; the stamp names the node's id).
    pub node: String,
    /// The change.
    pub change: Change,
}

/// An item's value and the stamp of the change that set it (last writer wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set<T> {
    /// The value.
    pub value: T,
    /// The change that set it.
    pub stamp: Stamp,
}

/// The cluster's state folded from every record up to `covers`, at `snapshot/{covers}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`FORMAT`].
    pub format: u32,
    /// Every record named up to this is folded in; records after it are not.
    pub covers: String,
    /// Whether the whitelist is on, if any change said so.
    pub enabled: Option<Set<bool>>,
    /// Every size a change named (`WxH`), allowed or not: a removal must win over an older
    /// addition a lagging node still holds.
    pub sizes: BTreeMap<String, Set<bool>>,
    /// The purges of the last [`PURGES_KEPT_FOR_MS`] (at most [`PURGES_KEPT`]), for nodes
    /// that were away while their records were compacted.
    pub purges: Vec<(Stamp, Purge)>,
    /// Purges stamped before this store time are no longer listed: a node away since then
    /// purges everything.
    pub purges_from: u64,
}

/// How long purges are kept in snapshots: a node away longer purges everything on return.
pub const PURGES_KEPT_FOR_MS: u64 = 7 * 24 * 3600 * 1000;

/// How many purges a snapshot keeps at most.
pub const PURGES_KEPT: usize = 10_000;

impl Snapshot {
    /// Folds `record`, named `stamp`, in (records come in stamp order).
    pub fn fold(&mut self, stamp: &Stamp, change: &Change) {
        let newer = |old: Option<&Set<bool>>| old.is_none_or(|o| o.stamp < *stamp);
        match change {
            Change::Allow(sizes) | Change::Disallow(sizes) => {
                let allowed = matches!(change, Change::Allow(_));
                for size in sizes {
                    let item = size.to_string();
                    if newer(self.sizes.get(&item)) {
                        self.sizes.insert(
                            item,
                            Set {
                                value: allowed,
                                stamp: stamp.clone(),
                            },
                        );
                    }
                }
            }
            Change::Whitelist(on) => {
                if newer(self.enabled.as_ref()) {
                    self.enabled = Some(Set {
                        value: *on,
                        stamp: stamp.clone(),
                    });
                }
            }
            Change::Purge(purge) => self.purges.push((stamp.clone(), purge.clone())),
        }
        if stamp.as_str() > self.covers.as_str() {
            self.covers = stamp.as_str().to_owned();
        }
    }

    /// Forgets purges older than `now_ms` allows, or beyond [`PURGES_KEPT`].
    pub fn prune(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(PURGES_KEPT_FOR_MS);
        self.purges.retain(|(stamp, _)| stamp.ms() >= horizon);
        let excess = self.purges.len().saturating_sub(PURGES_KEPT);
        if let Some((last, _)) = excess.checked_sub(1).map(|i| &self.purges[i]) {
            self.purges_from = self.purges_from.max(last.ms() + 1);
            self.purges.drain(..excess);
        }
        self.purges_from = self.purges_from.max(horizon);
    }

    /// The whitelist it holds, if any change ever set one.
    pub fn whitelist(&self) -> Option<crate::whitelist::Allowed> {
        if self.enabled.is_none() && self.sizes.is_empty() {
            return None;
        }
        Some(crate::whitelist::Allowed {
            enabled: self.enabled.as_ref().is_none_or(|e| e.value),
            sizes: self
                .sizes
                .iter()
                .filter(|(_, set)| set.value)
                .filter_map(|(size, _)| size.parse().ok())
                .collect(),
        })
    }
}

mod size {
    use ross_config::Size;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(size: &Size, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(size)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

mod sizes {
    use ross_config::Size;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sizes: &[Size], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(sizes.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Size>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_as_names_and_pending_last() {
        let a = Stamp::new(5, "00000000000a", 9);
        let b = Stamp::new(10, "000000000000", 1);
        assert!(a < b && b < Stamp::pending(0));
        assert_eq!(b.ms(), 10);
        assert_eq!(b.id(), "000000000000-0000000000000001");
        assert!(after_ms(5).as_str() > a.as_str() && after_ms(5).as_str() < b.as_str());
        assert_eq!(Stamp::try_from(a.to_string()), Ok(a));
        assert!(Stamp::try_from("0-x-1".to_owned()).is_err());
    }

    #[test]
    fn changes_round_trip_as_json() {
        let changes = [
            Change::Allow(vec!["72x72".parse().unwrap(), "10x20".parse().unwrap()]),
            Change::Disallow(vec!["72x72".parse().unwrap()]),
            Change::Whitelist(false),
            Change::Purge(Purge::Key("a/b c.jpg".into())),
            Change::Purge(Purge::Size("300x300".parse().unwrap())),
            Change::Purge(Purge::All),
        ];
        for change in changes {
            let json = serde_json::to_string(&change).unwrap();
            assert_eq!(
                serde_json::from_str::<Change>(&json).unwrap(),
                change,
                "{json}"
            );
        }
        assert_eq!(
            serde_json::to_string(&Change::Allow(vec!["7x8".parse().unwrap()])).unwrap(),
            r#"{"allow":["7x8"]}"#
        );
    }

    #[test]
    fn a_snapshot_keeps_the_last_writer_of_each_item() {
        let s = |ms| Stamp::new(ms, "000000000001", ms);
        let size: Size = "72x72".parse().unwrap();
        let mut snap = Snapshot::default();
        snap.fold(&s(2), &Change::Disallow(vec![size]));
        // An older addition folded later loses.
        snap.fold(&s(1), &Change::Allow(vec![size]));
        snap.fold(&s(3), &Change::Whitelist(false));
        snap.fold(&s(4), &Change::Purge(Purge::All));
        let allowed = snap.whitelist().unwrap();
        assert!(!allowed.enabled && allowed.sizes.is_empty());
        assert_eq!(snap.covers, s(4).to_string());
        snap.prune(PURGES_KEPT_FOR_MS + 5);
        assert!(snap.purges.is_empty());
        assert_eq!(snap.purges_from, 5);
    }
}
