//! What this node keeps of the cluster's state, in its own tree of the sled database: its id,
//! the changes made here and not yet sent (the outbox), the stamp of the last change to each
//! whitelist item, the changes applied, and how far through the log it has read. Blocking.

use crate::db::{Database, DbError, TreeName};

use super::record::{is_node_id, Change, Stamp, NODE_ID_LEN};

const NODE_ID: &[u8] = b"node-id";
const OUTBOX: &[u8] = b"outbox/";
/// An outbox entry applied here (it is applied again at start-up until then).
const DONE: &[u8] = b"outbox-done/";
const SET: &[u8] = b"set/";
const APPLIED: &[u8] = b"applied/";
const SEEN_THROUGH: &[u8] = b"seen-through";
const HORIZON: &[u8] = b"horizon/";
const DELETE: &[u8] = b"delete/";

fn key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    [prefix, rest].concat()
}

/// What the items of a change held before it: put back if it is withdrawn.
pub type Before = Vec<(String, Option<Stamp>)>;

/// This node's part of the cluster's state.
#[derive(Clone)]
pub struct Local {
    tree: sled::Tree,
    db: Database,
    node: String,
}

impl Local {
    /// The tree in `db`, with this node's id (made the first time).
    pub fn open(db: &Database) -> Result<Local, DbError> {
        let tree = db.tree(TreeName::Cluster)?;
        let err = |source| DbError::Sled {
            path: db.dir().to_owned(),
            source,
        };
        let stored = tree
            .get(NODE_ID)
            .map_err(err)?
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .filter(|id| is_node_id(id));
        let node = match stored {
            Some(id) => id,
            None => {
                let mut random = [0u8; NODE_ID_LEN / 2];
                getrandom::getrandom(&mut random).expect("the system's random source works");
                let id: String = random.iter().map(|b| format!("{b:02x}")).collect();
                tree.insert(NODE_ID, id.as_bytes()).map_err(err)?;
                db.flush().map_err(err)?;
                id
            }
        };
        Ok(Local {
            tree,
            db: db.clone(),
            node,
        })
    }

    /// This node's id: the same for as long as its `data_dir` lives.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Keeps `change`, made here, until it is sent: durably, with every item it sets marked
    /// as set by a pending change (which no change from elsewhere overrides). Refused while
    /// `data_dir` is full. Returns its number and what its items held before, for
    /// [`Local::withdraw`].
    pub fn enqueue(&self, change: &Change) -> sled::Result<(u64, Before)> {
        self.db.room()?;
        let seq = self.db.generate_id()?;
        let mut before = Vec::new();
        let mut batch = sled::Batch::default();
        let json = serde_json::to_vec(change).expect("a change serialises");
        batch.insert(key(OUTBOX, &seq.to_be_bytes()), json);
        let pending = Stamp::pending(seq);
        for item in change.items() {
            before.push((item.clone(), self.item(&item)?));
            batch.insert(key(SET, item.as_bytes()), pending.as_str().as_bytes());
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok((seq, before))
    }

    /// The change `seq` was applied here: not applied again at the next start.
    pub fn done(&self, seq: u64) -> sled::Result<()> {
        self.tree.insert(key(DONE, &seq.to_be_bytes()), &[])?;
        Ok(())
    }

    /// The change `seq` could not be applied here: it is not sent, and its items hold what
    /// they held before.
    pub fn withdraw(&self, seq: u64, before: &Before) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        batch.remove(key(OUTBOX, &seq.to_be_bytes()));
        for (item, old) in before {
            match old {
                Some(stamp) => batch.insert(key(SET, item.as_bytes()), stamp.as_str().as_bytes()),
                None => batch.remove(key(SET, item.as_bytes())),
            }
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()
    }

    /// The changes not yet sent, oldest first, and whether each was applied here. One that
    /// cannot be read (written by a newer ross) is skipped.
    pub fn outbox(&self) -> sled::Result<Vec<(u64, Change, bool)>> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(OUTBOX) {
            let (k, v) = entry?;
            let seq = k
                .get(OUTBOX.len()..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            match (seq, serde_json::from_slice(&v)) {
                (Some(seq), Ok(change)) => {
                    let done = self.tree.contains_key(key(DONE, &seq.to_be_bytes()))?;
                    out.push((seq, change, done));
                }
                _ => tracing::warn!("an unreadable change in the cluster outbox is skipped"),
            }
        }
        Ok(out)
    }

    /// How many changes wait to be sent.
    pub fn pending(&self) -> usize {
        self.tree.scan_prefix(OUTBOX).count()
    }

    /// `change`, the `seq`th, was written to the log as `stamp`: out of the outbox, applied,
    /// and its items set by `stamp` unless a later local change set them since.
    pub fn sent(&self, seq: u64, stamp: &Stamp, change: &Change) -> sled::Result<()> {
        let pending = Stamp::pending(seq);
        for item in change.items() {
            let k = key(SET, item.as_bytes());
            // Fails harmlessly when a newer local change holds the item.
            let _ = self.tree.compare_and_swap(
                &k,
                Some(pending.as_str().as_bytes()),
                Some(stamp.as_str().as_bytes()),
            )?;
        }
        let mut batch = sled::Batch::default();
        batch.remove(key(OUTBOX, &seq.to_be_bytes()));
        batch.remove(key(DONE, &seq.to_be_bytes()));
        batch.insert(
            key(APPLIED, stamp.id().as_bytes()),
            stamp.as_str().as_bytes(),
        );
        self.tree.apply_batch(batch)?;
        self.db.flush()
    }

    /// The stamp of the change that last set `item`, if any did.
    pub fn item(&self, item: &str) -> sled::Result<Option<Stamp>> {
        Ok(self
            .tree
            .get(key(SET, item.as_bytes()))?
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .and_then(|s| Stamp::try_from(s).ok()))
    }

    /// Records that the change `stamp` set `item`.
    pub fn set_item(&self, item: &str, stamp: &Stamp) -> sled::Result<()> {
        self.tree
            .insert(key(SET, item.as_bytes()), stamp.as_str().as_bytes())?;
        Ok(())
    }

    /// Whether the change `id` (`{node}-{seq}`) was applied here.
    pub fn is_applied(&self, id: &str) -> sled::Result<bool> {
        self.tree.contains_key(key(APPLIED, id.as_bytes()))
    }

    /// The stamp the change `id` was applied here under, if it was (a change written twice,
    /// after a slow write, has two).
    pub fn applied_stamp(&self, id: &str) -> sled::Result<Option<Stamp>> {
        Ok(self
            .tree
            .get(key(APPLIED, id.as_bytes()))?
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .and_then(|s| Stamp::try_from(s).ok()))
    }

    /// Records that the change `stamp` was applied here.
    pub fn applied(&self, stamp: &Stamp) -> sled::Result<()> {
        self.tree.insert(
            key(APPLIED, stamp.id().as_bytes()),
            stamp.as_str().as_bytes(),
        )?;
        Ok(())
    }

    /// Forgets the changes applied that were stamped before `ms`: the log is never read
    /// before it again.
    pub fn forget_applied_before(&self, ms: u64) -> sled::Result<usize> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for entry in self.tree.scan_prefix(APPLIED) {
            let (k, v) = entry?;
            let at = Stamp::try_from(String::from_utf8_lossy(&v).into_owned())
                .map(|s| s.ms())
                .unwrap_or(0);
            if at < ms {
                batch.remove(k);
                n += 1;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(n)
    }

    /// The name in the log up to which every record was applied (or folded into a snapshot
    /// this node loaded); `None` before the node first joined.
    pub fn seen_through(&self) -> sled::Result<Option<String>> {
        Ok(self
            .tree
            .get(SEEN_THROUGH)?
            .and_then(|v| String::from_utf8(v.to_vec()).ok()))
    }

    /// Moves [`Local::seen_through`] on, durably.
    pub fn set_seen_through(&self, name: &str) -> sled::Result<()> {
        self.tree.insert(SEEN_THROUGH, name.as_bytes())?;
        self.db.flush()
    }

    /// The purges of shared renders kept: `all`, `mode/{m}` or `size/{WxH}`, and when.
    pub fn horizons(&self) -> sled::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(HORIZON) {
            let (k, v) = entry?;
            let what = String::from_utf8_lossy(&k[HORIZON.len()..]).into_owned();
            let ms = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            out.push((what, ms));
        }
        Ok(out)
    }

    /// Keeps when `what` was last purged.
    pub fn set_horizon(&self, what: &str, ms: u64) -> sled::Result<()> {
        self.tree
            .insert(key(HORIZON, what.as_bytes()), &ms.to_be_bytes())?;
        Ok(())
    }

    /// Keeps a folder of shared renders to delete, until [`Local::deleted`].
    pub fn queue_delete(&self, folder: &str) -> sled::Result<()> {
        let seq = self.db.generate_id()?;
        self.tree
            .insert(key(DELETE, &seq.to_be_bytes()), folder.as_bytes())?;
        Ok(())
    }

    /// The folders waiting to be deleted, oldest first.
    pub fn deletions(&self) -> sled::Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(DELETE) {
            let (k, v) = entry?;
            if let Ok(seq) = k[DELETE.len()..].try_into().map(u64::from_be_bytes) {
                out.push((seq, String::from_utf8_lossy(&v).into_owned()));
            }
        }
        Ok(out)
    }

    /// The deletion `seq` is done.
    pub fn deleted(&self, seq: u64) -> sled::Result<()> {
        self.tree.remove(key(DELETE, &seq.to_be_bytes()))?;
        Ok(())
    }
}
