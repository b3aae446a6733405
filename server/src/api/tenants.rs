//! `/tenants` (DESIGN decision 9): list the tenants a caller may see, let a superuser create
//! one, and report per-tenant usage of its datastores.

use http::Response;
use serde::Serialize;
use serde_json::json;

use super::context::{ds_error, Ctx};
use crate::auth::ids::is_safe_id;
use crate::datastore::Datastore;
use crate::format::names::BackupNamespace;
use crate::net::{json_data, Body, HttpError};

pub fn list(ctx: &Ctx) -> Response<Body> {
    let tenants: Vec<_> = ctx
        .state
        .auth
        .tenants()
        .into_iter()
        .filter(|t| ctx.state.auth.can_see_tenant(&ctx.id, &t.id))
        .collect();
    json_data(tenants)
}

/// `POST /tenants` with `id` and optional `comment`; superusers only.
pub fn create(ctx: &Ctx) -> Result<Response<Body>, HttpError> {
    if !ctx.id.superuser {
        return Err(HttpError::forbidden());
    }
    let id = ctx.params.required_str("id")?;
    if !is_safe_id(&id) {
        return Err(HttpError::bad_param("id", "must be a safe-id"));
    }
    let comment = ctx.params.str("comment")?;
    let created = ctx
        .state
        .auth
        .ensure_tenant(&id, comment.as_deref())
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    if !created {
        return Err(HttpError::bad_request(format!(
            "tenant '{id}' already exists"
        )));
    }
    Ok(json_data(serde_json::Value::Null))
}

/// Usage of one datastore.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct StoreUsage {
    pub store: String,
    pub backend_type: String,
    pub namespace_count: u64,
    pub group_count: u64,
    pub snapshot_count: u64,
    /// Sum of the manifest file sizes of finished snapshots (what clients sent, logically).
    pub logical_bytes: u64,
}

/// Walks a datastore and adds up its content (best effort: unreadable manifests count 0).
pub async fn store_usage(store: &Datastore) -> Result<StoreUsage, HttpError> {
    let mut usage = StoreUsage {
        store: store.name().to_string(),
        backend_type: store.backend_kind().to_string(),
        ..Default::default()
    };
    let namespaces = store
        .list_namespaces(&BackupNamespace::root(), None)
        .await
        .map_err(ds_error)?;
    usage.namespace_count = namespaces.len() as u64;
    for ns in &namespaces {
        for group in store.list_groups(ns).await.map_err(ds_error)? {
            usage.group_count += 1;
            for snap in store.list_snapshots(ns, &group).await.map_err(ds_error)? {
                usage.snapshot_count += 1;
                if snap.finished {
                    if let Ok((manifest, _)) = store.load_manifest(ns, &snap.dir).await {
                        usage.logical_bytes += manifest.files.iter().map(|f| f.size).sum::<u64>();
                    }
                }
            }
        }
    }
    Ok(usage)
}

/// `GET /tenants/{id}/usage`: `{tenant, datastores:[…]}` over the stores the caller may see.
pub async fn usage(ctx: &Ctx, tenant: &str) -> Result<Response<Body>, HttpError> {
    if !ctx.state.auth.tenant_exists(tenant) || !ctx.state.auth.can_see_tenant(&ctx.id, tenant) {
        return Err(HttpError::not_found(format!(
            "tenant '{tenant}' does not exist"
        )));
    }
    let mut stores = Vec::new();
    for entry in ctx.state.datastores() {
        if entry.tenant != tenant || !ctx.state.auth.store_visible(&ctx.id, &entry.name, tenant) {
            continue;
        }
        stores.push(store_usage(&entry.store).await?);
    }
    Ok(json_data(json!({ "tenant": tenant, "datastores": stores })))
}
