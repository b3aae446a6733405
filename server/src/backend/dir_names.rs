//! The names in one directory, kept by the local backend for listings of a partial name.
//!
//! Listing `.chunks/ab` must read all of `.chunks` (65,536 shard directories on a datastore of
//! any size) and keep the names starting with `ab`; GC's sweep and the usage recount list the
//! 256 shards in a row, so without this they read those 65,536 names 256 times (about 5 s at
//! a million chunks). The names are kept while the directory's modification time is unchanged;
//! adding or removing an entry changes it.
//!
//! A directory changed within the last [`RACY_WINDOW`] is read but not kept: a change in the
//! same timestamp tick as the read would leave the time unchanged (coarse timestamps on some
//! filesystems), the same rule git uses for its index.

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How recent a directory change may be for its names to be kept.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// One entry: name and whether it is a directory (`None`: neither a file nor a directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DirEntry {
    pub name: String,
    pub is_dir: Option<bool>,
}

/// The names of `path` as of `modified`, sorted.
struct Snapshot {
    path: PathBuf,
    modified: SystemTime,
    entries: Vec<DirEntry>,
}

/// The one kept directory (the last one listed by a partial name).
#[derive(Default, Clone)]
pub(super) struct DirNames {
    kept: Arc<Mutex<Option<Arc<Snapshot>>>>,
}

impl std::fmt::Debug for DirNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.lock();
        f.debug_struct("DirNames")
            .field("kept", &kept.as_ref().map(|s| (&s.path, s.entries.len())))
            .finish()
    }
}

impl DirNames {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Snapshot>>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entries of directory `path` (whose metadata is `meta`) whose names start with
    /// `prefix`, in name order: from the kept names if the directory is unchanged, else read.
    pub fn entries_with_prefix(
        &self,
        path: &Path,
        meta: &Metadata,
        prefix: &str,
        read: impl FnOnce() -> std::io::Result<Vec<DirEntry>>,
    ) -> std::io::Result<Vec<DirEntry>> {
        let modified = meta.modified()?;
        let kept = self.lock().clone();
        let snapshot = match kept {
            Some(s) if s.path == path && s.modified == modified => s,
            _ => {
                let mut entries = read()?;
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                let snapshot = Arc::new(Snapshot {
                    path: path.to_path_buf(),
                    modified,
                    entries,
                });
                let settled = SystemTime::now()
                    .duration_since(modified)
                    .is_ok_and(|age| age >= RACY_WINDOW);
                if settled {
                    *self.lock() = Some(snapshot.clone());
                }
                snapshot
            }
        };
        let start = snapshot
            .entries
            .partition_point(|e| e.name.as_str() < prefix);
        Ok(snapshot.entries[start..]
            .iter()
            .take_while(|e| e.name.starts_with(prefix))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> DirEntry {
        DirEntry {
            name: name.into(),
            is_dir: Some(true),
        }
    }

    #[test]
    fn a_settled_directory_is_read_once_and_a_changed_one_again() {
        let dir = tempfile::tempdir().unwrap();
        let names = DirNames::default();
        let reads = std::cell::Cell::new(0);
        let list = |meta: &Metadata| {
            names
                .entries_with_prefix(dir.path(), meta, "ab", || {
                    reads.set(reads.get() + 1);
                    Ok(vec![entry("ac"), entry("ab01"), entry("aa"), entry("ab00")])
                })
                .unwrap()
        };
        // Changed just now: read every time, never kept.
        let fresh = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(list(&fresh), [entry("ab00"), entry("ab01")]);
        assert_eq!(list(&fresh), [entry("ab00"), entry("ab01")]);
        assert_eq!(reads.get(), 2);

        // Settled (changed 10 s ago): read once, then kept while the time is the same.
        let past = SystemTime::now() - Duration::from_secs(10);
        std::fs::File::open(dir.path())
            .unwrap()
            .set_modified(past)
            .unwrap();
        let settled = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(list(&settled), [entry("ab00"), entry("ab01")]);
        assert_eq!(list(&settled), [entry("ab00"), entry("ab01")]);
        assert_eq!(reads.get(), 3);

        // An entry added: the time moves on, and the names are read again.
        std::fs::create_dir(dir.path().join("ab02")).unwrap();
        let changed = std::fs::metadata(dir.path()).unwrap();
        list(&changed);
        assert_eq!(reads.get(), 4);
    }
}
