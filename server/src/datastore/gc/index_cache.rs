//! Parsed digest lists of index files, kept in memory between GC runs.
//!
//! Index files are immutable once written (a snapshot's `*.fidx`/`*.didx` is never rewritten),
//! so an entry keyed by object key and validated by size and modified time stays correct; a
//! second GC over a large object-store datastore then lists the keys but downloads nothing it
//! has already parsed. The cache is bounded by the number of digests it holds; the least
//! recently used entries go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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

/// Bounded LRU of parsed index files.
#[derive(Debug)]
pub(crate) struct IndexCache {
    capacity: Mutex<usize>,
    inner: Mutex<Inner>,
}

impl Default for IndexCache {
    fn default() -> Self {
        Self {
            capacity: Mutex::new(DEFAULT_INDEX_CACHE_DIGESTS),
            inner: Mutex::new(Inner::default()),
        }
    }
}

impl IndexCache {
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

    /// Remember a freshly parsed index.
    pub fn insert(&self, key: &str, size: u64, modified: SystemTime, parsed: Arc<ParsedIndex>) {
        let capacity = *lock_std(&self.capacity);
        if parsed.digests.len() > capacity {
            return;
        }
        let mut inner = lock_std(&self.inner);
        inner.tick += 1;
        let tick = inner.tick;
        inner.digests += parsed.digests.len();
        let old = inner.entries.insert(
            key.to_string(),
            Entry {
                size,
                modified,
                parsed,
                last_used: tick,
            },
        );
        if let Some(old) = old {
            inner.digests -= old.parsed.digests.len();
        }
        evict(&mut inner, capacity);
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

/// Remove least recently used entries until at most `capacity` digests remain.
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
    use std::time::Duration;

    fn parsed(n: usize) -> Arc<ParsedIndex> {
        Arc::new(ParsedIndex {
            digests: vec![[1u8; 32]; n],
            data_size: n as u64,
        })
    }

    #[test]
    fn entries_are_validated_by_size_and_time_and_evicted_lru() {
        let cache = IndexCache::default();
        cache.set_capacity(10);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        cache.insert("a", 1, t, parsed(4));
        cache.insert("b", 1, t, parsed(4));
        assert!(cache.get("a", 1, t).is_some());
        assert!(cache.get("a", 2, t).is_none(), "other size");
        assert!(cache.get("a", 1, t + Duration::from_secs(1)).is_none());
        // "b" is the least recently used one now.
        cache.insert("c", 1, t, parsed(4));
        assert!(cache.get("b", 1, t).is_none());
        assert!(cache.get("a", 1, t).is_some());
        assert!(cache.get("c", 1, t).is_some());
        cache.insert("huge", 1, t, parsed(11));
        assert!(cache.get("huge", 1, t).is_none(), "larger than the bound");
        let live: std::collections::HashSet<&str> = ["c"].into_iter().collect();
        cache.retain_keys(&live);
        assert_eq!(cache.len(), 1);
        cache.set_capacity(0);
        assert_eq!(cache.len(), 0);
    }
}
