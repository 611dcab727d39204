//! Which sizes may be rendered: the live whitelist, kept in sled and edited while serving.
//!
//! With `whitelist.source = "admin"` (the default) the whitelist tree is seeded from
//! `whitelist.enabled` and `whitelist.sizes` the first time a `data_dir` is used; after that
//! it is the record, and a different list in the settings is reported at start-up and
//! otherwise ignored (edit it from the admin API instead). With `"config"` the settings are the
//! truth: written over the tree at every start, and edits are refused. Requests
//! read it through an `ArcSwap`, with no lock; edits are serialised, flushed to disk, and then
//! swapped in, so an edit the API confirmed survives a crash. Every method but
//! [`Whitelist::allows`] and [`Whitelist::snapshot`] blocks: call them off the runtime.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use ross_config::{Size, WhitelistSettings, WhitelistSource};

use crate::db::{Database, DbError, TreeName};

const ENABLED_KEY: &[u8] = b"enabled";
/// Present once the tree has been seeded, so that a whitelist emptied on purpose stays empty.
const SEEDED_KEY: &[u8] = b"seeded";
const SIZE_PREFIX: &[u8] = b"size/";

fn size_key(size: Size) -> Vec<u8> {
    let mut key = SIZE_PREFIX.to_vec();
    key.extend_from_slice(&size.width.to_be_bytes());
    key.extend_from_slice(&size.height.to_be_bytes());
    key
}

fn size_of_key(key: &[u8]) -> Option<Size> {
    let raw = key.strip_prefix(SIZE_PREFIX)?;
    let (w, h) = raw.split_at_checked(4)?;
    Some(Size {
        width: u32::from_be_bytes(w.try_into().ok()?),
        height: u32::from_be_bytes(h.try_into().ok()?),
    })
}

/// The whitelist as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// When false any size within the limits is rendered.
    pub enabled: bool,
    /// The sizes allowed when enabled, in order.
    pub sizes: BTreeSet<Size>,
}

/// The live whitelist.
pub struct Whitelist {
    tree: sled::Tree,
    db: Database,
    live: ArcSwap<Allowed>,
    edits: Mutex<()>,
    source: WhitelistSource,
}

impl Whitelist {
    /// The whitelist stored in `db`, seeded from `settings` if this is the first start.
    pub fn open(db: &Database, settings: &WhitelistSettings) -> Result<Whitelist, DbError> {
        let tree = db.tree(TreeName::Whitelist)?;
        let err = |source| DbError::Sled {
            path: db.dir().to_owned(),
            source,
        };
        let configured = Allowed {
            enabled: settings.enabled,
            sizes: settings.sizes.iter().copied().collect(),
        };
        let from_file = settings.source == WhitelistSource::Config;
        if from_file || !tree.contains_key(SEEDED_KEY).map_err(err)? {
            let stored = read(&tree).map_err(err)?;
            if stored != configured {
                let mut batch = sled::Batch::default();
                for size in stored.sizes.difference(&configured.sizes) {
                    batch.remove(size_key(*size));
                }
                batch.insert(ENABLED_KEY, &[u8::from(configured.enabled)]);
                for size in &configured.sizes {
                    batch.insert(size_key(*size), &[]);
                }
                batch.insert(SEEDED_KEY, &[]);
                tree.apply_batch(batch).map_err(err)?;
                db.flush().map_err(err)?;
            }
        }
        let stored = read(&tree).map_err(err)?;
        if stored != configured {
            tracing::warn!(
                stored_enabled = stored.enabled, stored_sizes = %list(&stored.sizes),
                configured_enabled = configured.enabled, configured_sizes = %list(&configured.sizes),
                "whitelist.* differ from the whitelist kept in data_dir, which is the one used: \
                 the settings only seed a new data_dir; edit the live whitelist from the admin API"
            );
        }
        Ok(Whitelist {
            tree,
            db: db.clone(),
            live: ArcSwap::from_pointee(stored),
            edits: Mutex::new(()),
            source: settings.source,
        })
    }

    /// Where the whitelist is kept: with [`WhitelistSource::Config`] the settings file is the
    /// truth, and the admin page and API (and other nodes) cannot change it.
    pub fn source(&self) -> WhitelistSource {
        self.source
    }

    /// Whether `size` may be rendered now. Lock-free.
    pub fn allows(&self, size: Size) -> bool {
        let live = self.live.load();
        !live.enabled || live.sizes.contains(&size)
    }

    /// The whitelist now.
    pub fn snapshot(&self) -> Arc<Allowed> {
        self.live.load_full()
    }

    /// Allows `size`. Returns whether it was new.
    pub fn add(&self, size: Size) -> sled::Result<bool> {
        Ok(self.add_all(&[size])? == 1)
    }

    /// Stops allowing `size`. Returns whether it was there.
    pub fn remove(&self, size: Size) -> sled::Result<bool> {
        Ok(self.remove_all(&[size])? == 1)
    }

    /// Allows every size in `sizes`, in one durable edit. Returns how many were new.
    pub fn add_all(&self, sizes: &[Size]) -> sled::Result<usize> {
        self.edit(|tree| {
            let mut new = 0;
            for size in sizes {
                new += usize::from(tree.insert(size_key(*size), &[])?.is_none());
            }
            Ok(new)
        })
    }

    /// Stops allowing every size in `sizes`, in one durable edit. Returns how many were there.
    pub fn remove_all(&self, sizes: &[Size]) -> sled::Result<usize> {
        self.edit(|tree| {
            // One batch: a crash leaves all of them allowed or none.
            let mut gone = 0;
            let mut batch = sled::Batch::default();
            for size in sizes {
                gone += usize::from(tree.contains_key(size_key(*size))?);
                batch.remove(&size_key(*size)[..]);
            }
            tree.apply_batch(batch)?;
            Ok(gone)
        })
    }

    /// Switches the whitelist on or off.
    pub fn set_enabled(&self, enabled: bool) -> sled::Result<()> {
        self.edit(|tree| {
            tree.insert(ENABLED_KEY, &[u8::from(enabled)])?;
            Ok(())
        })
    }

    /// Applies one edit, durably, then publishes the result. Refused (`ENOSPC`) while
    /// `data_dir` is full: a write sled cannot finish would leave it refusing every write.
    fn edit<T>(&self, change: impl FnOnce(&sled::Tree) -> sled::Result<T>) -> sled::Result<T> {
        self.db.room()?;
        let _one = self.edits.lock().unwrap_or_else(|e| e.into_inner());
        let result = change(&self.tree)?;
        self.db.flush()?;
        self.live.store(Arc::new(read(&self.tree)?));
        Ok(result)
    }
}

fn read(tree: &sled::Tree) -> sled::Result<Allowed> {
    let enabled = tree.get(ENABLED_KEY)?.is_none_or(|v| v.first() != Some(&0));
    let mut sizes = BTreeSet::new();
    for key in tree.scan_prefix(SIZE_PREFIX).keys() {
        if let Some(size) = size_of_key(&key?) {
            sizes.insert(size);
        }
    }
    Ok(Allowed { enabled, sizes })
}

fn list(sizes: &BTreeSet<Size>) -> String {
    sizes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(enabled: bool, sizes: &[&str]) -> WhitelistSettings {
        WhitelistSettings {
            enabled,
            sizes: sizes.iter().map(|s| s.parse().unwrap()).collect(),
            source: WhitelistSource::Admin,
        }
    }

    #[test]
    fn seeded_once_then_edits_persist() {
        let dir = tempfile::tempdir().unwrap();
        let s72: Size = "72x72".parse().unwrap();
        let s300: Size = "300x300".parse().unwrap();
        {
            let db = Database::open_again(dir.path()).unwrap();
            let w = Whitelist::open(&db, &settings(true, &["72x72"])).unwrap();
            assert!(w.allows(s72) && !w.allows(s300));
            assert!(w.add(s300).unwrap());
            assert!(!w.add(s300).unwrap());
            assert!(w.allows(s300));
            assert!(w.remove(s72).unwrap());
            assert!(!w.allows(s72));
        }
        let db = Database::open_again(dir.path()).unwrap();
        // Other settings now only seed a new data_dir.
        let w = Whitelist::open(&db, &settings(false, &["10x10"])).unwrap();
        let now = w.snapshot();
        assert!(now.enabled);
        assert_eq!(now.sizes.iter().copied().collect::<Vec<_>>(), vec![s300]);
        w.set_enabled(false).unwrap();
        assert!(w.allows(s72));
    }

    #[test]
    fn from_config_the_file_is_applied_at_every_start() {
        let dir = tempfile::tempdir().unwrap();
        let s72: Size = "72x72".parse().unwrap();
        let s300: Size = "300x300".parse().unwrap();
        let s10: Size = "10x10".parse().unwrap();
        {
            let db = Database::open_again(dir.path()).unwrap();
            let w = Whitelist::open(&db, &settings(true, &["72x72", "300x300"])).unwrap();
            w.add(s10).unwrap();
        }
        let db = Database::open_again(dir.path()).unwrap();
        let mut file = settings(true, &["72x72"]);
        file.source = WhitelistSource::Config;
        let w = Whitelist::open(&db, &file).unwrap();
        assert_eq!(w.source(), WhitelistSource::Config);
        assert!(w.allows(s72) && !w.allows(s300) && !w.allows(s10));
    }

    #[test]
    fn emptied_stays_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s: Size = "72x72".parse().unwrap();
        {
            let db = Database::open_again(dir.path()).unwrap();
            let w = Whitelist::open(&db, &settings(true, &["72x72"])).unwrap();
            w.remove(s).unwrap();
        }
        let db = Database::open_again(dir.path()).unwrap();
        let w = Whitelist::open(&db, &settings(true, &["72x72"])).unwrap();
        assert!(w.snapshot().sizes.is_empty());
    }
}
