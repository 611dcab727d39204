//! The purges waiting to be sent to each CDN, kept in sled (tree `cdn`) so that a restart
//! loses none: `{cdn}/{id}` → a [`Pending`]. A purge is written (and flushed) before the local
//! purge it comes with runs, and removed once its CDN has accepted it.

use serde::{Deserialize, Serialize};

use crate::db::{Database, DbError, TreeName};

/// What one purge asks a CDN to drop: tags (surrogate keys) and, for CloudFront, paths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Surrogate keys (`crate::surrogate`).
    pub tags: Vec<String>,
    /// URL paths, `*` only last (CloudFront's form).
    pub paths: Vec<String>,
    /// What it purges, for people: `key shoes/red.jpg`, `mode crop`...
    pub what: String,
}

/// A purge waiting for one CDN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// What to send.
    pub request: Request,
    /// When it was made (ms since the epoch).
    pub made_ms: u64,
    /// Tries that failed so far.
    pub failures: u32,
    /// Not tried again before this (ms since the epoch).
    pub next_ms: u64,
    /// Why the last try failed.
    pub last_error: Option<String>,
}

/// One pending purge as it is listed: its CDN, its id and what waits.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The CDN's name.
    pub cdn: String,
    /// Its id in the queue (ascending in the order purges were made).
    pub id: u64,
    /// What waits.
    pub pending: Pending,
}

/// The queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    db: Database,
    tree: sled::Tree,
}

fn key(cdn: &str, id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(cdn.len() + 9);
    key.extend_from_slice(cdn.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&id.to_be_bytes());
    key
}

impl Queue {
    /// The queue in `db`.
    pub fn open(db: &Database) -> Result<Queue, DbError> {
        Ok(Queue {
            db: db.clone(),
            tree: db.tree(TreeName::Cdn)?,
        })
    }

    /// Keeps `request` for each of `cdns`, durably (flushed before this returns).
    /// Its id, the same for every CDN (`None`: no CDN).
    pub fn push(&self, cdns: &[&str], request: &Request, now_ms: u64) -> sled::Result<Option<u64>> {
        if cdns.is_empty() {
            return Ok(None);
        }
        let pending = Pending {
            request: request.clone(),
            made_ms: now_ms,
            failures: 0,
            next_ms: now_ms,
            last_error: None,
        };
        let value = serde_json::to_vec(&pending).expect("a pending purge serialises");
        let id = self.db.generate_id()?;
        let mut batch = sled::Batch::default();
        for cdn in cdns {
            batch.insert(key(cdn, id), value.clone());
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(Some(id))
    }

    /// Every purge waiting for `cdn`, oldest first. One that cannot be read (written by a
    /// newer ross) is skipped.
    pub fn of(&self, cdn: &str) -> sled::Result<Vec<Entry>> {
        let mut prefix = cdn.as_bytes().to_vec();
        prefix.push(b'/');
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            let Some(id) = k
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            if let Ok(pending) = serde_json::from_slice::<Pending>(&v) {
                out.push(Entry {
                    cdn: cdn.to_owned(),
                    id,
                    pending,
                });
            }
        }
        Ok(out)
    }

    /// `cdn` accepted the purges `ids`: they go.
    pub fn sent(&self, cdn: &str, ids: &[u64]) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(key(cdn, *id));
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()
    }

    /// Sending `entries` failed with `error`: each waits `wait_ms` more (from `now_ms`).
    pub fn failed(
        &self,
        entries: &[Entry],
        error: &str,
        now_ms: u64,
        wait_ms: impl Fn(u32) -> u64,
    ) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let mut pending = entry.pending.clone();
            pending.failures += 1;
            pending.next_ms = now_ms + wait_ms(pending.failures);
            pending.last_error = Some(error.to_owned());
            batch.insert(
                key(&entry.cdn, entry.id),
                serde_json::to_vec(&pending).expect("a pending purge serialises"),
            );
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Forgets the purges of CDNs no longer in the settings (`keep` names those that are).
    pub fn forget_others(&self, keep: &[&str]) -> sled::Result<usize> {
        let mut gone = 0;
        for item in self.tree.iter().keys() {
            let k = item?;
            let cdn = k.split(|b| *b == b'/').next().unwrap_or_default();
            if !keep.iter().any(|c| c.as_bytes() == cdn) {
                self.tree.remove(&k)?;
                gone += 1;
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purges_wait_per_cdn_until_sent_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let request = |what: &str| Request {
            tags: vec![format!("k-{what}")],
            paths: Vec::new(),
            what: what.into(),
        };
        {
            let db = Database::open(dir.path()).unwrap();
            let queue = Queue::open(&db).unwrap();
            queue
                .push(&["edge", "fastly"], &request("a"), 1_000)
                .unwrap();
            queue.push(&["edge"], &request("b"), 2_000).unwrap();
            let edge = queue.of("edge").unwrap();
            assert_eq!(edge.len(), 2);
            assert_eq!(edge[0].pending.request.what, "a");
            queue
                .failed(&edge[..1], "connection refused", 3_000, |n| 1_000 << n)
                .unwrap();
            queue
                .sent("fastly", &[queue.of("fastly").unwrap()[0].id])
                .unwrap();
        }
        let db = Database::open_again(dir.path()).unwrap();
        let queue = Queue::open(&db).unwrap();
        let edge = queue.of("edge").unwrap();
        assert_eq!(edge.len(), 2, "kept across a restart");
        assert_eq!(edge[0].pending.failures, 1);
        assert_eq!(edge[0].pending.next_ms, 5_000);
        assert_eq!(
            edge[0].pending.last_error.as_deref(),
            Some("connection refused")
        );
        assert!(queue.of("fastly").unwrap().is_empty());
        assert_eq!(queue.forget_others(&["fastly"]).unwrap(), 2);
        assert!(queue.of("edge").unwrap().is_empty());
    }
}
