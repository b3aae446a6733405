//! Cleanup of abandoned backups: snapshot directories that never got a manifest
//! (`index.json.blob`), for example because the server was killed during a backup, so the drop
//! cleanup of the backup lease never ran.
//!
//! A snapshot qualifies only if it has no manifest, its newest object is older than the grace
//! period (`abandoned_after_hours`, default 24 h), and its snapshot lock can be taken
//! exclusively (a running backup holds it exclusively, readers only open finished snapshots).
//! The manifest is checked again under the lock, so a backup that finished meanwhile is kept.
//! GC runs this before marking, so the chunks only such a snapshot referenced become garbage.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::ObjectMeta;
use crate::format::names::parse_backup_time;

use super::super::history::{JobKind, JobRecord};
use super::super::layout::MANIFEST;
use super::super::DatastoreError;
use super::GarbageCollector;
use super::GcStatus;

/// Default grace period before a snapshot without manifest counts as abandoned.
pub const DEFAULT_ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
struct SnapshotObjects {
    has_manifest: bool,
    newest: SystemTime,
    bytes: u64,
    files: u64,
}

/// The snapshot directory (`[ns/<a>/...]<type>/<id>/<time>/`) a key lies in, if any.
pub(crate) fn snapshot_prefix_of(key: &str) -> Option<(&str, &str)> {
    let comps: Vec<&str> = key.split('/').collect();
    let mut i = 0;
    while comps.len() > i + 2 && comps[i] == "ns" {
        i += 2;
    }
    if comps.len() != i + 4 {
        return None;
    }
    let (ty, id, time, file) = (comps[i], comps[i + 1], comps[i + 2], comps[i + 3]);
    if !matches!(ty, "vm" | "ct" | "host") || id.is_empty() || file.is_empty() {
        return None;
    }
    parse_backup_time(time).ok()?;
    Some((&key[..key.len() - file.len()], file))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl GarbageCollector {
    /// Remove abandoned snapshots found in `objects` (see the module documentation); returns
    /// the removed snapshot prefixes. Counted in `status`, logged through `say`, and recorded
    /// in the job history when anything was removed.
    pub(super) async fn remove_abandoned(
        &self,
        objects: &[ObjectMeta],
        status: &mut GcStatus,
        upid: Option<String>,
        say: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Vec<String>, DatastoreError> {
        let started = SystemTime::now();
        let grace = self.abandoned_after();
        let limit = started.checked_sub(grace).unwrap_or(UNIX_EPOCH);
        let mut snapshots: BTreeMap<&str, SnapshotObjects> = BTreeMap::new();
        for obj in objects {
            let Some((prefix, file)) = snapshot_prefix_of(&obj.key) else {
                continue;
            };
            let entry = snapshots.entry(prefix).or_insert(SnapshotObjects {
                has_manifest: false,
                newest: UNIX_EPOCH,
                bytes: 0,
                files: 0,
            });
            entry.has_manifest |= file == MANIFEST;
            entry.newest = entry.newest.max(obj.modified);
            entry.bytes += obj.size;
            entry.files += 1;
        }
        let mut removed = Vec::new();
        let mut removed_bytes = 0;
        for (prefix, snap) in snapshots {
            if snap.has_manifest || snap.newest >= limit {
                continue;
            }
            // A running backup holds its snapshot exclusively.
            let Some(_lock) = self.locks.try_exclusive(prefix) else {
                continue;
            };
            if self
                .backend
                .head(&format!("{prefix}{MANIFEST}"))
                .await?
                .is_some()
            {
                continue; // finished meanwhile
            }
            say(format!(
                "removing abandoned backup {} ({} files, {} bytes, last written {}s ago)",
                prefix.trim_end_matches('/'),
                snap.files,
                snap.bytes,
                started
                    .duration_since(snap.newest)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            ));
            self.backend.delete_prefix(prefix).await?;
            removed_bytes += snap.bytes;
            removed.push(prefix.to_string());
        }
        status.abandoned_snapshots += removed.len() as u64;
        status.abandoned_bytes += removed_bytes;
        if !removed.is_empty() {
            say(format!(
                "removed {} abandoned backups ({removed_bytes} bytes)",
                removed.len()
            ));
            let record = JobRecord {
                kind: JobKind::AbandonedCleanup,
                job_id: "garbage-collection".to_string(),
                upid,
                started: unix(started),
                finished: unix(SystemTime::now()),
                outcome: "OK".to_string(),
                dry_run: false,
                summary: serde_json::json!({
                    "removed-snapshots": removed
                        .iter()
                        .map(|p| p.trim_end_matches('/'))
                        .collect::<Vec<_>>(),
                    "removed-bytes": removed_bytes,
                    "grace-seconds": grace.as_secs(),
                }),
            };
            if let Err(e) = super::super::history::record(self.backend.as_ref(), &record).await {
                say(format!(
                    "WARN: recording the abandoned-backup cleanup failed: {e}"
                ));
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::snapshot_prefix_of;

    #[test]
    fn snapshot_prefixes_are_found_in_every_namespace() {
        assert_eq!(
            snapshot_prefix_of("vm/100/2023-11-14T22:13:20Z/root.pxar.didx"),
            Some(("vm/100/2023-11-14T22:13:20Z/", "root.pxar.didx"))
        );
        assert_eq!(
            snapshot_prefix_of("ns/a/ns/b/host/x/2023-11-14T22:13:20Z/index.json.blob"),
            Some(("ns/a/ns/b/host/x/2023-11-14T22:13:20Z/", "index.json.blob"))
        );
        assert_eq!(snapshot_prefix_of("vm/100/owner"), None);
        assert_eq!(snapshot_prefix_of("ns/a/.namespace"), None);
        assert_eq!(snapshot_prefix_of("vm/100/notatime/x.blob"), None);
        assert_eq!(
            snapshot_prefix_of("xx/100/2023-11-14T22:13:20Z/x.blob"),
            None
        );
    }
}
