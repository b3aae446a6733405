//! `/admin/datastore/{store}/namespace`: list (depth-first, parent first), create, delete.

use http::Response;
use serde_json::json;

use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::format::names::BackupNamespace;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

/// Deepest namespace nesting PBS allows.
const MAX_DEPTH: u64 = 7;

pub async fn list(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let parent = ctx.params.namespace("parent")?;
    let max_depth = match ctx.params.u64("max-depth")? {
        Some(d) if d > MAX_DEPTH => {
            return Err(HttpError::bad_param("max-depth", "must be between 0 and 7"))
        }
        d => d.map(|d| d as usize),
    };
    let namespaces = entry
        .store
        .tree()
        .list_namespaces(&parent, max_depth)
        .await
        .map_err(ds_error)?;
    let scope = ctx.store_scope(entry);
    let items: Vec<_> = namespaces
        .iter()
        .filter(|ns| scope.namespace_listed(ns))
        .map(|ns| json!({ "ns": ns.display_path() }))
        .collect();
    Ok(json_data(items))
}

fn parent_of(ns: &BackupNamespace) -> BackupNamespace {
    ns.parent().unwrap_or_else(BackupNamespace::root)
}

pub async fn create(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let parent = ctx.params.namespace("parent")?;
    let name = ctx.params.required_str("name")?;
    if ctx.privs(entry, &parent).intersects(Privileges::MODIFY) {
        let ns = entry
            .store
            .tree()
            .create_namespace(&parent, &name)
            .await
            .map_err(ds_error)?;
        Ok(json_data(ns.display_path()))
    } else {
        Err(HttpError::forbidden())
    }
}

pub async fn delete(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    if ns.is_root() {
        return Err(HttpError::bad_request("cannot delete the root namespace"));
    }
    let delete_groups = ctx.params.bool_or("delete-groups", false)?;
    let error_on_protected = ctx.params.bool_or("error-on-protected", true)?;
    if !ctx
        .privs(entry, &parent_of(&ns))
        .intersects(Privileges::MODIFY)
    {
        return Err(HttpError::forbidden());
    }
    let stats = entry
        .store
        .tree()
        .delete_namespace(&ns, delete_groups)
        .await
        .map_err(ds_error)?;
    if stats.protected_snapshots > 0 && error_on_protected {
        return Err(HttpError::bad_request(format!(
            "namespace '{}' still contains {} protected snapshot(s)",
            ns.display_path(),
            stats.protected_snapshots
        )));
    }
    Ok(json_data(json!({
        "removed-namespaces": stats.removed_namespaces,
        "removed-groups": stats.removed_groups,
        "removed-snapshots": stats.removed_snapshots,
        "protected-snapshots": stats.protected_snapshots,
    })))
}
