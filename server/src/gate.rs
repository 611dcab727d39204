//! Admission control for CPU work: at most `limits.max_concurrent_renders` renders run at
//! once and at most `limits.max_queue` wait; beyond that a request is refused at once (503)
//! rather than queued without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Render slots and the queue in front of them.
#[derive(Debug)]
pub struct RenderGate {
    slots: Arc<Semaphore>,
    size: usize,
    waiting: AtomicUsize,
    max_queue: usize,
}

/// The queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// Decrements the waiting count however the wait ends, including cancellation.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RenderGate {
    /// A gate with `slots` concurrent renders and `max_queue` waiting.
    pub fn new(slots: usize, max_queue: usize) -> RenderGate {
        RenderGate {
            slots: Arc::new(Semaphore::new(slots)),
            size: slots,
            waiting: AtomicUsize::new(0),
            max_queue,
        }
    }

    /// Waits for a render slot, or fails at once when the queue is full.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, QueueFull> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(QueueFull);
        }
        let _waiting = Waiting(&self.waiting);
        Ok(self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed"))
    }

    /// Renders holding a slot now.
    pub fn running(&self) -> usize {
        self.size - self.slots.available_permits()
    }

    /// Renders waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_beyond_the_queue() {
        let gate = Arc::new(RenderGate::new(1, 1));
        let held = gate.enter().await.unwrap();
        let g = gate.clone();
        let queued = tokio::spawn(async move { g.enter().await.map(|_| ()) });
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.enter().await.unwrap_err(), QueueFull);
        drop(held);
        assert_eq!(queued.await.unwrap(), Ok(()));
        assert_eq!(gate.waiting(), 0);
    }
}
