//! The log's guarantees on a store in memory: every change reaches every node once, in one
//! order whatever the arrival order, across an unreachable store, compaction, and nodes that
//! join late or come back after a long time.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ross_config::Size;

use super::local::Local;
use super::record::{Change, Purge};
use super::replica::{Replica, Target, LOOKBACK_MS, RETAIN_MS};
use super::store::{MemoryStore, Store};
use crate::db::Database;
use crate::whitelist::Allowed;

/// A whitelist and a list of purges, as a node would hold them.
#[derive(Default)]
struct Fake {
    allowed: Mutex<Option<Allowed>>,
    purges: Mutex<Vec<Purge>>,
    from_config: bool,
}

impl Fake {
    fn sizes(&self) -> BTreeSet<Size> {
        self.whitelist().sizes
    }

    fn purges(&self) -> Vec<Purge> {
        self.purges.lock().unwrap().clone()
    }

    fn edit(&self, f: impl FnOnce(&mut Allowed)) {
        let mut now = self.allowed.lock().unwrap();
        let allowed = now.get_or_insert_with(|| Allowed {
            enabled: true,
            sizes: BTreeSet::new(),
        });
        f(allowed);
    }
}

impl Target for Fake {
    fn allow(&self, sizes: &[Size]) -> anyhow::Result<()> {
        self.edit(|a| a.sizes.extend(sizes));
        Ok(())
    }

    fn disallow(&self, sizes: &[Size]) -> anyhow::Result<()> {
        self.edit(|a| {
            for s in sizes {
                a.sizes.remove(s);
            }
        });
        Ok(())
    }

    fn set_enabled(&self, on: bool) -> anyhow::Result<()> {
        self.edit(|a| a.enabled = on);
        Ok(())
    }

    fn purge(&self, purge: &Purge) -> anyhow::Result<()> {
        self.purges.lock().unwrap().push(purge.clone());
        Ok(())
    }

    fn whitelist(&self) -> Allowed {
        self.allowed.lock().unwrap().clone().unwrap_or(Allowed {
            enabled: true,
            sizes: BTreeSet::new(),
        })
    }

    fn whitelist_from_config(&self) -> bool {
        self.from_config
    }
}

struct Node {
    replica: Replica,
    fake: Arc<Fake>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn new(store: &Arc<MemoryStore>, seed: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_again(dir.path()).unwrap();
        let fake = Arc::new(Fake::default());
        fake.allow(&sizes(seed)).unwrap();
        let store: Arc<dyn Store> = store.clone();
        let replica = Replica::new(store, Local::open(&db).unwrap(), fake.clone(), "n".into());
        Node {
            replica,
            fake,
            _dir: dir,
        }
    }

    async fn tick(&self) {
        self.replica.tick().await.unwrap();
    }

    /// A change made on this node, as the admin API makes it.
    fn make(&self, change: Change) {
        let fake = self.fake.clone();
        let applied = change.clone();
        self.replica
            .change(&change, move || match applied {
                Change::Allow(s) => fake.allow(&s),
                Change::Disallow(s) => fake.disallow(&s),
                Change::Whitelist(on) => fake.set_enabled(on),
                Change::Purge(p) => fake.purge(&p),
            })
            .unwrap()
            .unwrap();
    }
}

fn sizes(list: &[&str]) -> Vec<Size> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn set(list: &[&str]) -> BTreeSet<Size> {
    sizes(list).into_iter().collect()
}

fn store() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::default());
    store.set_now(1_700_000_000_000);
    store
}

#[tokio::test]
async fn the_first_node_seeds_the_cluster_and_the_next_takes_its_whitelist() {
    let store = store();
    let a = Node::new(&store, &["72x72", "300x300"]);
    a.tick().await;
    a.tick().await;
    // A node started later from a settings file with other sizes takes the cluster's.
    let b = Node::new(&store, &["72x72", "10x10"]);
    b.tick().await;
    assert_eq!(b.fake.sizes(), set(&["72x72", "300x300"]));
    assert!(
        b.fake.purges().is_empty(),
        "a joining node runs no old purge"
    );
}

#[tokio::test]
async fn a_change_on_one_node_reaches_the_others_once() {
    let store = store();
    let a = Node::new(&store, &["72x72"]);
    let b = Node::new(&store, &[]);
    a.tick().await;
    b.tick().await;
    a.make(Change::Allow(sizes(&["200x250", "400x400"])));
    a.make(Change::Purge(Purge::Key("shoes/red.jpg".into())));
    a.tick().await;
    for _ in 0..3 {
        b.tick().await;
        store.advance(Duration::from_secs(2));
    }
    assert_eq!(b.fake.sizes(), set(&["72x72", "200x250", "400x400"]));
    assert_eq!(b.fake.purges(), vec![Purge::Key("shoes/red.jpg".into())]);
    // A applied its own change once, when made.
    assert_eq!(a.fake.purges().len(), 1, "{:?}", store.names());
    a.tick().await;
    assert_eq!(a.fake.purges().len(), 1, "{:?}", store.names());
    assert_eq!(
        a.replica.status().sent,
        4,
        "the seed (2) and the two changes"
    );
}

#[tokio::test]
async fn the_last_writer_wins_whatever_the_arrival_order() {
    let store = store();
    let a = Node::new(&store, &["72x72"]);
    let b = Node::new(&store, &[]);
    a.tick().await;
    b.tick().await;
    // B removes the size later than A adds it, but B's record is read first by A.
    a.make(Change::Allow(sizes(&["500x500"])));
    store.advance(Duration::from_millis(10));
    a.tick().await;
    store.advance(Duration::from_millis(10));
    b.make(Change::Disallow(sizes(&["500x500"])));
    b.tick().await;
    a.tick().await;
    b.tick().await;
    assert_eq!(a.fake.sizes(), set(&["72x72"]));
    assert_eq!(b.fake.sizes(), set(&["72x72"]));
    // An older record arriving late changes nothing.
    let late = super::record::Stamp::new(store.now_ms() - 5_000, "00000000000f", 1);
    let body = serde_json::to_vec(&super::record::Record {
        format: 1,
        node: "late".into(),
        change: Change::Allow(sizes(&["500x500"])),
    })
    .unwrap();
    store.put(&format!("log/{late}"), body).await.unwrap();
    a.tick().await;
    b.tick().await;
    assert_eq!(a.fake.sizes(), set(&["72x72"]));
    assert_eq!(b.fake.sizes(), set(&["72x72"]));
}

#[tokio::test]
async fn changes_made_while_the_store_is_down_are_sent_when_it_returns() {
    let store = store();
    let a = Node::new(&store, &["72x72"]);
    let b = Node::new(&store, &[]);
    a.tick().await;
    b.tick().await;
    store.set_down(true);
    a.make(Change::Allow(sizes(&["600x600"])));
    a.make(Change::Purge(Purge::Mode("crop".into())));
    assert!(a.replica.tick().await.is_err());
    assert_eq!(a.replica.pending(), 2);
    // Still applied here at once.
    assert!(a.fake.sizes().contains(&"600x600".parse().unwrap()));
    store.advance(Duration::from_secs(30));
    store.set_down(false);
    a.tick().await;
    assert_eq!(a.replica.pending(), 0);
    b.tick().await;
    assert!(b.fake.sizes().contains(&"600x600".parse().unwrap()));
    assert_eq!(b.fake.purges(), vec![Purge::Mode("crop".into())]);
}

#[tokio::test]
async fn a_pending_change_wins_over_what_others_did_meanwhile() {
    let store = store();
    let a = Node::new(&store, &["72x72"]);
    let b = Node::new(&store, &[]);
    a.tick().await;
    b.tick().await;
    store.set_down(true);
    // A adds while cut off; B's later removal was written before A's record is.
    a.make(Change::Allow(sizes(&["700x700"])));
    store.set_down(false);
    b.make(Change::Disallow(sizes(&["700x700"])));
    b.tick().await;
    store.advance(Duration::from_millis(5));
    a.tick().await;
    b.tick().await;
    assert!(a.fake.sizes().contains(&"700x700".parse().unwrap()));
    assert!(b.fake.sizes().contains(&"700x700".parse().unwrap()));
}

#[tokio::test]
async fn compaction_keeps_every_change_for_a_node_that_joins_or_returns_late() {
    let store = store();
    let a = Node::new(&store, &["72x72"]);
    let b = Node::new(&store, &[]);
    a.tick().await;
    b.tick().await;
    a.make(Change::Allow(sizes(&["800x800"])));
    a.make(Change::Disallow(sizes(&["72x72"])));
    a.make(Change::Purge(Purge::Prefix("old/".into())));
    a.tick().await;
    b.tick().await;
    // B goes away; more happens; the log is compacted and its records deleted.
    a.make(Change::Purge(Purge::Key("x.jpg".into())));
    a.make(Change::Whitelist(false));
    a.tick().await;
    store.advance(Duration::from_millis(LOOKBACK_MS + 1));
    let written = a.replica.compact().await.unwrap();
    assert!(written.is_some());
    store.advance(Duration::from_millis(RETAIN_MS + 1));
    a.make(Change::Allow(sizes(&["900x900"])));
    a.tick().await;
    store.advance(Duration::from_millis(LOOKBACK_MS + 1));
    a.replica.compact().await.unwrap();
    let left: Vec<String> = store
        .names()
        .into_iter()
        .filter(|n| n.starts_with("log/"))
        .collect();
    assert_eq!(left.len(), 1, "folded records are deleted: {left:?}");
    // B returns: the snapshot gives it the whitelist and the purge it missed, once.
    b.tick().await;
    b.tick().await;
    assert_eq!(b.fake.sizes(), set(&["800x800", "900x900"]));
    assert!(!b.fake.whitelist().enabled);
    assert_eq!(
        b.fake.purges(),
        vec![Purge::Prefix("old/".into()), Purge::Key("x.jpg".into())]
    );
    // A node new to the cluster gets the same whitelist and runs no purge.
    let c = Node::new(&store, &["72x72", "1x1"]);
    c.tick().await;
    assert_eq!(c.fake.sizes(), set(&["800x800", "900x900"]));
    assert!(!c.fake.whitelist().enabled);
    assert!(c.fake.purges().is_empty());
}

#[tokio::test]
async fn a_node_away_longer_than_purges_are_remembered_purges_everything() {
    let store = store();
    let a = Node::new(&store, &["72x72"]);
    let b = Node::new(&store, &[]);
    a.tick().await;
    b.tick().await;
    store.advance(Duration::from_millis(
        super::record::PURGES_KEPT_FOR_MS + RETAIN_MS,
    ));
    a.make(Change::Purge(Purge::Key("y.jpg".into())));
    a.tick().await;
    store.advance(Duration::from_millis(LOOKBACK_MS + 1));
    a.replica.compact().await.unwrap();
    store.advance(Duration::from_millis(super::record::PURGES_KEPT_FOR_MS + 1));
    a.make(Change::Allow(sizes(&["5x5"])));
    a.tick().await;
    store.advance(Duration::from_millis(LOOKBACK_MS + 1));
    a.replica.compact().await.unwrap();
    b.tick().await;
    assert_eq!(b.fake.purges(), vec![Purge::All]);
    assert!(b.fake.sizes().contains(&"5x5".parse().unwrap()));
}

#[tokio::test]
async fn with_the_whitelist_in_the_settings_only_purges_apply() {
    let store = store();
    let a = Node::new(&store, &["72x72"]);
    a.tick().await;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_again(dir.path()).unwrap();
    let fake = Arc::new(Fake {
        from_config: true,
        ..Fake::default()
    });
    fake.allow(&sizes(&["10x10"])).unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let b = Replica::new(
        dyn_store,
        Local::open(&db).unwrap(),
        fake.clone(),
        "b".into(),
    );
    b.tick().await.unwrap();
    a.make(Change::Allow(sizes(&["20x20"])));
    a.make(Change::Purge(Purge::All));
    a.tick().await;
    b.tick().await.unwrap();
    assert_eq!(fake.sizes(), set(&["10x10"]));
    assert_eq!(fake.purges(), vec![Purge::All]);
}

#[tokio::test]
async fn shared_renders_are_taken_only_by_their_version_and_after_the_purges_that_match() {
    use super::shared::SharedRenders;
    use crate::cache::{Selector, VariantKey};
    let store = store();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_again(dir.path()).unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let renders = Arc::new(SharedRenders::new(dyn_store, Local::open(&db).unwrap()));
    let variant = |path: &str| {
        let crate::request::Target::Render(r) = crate::request::parse(path, 2000, 2000).unwrap()
        else {
            panic!("{path}")
        };
        VariantKey::new(&r, ross_config::OutputFormat::Jpeg)
    };
    let settle = || async {
        for _ in 0..100 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let a = variant("/10/10/crop/shoes/a.jpg");
    let b = variant("/10/10/crop/shoes/b.jpg");
    let began = store.now_ms();
    store.advance(Duration::from_secs(5));
    renders.offer(
        a.clone(),
        "1".into(),
        bytes::Bytes::from_static(b"A"),
        began,
    );
    renders.offer(
        b.clone(),
        "1".into(),
        bytes::Bytes::from_static(b"B"),
        began,
    );
    settle().await;
    assert_eq!(renders.fetch(&a, "1").await.as_deref(), Some(&b"A"[..]));
    assert_eq!(
        renders.fetch(&a, "2").await,
        None,
        "another version's render"
    );
    // A key purge deletes its renders (once the cluster thread runs the deletion).
    renders.note_purge(&Selector::Key("shoes/a.jpg".into()));
    assert_eq!(renders.fetch(&a, "1").await, None);
    renders.run_deletions().await.unwrap();
    assert!(!store.names().iter().any(|n| n.contains("shoes/a.jpg")));
    assert!(store.names().iter().any(|n| n.contains("shoes/b.jpg")));
    // A render begun before the purge and offered after is not shared.
    renders.offer(
        a.clone(),
        "1".into(),
        bytes::Bytes::from_static(b"old"),
        began,
    );
    settle().await;
    assert!(!store.names().iter().any(|n| n.contains("shoes/a.jpg")));
    // A render offered before a purge and written while it deleted (after its listing) goes
    // too: written, then found purged and deleted.
    let c = variant("/10/10/crop/shoes/c.jpg");
    let slow = store.hold_writes().await;
    store.advance(Duration::from_secs(1));
    renders.offer(
        c.clone(),
        "1".into(),
        bytes::Bytes::from_static(b"C"),
        store.now_ms(),
    );
    settle().await;
    store.advance(Duration::from_secs(1));
    renders.note_purge(&Selector::Key("shoes/c.jpg".into()));
    renders.run_deletions().await.unwrap();
    drop(slow);
    settle().await;
    assert!(
        !store.names().iter().any(|n| n.contains("shoes/c.jpg")),
        "a purged render stays shared: {:?}",
        store.names()
    );
    // A purge of everything: older renders are no longer taken, newer ones are.
    assert!(renders.fetch(&b, "1").await.is_some());
    renders.note_purge(&Selector::All);
    assert_eq!(renders.fetch(&b, "1").await, None);
    store.advance(Duration::from_secs(5));
    renders.offer(
        b.clone(),
        "1".into(),
        bytes::Bytes::from_static(b"B2"),
        store.now_ms(),
    );
    settle().await;
    assert_eq!(renders.fetch(&b, "1").await.as_deref(), Some(&b"B2"[..]));
    // What was purged is remembered across a restart.
    drop(renders);
    let dyn_store: Arc<dyn Store> = store.clone();
    let again = SharedRenders::new(dyn_store, Local::open(&db).unwrap());
    assert_eq!(again.fetch(&b, "1").await.as_deref(), Some(&b"B2"[..]));
    again.note_purge(&Selector::Mode("crop".into()));
    drop(again);
    let dyn_store: Arc<dyn Store> = store.clone();
    let again = SharedRenders::new(dyn_store, Local::open(&db).unwrap());
    assert_eq!(again.fetch(&b, "1").await, None);
}

#[tokio::test]
async fn a_change_made_at_the_same_store_time_as_one_it_overrode_still_wins_everywhere() {
    let store = store();
    let a = Node::new(&store, &["72x72"]);
    let b = Node::new(&store, &[]);
    a.tick().await;
    b.tick().await;
    // The store's clock stands still: every stamp has the same time.
    a.make(Change::Allow(sizes(&["5x5"])));
    b.make(Change::Disallow(sizes(&["5x5"])));
    a.tick().await;
    b.tick().await;
    a.tick().await;
    assert_eq!(a.fake.sizes(), set(&["72x72"]));
    assert_eq!(b.fake.sizes(), set(&["72x72"]));
}

#[tokio::test]
async fn a_change_kept_but_not_applied_before_a_stop_is_applied_at_the_next_start() {
    let store = store();
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open_again(dir.path()).unwrap();
        let local = Local::open(&db).unwrap();
        // The process stops right after keeping the change.
        local
            .enqueue(&Change::Purge(Purge::Key("k.jpg".into())))
            .unwrap();
    }
    let db = Database::open_again(dir.path()).unwrap();
    let fake = Arc::new(Fake::default());
    let dyn_store: Arc<dyn Store> = store.clone();
    let replica = Replica::new(
        dyn_store,
        Local::open(&db).unwrap(),
        fake.clone(),
        "n".into(),
    );
    assert_eq!(replica.reapply_outbox().unwrap(), 1);
    assert_eq!(fake.purges(), vec![Purge::Key("k.jpg".into())]);
    // Applied once: not again at the start after.
    assert_eq!(replica.reapply_outbox().unwrap(), 0);
    replica.tick().await.unwrap();
    assert_eq!(replica.pending(), 0, "sent");
}

#[tokio::test]
async fn a_change_that_fails_here_is_not_sent() {
    let store = store();
    let a = Node::new(&store, &["72x72"]);
    a.tick().await;
    a.make(Change::Allow(sizes(&["9x9"])));
    let failed = a
        .replica
        .change(&Change::Disallow(sizes(&["9x9"])), || {
            Err::<(), _>("the disk failed")
        })
        .unwrap();
    assert!(failed.is_err());
    assert_eq!(a.replica.pending(), 1, "only the change that worked waits");
    let b = Node::new(&store, &[]);
    a.tick().await;
    b.tick().await;
    assert!(b.fake.sizes().contains(&"9x9".parse().unwrap()));
    // The item still holds the addition: a removal from elsewhere made before it loses.
    let late = super::record::Stamp::new(store.now_ms() - 1000, "00000000000f", 1);
    let body = serde_json::to_vec(&super::record::Record {
        format: 1,
        node: "late".into(),
        change: Change::Disallow(sizes(&["9x9"])),
    })
    .unwrap();
    store.put(&format!("log/{late}"), body).await.unwrap();
    a.tick().await;
    assert!(a.fake.sizes().contains(&"9x9".parse().unwrap()));
}
