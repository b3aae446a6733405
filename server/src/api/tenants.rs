//! `/tenants` (DESIGN decision 9): list the tenants a caller may see, let a superuser create
//! one, and report per-tenant usage of its datastores.

use http::Response;
use std::sync::Arc;

use serde_json::json;

use super::context::{ds_error, Ctx};
use crate::auth::ids::is_safe_id;
use crate::metering::usage::tenant_usage;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

/// `GET /tenants`: id and comment of each visible tenant, with its quota and physical usage.
pub fn list(ctx: &Ctx) -> Response<Body> {
    let tenants: Vec<_> = ctx
        .state
        .auth
        .tenants()
        .into_iter()
        .filter(|t| ctx.state.auth.can_see_tenant(&ctx.id, &t.id))
        .map(|t| {
            let meter = ctx.state.meter.tenant(&t.id);
            let mut item = json!({
                "id": t.id,
                "physical-bytes": meter.used(),
                "quota-bytes": meter.quota(),
                "quota-warning": meter.warning(),
            });
            if let Some(comment) = t.comment {
                item["comment"] = json!(comment);
            }
            item
        })
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

/// `GET /tenants/{id}/usage`: the usage document (see `metering::usage`) over the stores the
/// caller may see.
pub async fn usage(ctx: &Ctx, tenant: &str) -> Result<Response<Body>, HttpError> {
    let entries = visible_stores(ctx, tenant)?;
    let usage = tenant_usage(&ctx.state, tenant, &entries)
        .await
        .map_err(ds_error)?;
    Ok(json_data(usage))
}

/// The tenant's datastores the caller may see; 404 for an unknown or foreign tenant.
pub fn visible_stores(ctx: &Ctx, tenant: &str) -> Result<Vec<Arc<DatastoreEntry>>, HttpError> {
    if !ctx.state.auth.tenant_exists(tenant) || !ctx.state.auth.can_see_tenant(&ctx.id, tenant) {
        return Err(HttpError::not_found(format!(
            "tenant '{tenant}' does not exist"
        )));
    }
    Ok(ctx
        .state
        .datastores()
        .into_iter()
        .filter(|e| e.tenant == tenant && ctx.state.auth.store_visible(&ctx.id, &e.name, tenant))
        .collect())
}
