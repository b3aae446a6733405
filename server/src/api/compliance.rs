//! `GET /tenants/{id}/compliance-report?format=json|csv&store=NAME`: the compliance report of
//! the tenant's datastores the caller may see, holding only the groups it may see and the job
//! history only with store figures (see `auth::scope` and `metering::compliance`).

use http::{Response, StatusCode};

use super::context::{ds_error, Ctx};
use super::tenants::tenant_stores;
use crate::metering::compliance::{store_report, to_csv, ComplianceReport};
use crate::net::body::text;
use crate::net::{json_data, Body, HttpError};

pub async fn report(ctx: &Ctx, tenant: &str) -> Result<Response<Body>, HttpError> {
    let format = ctx
        .params
        .str("format")?
        .unwrap_or_else(|| "json".to_string());
    if format != "json" && format != "csv" {
        return Err(HttpError::bad_param("format", "must be 'json' or 'csv'"));
    }
    let only = ctx.params.str("store")?;
    let mut entries: Vec<_> = tenant_stores(ctx, tenant)?
        .into_iter()
        .filter(|e| ctx.store_scope(e).listed())
        .collect();
    if let Some(name) = &only {
        entries.retain(|e| &e.name == name);
        if entries.is_empty() {
            return Err(HttpError::not_found(format!(
                "datastore '{name}' does not exist"
            )));
        }
    }
    let mut datastores = Vec::new();
    for entry in &entries {
        let scope = ctx.store_scope(entry);
        datastores.push(store_report(&entry.store, &scope).await.map_err(ds_error)?);
    }
    let report = ComplianceReport {
        tenant: tenant.to_string(),
        generated: chrono::Utc::now().timestamp(),
        datastores,
    };
    Ok(match format.as_str() {
        "csv" => text(StatusCode::OK, "text/csv; charset=utf-8", to_csv(&report)),
        _ => json_data(report),
    })
}
