//! In-process locks with PBS's semantics (docs/formats.md#locking): an exclusive lock per group for
//! a running backup, exclusive or shared locks per snapshot, and a per-snapshot async mutex for
//! manifest edits. Locks are non-blocking ("try"): a conflict is reported to the client at once,
//! like PBS does for backups.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::lock_std;

#[derive(Debug)]
enum SnapState {
    Exclusive,
    Shared(usize),
}

#[derive(Default, Debug)]
struct Inner {
    groups: HashSet<String>,
    snapshots: HashMap<String, SnapState>,
}

/// Group and snapshot locks, keyed by the group/snapshot key prefix.
#[derive(Default, Debug)]
pub(crate) struct LockTable {
    inner: Mutex<Inner>,
}

/// Held for the whole backup session: one backup per group.
#[derive(Debug)]
pub(crate) struct GroupGuard {
    table: Arc<LockTable>,
    key: String,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        lock_std(&self.table.inner).groups.remove(&self.key);
    }
}

/// Exclusive (backup writing it, deletion) or shared (reader, previous of a backup).
#[derive(Debug)]
pub(crate) struct SnapshotGuard {
    table: Arc<LockTable>,
    key: String,
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        let mut inner = lock_std(&self.table.inner);
        let remove = match inner.snapshots.get_mut(&self.key) {
            Some(SnapState::Shared(n)) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if remove {
            inner.snapshots.remove(&self.key);
        }
    }
}

impl LockTable {
    /// Exclusive group lock, or `None` if another backup holds it.
    pub fn try_group(self: &Arc<Self>, key: &str) -> Option<GroupGuard> {
        let mut inner = lock_std(&self.inner);
        if !inner.groups.insert(key.to_string()) {
            return None;
        }
        Some(GroupGuard {
            table: self.clone(),
            key: key.to_string(),
        })
    }

    /// Exclusive snapshot lock, or `None` if anyone holds the snapshot.
    pub fn try_exclusive(self: &Arc<Self>, key: &str) -> Option<SnapshotGuard> {
        let mut inner = lock_std(&self.inner);
        if inner.snapshots.contains_key(key) {
            return None;
        }
        inner
            .snapshots
            .insert(key.to_string(), SnapState::Exclusive);
        Some(SnapshotGuard {
            table: self.clone(),
            key: key.to_string(),
        })
    }

    /// Shared snapshot lock, or `None` if the snapshot is held exclusively.
    pub fn try_shared(self: &Arc<Self>, key: &str) -> Option<SnapshotGuard> {
        let mut inner = lock_std(&self.inner);
        match inner.snapshots.get_mut(key) {
            Some(SnapState::Exclusive) => return None,
            Some(SnapState::Shared(n)) => *n += 1,
            None => {
                inner
                    .snapshots
                    .insert(key.to_string(), SnapState::Shared(1));
            }
        }
        Some(SnapshotGuard {
            table: self.clone(),
            key: key.to_string(),
        })
    }
}

/// Async mutex per key (manifest edits of one snapshot); entries vanish when unused.
#[derive(Default, Debug)]
pub(crate) struct KeyedMutex {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub(crate) struct KeyedGuard<'a> {
    owner: &'a KeyedMutex,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedMutex {
    pub async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let mutex = lock_std(&self.map)
            .entry(key.to_string())
            .or_default()
            .clone();
        let guard = mutex.lock_owned().await;
        KeyedGuard {
            owner: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = lock_std(&self.owner.map);
        if let Some(m) = map.get(&self.key) {
            if Arc::strong_count(m) == 1 {
                map.remove(&self.key);
            }
        }
    }
}

/// Keeps garbage collection apart from group and namespace moves and usage recounts: GC holds
/// `running` for its whole run, so does a recount and a move while it copies objects. A move
/// counts itself first, so that a GC meeting the mutex held waits for the move instead of
/// failing as "already running" (its mark phase could otherwise miss an index between its
/// old and new key).
#[derive(Debug, Default)]
pub(crate) struct GcExclusion {
    pub running: tokio::sync::Mutex<()>,
    moves: std::sync::atomic::AtomicUsize,
}

/// Counts one move as running until dropped.
pub(crate) struct MoveActive<'a>(&'a GcExclusion);

impl Drop for MoveActive<'_> {
    fn drop(&mut self) {
        self.0
            .moves
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl GcExclusion {
    /// Whether a group or namespace move is running or waiting.
    pub fn move_active(&self) -> bool {
        self.moves.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// Count a move as running until the guard drops.
    pub fn begin_move(&self) -> MoveActive<'_> {
        self.moves.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        MoveActive(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lock_is_exclusive() {
        let t = Arc::new(LockTable::default());
        let g = t.try_group("vm/100/").expect("first");
        assert!(t.try_group("vm/100/").is_none());
        assert!(t.try_group("vm/101/").is_some());
        drop(g);
        assert!(t.try_group("vm/100/").is_some());
    }

    #[test]
    fn snapshot_shared_and_exclusive() {
        let t = Arc::new(LockTable::default());
        let s1 = t.try_shared("s").expect("shared 1");
        let s2 = t.try_shared("s").expect("shared 2");
        assert!(t.try_exclusive("s").is_none());
        drop(s1);
        assert!(t.try_exclusive("s").is_none());
        drop(s2);
        let x = t.try_exclusive("s").expect("exclusive");
        assert!(t.try_shared("s").is_none());
        drop(x);
        assert!(t.try_shared("s").is_some());
    }

    #[tokio::test]
    async fn keyed_mutex_cleans_up() {
        let m = KeyedMutex::default();
        {
            let _a = m.lock("k").await;
            assert_eq!(lock_std(&m.map).len(), 1);
        }
        assert!(lock_std(&m.map).is_empty());
    }
}
