//! Merging identical concurrent work: while one run computes the value for a key, others
//! asking for the same key wait for that result instead of computing it again. Used so that
//! many simultaneous requests for one uncached variant fetch and render it once.
//!
//! The work runs as a task of its own, not inside the first caller: a caller that goes away
//! (a client that disconnects) neither cancels it nor makes a waiter start it again, and the
//! task removes its entry when it ends, so no entry outlives its flight.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The run computing a value panicked (the panic is logged): there is no value, and the next
/// call for the key starts a new run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightPanicked;

/// What waiters of a flight receive.
type Outcome<V> = Option<Result<V, FlightPanicked>>;

/// In-flight computations by key.
#[derive(Debug)]
pub struct SingleFlight<K, V> {
    flights: Arc<Mutex<HashMap<K, watch::Receiver<Outcome<V>>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            flights: Arc::default(),
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The value of `work` for `key`: from the run in flight for `key` if there is one, else
    /// from a new run of `work` (which is then not polled by this caller but by a task). A
    /// run that panics releases its key like any other: its waiters get [`FlightPanicked`].
    pub async fn run<F, Fut>(&self, key: K, work: F) -> Result<V, FlightPanicked>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut result = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            match flights.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    flights.insert(key.clone(), rx.clone());
                    let future = work();
                    let flights = self.flights.clone();
                    tokio::spawn(async move {
                        // The work in a task of its own, so that its panic is caught here.
                        let outcome = tokio::spawn(future).await.map_err(|e| {
                            let message = e
                                .try_into_panic()
                                .ok()
                                .and_then(|p| {
                                    p.downcast_ref::<&str>()
                                        .map(|s| (*s).to_owned())
                                        .or_else(|| p.downcast_ref::<String>().cloned())
                                })
                                .unwrap_or_else(|| "cancelled".into());
                            tracing::error!(panic = %message, "a render flight panicked");
                            FlightPanicked
                        });
                        // Forgotten first: a caller arriving now starts a new run (and finds
                        // what this one cached) instead of joining a finished one.
                        flights
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&key);
                        let _ = tx.send(Some(outcome));
                    });
                    rx
                }
            }
        };
        let value = result
            .wait_for(Option::is_some)
            .await
            .map_err(|_| FlightPanicked)?;
        value.clone().expect("waited for a value")
    }

    /// Runs in flight now.
    pub fn len(&self) -> usize {
        self.flights.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no run is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn identical_concurrent_work_runs_once() {
        let flights = Arc::new(SingleFlight::<&str, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        7
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
        // Finished flights are forgotten: the next call runs again.
        assert_eq!(flights.run("k", || async { 8 }).await, Ok(8));
    }

    /// Regression: an entry whose callers all went away stayed in the map forever, and a
    /// waiter taking over from a cancelled first caller ran the work (the fetch) again.
    #[tokio::test]
    async fn callers_that_go_away_neither_cancel_nor_repeat_the_work() {
        let flights = Arc::new(SingleFlight::<&str, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let slow = |runs: Arc<AtomicUsize>| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            1
        };
        let first = {
            let (flights, runs) = (flights.clone(), runs.clone());
            tokio::spawn(async move { flights.run("k", || slow(runs)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        let second = flights.run("k", || slow(runs.clone())).await;
        assert_eq!(second, Ok(1));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the work ran twice");
        // Every caller gone before the end: the entry still goes with the flight.
        let abandoned = {
            let (flights, runs) = (flights.clone(), runs.clone());
            tokio::spawn(async move { flights.run("j", || slow(runs)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        abandoned.abort();
        assert_eq!(flights.len(), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(flights.is_empty(), "an abandoned flight stayed in the map");
    }

    /// Regression: a flight whose work panicked left its entry behind, and every later call
    /// for the key waited on a channel that could never deliver (a 500 until restart).
    #[tokio::test]
    async fn a_panicking_flight_releases_its_key() {
        let flights = Arc::new(SingleFlight::<&str, u32>::default());
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        panic!("the render broke")
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let joined = flights.run("k", || async { 1 }).await;
        assert_eq!(joined, Err(FlightPanicked), "a waiter of the broken flight");
        assert_eq!(waiter.await.unwrap(), Err(FlightPanicked));
        assert!(flights.is_empty(), "the panicked flight stayed in the map");
        assert_eq!(flights.run("k", || async { 2 }).await, Ok(2));
    }
}
