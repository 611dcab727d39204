use std::time::{Duration, Instant, SystemTime};

use super::*;
use ross_config::Size;

use crate::cache::layout::test_variant as variant;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn open(&self, max_bytes: u64) -> Cache {
        self.open_held(max_bytes, false)
    }

    /// Opens with the trash's deletion held, if `held`, from the start.
    fn open_held(&self, max_bytes: u64, held: bool) -> Cache {
        let db = Database::open_again(&self.dir.path().join("data")).unwrap();
        Cache::open_held(
            &self.cache_dir(),
            max_bytes,
            1 << 20,
            None,
            &db,
            metrics(),
            held,
        )
        .unwrap()
    }
}

/// A registry of its own, for one cache.
fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new())
}

fn put(cache: &Cache, path: &str, bytes: usize) -> PutOutcome {
    cache
        .put(
            &variant(path),
            "1.0.0",
            "",
            &vec![7; bytes],
            cache.ticket(),
            || true,
        )
        .unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if d == dir && name.starts_with('.') {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn settled(cache: &Cache) {
    let started = Instant::now();
    while !(cache.stats().reconciled && cache.stats().purges_running == 0) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cache never settled"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn put_then_get_under_the_format_folder_and_no_temporary_left() {
    let f = Fixture::new();
    let cache = f.open(1 << 20);
    let v = variant("/10/20/crop/a%20b/c.jpg");
    assert!(cache.get(&v).await.is_none());
    assert!(matches!(
        put(&cache, "/10/20/crop/a%20b/c.jpg", 4),
        PutOutcome::Stored(_)
    ));
    assert!(f.cache_dir().join("jpeg/10/20/crop/a b/c.jpg").is_file());
    assert_eq!(&cache.get(&v).await.unwrap().bytes[..], &[7; 4]);
    assert_eq!(
        std::fs::read_dir(f.cache_dir().join(TMP_DIR))
            .unwrap()
            .count(),
        0
    );
    let entry = cache.entry(&v).unwrap().unwrap();
    assert_eq!((entry.bytes, entry.version.as_str()), (4, "1.0.0"));
    assert_eq!((cache.stats().entries, cache.stats().bytes), (1, 4));
}

#[test]
fn a_render_begun_before_a_purge_that_matches_it_or_by_a_replaced_version_is_not_stored() {
    let f = Fixture::new();
    let cache = f.open(1 << 20);
    let v = variant("/10/10/crop/a.jpg");
    // Purges that do not match the render cost it nothing.
    for other in [
        Selector::Key("b.jpg".into()),
        Selector::Prefix("b/".into()),
        Selector::Mode("resize".into()),
        Selector::Size {
            width: 20,
            height: 10,
        },
    ] {
        let ticket = cache.ticket();
        cache.purge(other.clone()).unwrap();
        assert!(
            matches!(
                cache.put(&v, "1", "", b"x", ticket, || true).unwrap(),
                PutOutcome::Stored(_)
            ),
            "a purge of {other:?} kept a render of a.jpg out"
        );
    }
    // Those that do keep it out.
    for matching in [
        Selector::Key("a.jpg".into()),
        Selector::Prefix("a.".into()),
        Selector::Mode("crop".into()),
        Selector::Size {
            width: 10,
            height: 10,
        },
        Selector::All,
    ] {
        let ticket = cache.ticket();
        cache.purge(matching.clone()).unwrap();
        assert_eq!(
            cache.put(&v, "1", "", b"x", ticket, || true).unwrap(),
            PutOutcome::Stale,
            "{matching:?}"
        );
    }
    assert_eq!(
        cache
            .put(&v, "1", "", b"x", cache.ticket(), || false)
            .unwrap(),
        PutOutcome::Stale
    );
    assert_eq!(
        cache
            .put(&v, "1", "", &vec![0; 1 << 20], cache.ticket(), || true)
            .unwrap(),
        PutOutcome::NoRoom,
        "larger than the whole cache"
    );
    assert_eq!(cache.stats().entries, 0);
    assert!(files_under(&f.cache_dir()).is_empty());
}

/// An original is kept under its key's source epoch: only a purge of the key, a prefix of it
/// or everything moves it on.
#[test]
fn only_a_purge_that_touches_an_original_moves_its_source_epoch() {
    let f = Fixture::new();
    let cache = f.open(1000);
    let a = cache.source_epoch("shop/a.jpg");
    for other in [
        Selector::Key("shop/b.jpg".into()),
        Selector::Prefix("other/".into()),
        Selector::Mode("crop".into()),
        Selector::Size {
            width: 10,
            height: 10,
        },
    ] {
        cache.purge(other).unwrap();
        assert_eq!(cache.source_epoch("shop/a.jpg"), a);
    }
    let mut last = a;
    for touching in [
        Selector::Key("shop/a.jpg".into()),
        Selector::Prefix("shop/".into()),
        Selector::All,
    ] {
        cache.purge(touching.clone()).unwrap();
        let now = cache.source_epoch("shop/a.jpg");
        assert!(now > last, "{touching:?} did not move it on");
        last = now;
    }
    assert_eq!(
        cache.source_epoch("elsewhere.jpg"),
        last,
        "All touches every key"
    );
}

#[tokio::test]
async fn the_least_recently_served_go_first_and_the_bound_holds() {
    let f = Fixture::new();
    // Each entry takes a block and its size's folders (about 16 KiB on ext4, less on tmpfs).
    let max = 200_000;
    let cache = f.open(max);
    settled(&cache);
    for i in 1..=9 {
        put(&cache, &format!("/{i}/1/crop/a.jpg"), 1000);
        std::thread::sleep(Duration::from_millis(3));
    }
    for i in 10..=30 {
        // The first one is popular: served between every two renders.
        assert!(
            cache.get(&variant("/1/1/crop/a.jpg")).await.is_some(),
            "evicted at {i}"
        );
        std::thread::sleep(Duration::from_millis(2));
        put(&cache, &format!("/{i}/1/crop/a.jpg"), 1000);
        let on_disk = disk::tree_use(&f.cache_dir());
        assert!(
            on_disk <= max,
            "{on_disk} bytes on disk after {i}, {} counted",
            cache.stats().disk_bytes
        );
        assert!(cache.stats().disk_bytes <= max);
    }
    assert!(
        cache.get(&variant("/1/1/crop/a.jpg")).await.is_some(),
        "the entry served last was evicted"
    );
    assert!(cache.get(&variant("/2/1/crop/a.jpg")).await.is_none());
    assert!(cache.get(&variant("/30/1/crop/a.jpg")).await.is_some());
    assert!(cache.inner.metrics.counts().evicted_entries >= 20);
    // The index and the disk agree once no eviction is under way (the background one removes
    // a file, then its entry).
    let _no_eviction = lock(&cache.inner.evicting);
    assert_eq!(
        files_under(&f.cache_dir()).len() as u64,
        cache.stats().entries
    );
}

/// Hits nginx served, noted from its hit log, keep a variant from eviction as ross's own do.
#[test]
fn hits_served_elsewhere_count_for_eviction() {
    let f = Fixture::new();
    let max = 200_000;
    let cache = f.open(max);
    settled(&cache);
    for i in 1..=9 {
        put(&cache, &format!("/{i}/1/crop/a.jpg"), 1000);
        std::thread::sleep(Duration::from_millis(3));
    }
    for i in 10..=30 {
        // The first one is popular, but only nginx serves it.
        cache.note_hit(&variant("/1/1/crop/a.jpg"));
        std::thread::sleep(Duration::from_millis(2));
        put(&cache, &format!("/{i}/1/crop/a.jpg"), 1000);
    }
    assert!(
        cache.get_blocking(&variant("/1/1/crop/a.jpg")).is_some(),
        "the entry nginx served last was evicted"
    );
    assert!(cache.get_blocking(&variant("/2/1/crop/a.jpg")).is_none());
}

/// `cache.max_bytes` holds as `du` counts: the files' blocks and the folders of many
/// distinct sizes (each a folder or three of its own), and the cache's own count follows it.
#[test]
fn the_bound_holds_for_du_with_many_distinct_sizes() {
    let f = Fixture::new();
    let max = 3_000_000;
    let cache = f.open(max);
    settled(&cache);
    for i in 0..600u32 {
        let (w, h) = (100 + i % 37, 100 + i / 37);
        assert!(matches!(
            put(
                &cache,
                &format!("/{w}/{h}/crop/shop/p{}.jpg", i % 5),
                1500 + i as usize
            ),
            PutOutcome::Stored(_)
        ));
    }
    let _no_eviction = lock(&cache.inner.evicting);
    let du = disk::tree_use(&f.cache_dir());
    let counted = cache.stats().disk_bytes;
    assert!(du <= max, "du {du} over max_bytes {max}");
    assert!(
        du.abs_diff(counted) * 100 <= du * 3,
        "du {du} against {counted} counted"
    );
    assert!(
        cache.inner.metrics.counts().evicted_entries > 0,
        "the bound was not reached"
    );
    // File lengths alone would have been far under the bound.
    assert!(cache.stats().bytes * 2 < du);
}

#[tokio::test]
async fn every_purge_kind_removes_what_it_names_and_says_how_much() {
    let f = Fixture::new();
    let cache = f.open(1 << 20);
    for path in [
        "/10/10/crop/photos/a.jpg",
        "/10/10/resize/photos/a.jpg",
        "/20/20/crop/photos/a.jpg",
        "/10/10/crop/photos/ab.jpg",
        "/10/10/crop/png/c.png",
        "/30/30/blur/png/d.png",
    ] {
        put(&cache, path, 100);
    }
    let purged = |s: Selector| cache.purge(s).unwrap();
    assert_eq!(
        purged(Selector::Key("photos/a.jpg".into())),
        PurgeOutcome {
            entries: 3,
            bytes: 300
        }
    );
    assert!(cache
        .get(&variant("/10/10/crop/photos/ab.jpg"))
        .await
        .is_some());
    assert_eq!(purged(Selector::Mode("blur".into())).entries, 1);
    assert_eq!(purged(Selector::Prefix("png/".into())).entries, 1);
    put(&cache, "/20/20/crop/photos/x.jpg", 100);
    assert_eq!(
        purged(Selector::size(Size {
            width: 10,
            height: 10
        }))
        .entries,
        1
    );
    assert_eq!(purged(Selector::All).entries, 1);
    assert_eq!((cache.stats().entries, cache.stats().bytes), (0, 0));
    assert!(files_under(&f.cache_dir()).is_empty());
    // Emptied folders go too.
    let left: Vec<_> = std::fs::read_dir(f.cache_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_new_mode_version_purges_other_versions_and_is_recorded_after() {
    let f = Fixture::new();
    let cache = f.open(1 << 20);
    assert_eq!(cache.adopt_mode_version("crop", "1").unwrap(), Some(None));
    settled(&cache);
    assert_eq!(cache.adopt_mode_version("crop", "1").unwrap(), None);
    put(&cache, "/10/10/crop/a.jpg", 10);
    assert_eq!(
        cache.adopt_mode_version("crop", "2").unwrap(),
        Some(Some("1".into()))
    );
    settled(&cache);
    assert!(cache.get(&variant("/10/10/crop/a.jpg")).await.is_none());
    assert_eq!(cache.recorded_modes().unwrap(), vec!["crop".to_owned()]);
    cache.retire_mode("crop").unwrap();
    assert!(cache.recorded_modes().unwrap().is_empty());
    settled(&cache);
}

/// Regression: the first sight of a mode (a purge of other versions' renders) made every
/// render begun before it uncacheable, so a burst of requests right after start-up fetched
/// the same original twice.
#[test]
fn a_version_purge_does_not_bar_renders_by_the_version_in_service() {
    let f = Fixture::new();
    let cache = f.open(1 << 20);
    let ticket = cache.ticket();
    cache.adopt_mode_version("crop", "2").unwrap();
    settled(&cache);
    let v = variant("/10/10/crop/a.jpg");
    assert!(matches!(
        cache.put(&v, "2", "", b"x", ticket, || true).unwrap(),
        PutOutcome::Stored(_)
    ));
    // While a change back to version 1 is pending, version 2's file is not served, and a
    // render by version 1 is.
    let job = cache
        .begin_purge(Selector::OtherVersions {
            mode: "crop".into(),
            version: "1".into(),
        })
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    assert!(rt.block_on(cache.get(&v)).is_none());
    cache
        .put(&v, "1", "", b"y", cache.ticket(), || true)
        .unwrap();
    assert_eq!(&rt.block_on(cache.get(&v)).unwrap().bytes[..], b"y");
    cache.finish_purge(job).unwrap();
    assert_eq!(&rt.block_on(cache.get(&v)).unwrap().bytes[..], b"y");
}

#[test]
fn a_purge_interrupted_before_it_ran_finishes_at_the_next_open() {
    let f = Fixture::new();
    {
        let cache = f.open(1 << 20);
        for i in 1..=50 {
            put(&cache, &format!("/{i}/10/crop/a.jpg"), 10);
        }
        // Journaled, never run: as if the process died right after.
        let _job = cache.begin_purge(Selector::All).unwrap();
    }
    let cache = f.open(1 << 20);
    settled(&cache);
    assert_eq!(cache.stats().entries, 0);
    assert!(files_under(&f.cache_dir()).is_empty());
}

#[test]
fn reconciliation_drops_entries_without_files_and_removes_unknown_files() {
    let f = Fixture::new();
    {
        let cache = f.open(1 << 20);
        put(&cache, "/10/10/crop/kept.jpg", 10);
        put(&cache, "/10/10/crop/lost.jpg", 10);
    }
    std::fs::remove_file(f.cache_dir().join("jpeg/10/10/crop/lost.jpg")).unwrap();
    let past = SystemTime::now() - Duration::from_secs(60);
    for stray in ["jpeg/10/10/crop/stray.jpg", "notes.txt"] {
        let path = f.cache_dir().join(stray);
        std::fs::write(&path, b"x").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }
    let cache = f.open(1 << 20);
    settled(&cache);
    assert_eq!((cache.stats().entries, cache.stats().bytes), (1, 10));
    assert_eq!(
        files_under(&f.cache_dir()),
        vec![f.cache_dir().join("jpeg/10/10/crop/kept.jpg")]
    );
}

#[test]
fn a_folder_holding_other_files_or_in_use_is_refused() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.cache_dir()).unwrap();
    std::fs::write(f.cache_dir().join("photo.jpg"), b"x").unwrap();
    let db = Database::open_again(&f.dir.path().join("data")).unwrap();
    let err = Cache::open(&f.cache_dir(), 1000, 0, &db, metrics())
        .err()
        .unwrap();
    assert!(matches!(err, CacheError::NotACache { .. }), "{err}");
    std::fs::remove_file(f.cache_dir().join("photo.jpg")).unwrap();
    let _first = Cache::open(&f.cache_dir(), 1000, 0, &db, metrics()).unwrap();
    let other = Database::open_again(&f.dir.path().join("data2")).unwrap();
    let err = Cache::open(&f.cache_dir(), 1000, 0, &other, metrics())
        .err()
        .unwrap();
    assert!(matches!(err, CacheError::InUse { .. }), "{err}");
}

/// A cache folder of the ross before the index (`{width}/{height}/{mode}/{key}` and `.tmp`)
/// is taken over, and its files, which no index knows, are removed.
#[test]
fn a_cache_folder_from_before_the_index_is_taken_over() {
    let f = Fixture::new();
    let old = f.cache_dir().join("300/300/crop/photos");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(f.cache_dir().join(TMP_DIR)).unwrap();
    let file = old.join("a.jpg");
    std::fs::write(&file, b"jpeg").unwrap();
    let past = SystemTime::now() - Duration::from_secs(60);
    File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(past)
        .unwrap();
    let cache = f.open(1000);
    settled(&cache);
    assert!(files_under(&f.cache_dir()).is_empty());
    assert!(!f.cache_dir().join("300").exists());
}

impl Cache {
    fn in_memory(&self, variant: &VariantKey) -> bool {
        self.inner
            .hot
            .as_ref()
            .is_some_and(|hot| hot.contains_key(variant))
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn hot_variants_are_served_from_memory() {
    let f = Fixture::new();
    let cache = f.open(1 << 20);
    let v = variant("/10/10/crop/a.jpg");
    put(&cache, "/10/10/crop/a.jpg", 100);
    assert!(cache.in_memory(&v));
    // Proof that the hit reads no file: it is served with the file gone behind ross's back.
    std::fs::remove_file(f.cache_dir().join(v.relative_path())).unwrap();
    assert_eq!(block_on(cache.get(&v)).unwrap().bytes.len(), 100);

    // With no memory, it is a miss.
    let g = Fixture::new();
    let db = Database::open_again(&g.dir.path().join("data")).unwrap();
    let cold = Cache::open(&g.cache_dir(), 1 << 20, 0, &db, metrics()).unwrap();
    put(&cold, "/10/10/crop/a.jpg", 100);
    std::fs::remove_file(g.cache_dir().join(v.relative_path())).unwrap();
    assert!(block_on(cold.get(&v)).is_none());
}

#[test]
fn a_disk_hit_fills_memory() {
    let f = Fixture::new();
    let v = variant("/10/10/crop/a.jpg");
    {
        let cache = f.open(1 << 20);
        put(&cache, "/10/10/crop/a.jpg", 100);
    }
    let cache = f.open(1 << 20);
    // Reconciliation at the open takes the path locks for moments, and a read that finds
    // one taken does not wait to fill memory (it failed so under CI's load).
    settled(&cache);
    assert!(!cache.in_memory(&v));
    assert_eq!(block_on(cache.get(&v)).unwrap().bytes.len(), 100);
    assert!(cache.in_memory(&v));
}

#[test]
fn purges_and_evictions_take_variants_out_of_memory() {
    let f = Fixture::new();
    let cache = f.open(200_000);
    settled(&cache);
    let purged = variant("/10/10/crop/purged.jpg");
    let kept = variant("/10/10/crop/kept.jpg");
    put(&cache, "/10/10/crop/purged.jpg", 100);
    put(&cache, "/10/10/crop/kept.jpg", 100);
    cache.purge(Selector::Key("purged.jpg".into())).unwrap();
    assert!(!cache.in_memory(&purged));
    assert!(cache.in_memory(&kept));

    // A version purge: the other version's renders leave memory with their files.
    cache.adopt_mode_version("crop", "2.0.0").unwrap();
    settled(&cache);
    assert!(!cache.in_memory(&kept));

    // Evictions: 30 renders of 1 kB (about 16 kB on disk each, with their size's folders) in
    // a cache of 200 kB.
    for i in 1..=30 {
        put(&cache, &format!("/{i}/1/crop/a.jpg"), 1000);
    }
    let held: Vec<_> = (1..=30)
        .map(|i| variant(&format!("/{i}/1/crop/a.jpg")))
        .filter(|v| cache.in_memory(v))
        .collect();
    assert!(held.len() <= 13, "{} in memory", held.len());
    for v in held {
        assert!(cache.entry(&v).unwrap().is_some(), "{v} in memory only");
    }
}

#[test]
fn a_read_overtaken_by_a_removal_or_a_new_render_is_not_remembered() {
    let f = Fixture::new();
    let cache = f.open(1 << 20);
    let inner = &cache.inner;
    let v = variant("/10/10/crop/a.jpg");
    let path = inner.dir.join(v.relative_path());

    // Read, then the variant is purged before the read is remembered.
    put(&cache, "/10/10/crop/a.jpg", 100);
    let read = read_whole(&path).unwrap();
    cache.purge(Selector::All).unwrap();
    inner.remember(&v, &path, &read);
    assert!(!cache.in_memory(&v));

    // Read, then rendered again (a new file at the path) before the read is remembered.
    put(&cache, "/10/10/crop/a.jpg", 100);
    let read = read_whole(&path).unwrap();
    put(&cache, "/10/10/crop/a.jpg", 200);
    inner.remember(&v, &path, &read);
    assert_eq!(block_on(cache.get(&v)).unwrap().bytes.len(), 200);
}

/// Regression: a purge that failed half-way stayed active until restart, so a failed purge
/// of everything kept every hit from being served (and every render from being cached) for
/// the life of the process. It is now tried again in the background until it finishes.
#[tokio::test]
async fn a_purge_that_fails_is_retried_until_it_finishes() {
    let f = Fixture::new();
    let cache = f.open(1 << 20);
    put(&cache, "/10/10/crop/a.jpg", 100);
    put(&cache, "/10/10/crop/b.jpg", 100);
    // A folder where a variant's file should be: removing it fails.
    let path = f
        .cache_dir()
        .join(variant("/10/10/crop/a.jpg").relative_path());
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("x"), b"x").unwrap();
    assert!(cache.purge(Selector::Key("a.jpg".into())).is_err());
    assert_eq!(cache.stats().purges_running, 1);
    std::fs::remove_dir_all(&path).unwrap();
    let started = Instant::now();
    while cache.stats().purges_running > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the failed purge was not retried"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cache.stats().entries, 1, "b.jpg is left");
    // Hits are served again.
    put(&cache, "/10/10/crop/c.jpg", 100);
    assert!(cache.get(&variant("/10/10/crop/c.jpg")).await.is_some());
}

/// Waits until the trash is empty: every purged file deleted and every dead entry gone.
fn trash_emptied(cache: &Cache) {
    let started = Instant::now();
    while !lock(&cache.inner.trash).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the trash was not emptied"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A purge of everything moves it to the trash at once: no file is left at a variant's path,
/// the answer counts what it matched, renders made after it are kept, and the trash (files and
/// dead entries) is emptied in the background, the count of the disk following.
#[test]
fn a_purge_of_everything_moves_it_to_the_trash_and_deletes_it_after() {
    let f = Fixture::new();
    let cache = f.open(1 << 30);
    settled(&cache);
    cache.set_purge_deletes_per_second(1_000_000);
    for i in 0..300 {
        put(
            &cache,
            &format!("/{}/{}/crop/shop/k{i}.jpg", 10 + i % 7, 10 + i % 5),
            100,
        );
    }
    let out = cache.purge(Selector::All).unwrap();
    assert_eq!((out.entries, out.bytes), (300, 300 * 100));
    assert!(files_under(&f.cache_dir()).is_empty());
    assert_eq!(cache.stats().entries, 0);
    assert!(cache
        .get_blocking(&variant("/10/10/crop/shop/k0.jpg"))
        .is_none());
    assert!(matches!(
        put(&cache, "/10/10/crop/shop/k0.jpg", 100),
        PutOutcome::Stored(_)
    ));
    trash_emptied(&cache);
    assert_eq!(cache.inner.index.iter().count(), 1, "dead entries left");
    assert_eq!(cache.stats().entries, 1);
    assert!(cache
        .get_blocking(&variant("/10/10/crop/shop/k0.jpg"))
        .is_some());
    let trash = f.cache_dir().join(TRASH_DIR);
    assert_eq!(std::fs::read_dir(&trash).unwrap().count(), 0);
    assert!(cache
        .inner
        .meta
        .scan_prefix(purge::JOURNAL_PREFIX)
        .next()
        .is_none());
    let (du, counted) = (disk::tree_use(&f.cache_dir()), cache.stats().disk_bytes);
    assert!(counted >= du, "counted {counted} under du {du}");
}

/// Purges by mode and by size move only what they match; the rest stays served.
#[test]
fn purges_by_mode_and_by_size_move_only_their_folders() {
    let f = Fixture::new();
    let cache = f.open(1 << 30);
    settled(&cache);
    for path in [
        "/10/10/crop/a.jpg",
        "/10/10/resize/a.jpg",
        "/20/10/crop/a.jpg",
        "/20/10/resize/b.jpg",
    ] {
        put(&cache, path, 100);
    }
    assert_eq!(
        cache.count(&Selector::Mode("crop".into())).unwrap().entries,
        2
    );
    let out = cache.purge(Selector::Mode("crop".into())).unwrap();
    assert_eq!(out.entries, 2);
    let served = |p: &str| cache.get_blocking(&variant(p)).is_some();
    assert!(!served("/10/10/crop/a.jpg") && !served("/20/10/crop/a.jpg"));
    assert!(served("/10/10/resize/a.jpg") && served("/20/10/resize/b.jpg"));
    let out = cache
        .purge(Selector::Size {
            width: 20,
            height: 10,
        })
        .unwrap();
    assert_eq!(out.entries, 1);
    assert!(served("/10/10/resize/a.jpg") && !served("/20/10/resize/b.jpg"));
    assert_eq!(cache.stats().entries, 1);
    trash_emptied(&cache);
    assert_eq!(cache.inner.index.iter().count(), 1);
    assert_eq!(files_under(&f.cache_dir()).len(), 1);
}

/// The trash outlives a restart: entries of a purge not yet deleted stay dead (not served, not
/// counted), and the deletion finishes after it.
#[test]
fn a_trash_left_by_the_last_run_stays_dead_and_is_deleted() {
    let f = Fixture::new();
    {
        let cache = f.open_held(1 << 30, true);
        settled(&cache);
        for i in 0..20 {
            put(&cache, &format!("/{}/10/crop/a.jpg", 10 + i), 100);
        }
        cache.purge(Selector::Mode("crop".into())).unwrap();
        put(&cache, "/10/10/resize/a.jpg", 100);
        assert_eq!(
            cache.inner.index.iter().count(),
            21,
            "the trash was deleted already"
        );
        cache.flush().unwrap();
    }
    let cache = f.open_held(1 << 30, true);
    assert_eq!(cache.inner.index.iter().count(), 21);
    assert_eq!(cache.stats().entries, 1, "the purged entries came back");
    assert!(cache.get_blocking(&variant("/11/10/crop/a.jpg")).is_none());
    assert!(cache
        .get_blocking(&variant("/10/10/resize/a.jpg"))
        .is_some());
    // A render made now is live, though its mode's folder is in the trash.
    assert!(matches!(
        put(&cache, "/11/10/crop/a.jpg", 100),
        PutOutcome::Stored(_)
    ));
    assert!(cache.get_blocking(&variant("/11/10/crop/a.jpg")).is_some());
    cache.inner.trash_paused.store(false, Ordering::SeqCst);
    cache.inner.trash_signal.wake();
    trash_emptied(&cache);
    settled(&cache);
    assert_eq!(cache.inner.index.iter().count(), 2);
    assert_eq!(files_under(&f.cache_dir()).len(), 2);
    assert_eq!(cache.stats().entries, 2);
}
