//! Prune jobs (docs/formats.md#prune-execution): every group in a namespace subtree that passes the
//! group filters is pruned with the job's keep options; task log lines as PBS writes them
//! (`[would ]keep|keep protected|keep partial|remove <snapshot>`), snapshots removed oldest first,
//! a failed removal logged and skipped.

use serde::Serialize;

use crate::datastore::{
    compute_prune, Datastore, DatastoreError, KeepOptions, PruneCandidate, PruneMark,
};
use crate::format::group_filter::{group_selected, GroupFilter};
use crate::format::names::BackupNamespace;

/// What a prune job covers and keeps.
#[derive(Clone, Debug)]
pub struct PruneParams {
    pub ns: BackupNamespace,
    pub max_depth: Option<usize>,
    pub filters: Vec<GroupFilter>,
    pub keep: KeepOptions,
}

/// Job-history summary of a prune run.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PruneSummary {
    pub groups: u64,
    /// Labels (`[ns/]type/id/time`) of snapshots removed (or, in a dry run, to be removed).
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    /// Removals that failed (protected by a lock, busy, ...), with the reason.
    pub failed: Vec<String>,
}

fn label(ns: &BackupNamespace, path: &str) -> String {
    match ns.is_root() {
        true => path.to_string(),
        false => format!("{}/{path}", ns.display_path()),
    }
}

/// Run a prune job over `store`; `aborted` is polled between groups.
pub async fn run(
    store: &Datastore,
    params: &PruneParams,
    dry_run: bool,
    log: &(dyn Fn(String) + Send + Sync),
    aborted: &(dyn Fn() -> bool + Send + Sync),
) -> Result<PruneSummary, DatastoreError> {
    let mut summary = PruneSummary::default();
    if params.keep.keeps_all() {
        log("no keep options given - keeping every snapshot".to_string());
    }
    let would = if dry_run { "would " } else { "" };
    for ns in store
        .tree()
        .list_namespaces(&params.ns, params.max_depth)
        .await?
    {
        for group in store.tree().list_groups(&ns).await? {
            if !group_selected(&params.filters, &group) {
                continue;
            }
            if aborted() {
                return Err(DatastoreError::Internal("prune job aborted".into()));
            }
            summary.groups += 1;
            log(format!("Pruning group {}", label(&ns, &group.path())));
            let snapshots = store.tree().list_snapshots(&ns, &group).await?;
            let candidates: Vec<PruneCandidate> = snapshots
                .iter()
                .map(|s| PruneCandidate {
                    time: s.dir.time,
                    finished: s.finished,
                    protected: s.protected,
                })
                .collect();
            let marks = match params.keep.keeps_all() {
                true => candidates
                    .iter()
                    .map(|c| match c.protected {
                        true => PruneMark::Protected,
                        false => PruneMark::Keep,
                    })
                    .collect(),
                false => compute_prune(&candidates, &params.keep),
            };
            // Oldest first, like PBS.
            for (info, mark) in snapshots.iter().zip(marks) {
                let name = label(&ns, &info.dir.path());
                // A retention lock keeps what the keep options would remove, in a dry run too.
                let held = match mark.keep() {
                    true => None,
                    false => store.retention().hold(&ns, &info.dir)?,
                };
                if let Some(why) = held {
                    log(format!("{would}keep {name} (retention lock: {why})"));
                    summary.kept.push(name);
                    continue;
                }
                log(format!("{would}{} {name}", mark.as_log_str()));
                if mark.keep() {
                    summary.kept.push(name);
                    continue;
                }
                if dry_run {
                    summary.removed.push(name);
                    continue;
                }
                match store.tree().remove_snapshot(&ns, &info.dir, false).await {
                    Ok(()) => summary.removed.push(name),
                    Err(e) => {
                        log(format!("failed to remove snapshot {name}: {e}"));
                        summary.failed.push(format!("{name}: {e}"));
                    }
                }
            }
        }
    }
    log(format!(
        "{} groups, {} snapshots {}removed, {} kept, {} removals failed",
        summary.groups,
        summary.removed.len(),
        if dry_run { "to be " } else { "" },
        summary.kept.len(),
        summary.failed.len()
    ));
    Ok(summary)
}
