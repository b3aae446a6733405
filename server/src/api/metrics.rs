//! `GET /metrics`: Prometheus exposition of what the caller may see. Authentication is the
//! API's (ticket cookie or API token; Prometheus sends a token with
//! `authorization: {type: PBSAPIToken, credentials: "user@pbs!metrics:SECRET"}`); a superuser
//! sees every tenant, anyone else their own tenant's datastores.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};

use crate::metering::{metrics, usage};
use crate::net::body::{text, Body};
use crate::net::HttpError;
use crate::state::AppState;

/// True for the metrics path, answered before API routing.
pub fn is_metrics_path<B>(req: &Request<B>) -> bool {
    req.uri().path() == "/metrics"
}

/// Answers `/metrics`.
pub async fn answer<B>(
    state: &Arc<AppState>,
    req: &Request<B>,
) -> Result<Response<Body>, HttpError> {
    if req.method() != Method::GET {
        return Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed on /metrics", req.method()),
        ));
    }
    let id = state
        .auth
        .authenticate(req.headers(), req.method())
        .map_err(|_| HttpError::unauthorized())?;
    let entries: Vec<_> = state
        .datastores()
        .into_iter()
        .filter(|e| state.auth.store_visible(&id, &e.name, &e.tenant))
        .collect();
    let mut tenants: std::collections::BTreeSet<String> =
        entries.iter().map(|e| e.tenant.clone()).collect();
    if state.auth.can_see_tenant(&id, &id.tenant) {
        tenants.insert(id.tenant.clone());
    }
    if id.superuser {
        tenants.extend(state.auth.tenants().into_iter().map(|t| t.id));
    }
    let mut usages = Vec::new();
    for tenant in tenants {
        let u = usage::tenant_usage(state, &tenant, &entries)
            .await
            .map_err(crate::api::context::ds_error)?;
        usages.push(u);
    }
    let pending = match id.superuser {
        true => state.meter.outbox_pending(),
        false => None,
    };
    let body = metrics::render(&usages, &state.meter.event_counts(), pending);
    Ok(text(StatusCode::OK, metrics::CONTENT_TYPE, body))
}
