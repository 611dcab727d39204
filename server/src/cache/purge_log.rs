//! The purges run lately, each with a sequence number, so that a purge costs only what it
//! matches.
//!
//! - A render takes the sequence number when its request is admitted (its
//!   [`WriteTicket`](super::WriteTicket)); it is not cached if a purge after that number may
//!   match its variant ([`PurgeLog::bars`]).
//! - An original fetched or decoded for a key is kept under the key's *source epoch*
//!   ([`PurgeLog::source_epoch`]): the number of the last purge that touched the key's
//!   original (of the key, a prefix of it, everything). Purges by mode or size, or of other
//!   keys, leave it, so the originals being reused stay usable.
//!
//! Purges are forgotten after [`PurgeLog::kept`] (or once [`PURGE_LOG_MAX`] are remembered).
//! A ticket older than what is remembered is refused (never wrongly taken). A key's source
//! epoch may fall back when its purge is forgotten; that is safe because whatever was kept
//! under the later value, or is still in flight from before it, has expired by then (see
//! [`kept_for`]). A purge forgotten early, for the count, moves every key's epoch on instead.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::layout::VariantKey;
use super::purge::Selector;

/// The most purges remembered at once; older ones are forgotten early.
pub(super) const PURGE_LOG_MAX: usize = 10_000;

/// The shortest time a purge is remembered.
const PURGE_LOG_KEPT: Duration = Duration::from_secs(600);

/// How long a purge must be remembered when a render may take `render_timeout`: longer than
/// a render begun before it can still run (whose write it must refuse), and than an original
/// fetched before it can stay kept: fetched up to one render's time before the purge, kept
/// for [`crate::recent::KEPT_FOR`] after the last render that used it, each of which began
/// before the purge too.
pub(super) fn kept_for(render_timeout: Duration) -> Duration {
    PURGE_LOG_KEPT.max(crate::recent::KEPT_FOR + render_timeout.saturating_mul(3))
}

/// See the module's documentation.
#[derive(Debug)]
pub(super) struct PurgeLog {
    /// The last sequence number given.
    pub(super) seq: u64,
    /// How long a purge is remembered.
    kept: Duration,
    /// Purges that bar earlier renders, oldest first: sequence, when, what.
    runs: VecDeque<(u64, Instant, Selector)>,
    /// Tickets below this are too old to check: the purges after them are forgotten.
    floor: u64,
    /// What a key's source epoch is read from: behind a lock of its own, held for moments,
    /// so that a request (on the async runtime) never waits for a purge holding the log.
    epochs: Arc<RwLock<Epochs>>,
}

/// The purges that touched originals, for [`Epochs::source_epoch`].
#[derive(Debug, Default)]
pub(super) struct Epochs {
    /// The last purge of each key remembered (most purges are of one key: looked up, not
    /// scanned, for every miss).
    keys: HashMap<String, u64>,
    /// Purges remembered that touch many keys' originals (prefix, all), oldest first.
    broad: VecDeque<(u64, Selector)>,
    /// The last purge forgotten early (for the count, not its age): every key's source epoch
    /// is at least this, so an original kept from before it is never used again.
    forced: u64,
}

impl Epochs {
    /// The sequence number of the last purge that touched `key`'s original, or of the last
    /// one forgotten early, whichever is later (0 for none).
    pub(super) fn source_epoch(&self, key: &str) -> u64 {
        let by_key = self.keys.get(key).copied().unwrap_or(0);
        let broad = self
            .broad
            .iter()
            .rev()
            .take_while(|(seq, _)| *seq > by_key.max(self.forced))
            .find(|(_, s)| s.touches_original(key))
            .map_or(0, |(seq, _)| *seq);
        by_key.max(broad).max(self.forced)
    }

    fn note(&mut self, seq: u64, selector: &Selector) {
        match selector {
            Selector::Key(key) => {
                self.keys.insert(key.clone(), seq);
            }
            Selector::Prefix(_) | Selector::All => self.broad.push_back((seq, selector.clone())),
            _ => {}
        }
    }

    fn forget(&mut self, seq: u64, selector: &Selector, early: bool) {
        if early {
            self.forced = self.forced.max(seq);
        }
        match selector {
            Selector::Key(key) if self.keys.get(key) == Some(&seq) => {
                self.keys.remove(key);
            }
            Selector::Prefix(_) | Selector::All => {
                self.broad.retain(|(s, _)| *s != seq);
            }
            _ => {}
        }
    }
}

impl PurgeLog {
    /// An empty log that remembers each purge for `kept`, its sequence at `seq`.
    pub(super) fn new(kept: Duration, seq: u64) -> PurgeLog {
        PurgeLog {
            seq,
            kept,
            runs: VecDeque::new(),
            floor: 0,
            epochs: Arc::default(),
        }
    }

    /// The source epochs, to read without this log's lock.
    pub(super) fn epochs(&self) -> Arc<RwLock<Epochs>> {
        self.epochs.clone()
    }

    fn epochs_mut(&self) -> std::sync::RwLockWriteGuard<'_, Epochs> {
        self.epochs.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers purges for `kept` from now on.
    pub(super) fn keep_for(&mut self, kept: Duration) {
        self.kept = kept;
    }

    /// Notes a purge of `selector` now as sequence `seq` (above the last); returns it.
    pub(super) fn push(&mut self, seq: u64, selector: Selector) -> u64 {
        self.push_at(seq, selector, Instant::now())
    }

    fn push_at(&mut self, seq: u64, selector: Selector, now: Instant) -> u64 {
        debug_assert!(seq > self.seq, "sequences rise");
        while let Some((old_seq, at, _)) = self.runs.front() {
            let young = now.saturating_duration_since(*at) < self.kept;
            if young && self.runs.len() < PURGE_LOG_MAX {
                break;
            }
            let old_seq = *old_seq;
            self.floor = self.floor.max(old_seq);
            if let Some((_, _, old)) = self.runs.pop_front() {
                self.epochs_mut().forget(old_seq, &old, young);
            }
        }
        self.seq = seq.max(self.seq + 1);
        self.epochs_mut().note(self.seq, &selector);
        self.runs.push_back((self.seq, now, selector));
        self.seq
    }

    /// Whether a purge after `ticket` may have removed `variant` (or is too old to tell).
    /// Only the purges since the ticket are looked at: those run while its render was made.
    pub(super) fn bars(&self, ticket: u64, variant: &VariantKey) -> bool {
        ticket < self.floor
            || self
                .runs
                .iter()
                .rev()
                .take_while(|(seq, _, _)| *seq > ticket)
                .any(|(_, _, selector)| selector.may_match(variant))
    }

    /// See [`Epochs::source_epoch`].
    #[cfg(test)]
    fn source_epoch(&self, key: &str) -> u64 {
        self.epochs.read().unwrap().source_epoch(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cache::layout::test_variant as variant;

    /// A purge is remembered up to a count: a ticket older than every purge remembered cannot
    /// be checked and is refused, never wrongly taken; a key's purge forgotten early still
    /// keeps what was kept before it out.
    #[test]
    fn a_ticket_older_than_the_purges_remembered_is_stale() {
        let mut log = PurgeLog::new(PURGE_LOG_KEPT, 0);
        let v = variant("/10/10/crop/a.jpg");
        let ticket = log.seq;
        log.push(log.seq + 1, Selector::Key("b.jpg".into()));
        assert!(!log.bars(ticket, &v));
        let a = log.push(log.seq + 1, Selector::Key("a.jpg".into()));
        assert!(log.bars(ticket, &v));
        assert_eq!(log.source_epoch("a.jpg"), a);
        for i in 0..PURGE_LOG_MAX {
            log.push(log.seq + 1, Selector::Key(format!("k{i}")));
        }
        assert_eq!(log.runs.len(), PURGE_LOG_MAX);
        assert_eq!(log.epochs.read().unwrap().keys.len(), PURGE_LOG_MAX);
        assert!(
            log.bars(ticket, &v),
            "its purges are forgotten: too old to tell"
        );
        assert!(!log.bars(log.seq, &v));
        assert_eq!(
            log.source_epoch("a.jpg"),
            a,
            "forgotten early, it does not fall back"
        );
    }

    /// Forgotten for its age, a key's purge lets the key's epoch fall back: safe once what was
    /// kept under it has expired, which [`kept_for`] makes sure of.
    #[test]
    fn purges_are_forgotten_after_the_time_kept() {
        let kept = kept_for(Duration::from_secs(30));
        assert_eq!(kept, PURGE_LOG_KEPT, "short renders: the floor");
        assert!(kept_for(Duration::from_secs(3600)) >= Duration::from_secs(3 * 3600 + 60));
        let mut log = PurgeLog::new(kept, 0);
        let start = Instant::now();
        let a = log.push_at(log.seq + 1, Selector::Key("a.jpg".into()), start);
        let p = log.push_at(log.seq + 1, Selector::Prefix("shop/".into()), start);
        assert_eq!(log.source_epoch("a.jpg"), a);
        assert_eq!(log.source_epoch("shop/x.jpg"), p);
        assert_eq!(log.source_epoch("other.jpg"), 0);
        log.push_at(log.seq + 1, Selector::Mode("crop".into()), start + kept);
        assert_eq!(log.runs.len(), 1);
        let epochs = log.epochs.read().unwrap();
        assert_eq!((epochs.broad.len(), epochs.keys.len()), (0, 0));
        drop(epochs);
        assert_eq!(log.source_epoch("a.jpg"), 0);
        assert_eq!(log.source_epoch("shop/x.jpg"), 0);
        assert!(
            log.bars(a, &variant("/1/1/crop/z.jpg")),
            "ticket before the floor"
        );
    }

    /// A newer purge of everything outranks an older purge of the key, and the reverse.
    #[test]
    fn the_source_epoch_is_the_last_purge_that_touched_the_key() {
        let mut log = PurgeLog::new(PURGE_LOG_KEPT, 0);
        let all = log.push(log.seq + 1, Selector::All);
        log.push(log.seq + 1, Selector::Key("b.jpg".into()));
        log.push(
            log.seq + 1,
            Selector::Size {
                width: 1,
                height: 1,
            },
        );
        assert_eq!(log.source_epoch("a.jpg"), all);
        let a = log.push(log.seq + 1, Selector::Key("a.jpg".into()));
        assert_eq!(log.source_epoch("a.jpg"), a);
        let p = log.push(log.seq + 1, Selector::Prefix("a".into()));
        assert_eq!(log.source_epoch("a.jpg"), p);
        assert_eq!(log.source_epoch("b.jpg"), all + 1);
        let b = log.push(log.seq + 1, Selector::Key("b.jpg".into()));
        assert_eq!(log.source_epoch("b.jpg"), b);
    }
}
