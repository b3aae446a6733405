//! `POST /admin/datastore/{store}/prune` (docs/formats.md#prune-selection, #prune-execution):
//! per-group prune with PBS's selection, oldest-first results and deletions, dry-run and task mode.

use std::sync::Arc;

use http::Response;

use super::records::{ns_field, PruneItem};
use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::datastore::{compute_prune, Datastore, KeepOptions, PruneCandidate, PruneMark};
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace};
use crate::net::{json_data, Body, HttpError, Params};
use crate::state::DatastoreEntry;

/// Reads the `keep-*` options; each given one must be ≥ 1 (0 is treated as unused).
pub fn keep_options(params: &Params) -> Result<KeepOptions, HttpError> {
    Ok(KeepOptions {
        keep_last: params.u64("keep-last")?,
        keep_hourly: params.u64("keep-hourly")?,
        keep_daily: params.u64("keep-daily")?,
        keep_weekly: params.u64("keep-weekly")?,
        keep_monthly: params.u64("keep-monthly")?,
        keep_yearly: params.u64("keep-yearly")?,
    })
}

/// Decides and (unless `dry_run`) deletes; returns the decisions oldest first. Deletion
/// failures are logged and the prune goes on.
pub async fn run_prune(
    store: &Datastore,
    ns: &BackupNamespace,
    group: &BackupGroup,
    opts: &KeepOptions,
    dry_run: bool,
    log: &(dyn Fn(String) + Send + Sync),
) -> Result<Vec<PruneItem>, HttpError> {
    let snapshots = store
        .tree()
        .list_snapshots(ns, group)
        .await
        .map_err(ds_error)?;
    let candidates: Vec<PruneCandidate> = snapshots
        .iter()
        .map(|s| PruneCandidate {
            time: s.dir.time,
            finished: s.finished,
            protected: s.protected,
        })
        .collect();
    let marks = if opts.keeps_all() {
        log("no keep options given - keeping every snapshot".to_string());
        candidates
            .iter()
            .map(|c| {
                if c.protected {
                    PruneMark::Protected
                } else {
                    PruneMark::Keep
                }
            })
            .collect()
    } else {
        compute_prune(&candidates, opts)
    };
    let prefix = if dry_run { "would " } else { "" };
    let mut items = Vec::with_capacity(snapshots.len());
    let mut to_remove: Vec<BackupDir> = Vec::new();
    for (info, mark) in snapshots.iter().zip(marks) {
        // A retention lock keeps what the keep options would remove, in a dry run too.
        let held = match mark.keep() {
            true => None,
            false => store.retention().hold(ns, &info.dir).map_err(ds_error)?,
        };
        match &held {
            Some(why) => log(format!("{prefix}keep {} (retention lock: {why})", info.dir)),
            None => log(format!("{prefix}{} {}", mark.as_log_str(), info.dir)),
        }
        let keep = mark.keep() || held.is_some();
        if !keep {
            to_remove.push(info.dir.clone());
        }
        items.push(PruneItem {
            backup_type: info.dir.group.ty.as_str().to_string(),
            backup_id: info.dir.group.id.clone(),
            backup_time: info.dir.time,
            keep,
            protected: info.protected || mark == PruneMark::Protected,
            ns: if dry_run { ns_field(ns) } else { None },
            retention_lock: held,
        });
    }
    if !dry_run {
        for dir in to_remove {
            if let Err(e) = store.tree().remove_snapshot(ns, &dir, false).await {
                log(format!("failed to remove snapshot {dir}: {e}"));
                tracing::warn!("prune: failed to remove snapshot {dir}: {e}");
            }
        }
    }
    Ok(items)
}

pub async fn post(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let group = ctx.params.group()?;
    let opts = keep_options(&ctx.params)?;
    let dry_run = ctx.params.bool_or("dry-run", false)?;
    let use_task = ctx.params.bool_or("use-task", false)?;
    ctx.check_group(entry, &ns, &group, Privileges::MODIFY, Privileges::PRUNE)
        .await?;
    if !use_task {
        let items = run_prune(&entry.store, &ns, &group, &opts, dry_run, &|_| {}).await?;
        return Ok(json_data(items));
    }
    let store: Arc<Datastore> = entry.store.clone();
    let worker_id = if ns.is_root() {
        format!("{}:{group}", entry.name)
    } else {
        format!("{}:{}:{group}", entry.name, ns.display_path())
    };
    let upid = ctx.state.tasks.spawn(
        "prune",
        Some(&worker_id),
        &ctx.id.authid.to_string(),
        move |log| async move {
            log.log(format!("prune group {group}"));
            let sink = {
                let log = log.clone();
                move |line: String| log.log(line)
            };
            run_prune(&store, &ns, &group, &opts, dry_run, &sink)
                .await
                .map(|_| ())
                .map_err(|e| e.message)
        },
    );
    Ok(json_data(upid))
}
