//! `/tenants`: list or show the tenants a caller may see, let a superuser create one, and
//! report per-tenant usage of its datastores, each filtered by the rules of `auth::scope`.

use http::Response;
use std::sync::Arc;

use serde_json::{json, Value};

use super::context::{ds_error, Ctx};
use crate::auth::ids::is_safe_id;
use crate::auth::Tenant;
use crate::metering::usage::tenant_usage;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

/// One tenant as `/tenants` shows it: id and comment, plus the tenant-wide figures (physical
/// usage, quota, warning) for callers allowed to see them.
fn item(ctx: &Ctx, tenant: Tenant) -> Value {
    let mut item = json!({ "id": tenant.id });
    if let Some(comment) = tenant.comment {
        item["comment"] = json!(comment);
    }
    if ctx.scope().tenant_figures(&tenant.id) {
        let meter = ctx.state.meter.tenant(&tenant.id);
        item["physical-bytes"] = json!(meter.used());
        item["quota-bytes"] = json!(meter.quota());
        item["quota-warning"] = json!(meter.warning());
    }
    item
}

/// `GET /tenants`: the tenants the caller sees (its own; a superuser's: all).
pub fn list(ctx: &Ctx) -> Response<Body> {
    let scope = ctx.scope();
    let tenants: Vec<_> = ctx
        .state
        .auth
        .tenants()
        .into_iter()
        .filter(|t| scope.sees_tenant(&t.id))
        .map(|t| item(ctx, t))
        .collect();
    json_data(tenants)
}

/// `GET /tenants/{id}`: one tenant as in the list; 404 for an unknown or foreign tenant.
pub fn get(ctx: &Ctx, tenant: &str) -> Result<Response<Body>, HttpError> {
    let found = ctx
        .state
        .auth
        .tenants()
        .into_iter()
        .find(|t| t.id == tenant && ctx.scope().sees_tenant(&t.id))
        .ok_or_else(|| unknown_tenant(tenant))?;
    Ok(json_data(item(ctx, found)))
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

/// `GET /tenants/{id}/usage`: the usage document (see `metering::usage`) over the tenant's
/// datastores whose figures the caller may see, with the quota block for callers allowed to
/// see tenant-wide figures. A caller allowed neither gets 403: a document of zeros would
/// misstate the usage.
pub async fn usage(ctx: &Ctx, tenant: &str) -> Result<Response<Body>, HttpError> {
    let scope = ctx.scope();
    let entries: Vec<_> = tenant_stores(ctx, tenant)?
        .into_iter()
        .filter(|e| ctx.store_scope(e).figures())
        .collect();
    let with_quota = scope.tenant_figures(tenant);
    if entries.is_empty() && !with_quota {
        return Err(HttpError::forbidden());
    }
    let usage = tenant_usage(&ctx.state.meter, tenant, &entries, with_quota)
        .await
        .map_err(ds_error)?;
    Ok(json_data(usage))
}

fn unknown_tenant(tenant: &str) -> HttpError {
    HttpError::not_found(format!("tenant '{tenant}' does not exist"))
}

/// The datastores of `tenant`; 404 for an unknown tenant or one the caller does not see.
pub fn tenant_stores(ctx: &Ctx, tenant: &str) -> Result<Vec<Arc<DatastoreEntry>>, HttpError> {
    if !ctx.state.auth.tenant_exists(tenant) || !ctx.scope().sees_tenant(tenant) {
        return Err(unknown_tenant(tenant));
    }
    Ok(ctx
        .state
        .datastores()
        .into_iter()
        .filter(|e| e.tenant == tenant)
        .collect())
}
