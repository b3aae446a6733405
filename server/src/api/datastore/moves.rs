//! `POST /admin/datastore/{store}/move-group` and `…/move-namespace` (PBS 4.2): checked at
//! once (so an impossible move is refused with a clear error), then run as a task (`move-group`
//! / `move-namespace`) whose UPID the client follows through the task log and status.

use http::Response;

use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::format::names::{BackupNamespace, MAX_NAMESPACE_DEPTH};
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

fn parent_of(ns: &BackupNamespace) -> BackupNamespace {
    ns.parent().unwrap_or_else(BackupNamespace::root)
}

/// `ns` as PBS writes it in worker ids (`""` for the root).
fn ns_text(ns: &BackupNamespace) -> String {
    ns.display_path()
}

/// `backup-type`, `backup-id`, `ns`, `target-ns`, `merge-group` (default true). Needs
/// `Datastore.Modify` on both namespaces, or for the group's owner `Datastore.Prune` on the
/// source and `Datastore.Backup` on the target.
pub async fn move_group(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let target = ctx.params.namespace("target-ns")?;
    if ctx.params.raw("target-ns").is_none() {
        return Err(HttpError::missing_param("target-ns"));
    }
    let group = ctx.params.group()?;
    let merge = ctx.params.bool_or("merge-group", true)?;
    let source_privs = ctx.privs(entry, &ns);
    let target_privs = ctx.privs(entry, &target);
    let full =
        source_privs.contains(Privileges::MODIFY) && target_privs.contains(Privileges::MODIFY);
    let as_owner = source_privs.contains(Privileges::PRUNE)
        && target_privs.contains(Privileges::BACKUP)
        && ctx.owns(&entry.store, &ns, &group).await?;
    if !full && !as_owner {
        return Err(HttpError::forbidden());
    }
    let store = entry.store.clone();
    store
        .tree()
        .check_move_group(&ns, &group, &target, merge)
        .await
        .map_err(ds_error)?;
    let worker_id = format!(
        "{}:{}:{}",
        entry.name,
        if ns.is_root() {
            group.path()
        } else {
            format!("{}/{}", ns_text(&ns), group.path())
        },
        ns_text(&target)
    );
    let authid = ctx.id.authid.to_string();
    let upid = ctx.state.tasks.spawn(
        "move-group",
        Some(&worker_id),
        &authid,
        move |log| async move {
            let sink = move |line: String| log.log(line);
            store
                .tree()
                .move_group(&ns, &group, &target, merge, &sink)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
    Ok(json_data(upid))
}

/// `ns`, `target-ns`, `max-depth`, `delete-source` (default true), `merge-groups` (default
/// true). Needs `Datastore.Modify` on the parents of both namespaces, like creating and
/// deleting namespaces.
pub async fn move_namespace(
    ctx: &Ctx,
    entry: &DatastoreEntry,
) -> Result<Response<Body>, HttpError> {
    if ctx.params.raw("ns").is_none() {
        return Err(HttpError::missing_param("ns"));
    }
    if ctx.params.raw("target-ns").is_none() {
        return Err(HttpError::missing_param("target-ns"));
    }
    let ns = ctx.params.namespace("ns")?;
    let target = ctx.params.namespace("target-ns")?;
    let max_depth = match ctx.params.u64("max-depth")? {
        Some(d) if d > MAX_NAMESPACE_DEPTH as u64 => {
            return Err(HttpError::bad_param("max-depth", "must be between 0 and 7"))
        }
        d => d.map(|d| d as usize),
    };
    let delete_source = ctx.params.bool_or("delete-source", true)?;
    let merge = ctx.params.bool_or("merge-groups", true)?;
    for checked in [&ns, &target] {
        if !ctx
            .privs(entry, &parent_of(checked))
            .contains(Privileges::MODIFY)
        {
            return Err(HttpError::forbidden());
        }
    }
    let store = entry.store.clone();
    store
        .tree()
        .check_move_namespace(&ns, &target, max_depth, merge)
        .await
        .map_err(ds_error)?;
    let worker_id = format!("{}:{}:{}", entry.name, ns_text(&ns), ns_text(&target));
    let authid = ctx.id.authid.to_string();
    let upid = ctx.state.tasks.spawn(
        "move-namespace",
        Some(&worker_id),
        &authid,
        move |log| async move {
            let sink = move |line: String| log.log(line);
            store
                .tree()
                .move_namespace(&ns, &target, max_depth, delete_source, merge, &sink)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
    Ok(json_data(upid))
}
