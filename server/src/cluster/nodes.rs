//! Every node's heartbeat, `nodes/{id}` in the cluster's folder: who it is, where to reach
//! it, its modes and their versions, the last change it applied and a summary of its stats,
//! written every `cluster.heartbeat_interval_ms`. Reading them all gives the Cluster page.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::record::FORMAT;
use super::store::{Store, StoreError};
use super::Cluster;
use crate::state::AppState;

/// The folder of heartbeats.
pub const NODES: &str = "nodes/";

/// A node is shown as down once its heartbeat is this many intervals old.
const MISSED_BEATS: u64 = 3;

/// A node down this long is forgotten.
const FORGET_AFTER_MS: u64 = 24 * 3600 * 1000;

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// [`FORMAT`].
    pub format: u32,
    /// Its id.
    pub id: String,
    /// Its name (`cluster.node_name`).
    pub name: String,
    /// Where its admin pages and `/metrics` are reached (`cluster.advertise`).
    pub address: String,
    /// The ross version it runs.
    pub version: String,
    /// When it started (store time, ms).
    pub started_ms: u64,
    /// When it wrote this (store time, ms).
    pub at_ms: u64,
    /// How often it writes one.
    pub interval_ms: u64,
    /// Its modes and their versions.
    pub modes: BTreeMap<String, String>,
    /// The newest change it applied.
    pub applied: Option<String>,
    /// Changes made on it that wait to be sent.
    pub pending: usize,
    /// Whether it reads and writes the cluster's state.
    pub in_sync: bool,
    /// How it is doing.
    pub stats: Summary,
}

/// A node's stats in brief.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests answered since start.
    pub requests: u64,
    /// Requests a second over the last minute.
    pub requests_per_second: f64,
    /// Cache hits and misses since start (hits nginx served included, when it reports them).
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// Renders since start.
    pub renders: u64,
    /// 99th percentile of request latency over the last minute, ms.
    pub p99_ms: Option<f64>,
    /// Resident memory, bytes.
    pub memory_bytes: u64,
    /// Bytes and entries in the disk cache.
    pub cache_bytes: u64,
    /// Entries.
    pub cache_entries: u64,
}

impl Summary {
    /// Hits over hits and misses, if there were any.
    pub fn hit_ratio(&self) -> Option<f64> {
        let all = self.hits + self.misses;
        (all > 0).then(|| self.hits as f64 / all as f64)
    }
}

/// A node as the Cluster page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Its last heartbeat.
    pub beat: Heartbeat,
    /// Whether the heartbeat is recent.
    pub up: bool,
    /// How old the heartbeat is, ms.
    pub age_ms: u64,
    /// Whether it is this node.
    pub this: bool,
    /// What differs from the rest of the cluster (its modes, the changes applied).
    pub warnings: Vec<String>,
}

/// This node's heartbeat now.
pub fn heartbeat(state: &AppState, cluster: &Cluster) -> Heartbeat {
    crate::app::set_gauges(state);
    let metrics = &state.metrics;
    let counts = metrics.counts();
    let gauges = metrics.gauges();
    let sync = cluster.sync();
    let store = cluster.replica.store();
    Heartbeat {
        format: FORMAT,
        id: cluster.node().to_owned(),
        name: cluster.settings.node_name.clone(),
        address: cluster.settings.advertise.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_ms: cluster.started_ms,
        at_ms: store.now_ms(),
        interval_ms: cluster.settings.heartbeat_interval.as_millis() as u64,
        modes: state
            .modes
            .modes()
            .iter()
            .map(|m| (m.name.clone(), m.version.clone()))
            .collect(),
        applied: sync.applied,
        pending: sync.pending,
        in_sync: sync.in_sync,
        stats: Summary {
            requests: metrics.requests(),
            requests_per_second: metrics.requests_per_second(),
            hits: counts.hits,
            misses: counts.misses,
            renders: counts.renders,
            p99_ms: metrics.recent_requests().quantile(0.99),
            memory_bytes: gauges.resident_bytes,
            cache_bytes: gauges.cache_bytes,
            cache_entries: gauges.cache_entries,
        },
    }
}

/// Writes `beat` and reads every node's: the cluster as it stands.
pub async fn exchange(store: &dyn Store, beat: &Heartbeat) -> Result<Vec<NodeView>, StoreError> {
    let body = serde_json::to_vec(beat).expect("a heartbeat serialises");
    store.put(&format!("{NODES}{}", beat.id), body).await?;
    let mut beats = Vec::new();
    for name in store.list(NODES, "").await? {
        if name == beat.id {
            beats.push(beat.clone());
            continue;
        }
        let Some(body) = store.get(&format!("{NODES}{name}")).await? else {
            continue;
        };
        match serde_json::from_slice::<Heartbeat>(&body) {
            Ok(other) => beats.push(other),
            Err(e) => tracing::debug!(node = %name, error = %e, "unreadable heartbeat skipped"),
        }
    }
    Ok(view(beats, &beat.id, store.now_ms()))
}

/// The nodes of `beats`, as seen by `this` at `now_ms`, with what differs between them.
pub fn view(beats: Vec<Heartbeat>, this: &str, now_ms: u64) -> Vec<NodeView> {
    let mut nodes: Vec<NodeView> = beats
        .into_iter()
        .map(|beat| {
            let age_ms = now_ms.saturating_sub(beat.at_ms);
            NodeView {
                up: age_ms <= beat.interval_ms * MISSED_BEATS,
                this: beat.id == this,
                age_ms,
                beat,
                warnings: Vec::new(),
            }
        })
        .collect();
    nodes.sort_by(|a, b| (&a.beat.name, &a.beat.id).cmp(&(&b.beat.name, &b.beat.id)));
    // What most nodes that are up run, and the newest change any of them applied.
    let mut modes_seen: BTreeMap<&BTreeMap<String, String>, usize> = BTreeMap::new();
    for node in nodes.iter().filter(|n| n.up) {
        *modes_seen.entry(&node.beat.modes).or_default() += 1;
    }
    let usual = modes_seen
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(m, _)| (*m).clone());
    let newest = nodes
        .iter()
        .filter(|n| n.up)
        .filter_map(|n| n.beat.applied.clone())
        .max();
    for node in nodes.iter_mut().filter(|n| n.up) {
        if let Some(usual) = &usual {
            let differ: Vec<String> = usual
                .iter()
                .filter(|(m, v)| node.beat.modes.get(*m) != Some(*v))
                .map(|(m, v)| match node.beat.modes.get(m) {
                    Some(own) => format!("{m} {own} (most nodes: {v})"),
                    None => format!("no {m} (most nodes: {v})"),
                })
                .chain(
                    node.beat
                        .modes
                        .iter()
                        .filter(|(m, _)| !usual.contains_key(*m))
                        .map(|(m, v)| format!("{m} {v} (most nodes: none)")),
                )
                .collect();
            if !differ.is_empty() {
                node.warnings
                    .push(format!("modes differ: {}", differ.join(", ")));
            }
        }
        if let Some(newest) = &newest {
            // Only a change applied a while ago elsewhere counts as missing here.
            let settled = newest
                .get(..16)
                .and_then(|ms| ms.parse::<u64>().ok())
                .is_some_and(|ms| ms + 2 * node.beat.interval_ms < now_ms);
            if settled && node.beat.applied.as_ref().is_none_or(|a| a < newest) {
                node.warnings.push(format!(
                    "behind: the newest change applied elsewhere is {newest}"
                ));
            }
        }
        if node.beat.pending > 0 {
            node.warnings.push(format!(
                "{} change(s) made on it wait to be sent",
                node.beat.pending
            ));
        }
    }
    nodes
}

/// Whether this node compacts the log: the one with the lowest id among those up.
pub fn compacts(cluster: &Cluster) -> bool {
    // Before its first heartbeat a node knows no other: it waits rather than compact too.
    let nodes = cluster.nodes();
    nodes
        .iter()
        .filter(|n| n.up)
        .map(|n| n.beat.id.as_str())
        .min()
        .is_some_and(|lowest| lowest >= cluster.node())
}

/// Deletes the heartbeats of nodes down for a day.
pub async fn forget_departed(cluster: &Cluster) -> Result<(), StoreError> {
    let gone: Vec<String> = cluster
        .nodes()
        .iter()
        .filter(|n| !n.up && n.age_ms > FORGET_AFTER_MS)
        .map(|n| format!("{NODES}{}", n.beat.id))
        .collect();
    if !gone.is_empty() {
        cluster.replica.store().delete(&gone).await?;
    }
    Ok(())
}
