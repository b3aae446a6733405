//! The part of a Tenant's status the reconcile owns (conditions `Ready`, `Progressing`,
//! `Degraded`, endpoint, fingerprint, repository, datastores), written only when it changed.
//! The usage poller owns `usage`, `usedBytes` and the conditions `UsageAvailable` and
//! `QuotaWarning`; both write with a `resourceVersion` precondition, so neither overwrites
//! the other's newer figures.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::crd::{condition, set_condition, Condition, Tenant, TenantStatus};
use crate::render::{self, Bound, Names};

/// The reconcile's fields of the status.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Owned {
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    pub endpoint: Option<String>,
    pub certificate_fingerprint: Option<String>,
    pub repository: Option<String>,
    pub credentials_secret: Option<String>,
    pub datastores: Vec<String>,
}

impl Owned {
    fn of(s: &TenantStatus) -> Self {
        Owned {
            observed_generation: s.observed_generation,
            conditions: s.conditions.clone(),
            endpoint: s.endpoint.clone(),
            certificate_fingerprint: s.certificate_fingerprint.clone(),
            repository: s.repository.clone(),
            credentials_secret: s.credentials_secret.clone(),
            datastores: s.datastores.clone(),
        }
    }
}

/// True when the Deployment has a ready replica.
pub(super) fn deployment_ready(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        >= 1
}

/// The status the reconcile wants, on top of the current one.
pub(super) fn desired(
    tenant: &Tenant,
    bound: &Bound,
    ready: bool,
    names: &Names,
    fingerprint: Option<String>,
    now: &str,
) -> Owned {
    let gen = tenant.metadata.generation;
    let mut conditions = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let (rmsg, pmsg) = if ready {
        (
            "server is ready".to_string(),
            "rollout complete".to_string(),
        )
    } else {
        (
            "waiting for the server pod to become ready".to_string(),
            format!("Deployment {} rolling out", names.workload),
        )
    };
    let pick = |ok: bool, yes: &'static str, no: &'static str| if ok { yes } else { no };
    set_condition(
        &mut conditions,
        condition(
            "Ready",
            ready,
            pick(ready, "ServerReady", "ServerNotReady"),
            rmsg,
            gen,
            now,
        ),
    );
    set_condition(
        &mut conditions,
        condition(
            "Progressing",
            !ready,
            pick(ready, "RolloutComplete", "RollingOut"),
            pmsg,
            gen,
            now,
        ),
    );
    let degraded = !bound.rejected.is_empty() || fingerprint.is_none();
    let dmsg = if fingerprint.is_none() {
        "TLS Secret not available yet".to_string()
    } else {
        bound
            .rejected
            .iter()
            .map(|r| format!("{} {}: {}", r.kind, r.name, r.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    set_condition(
        &mut conditions,
        condition(
            "Degraded",
            degraded,
            pick(degraded, "ChildrenRejected", "AsExpected"),
            dmsg,
            gen,
            now,
        ),
    );
    Owned {
        observed_generation: gen,
        conditions,
        endpoint: Some(render::endpoint(tenant)),
        certificate_fingerprint: fingerprint,
        repository: bound
            .datastores
            .first()
            .map(|d| render::repository(tenant, &d.store_name())),
        credentials_secret: Some(names.credentials.clone()),
        datastores: bound.datastores.iter().map(|d| d.store_name()).collect(),
    }
}

/// Equal apart from transition timestamps (which `set_condition` keeps anyway).
fn same(a: &Owned, b: &Owned) -> bool {
    let strip = |s: &Owned| {
        let mut s = s.clone();
        s.conditions
            .iter_mut()
            .for_each(|c| c.last_transition_time.clear());
        s
    };
    strip(a) == strip(b)
}

/// Writes `want` unless the Tenant's status already says it; `Ok(true)` when written.
pub(super) async fn write(ctx: &Context, tenant: &Tenant, want: &Owned) -> Result<bool, Error> {
    let current = tenant.status.as_ref().map(Owned::of);
    if current.as_ref().is_some_and(|c| same(c, want)) {
        return Ok(false);
    }
    let patch = json!({
        "metadata": {"resourceVersion": tenant.resource_version()},
        "status": {
            "observedGeneration": want.observed_generation,
            "conditions": want.conditions,
            "endpoint": want.endpoint,
            "certificateFingerprint": want.certificate_fingerprint,
            "repository": want.repository,
            "credentialsSecret": want.credentials_secret,
            "datastores": want.datastores,
        }
    });
    let api: Api<Tenant> = ctx.api(&tenant.namespace().unwrap_or_default());
    api.patch_status(
        &tenant.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(Error::kube("update status of", "Tenant", tenant.name_any()))?;
    Ok(true)
}
