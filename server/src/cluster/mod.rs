//! The state a cluster of nodes shares through an S3 folder (`[cluster]`): whitelist changes
//! and purges made on any node reach every node ([`replica`]), and every node says how it is
//! doing ([`nodes`]), for the Cluster admin page.
//!
//! The store is the one thing every node can reach and that outlives every node, so there is
//! no coordination service to run. A node that cannot reach it goes on serving with what it
//! has; changes made meanwhile wait in its database and are sent when the store answers again.
//! All of the cluster's work runs on one thread of its own, so a slow store or a long purge
//! never holds a request.

pub mod local;
pub mod nodes;
pub mod record;
pub mod replica;
pub mod shared;
pub mod store;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ross_config::{ClusterSettings, Size};

use crate::cache::Cache;
use crate::db::{Database, DbError};
use crate::error::AppError;
use crate::state::AppState;
use crate::whitelist::Whitelist;

pub use nodes::{Heartbeat, NodeView, Summary};
pub use record::{Change, Purge};
pub use replica::{Replica, Status, Target};
pub use shared::SharedRenders;
pub use store::{S3Store, Store, StoreError};

/// How often the node that compacts the log does so.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// This node's membership of the cluster.
pub struct Cluster {
    replica: Replica,
    renders: Option<Arc<SharedRenders>>,
    settings: ClusterSettings,
    nodes: ArcSwap<Vec<NodeView>>,
    started_ms: u64,
}

/// How this node stands with the cluster, for the admin pages.
#[derive(Debug, Clone)]
pub struct SyncView {
    /// This node's id.
    pub node: String,
    /// Where the state lives.
    pub store: String,
    /// Whether this node has every change: nothing waits to be sent and the store answered
    /// lately.
    pub in_sync: bool,
    /// Changes made here that wait to be sent.
    pub pending: usize,
    /// How long ago the store last answered a whole round, if it ever did.
    pub last_ok: Option<Duration>,
    /// Why the last round failed, if it did.
    pub last_error: Option<String>,
    /// The newest change applied here.
    pub applied: Option<String>,
    /// Changes sent, and received from other nodes, since start.
    pub sent: u64,
    /// Changes received.
    pub received: u64,
}

/// What the log's changes act on: the whitelist and the cache of this node.
struct NodeTarget {
    whitelist: Arc<Whitelist>,
    cache: Cache,
    renders: Option<Arc<SharedRenders>>,
    /// Purges from other nodes, to the thread that runs them (see [`NodeTarget::run`]).
    purges: std::sync::mpsc::Sender<crate::cache::PurgeJob>,
}

impl NodeTarget {
    /// Runs `job`, begun for a change from the log, on the cluster's purge thread, one at a
    /// time: a long purge holds up neither the heartbeats nor the next records, nor the
    /// cache's own eviction. It is journaled before its record counts as applied, so a crash
    /// resumes it at the next start; one that is not (`data_dir` full) runs here and now.
    fn run(&self, job: crate::cache::PurgeJob) {
        let job = if job.journaled() {
            match self.purges.send(job) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(job)) => job,
            }
        } else {
            job
        };
        // A failure stays in force and is tried again by the cache (which logs it).
        let _ = self.cache.finish_purge(job);
    }

    /// The thread that runs purges from other nodes for `cache`, until the target goes. If
    /// it cannot be started, they run where they are received.
    fn purge_thread(cache: Cache) -> std::sync::mpsc::Sender<crate::cache::PurgeJob> {
        let (send, receive) = std::sync::mpsc::channel::<crate::cache::PurgeJob>();
        let started = std::thread::Builder::new()
            .name("ross-cluster-purge".into())
            .spawn(move || {
                for job in receive {
                    let _ = cache.finish_purge(job);
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the cluster's purge thread: purges from other nodes run as they come");
        }
        send
    }
}

impl Target for NodeTarget {
    fn allow(&self, sizes: &[Size]) -> anyhow::Result<()> {
        self.whitelist.add_all(sizes)?;
        Ok(())
    }

    fn disallow(&self, sizes: &[Size]) -> anyhow::Result<()> {
        // As a removal on the admin page, but the renders go on the purge thread.
        let jobs = crate::admin::ops::remove_sizes(&self.whitelist, &self.cache, sizes)
            .map_err(|e| anyhow::anyhow!("{}: {}", e.message, e.detail.unwrap_or_default()))?;
        for job in jobs {
            self.run(job);
        }
        if let Some(renders) = &self.renders {
            for size in sizes {
                renders.note_purge(&crate::cache::Selector::size(*size));
            }
        }
        Ok(())
    }

    fn set_enabled(&self, on: bool) -> anyhow::Result<()> {
        self.whitelist.set_enabled(on)?;
        Ok(())
    }

    fn purge(&self, purge: &Purge) -> anyhow::Result<()> {
        let selector = purge.selector();
        let job = self.cache.begin_purge(selector.clone())?;
        self.run(job);
        if let Some(renders) = &self.renders {
            renders.note_purge(&selector);
        }
        Ok(())
    }

    fn whitelist(&self) -> crate::whitelist::Allowed {
        (*self.whitelist.snapshot()).clone()
    }

    fn whitelist_from_config(&self) -> bool {
        self.whitelist.source() == ross_config::WhitelistSource::Config
    }
}

impl Cluster {
    /// Joins `store` with this node's database, whitelist and cache. Changes kept but perhaps
    /// not applied when the process last stopped are applied again. Blocking; nothing is
    /// sent until [`Cluster::spawn`].
    pub fn open(
        settings: &ClusterSettings,
        store: Arc<dyn Store>,
        db: &Database,
        whitelist: Arc<Whitelist>,
        cache: Cache,
        share_renders: bool,
    ) -> Result<Cluster, DbError> {
        let local = local::Local::open(db)?;
        let renders =
            share_renders.then(|| Arc::new(SharedRenders::new(store.clone(), local.clone())));
        let target = Arc::new(NodeTarget {
            whitelist,
            purges: NodeTarget::purge_thread(cache.clone()),
            cache,
            renders: renders.clone(),
        });
        let replica = Replica::new(store, local, target, settings.node_name.clone());
        match replica.reapply_outbox() {
            Ok(0) => {}
            Ok(n) => tracing::info!(changes = n, "changes waiting for the cluster applied again"),
            Err(e) => {
                tracing::error!(error = %e, "cannot apply again the changes waiting for the cluster")
            }
        }
        tracing::info!(
            node = replica.node(), store = %replica.store().describe(),
            "in a cluster: whitelist changes and purges are shared"
        );
        Ok(Cluster {
            replica,
            renders,
            settings: settings.clone(),
            nodes: ArcSwap::from_pointee(Vec::new()),
            started_ms: store::local_ms(),
        })
    }

    /// Makes `change` on this node and keeps it for the other nodes: `apply` does it here.
    /// Blocking.
    pub fn change<T>(
        &self,
        change: &Change,
        apply: impl FnOnce() -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        self.replica.change(change, apply).map_err(|e| {
            crate::admin::ops::write_failed("cannot keep the change for the cluster", e)
        })?
    }

    /// The renders shared between nodes (`cache.shared`), if they are.
    pub fn renders(&self) -> Option<&Arc<SharedRenders>> {
        self.renders.as_ref()
    }

    /// This node's id in the cluster.
    pub fn node(&self) -> &str {
        self.replica.node()
    }

    /// The settings.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// How this node stands.
    pub fn sync(&self) -> SyncView {
        let status = self.replica.status();
        let pending = self.replica.pending();
        let last_ok = status.last_ok.map(|t| t.elapsed());
        let fresh = last_ok
            .is_some_and(|ago| ago <= self.settings.poll_interval * 3 + Duration::from_secs(5));
        SyncView {
            node: self.node().to_owned(),
            store: self.replica.store().describe(),
            in_sync: fresh && pending == 0,
            pending,
            last_ok,
            last_error: status.last_error,
            applied: status.applied.map(|s| s.to_string()),
            sent: status.sent,
            received: status.received,
        }
    }

    /// Every node as last read from the store (this one included), by name.
    pub fn nodes(&self) -> Arc<Vec<NodeView>> {
        self.nodes.load_full()
    }

    /// Starts the cluster's thread for `state`'s node: it runs until the state is dropped.
    pub fn spawn(state: &Arc<AppState>) {
        if state.cluster.is_none() {
            return;
        }
        let weak = Arc::downgrade(state);
        let started = std::thread::Builder::new()
            .name("ross-cluster".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the cluster thread");
                runtime.block_on(run(weak));
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the cluster thread: changes are not shared");
        }
    }
}

/// The cluster thread: a round every poll interval, a heartbeat every heartbeat interval,
/// compaction every minute on the node that compacts.
async fn run(state: Weak<AppState>) {
    let mut next_beat = Instant::now();
    let mut next_compaction = Instant::now() + COMPACT_EVERY / 2;
    let mut failing = false;
    loop {
        let Some(state) = state.upgrade() else {
            return;
        };
        let Some(cluster) = state.cluster.as_ref() else {
            return;
        };
        let round = cluster.replica.tick().await;
        match (&round, failing) {
            (Err(e), false) => tracing::warn!(
                error = %e, store = %cluster.replica.store().describe(),
                "the cluster's store does not answer: serving on, changes made here wait"
            ),
            (Ok(()), true) => tracing::info!("the cluster's store answers again"),
            _ => {}
        }
        failing = round.is_err();
        if let Some(renders) = &cluster.renders {
            if let Err(e) = renders.run_deletions().await {
                tracing::debug!(error = %e, "shared renders of a purge not deleted yet");
            }
        }
        if Instant::now() >= next_beat {
            next_beat = Instant::now() + cluster.settings.heartbeat_interval;
            let beat = nodes::heartbeat(&state, cluster);
            match nodes::exchange(cluster.replica.store().as_ref(), &beat).await {
                Ok(view) => cluster.nodes.store(Arc::new(view)),
                Err(e) if !failing => tracing::warn!(error = %e, "cannot exchange heartbeats"),
                Err(_) => {}
            }
        }
        if Instant::now() >= next_compaction && nodes::compacts(cluster) {
            next_compaction = Instant::now() + COMPACT_EVERY;
            if let Err(e) = cluster.replica.compact().await {
                tracing::warn!(error = %e, "cannot compact the cluster's log");
            }
            if let Err(e) = nodes::forget_departed(cluster).await {
                tracing::warn!(error = %e, "cannot forget nodes gone for a day");
            }
        }
        let pause = cluster.settings.poll_interval;
        drop(state);
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests;
