//! `GET /metrics`: Prometheus exposition of what the caller may see. Authentication is the
//! API's (ticket cookie or API token; Prometheus sends a token with
//! `authorization: {type: PBSAPIToken, credentials: "user@pbs!metrics:SECRET"}`); without
//! credentials the answer is 401 and holds nothing. The series follow `auth::scope`:
//! per-datastore series (usage, S3 requests, events) for datastores whose figures the caller
//! may see, tenant series for tenants whose tenant-wide figures it may see, the webhook queue
//! for superusers. A caller allowed none of these gets the family headers without samples.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};

use crate::metering::{metrics, usage};
use crate::net::body::{text, Body};
use crate::net::HttpError;
use crate::protocol::backup::budget::{BudgetUsage, UploadLimits};
use crate::state::AppState;

/// True for the metrics path, answered before API routing.
pub fn is_metrics_path<B>(req: &Request<B>) -> bool {
    crate::net::path::path_is(req.uri().path(), &["metrics"])
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
    let id = super::authenticate(state, req.headers(), req.method(), "/metrics").await?;
    let scope = state.auth.scope(&id);
    let configured = state.datastores();
    // Datastores whose figures the caller may see, and the tenants with anything visible.
    let entries: Vec<_> = configured
        .iter()
        .filter(|e| scope.store(&e.name, &e.tenant).figures())
        .cloned()
        .collect();
    let mut tenants: BTreeSet<String> = entries.iter().map(|e| e.tenant.clone()).collect();
    tenants.extend(
        state
            .auth
            .tenants()
            .into_iter()
            .map(|t| t.id)
            .filter(|t| scope.tenant_figures(t)),
    );
    let mut usages = Vec::new();
    for tenant in tenants {
        let with_quota = scope.tenant_figures(&tenant);
        let u = usage::tenant_usage(&state.meter, &tenant, &entries, with_quota)
            .await
            .map_err(crate::api::context::ds_error)?;
        usages.push(u);
    }
    // Event counters of a configured datastore follow its figures; those of a datastore no
    // longer configured are server figures.
    let server_figures = scope.server_figures();
    let events: BTreeMap<_, _> = state
        .meter
        .event_counts()
        .into_iter()
        .filter(|((tenant, store), _)| {
            match configured
                .iter()
                .find(|e| &e.name == store && &e.tenant == tenant)
            {
                Some(e) => scope.store(&e.name, &e.tenant).figures(),
                None => server_figures,
            }
        })
        .collect();
    let pending = match server_figures {
        true => state.meter.outbox_pending(),
        false => None,
    };
    let mut body = metrics::render(&usages, &events, pending);
    // The upload budget is server-wide: a server figure.
    if server_figures {
        body.push_str(&upload_budget(
            &state.uploads.server_usage(),
            state.uploads.limits(),
        ));
    }
    Ok(text(StatusCode::OK, metrics::CONTENT_TYPE, body))
}

/// Server-wide use of the backup sessions' memory budget (`[upload_limits]`), with its limits.
fn upload_budget(used: &BudgetUsage, limits: &UploadLimits) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let gauges = [
        (
            "pbs_cloud_upload_buffer_bytes",
            "Upload bytes (chunks, blobs, parameters) held in memory by backup sessions.",
            used.buffer_bytes,
        ),
        (
            "pbs_cloud_upload_buffer_limit_bytes",
            "Server-wide limit of upload_buffer_bytes (upload_limits.buffer_mib_per_server).",
            limits.buffer_bytes_per_server,
        ),
        (
            "pbs_cloud_upload_open_writers",
            "Index writers open in backup sessions.",
            used.writers,
        ),
        (
            "pbs_cloud_upload_index_entries",
            "Index entries held in memory by open index writers.",
            used.entries,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    }
    out
}
