//! Admission control for misses, in three stages, so that memory and CPU stay bounded however
//! many requests arrive:
//!
//! 1. **admission**: at most `limits.max_concurrent_renders + limits.max_queue` misses are in
//!    progress; beyond that a request is refused at once (503), before anything is fetched;
//! 2. **fetch turn**: at most twice as many originals as render slots are fetched or held in
//!    memory waiting for a slot, so a burst of misses costs a few originals, not one each;
//! 3. **render slot**: at most `limits.max_concurrent_renders` decode, render and encode at
//!    once. The slot covers CPU work only: the cache write and its fsync happen after it.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Originals fetched or held per render slot.
const ORIGINALS_PER_SLOT: usize = 2;

/// The stages' permits.
#[derive(Debug)]
pub struct RenderGate {
    admitted: Arc<Semaphore>,
    capacity: usize,
    originals: Arc<Semaphore>,
    slots: Arc<Semaphore>,
    size: usize,
}

/// Too many misses are in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A miss's place among those in progress; held until its render ends.
#[derive(Debug)]
pub struct Admission(#[allow(dead_code)] OwnedSemaphorePermit);

impl RenderGate {
    /// A gate with `slots` concurrent renders and `max_queue` more misses waiting.
    pub fn new(slots: usize, max_queue: usize) -> RenderGate {
        RenderGate {
            admitted: Arc::new(Semaphore::new(slots + max_queue)),
            capacity: slots + max_queue,
            originals: Arc::new(Semaphore::new(slots * ORIGINALS_PER_SLOT)),
            slots: Arc::new(Semaphore::new(slots)),
            size: slots,
        }
    }

    /// Admits a miss, or refuses it at once when as many are in progress as allowed.
    pub fn admit(&self) -> Result<Admission, QueueFull> {
        self.admitted
            .clone()
            .try_acquire_owned()
            .map(Admission)
            .map_err(|_| QueueFull)
    }

    /// Waits for a turn to fetch an original (and keep it until its render ends).
    pub async fn fetch_turn(&self) -> OwnedSemaphorePermit {
        self.originals
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Waits for a render slot.
    pub async fn render_slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Renders holding a slot now.
    pub fn running(&self) -> usize {
        self.size - self.slots.available_permits()
    }

    /// Misses admitted and not rendering: waiting for a fetch, a fetch, or a slot.
    pub fn waiting(&self) -> usize {
        (self.capacity - self.admitted.available_permits()).saturating_sub(self.running())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_beyond_slots_and_queue_and_bounds_each_stage() {
        let gate = RenderGate::new(1, 2);
        let admitted: Vec<_> = (0..3).map(|_| gate.admit().unwrap()).collect();
        assert_eq!(gate.admit().unwrap_err(), QueueFull);
        assert_eq!(gate.waiting(), 3);
        let turns = [gate.fetch_turn().await, gate.fetch_turn().await];
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), gate.fetch_turn())
                .await
                .is_err(),
            "a third original fetched with one slot"
        );
        let slot = gate.render_slot().await;
        assert_eq!((gate.running(), gate.waiting()), (1, 2));
        drop((slot, turns, admitted));
        assert_eq!((gate.running(), gate.waiting()), (0, 0));
        assert!(gate.admit().is_ok());
    }
}
