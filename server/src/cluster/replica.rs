//! Keeps this node's copy of the cluster's state in step with the log in the store.
//!
//! **The log.** Every change made on any node (a whitelist edit, a purge) is one object,
//! `log/{stamp}`, written once by the node that made it. Stamps sort in the order the changes
//! take effect: store time first, then node id and the node's own count. Every node reads the
//! log in name order and applies each change it has not applied yet, so every change reaches
//! every node once. The store needs no conditional writes: no object is ever written twice
//! with different contents.
//!
//! **One order, whatever the arrival order.** A change may be listed after a later-stamped
//! one (two nodes write at once). Whitelist items are registers where the change with the
//! higher stamp wins, wherever it arrives first, so every node ends with what applying the
//! log in stamp order gives. Purges commute. A change made here is applied here at once and
//! marked *pending* until sent; it is stamped when sent, later than everything this node has
//! seen, so it wins over what other nodes did while it waited (S3 out of reach).
//!
//! **Reading the log.** A record is in the listing within [`LOOKBACK_MS`] of its stamp (a node
//! writes it with a fresh stamp if a write takes longer than a quarter of that). Each poll lists
//! the records after `seen_through` and then moves `seen_through` to `LOOKBACK_MS` before the
//! poll began.
//!
//! **Compaction.** One node at a time (the lowest id among those alive) folds the records
//! older than `LOOKBACK_MS` into `snapshot/{last stamp}`, and deletes records more than
//! [`RETAIN_MS`] older than the snapshot, and all but the two newest snapshots. A node whose
//! `seen_through` is older than that (new, or away) starts from the newest snapshot: its
//! whitelist items are merged as records are, and the purges it may have missed are run again
//! (everything, if it was away longer than the snapshot remembers purges).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ross_config::Size;

use super::local::Local;
use super::record::{after_ms, Change, Purge, Record, Set, Snapshot, Stamp, FORMAT};
use super::store::{Store, StoreError, LIST_MAX};

/// A record is listed within this of its stamp.
pub const LOOKBACK_MS: u64 = 60_000;

/// Records folded into a snapshot are kept this long after it, for nodes slow to read them.
pub const RETAIN_MS: u64 = 600_000;

/// A node that read the log less recently than this starts again from the newest snapshot.
const STALE_MS: u64 = RETAIN_MS / 2;

/// Folders in the store.
pub const LOG: &str = "log/";
/// Snapshots.
pub const SNAPSHOTS: &str = "snapshot/";

/// What the log's changes act on: this node's whitelist and cache. Blocking.
pub trait Target: Send + Sync {
    /// Allows `sizes`.
    fn allow(&self, sizes: &[Size]) -> anyhow::Result<()>;
    /// Stops allowing `sizes` and purges their renders.
    fn disallow(&self, sizes: &[Size]) -> anyhow::Result<()>;
    /// Switches the whitelist.
    fn set_enabled(&self, on: bool) -> anyhow::Result<()>;
    /// Purges.
    fn purge(&self, purge: &Purge) -> anyhow::Result<()>;
    /// The whitelist now.
    fn whitelist(&self) -> crate::whitelist::Allowed;
    /// Whether the settings file holds the whitelist (whitelist changes then do not apply).
    fn whitelist_from_config(&self) -> bool;
}

/// How the node stands with the cluster.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// When the store last answered a whole poll.
    pub last_ok: Option<Instant>,
    /// Why the last poll failed, if it did.
    pub last_error: Option<String>,
    /// The newest change applied here.
    pub applied: Option<Stamp>,
    /// Changes sent.
    pub sent: u64,
    /// Changes from other nodes applied.
    pub received: u64,
}

/// The engine: one per node, driven by the cluster thread ([`Replica::tick`],
/// [`Replica::compact`]) and by local changes ([`Replica::change`]).
pub struct Replica {
    store: Arc<dyn Store>,
    local: Local,
    target: Arc<dyn Target>,
    name: String,
    /// Held while a whitelist item is decided: a local change and a change from the log
    /// never interleave.
    deciding: Mutex<()>,
    /// The latest store time seen in a stamp: this node's stamps are later.
    latest_ms: AtomicU64,
    /// A record listed and then gone (compacted meanwhile): the next round reads the
    /// snapshot.
    missing: Mutex<Option<String>>,
    status: Mutex<Status>,
}

impl Replica {
    /// The engine for `local`'s node, named `name` for people.
    pub fn new(
        store: Arc<dyn Store>,
        local: Local,
        target: Arc<dyn Target>,
        name: String,
    ) -> Replica {
        Replica {
            store,
            local,
            target,
            name,
            deciding: Mutex::new(()),
            latest_ms: AtomicU64::new(0),
            missing: Mutex::new(None),
            status: Mutex::new(Status::default()),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        self.local.node()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// How the node stands.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes made here and not yet sent.
    pub fn pending(&self) -> usize {
        self.local.pending()
    }

    /// Makes `change` here: kept to be sent, then applied by `apply`. Blocking. If the process
    /// stops between the two, the change is applied again at the next start; if `apply`
    /// fails, the change is withdrawn (not sent). The outer error is keeping it (nothing was
    /// applied).
    pub fn change<T, E>(
        &self,
        change: &Change,
        apply: impl FnOnce() -> Result<T, E>,
    ) -> sled::Result<Result<T, E>> {
        // A purge decides no item: it runs (perhaps long) without holding up the cluster
        // thread, which sends only what was applied, in order, so nothing after it meanwhile.
        let _one = (!change.items().is_empty())
            .then(|| self.deciding.lock().unwrap_or_else(|e| e.into_inner()));
        let (seq, before) = self.local.enqueue(change)?;
        let applied = apply();
        match &applied {
            Ok(_) => self.local.done(seq)?,
            Err(_) => self.local.withdraw(seq, &before)?,
        }
        Ok(applied)
    }

    /// Applies again the changes in the outbox the process stopped before applying (between
    /// keeping a change and applying it). Blocking; at start-up.
    pub fn reapply_outbox(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        for (seq, change, done) in self.local.outbox()? {
            if !done {
                self.act(&change, &vec![true; change.items().len()])?;
                self.local.done(seq)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn set_status(&self, edit: impl FnOnce(&mut Status)) {
        edit(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// One round: sends what waits, catches up from a snapshot if this node is new or was
    /// away, and applies the log's new records. Blocking (database writes; the target may
    /// block too): call it from the cluster's own thread.
    pub async fn tick(&self) -> Result<(), StoreError> {
        let result = self.round().await;
        self.set_status(|s| match &result {
            Ok(()) => {
                s.last_ok = Some(Instant::now());
                s.last_error = None;
            }
            Err(e) => s.last_error = Some(e.to_string()),
        });
        result
    }

    async fn round(&self) -> Result<(), StoreError> {
        // Times come from the store's clock: read it before anything is stamped or listed.
        if !self.store.clock_known() {
            self.store.list(SNAPSHOTS, "").await?;
        }
        let seen = self.local.seen_through().map_err(db)?;
        let missing = self
            .missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let stale = seen
            .as_deref()
            .is_none_or(|s| ms_of(s) + STALE_MS < self.store.now_ms());
        if stale || missing.is_some() {
            self.catch_up(seen, missing).await?;
        }
        // Read before sending: a change sent is stamped after every record read.
        self.poll().await?;
        self.send().await
    }

    /// The store time for a new stamp: later than every stamp seen.
    fn stamp_ms(&self) -> u64 {
        let now = self.store.now_ms();
        let after = self.latest_ms.load(Ordering::Relaxed) + 1;
        let ms = now.max(after);
        self.latest_ms.fetch_max(ms, Ordering::Relaxed);
        ms
    }

    fn saw(&self, stamp: &Stamp) {
        self.latest_ms.fetch_max(stamp.ms(), Ordering::Relaxed);
    }

    /// Writes the outbox to the log, oldest first; stops at the first failure.
    async fn send(&self) -> Result<(), StoreError> {
        for (seq, change, done) in self.local.outbox().map_err(db)? {
            // One being applied now may yet be withdrawn: sent once applied.
            if !done {
                break;
            }
            let body = serde_json::to_vec(&Record {
                format: FORMAT,
                node: self.name.clone(),
                change: change.clone(),
            })
            .expect("a record serialises");
            let stamp = loop {
                let stamp = Stamp::new(self.stamp_ms(), self.node(), seq);
                let began = Instant::now();
                self.store
                    .put(&format!("{LOG}{stamp}"), body.clone())
                    .await?;
                // A write this slow may be listed after readers passed its stamp: written
                // again, later; readers apply the change once (its id is the same).
                if began.elapsed().as_millis() as u64 <= LOOKBACK_MS / 4 {
                    break stamp;
                }
            };
            let _one = self.deciding.lock().unwrap_or_else(|e| e.into_inner());
            self.local.sent(seq, &stamp, &change).map_err(db)?;
            self.saw(&stamp);
            self.set_status(|s| {
                s.sent += 1;
                s.applied = s.applied.clone().max(Some(stamp.clone()));
            });
            tracing::info!(change = %change.describe(), stamp = %stamp, "change sent to the cluster");
        }
        Ok(())
    }

    /// Lists the log after `seen_through` and applies what was not applied.
    async fn poll(&self) -> Result<(), StoreError> {
        let began = self.store.now_ms();
        let seen = self.local.seen_through().map_err(db)?.unwrap_or_default();
        let names = self.store.list(LOG, &seen).await?;
        for name in &names {
            let Ok(stamp) = Stamp::try_from(name.clone()) else {
                continue;
            };
            self.saw(&stamp);
            // Applied already, under this stamp or (written twice) another.
            let earlier = self.local.applied_stamp(stamp.id()).map_err(db)?;
            if earlier.as_ref().is_some_and(|e| *e >= stamp) {
                continue;
            }
            let Some(body) = self.store.get(&format!("{LOG}{name}")).await? else {
                // Compacted away while this node read: it starts again from the snapshot.
                *self.missing.lock().unwrap_or_else(|e| e.into_inner()) = Some(name.clone());
                return Err(StoreError(format!(
                    "{LOG}{name} was listed and then gone: reading the snapshot"
                )));
            };
            let record = read_record(name, &body)?;
            match (&record, &earlier) {
                // The same change again, later: only its whitelist items may now win.
                (Some(record), Some(_)) if !matches!(record.change, Change::Purge(_)) => {
                    self.applying(&stamp, record)
                }
                (Some(_), Some(_)) => {}
                (Some(record), None) => {
                    self.applying(&stamp, record);
                    self.set_status(|s| s.received += 1);
                }
                (None, _) => {
                    tracing::warn!(record = %name, "unreadable change record skipped")
                }
            }
            self.local.applied(&stamp).map_err(db)?;
            self.set_status(|s| s.applied = s.applied.clone().max(Some(stamp.clone())));
        }
        let through = if names.len() < LIST_MAX {
            after_ms(began.saturating_sub(LOOKBACK_MS))
        } else {
            names.last().cloned().unwrap_or_default()
        };
        if through > seen {
            self.local.set_seen_through(&through).map_err(db)?;
            self.local.forget_applied_before(ms_of(&seen)).map_err(db)?;
        }
        Ok(())
    }

    /// Applies `record`, named `stamp`; a failure is logged, and the change counted as
    /// applied (the cache retries a purge that failed; a whitelist edit that cannot be written
    /// fails on the next one too).
    fn applying(&self, stamp: &Stamp, record: &Record) {
        match self.apply(stamp, &record.change) {
            Ok(()) => tracing::info!(
                change = %record.change.describe(), from = %record.node, stamp = %stamp,
                "change from the cluster applied"
            ),
            Err(e) => tracing::error!(
                change = %record.change.describe(), from = %record.node, stamp = %stamp,
                error = %format!("{e:#}"), "a change from the cluster failed here"
            ),
        }
    }

    /// Applies a change from the log: whitelist items only where it is the last writer.
    fn apply(&self, stamp: &Stamp, change: &Change) -> anyhow::Result<()> {
        if let Change::Purge(_) = change {
            return self.act(change, &[]);
        }
        if self.target.whitelist_from_config() {
            return Ok(());
        }
        let _one = self.deciding.lock().unwrap_or_else(|e| e.into_inner());
        let items = change.items();
        let mut wins = Vec::with_capacity(items.len());
        for item in &items {
            wins.push(self.local.item(item)?.is_none_or(|old| old < *stamp));
        }
        self.act(change, &wins)?;
        for (item, _) in items.iter().zip(&wins).filter(|(_, w)| **w) {
            self.local.set_item(item, stamp)?;
        }
        Ok(())
    }

    /// Does `change` to the target, for the items where `wins` says so.
    fn act(&self, change: &Change, wins: &[bool]) -> anyhow::Result<()> {
        let winning = |sizes: &[Size]| -> Vec<Size> {
            sizes
                .iter()
                .zip(wins)
                .filter(|(_, w)| **w)
                .map(|(s, _)| *s)
                .collect()
        };
        match change {
            Change::Allow(sizes) => self.target.allow(&winning(sizes)),
            Change::Disallow(sizes) => self.target.disallow(&winning(sizes)),
            Change::Whitelist(on) if wins.first() == Some(&true) => self.target.set_enabled(*on),
            Change::Whitelist(_) => Ok(()),
            Change::Purge(purge) => self.target.purge(purge),
        }
    }

    /// Starts again from the newest snapshot: a node joining the cluster, or one away longer
    /// than the log is kept.
    async fn catch_up(
        &self,
        seen: Option<String>,
        missing: Option<String>,
    ) -> Result<(), StoreError> {
        let snapshots = self.store.list(SNAPSHOTS, "").await?;
        if let Some(gone) = &missing {
            // A record listed and then gone was compacted: a snapshot now covers it. If none
            // does, it is lost (deleted by hand?), and skipped rather than waited for.
            if snapshots.last().is_none_or(|newest| newest < gone) {
                tracing::warn!(record = %gone, "a change record vanished from the log: skipped");
                if let Ok(stamp) = Stamp::try_from(gone.clone()) {
                    self.local.applied(&stamp).map_err(db)?;
                }
                return Ok(());
            }
        }
        let newest = match snapshots.last() {
            Some(name)
                if missing.is_none() && seen.as_deref().is_some_and(|s| s >= name.as_str()) =>
            {
                return Ok(())
            }
            Some(name) => self.read_snapshot(name).await?,
            None => None,
        };
        let joining = seen.is_none();
        // A joining node takes the cluster's whitelist: the snapshot's, and the records after
        // it (read now, so that sizes the cluster never had do not linger here).
        let mut state = newest.clone().unwrap_or_default();
        let mut folded = Vec::new();
        if joining {
            for name in self.store.list(LOG, &state.covers).await? {
                let Ok(stamp) = Stamp::try_from(name.clone()) else {
                    continue;
                };
                if let Some(body) = self.store.get(&format!("{LOG}{name}")).await? {
                    if let Some(record) = read_record(&name, &body)? {
                        state.fold(&stamp, &record.change);
                    }
                    folded.push(stamp);
                }
            }
        }
        let result = match (&seen, state.whitelist()) {
            (None, None) => self.seed_cluster(),
            (None, Some(_)) => self.take_whitelist(&state, true),
            (Some(_), _) => self.take_whitelist(&state, false),
        };
        result
            .map_err(|e| StoreError(format!("applying the cluster's whitelist failed: {e:#}")))?;
        if let (Some(seen), Some(snapshot)) = (&seen, &newest) {
            self.rerun_purges(seen, snapshot)
                .map_err(|e| StoreError(format!("purging what was missed failed: {e:#}")))?;
        }
        for stamp in &folded {
            self.local.applied(stamp).map_err(db)?;
        }
        // What the node now holds counts as applied: the snapshot's changes, and those read.
        let holds = folded
            .last()
            .cloned()
            .or_else(|| Stamp::try_from(state.covers.clone()).ok());
        self.set_status(|s| s.applied = s.applied.clone().max(holds));
        let covers = newest.map(|s| s.covers).unwrap_or_default();
        if seen.as_deref().is_none_or(|s| s < covers.as_str()) {
            self.local.set_seen_through(&covers).map_err(db)?;
        }
        if joining {
            tracing::info!(store = %self.store.describe(), "joined the cluster");
        }
        Ok(())
    }

    async fn read_snapshot(&self, name: &str) -> Result<Option<Snapshot>, StoreError> {
        let Some(body) = self.store.get(&format!("{SNAPSHOTS}{name}")).await? else {
            return Ok(None);
        };
        let snapshot: Snapshot = serde_json::from_slice(&body)
            .map_err(|e| StoreError(format!("{SNAPSHOTS}{name} cannot be read: {e}")))?;
        if snapshot.format > FORMAT {
            return Err(StoreError(format!(
                "{SNAPSHOTS}{name} was written by a newer ross (format {}): upgrade this node",
                snapshot.format
            )));
        }
        Ok(Some(snapshot))
    }

    /// The first node of a new cluster: its whitelist becomes the cluster's.
    fn seed_cluster(&self) -> anyhow::Result<()> {
        if self.target.whitelist_from_config() {
            return Ok(());
        }
        let now = self.target.whitelist();
        let mut changes = vec![Change::Whitelist(now.enabled)];
        if !now.sizes.is_empty() {
            changes.push(Change::Allow(now.sizes.iter().copied().collect()));
        }
        for change in changes {
            // Applied already: it is this node's whitelist.
            let (seq, _) = self.local.enqueue(&change)?;
            self.local.done(seq)?;
        }
        Ok(())
    }

    /// Merges the whitelist of `state` in, each item where it is the last writer; `exact`
    /// (a node joining): also stops allowing the sizes the cluster never allowed.
    fn take_whitelist(&self, state: &Snapshot, exact: bool) -> anyhow::Result<()> {
        if self.target.whitelist_from_config() {
            return Ok(());
        }
        if let Some(Set { value, stamp }) = &state.enabled {
            self.apply(stamp, &Change::Whitelist(*value))?;
        }
        for (size, Set { value, stamp }) in &state.sizes {
            let Ok(size) = size.parse::<Size>() else {
                continue;
            };
            let change = if *value {
                Change::Allow(vec![size])
            } else {
                Change::Disallow(vec![size])
            };
            self.apply(stamp, &change)?;
        }
        if exact {
            let _one = self.deciding.lock().unwrap_or_else(|e| e.into_inner());
            let mut extra = Vec::new();
            for size in self.target.whitelist().sizes {
                let unknown = !state.sizes.contains_key(&size.to_string());
                let pending = self
                    .local
                    .item(&format!("size/{size}"))?
                    .is_some_and(|s| s.is_pending());
                if unknown && !pending {
                    extra.push(size);
                }
            }
            if !extra.is_empty() {
                self.target.disallow(&extra)?;
            }
        }
        Ok(())
    }

    /// Runs again the purges of `snapshot` this node may have missed since `seen`; everything
    /// if the snapshot no longer lists purges that old.
    fn rerun_purges(&self, seen: &str, snapshot: &Snapshot) -> anyhow::Result<()> {
        if seen.is_empty() {
            // Joined before any snapshot: every record since was read.
            return Ok(());
        }
        if ms_of(seen) < snapshot.purges_from {
            tracing::warn!(
                "this node was away longer than the cluster remembers purges: purging everything"
            );
            self.target.purge(&Purge::All)?;
            return Ok(());
        }
        for (stamp, purge) in &snapshot.purges {
            if stamp.as_str() > seen && !self.local.is_applied(stamp.id())? {
                self.target.purge(purge)?;
                self.local.applied(stamp)?;
            }
        }
        Ok(())
    }

    /// Folds the settled records into a new snapshot, and deletes what no node needs any more.
    /// Returns the snapshot written, if there was anything to fold.
    pub async fn compact(&self) -> Result<Option<String>, StoreError> {
        let now = self.store.now_ms();
        let snapshots = self.store.list(SNAPSHOTS, "").await?;
        let mut snapshot = match snapshots.last() {
            Some(name) => match self.read_snapshot(name).await? {
                Some(s) => s,
                None => return Ok(None),
            },
            None => Snapshot {
                format: FORMAT,
                ..Snapshot::default()
            },
        };
        let settled = after_ms(now.saturating_sub(LOOKBACK_MS));
        let names = self.store.list(LOG, &snapshot.covers).await?;
        let mut folded = 0;
        for name in names.iter().take_while(|n| **n < settled) {
            let Ok(stamp) = Stamp::try_from(name.clone()) else {
                continue;
            };
            let Some(body) = self.store.get(&format!("{LOG}{name}")).await? else {
                // Another node compacted meanwhile: its snapshot is the one to build on.
                return Err(StoreError(format!(
                    "{LOG}{name} was listed and then gone: another node compacts"
                )));
            };
            match read_record(name, &body) {
                Ok(Some(record)) => snapshot.fold(&stamp, &record.change),
                Ok(None) => snapshot.covers = name.clone(),
                // A newer ross's record: left for a newer ross to fold.
                Err(_) => break,
            }
            folded += 1;
        }
        let mut written = None;
        if folded > 0 {
            snapshot.format = FORMAT;
            snapshot.prune(now);
            let body = serde_json::to_vec(&snapshot).expect("a snapshot serialises");
            self.store
                .put(&format!("{SNAPSHOTS}{}", snapshot.covers), body)
                .await?;
            written = Some(snapshot.covers.clone());
            tracing::info!(records = folded, snapshot = %snapshot.covers, "cluster log compacted");
        }
        // Records folded long enough ago, and all but the two newest snapshots.
        let old = after_ms(ms_of(&snapshot.covers).saturating_sub(RETAIN_MS));
        let mut gone: Vec<String> = self
            .store
            .list(LOG, "")
            .await?
            .into_iter()
            .take_while(|n| *n < old && *n <= snapshot.covers)
            .map(|n| format!("{LOG}{n}"))
            .collect();
        let mut all = snapshots;
        if let Some(name) = &written {
            all.push(name.clone());
        }
        gone.extend(all.iter().rev().skip(2).map(|n| format!("{SNAPSHOTS}{n}")));
        if !gone.is_empty() {
            self.store.delete(&gone).await?;
        }
        Ok(written)
    }
}

/// The record `name` holds: `None` if unreadable, an error if a newer ross wrote it (its
/// format is read first, so a change this ross does not know is not mistaken for garbage).
fn read_record(name: &str, body: &[u8]) -> Result<Option<Record>, StoreError> {
    #[derive(serde::Deserialize)]
    struct Format {
        format: u32,
    }
    if let Ok(Format { format }) = serde_json::from_slice::<Format>(body) {
        if format > FORMAT {
            return Err(StoreError(format!(
                "{LOG}{name} was written by a newer ross (format {format}): upgrade this node"
            )));
        }
    }
    Ok(serde_json::from_slice::<Record>(body).ok())
}

/// The store time at the front of a log name (0 for none).
fn ms_of(name: &str) -> u64 {
    name.get(..16).and_then(|ms| ms.parse().ok()).unwrap_or(0)
}

fn db(e: sled::Error) -> StoreError {
    StoreError(format!("the local database failed: {e}"))
}
