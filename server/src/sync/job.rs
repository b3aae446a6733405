//! What the pull and the push job share: the task's log sink and stop request, counters, the
//! remote's REST paths and queries, namespace mapping and listing, and PBS's progress and
//! summary lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::SyncError;
use crate::format::human_bytes;
use crate::format::names::{BackupGroup, BackupNamespace, BackupType};

/// A task-log line sink and the stop request of the running task (owned: the job's futures
/// run concurrently and must not borrow from the caller).
pub type LogSink = Arc<dyn Fn(String) + Send + Sync>;
pub type AbortCheck = Arc<dyn Fn() -> bool + Send + Sync>;

pub(super) fn check_abort(aborted: &AbortCheck) -> Result<(), SyncError> {
    match aborted() {
        true => Err(SyncError::Aborted),
        false => Ok(()),
    }
}

pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub(super) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Bytes per second since `since`.
pub(super) fn rate(bytes: u64, since: Instant) -> u64 {
    (bytes as f64 / since.elapsed().as_secs_f64().max(1e-3)) as u64
}

/// `/api2/json/admin/datastore/{store}/{what}` on the remote.
pub(super) fn store_path(store: &str, what: &str) -> String {
    format!("/api2/json/admin/datastore/{store}/{what}")
}

/// `ns=…` unless `ns` is the root (PBS leaves it out then).
pub(super) fn ns_query(ns: &BackupNamespace) -> Vec<(&'static str, String)> {
    match ns.is_root() {
        true => Vec::new(),
        false => vec![("ns", ns.display_path())],
    }
}

/// `ns`, `backup-type` and `backup-id` of a group (listing or deleting it).
pub(super) fn group_query(
    ns: &BackupNamespace,
    group: &BackupGroup,
) -> Vec<(&'static str, String)> {
    let mut query = ns_query(ns);
    query.push(("backup-type", group.ty.as_str().to_string()));
    query.push(("backup-id", group.id.clone()));
    query
}

/// `ns` moved from below `from` to below `to` (the part under `from` appended to `to`).
pub(super) fn remap(
    ns: &BackupNamespace,
    from: &BackupNamespace,
    to: &BackupNamespace,
) -> Result<BackupNamespace, SyncError> {
    let mut out = to.clone();
    for name in &ns.components()[from.depth()..] {
        out = out.child(name).map_err(|source| SyncError::Format {
            object: format!("namespace mapped from '{}'", ns.display_path()),
            source,
        })?;
    }
    Ok(out)
}

/// The namespaces of a remote `…/namespace` answer.
pub(super) fn parse_namespaces(listed: &Value) -> Result<Vec<BackupNamespace>, SyncError> {
    listed
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            let text = item["ns"].as_str().unwrap_or_default();
            BackupNamespace::parse(text).map_err(|source| SyncError::Format {
                object: format!("remote namespace '{text}'"),
                source,
            })
        })
        .collect()
}

/// The group of a remote listing entry, `None` when it does not parse.
pub(super) fn parse_group(item: &Value) -> Option<BackupGroup> {
    let ty: BackupType = item["backup-type"].as_str()?.parse().ok()?;
    BackupGroup::new(ty, item["backup-id"].as_str()?).ok()
}

/// PBS's `percentage done` line after snapshot `done` of `total`.
pub(super) fn progress(done: usize, total: usize) -> String {
    format!(
        "percentage done: {:.2}% ({done}/{total} snapshots)",
        done as f64 * 100.0 / total as f64
    )
}

/// PBS's closing `Summary:` lines; `verb` is `pulled` or `pushed`, `removed` the vanished
/// snapshots, groups and namespaces when the job removes them.
pub(super) fn log_summary(
    log: &LogSink,
    verb: &str,
    (bytes, chunks): (u64, u64),
    started: Instant,
    removed: Option<(u64, u64, u64)>,
) {
    log(format!(
        "Summary: sync job {verb} {} in {chunks} chunks (average rate: {}/s)",
        human_bytes(bytes, 2),
        human_bytes(rate(bytes, started), 2)
    ));
    if let Some((snapshots, groups, namespaces)) = removed {
        log(format!(
            "Summary: removed vanished: snapshots: {snapshots}, groups: {groups}, namespaces: {namespaces}"
        ));
    }
}
