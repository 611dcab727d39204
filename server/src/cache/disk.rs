//! The cache's disk as the disk counts it: files and folders by their allocated blocks (what
//! `du` adds up), the folders a write creates, and room on the file system.
//!
//! `cache.max_bytes` bounds what the cache takes by this count: the files' blocks, every folder
//! the cache made (a 4 KiB block each on ext4, more as a folder fills), and purged files not
//! yet deleted. File lengths alone undercount by 1.7x to 2x for small renders.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Block size assumed when reserving room for a file before it is written (the usual one);
/// what the file took is measured once written.
const BLOCK: u64 = 4096;

/// What a file or folder takes on disk: its allocated blocks.
pub fn disk_use(meta: &Metadata) -> u64 {
    meta.blocks() * 512
}

/// Room to reserve before writing `bytes` as a new file at a path of `depth` components: its
/// blocks, every folder on its path (each may be new) and its folder's growth. What it took is
/// counted once it is written, and the rest given back.
pub fn reservation(bytes: u64, depth: usize) -> u64 {
    bytes.div_ceil(BLOCK) * BLOCK + depth as u64 * BLOCK
}

/// Creates `folder` and any missing parents (below `root`, which exists); the disk use of the
/// folders it created.
fn make_folders(root: &Path, folder: &Path) -> std::io::Result<u64> {
    let mut missing = Vec::new();
    let mut at = folder;
    while at != root && std::fs::symlink_metadata(at).is_err() {
        missing.push(at);
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    let mut made = 0;
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => made += std::fs::symlink_metadata(dir).map_or(BLOCK, |m| disk_use(&m)),
            // Made by another writer meanwhile: theirs to count.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(made)
}

/// Renames `tmp` to `path` (under `root`), creating its folder; again if a purge removed the
/// folder between the two. Returns the disk use it added beyond the file: folders created,
/// and the growth of the folder it went into.
pub fn rename_into_place(root: &Path, tmp: &Path, path: &Path) -> std::io::Result<u64> {
    let parent = path.parent().unwrap_or(path);
    let mut tries = 0;
    let mut added = 0;
    loop {
        added += make_folders(root, parent)?;
        let before = std::fs::symlink_metadata(parent).map_or(0, |m| disk_use(&m));
        match std::fs::rename(tmp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
            Err(e) => return Err(e),
            Ok(()) => {
                let after = std::fs::symlink_metadata(parent).map_or(0, |m| disk_use(&m));
                return Ok(added + after.saturating_sub(before));
            }
        }
    }
}

/// Removes the folder `dir` if it is empty; the disk use freed (0 if it was not removed).
pub fn remove_empty_folder(dir: &Path) -> u64 {
    let held = std::fs::symlink_metadata(dir).map_or(0, |m| disk_use(&m));
    match std::fs::remove_dir(dir) {
        Ok(()) => held,
        Err(_) => 0, // not empty, or gone: harmless
    }
}

/// The disk use of `path` and everything under it, not following links.
pub fn tree_use(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = disk_use(&meta);
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                total += tree_use(&entry.path());
            }
        }
    }
    total
}

/// Whether `e` says the file system (or the user's quota) is full.
pub fn no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Bytes free for ross on the file system holding `dir` (`statvfs`: blocks available to
/// unprivileged users).
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Says something at most once a minute (a full disk would otherwise fill the log with the
/// same line for every request).
#[derive(Debug, Default)]
pub struct OncePerMinute {
    last_ms: std::sync::atomic::AtomicU64,
}

impl OncePerMinute {
    /// Not said yet.
    pub const fn new() -> OncePerMinute {
        OncePerMinute {
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether to say it now (and, if so, not again for a minute).
    pub fn due(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_ms.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= 60_000)
            && self
                .last_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// An atomic byte count moved up and down by deltas that never wraps below zero (a folder
/// counted by an estimate may be removed for more than was added).
pub fn sub_saturating(counter: &std::sync::atomic::AtomicU64, n: u64) {
    use std::sync::atomic::Ordering;
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The folders a write creates are counted once, by the writer that made them, and come
    /// back when removed.
    #[test]
    fn folders_made_are_counted_and_freed() {
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join("t");
        std::fs::write(&tmp, b"x").unwrap();
        let path = root.path().join("a/b/c/file");
        let added = rename_into_place(root.path(), &tmp, &path).unwrap();
        let dirs: u64 = ["a", "a/b", "a/b/c"]
            .iter()
            .map(|d| disk_use(&std::fs::metadata(root.path().join(d)).unwrap()))
            .sum();
        assert_eq!(added, dirs);
        std::fs::write(&tmp, b"y").unwrap();
        let again = rename_into_place(root.path(), &tmp, &root.path().join("a/b/c/two")).unwrap();
        assert_eq!(again, 0, "no folder made, no growth for a second entry");
        let file = disk_use(&std::fs::metadata(&path).unwrap());
        assert_eq!(tree_use(&root.path().join("a")), dirs + 2 * file);
        assert_eq!(
            remove_empty_folder(&root.path().join("a/b/c")),
            0,
            "not empty"
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(root.path().join("a/b/c/two")).unwrap();
        let c = disk_use(&std::fs::metadata(root.path().join("a/b/c")).unwrap());
        assert_eq!(remove_empty_folder(&root.path().join("a/b/c")), c);
        assert_eq!(reservation(1, 1), 2 * 4096);
        assert_eq!(reservation(4097, 5), 7 * 4096);
    }
}
