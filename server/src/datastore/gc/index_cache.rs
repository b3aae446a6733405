//! Parsed digest lists of index files, kept in memory between GC runs on object storage.
//!
//! Index files are immutable once written (a snapshot's `*.fidx`/`*.didx` is never rewritten),
//! so an entry keyed by object key and validated by size and modified time stays correct; a
//! second GC over a large object-store datastore then lists the keys but downloads nothing it
//! has already parsed. On a local directory reading an index again is cheap (the page cache
//! holds it), so the cache is off there: it would keep up to 128 MiB resident between runs to
//! save about a second per GC at ten million chunks.
//!
//! The cache is bounded by the number of digests it holds. GC reads every index in the same
//! order on every run, so evicting the least recently used entry to admit a new one would evict
//! each entry just before it is needed again (a datastore one index larger than the bound gets
//! no hit at all). Instead an index is admitted while there is room, and entries leave when
//! their snapshot is gone ([`IndexCache::retain_keys`] at every GC): with more index data than
//! the bound, the same share of the indexes hits on every run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::backend::BackendCapabilities;
use crate::format::Digest;

use super::super::lock_std;

/// Default bound: 4 Mi digests (128 MiB of digests).
pub const DEFAULT_INDEX_CACHE_DIGESTS: usize = 4 * 1024 * 1024;

/// What marking needs of one index file.
#[derive(Debug)]
pub(crate) struct ParsedIndex {
    pub digests: Vec<Digest>,
    /// Content size the index describes (`index-data-bytes`).
    pub data_size: u64,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    modified: SystemTime,
    parsed: Arc<ParsedIndex>,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    digests: usize,
    tick: u64,
}

/// Parsed index files, admitted while there is room.
#[derive(Debug)]
pub(crate) struct IndexCache {
    capacity: Mutex<usize>,
    inner: Mutex<Inner>,
}

impl IndexCache {
    /// A cache of at most `digests` digests (0: off).
    pub fn new(digests: usize) -> Self {
        Self {
            capacity: Mutex::new(digests),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The default bound for a datastore on `backend`: [`DEFAULT_INDEX_CACHE_DIGESTS`] on object
    /// storage (where a miss is a download), off on a local directory.
    pub fn default_capacity(backend: &BackendCapabilities) -> usize {
        match backend.exclusive_to_server {
            true => DEFAULT_INDEX_CACHE_DIGESTS,
            false => 0,
        }
    }

    /// The bound, in digests.
    pub fn capacity(&self) -> usize {
        *lock_std(&self.capacity)
    }

    /// Change the bound (in digests); 0 disables the cache.
    pub fn set_capacity(&self, digests: usize) {
        *lock_std(&self.capacity) = digests;
        let mut inner = lock_std(&self.inner);
        evict(&mut inner, digests);
    }

    /// The parsed index stored under `key`, if it is still the same object.
    pub fn get(&self, key: &str, size: u64, modified: SystemTime) -> Option<Arc<ParsedIndex>> {
        let mut inner = lock_std(&self.inner);
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(key)?;
        if entry.size != size || entry.modified != modified {
            return None;
        }
        entry.last_used = tick;
        Some(entry.parsed.clone())
    }

    /// Remember a freshly parsed index, if it fits in the room left (see the module docs).
    pub fn insert(&self, key: &str, size: u64, modified: SystemTime, parsed: Arc<ParsedIndex>) {
        let capacity = *lock_std(&self.capacity);
        let mut inner = lock_std(&self.inner);
        let replaced = inner.entries.get(key).map_or(0, |e| e.parsed.digests.len());
        if inner.digests - replaced + parsed.digests.len() > capacity {
            return;
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.digests = inner.digests - replaced + parsed.digests.len();
        inner.entries.insert(
            key.to_string(),
            Entry {
                size,
                modified,
                parsed,
                last_used: tick,
            },
        );
    }

    /// Drop entries whose objects no longer exist (keys not in `live`).
    pub fn retain_keys(&self, live: &std::collections::HashSet<&str>) {
        let mut inner = lock_std(&self.inner);
        let mut freed = 0;
        inner.entries.retain(|k, e| {
            let keep = live.contains(k.as_str());
            if !keep {
                freed += e.parsed.digests.len();
            }
            keep
        });
        inner.digests -= freed;
    }

    /// Number of cached index files.
    pub fn len(&self) -> usize {
        lock_std(&self.inner).entries.len()
    }
}

/// Remove least recently used entries until at most `capacity` digests remain (the bound was
/// lowered).
fn evict(inner: &mut Inner, capacity: usize) {
    if inner.digests <= capacity {
        return;
    }
    let mut order: Vec<(u64, String)> = inner
        .entries
        .iter()
        .map(|(k, e)| (e.last_used, k.clone()))
        .collect();
    order.sort_unstable();
    for (_, key) in order {
        if inner.digests <= capacity {
            break;
        }
        if let Some(e) = inner.entries.remove(&key) {
            inner.digests -= e.parsed.digests.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use std::time::Duration;

    fn parsed(n: usize) -> Arc<ParsedIndex> {
        Arc::new(ParsedIndex {
            digests: vec![[1u8; 32]; n],
            data_size: n as u64,
        })
    }

    #[test]
    fn entries_are_validated_by_size_and_time_and_admitted_while_there_is_room() {
        let cache = IndexCache::new(10);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        cache.insert("a", 1, t, parsed(4));
        cache.insert("b", 1, t, parsed(4));
        assert!(cache.get("a", 1, t).is_some());
        assert!(cache.get("a", 2, t).is_none(), "other size");
        assert!(cache.get("a", 1, t + Duration::from_secs(1)).is_none());
        // Full: a new index is not admitted, and nothing is evicted for it.
        cache.insert("c", 1, t, parsed(4));
        assert!(cache.get("c", 1, t).is_none());
        assert!(cache.get("a", 1, t).is_some() && cache.get("b", 1, t).is_some());
        // Replacing an entry counts only the difference.
        cache.insert("b", 2, t, parsed(6));
        assert!(cache.get("b", 2, t).is_some());
        cache.insert("huge", 1, t, parsed(11));
        assert!(cache.get("huge", 1, t).is_none(), "larger than the bound");
        // A snapshot gone makes room for the next one.
        let live: std::collections::HashSet<&str> = ["b", "c"].into_iter().collect();
        cache.retain_keys(&live);
        assert_eq!(cache.len(), 1);
        cache.insert("c", 1, t, parsed(4));
        assert!(cache.get("c", 1, t).is_some());
        cache.set_capacity(5);
        assert_eq!(cache.len(), 1, "the least recently used entry went");
        assert!(cache.get("c", 1, t).is_some());
        cache.set_capacity(0);
        assert_eq!(cache.len(), 0);
    }

    /// The pattern GC produces: every index read in the same order on every run, more of them
    /// than fit. Every run after the first hits the same share instead of none.
    #[test]
    fn a_cyclic_scan_larger_than_the_bound_still_hits() {
        let cache = IndexCache::new(40);
        let t = SystemTime::UNIX_EPOCH;
        let keys: Vec<String> = (0..50).map(|i| format!("idx{i}")).collect();
        let mut hits = 0;
        for _run in 0..3 {
            hits = 0;
            for k in &keys {
                match cache.get(k, 1, t) {
                    Some(_) => hits += 1,
                    None => cache.insert(k, 1, t, parsed(1)),
                }
            }
        }
        assert_eq!(hits, 40);
    }

    #[test]
    fn the_cache_is_off_on_a_local_directory_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let local = crate::backend::LocalBackend::open(dir.path()).unwrap();
        let local = local.capabilities();
        assert_eq!(IndexCache::default_capacity(&local), 0);
        let object_store = BackendCapabilities {
            exclusive_to_server: true,
            ..local
        };
        assert_eq!(
            IndexCache::default_capacity(&object_store),
            DEFAULT_INDEX_CACHE_DIGESTS
        );
    }
}
