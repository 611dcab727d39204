//! Counts of requests answered, by status, for the admin API's stats.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Statuses are counted in one slot each, from 100 to 599; anything else in the last one.
const SLOTS: usize = 501;

/// Requests answered, by status.
#[derive(Debug)]
pub struct RequestStats {
    by_status: Box<[AtomicU64]>,
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            by_status: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl RequestStats {
    /// Counts one response with `status`.
    pub fn record(&self, status: u16) {
        let slot = usize::from(status)
            .checked_sub(100)
            .filter(|s| *s < SLOTS - 1);
        self.by_status[slot.unwrap_or(SLOTS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Responses so far, by status (only statuses seen).
    pub fn by_status(&self) -> BTreeMap<u16, u64> {
        self.by_status
            .iter()
            .enumerate()
            .map(|(slot, n)| (slot as u16 + 100, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Responses so far.
    pub fn total(&self) -> u64 {
        self.by_status
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_status() {
        let s = RequestStats::default();
        for status in [200, 200, 404, 503] {
            s.record(status);
        }
        assert_eq!(s.total(), 4);
        assert_eq!(
            s.by_status(),
            BTreeMap::from([(200, 2), (404, 1), (503, 1)])
        );
    }
}
