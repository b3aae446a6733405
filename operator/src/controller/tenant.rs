//! Tenant reconcile: bind children, render, apply, report status and events.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as Finalizer};
use kube::{Api, Resource, ResourceExt};

use super::apply::{apply, delete_opt, get_opt};
use super::children::{patch_child_status, record_accepted_lock};
use super::{backoff, Context, Error, REQUEUE};
use crate::crd::{
    condition, set_condition, Datastore, PrunePolicy, RetentionLock, Tenant, TenantStatus,
};
use crate::render::{self, Bound, Credentials, Inputs, Names, TlsMaterial};

/// Finalizer that lets `deletionPolicy: Delete` remove data before the Tenant goes.
pub const FINALIZER: &str = "pbs.cloud/cleanup";

/// Controller entry: finalizer handling around [`reconcile_tenant`].
pub async fn reconcile_entry(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let ns = tenant.namespace().unwrap_or_default();
    let api: Api<Tenant> = ctx.api(&ns);
    let name = tenant.name_any();
    let c = ctx.clone();
    let res = finalizer(&api, FINALIZER, tenant, |event| async move {
        match event {
            Finalizer::Apply(t) => reconcile_tenant(&t, &c).await,
            Finalizer::Cleanup(t) => super::cleanup::cleanup(&t, &c).await,
        }
    })
    .await
    .map_err(|e| match e {
        FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => inner,
        other => Error::Finalizer {
            name,
            message: other.to_string(),
        },
    });
    let m = &ctx.metrics;
    m.reconciles.fetch_add(1, Ordering::Relaxed);
    m.reconcile_micros
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    if res.is_err() {
        m.reconcile_errors.fetch_add(1, Ordering::Relaxed);
    }
    res
}

/// Requeue policy after an error (logged).
pub fn error_policy(tenant: Arc<Tenant>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(tenant = %tenant.name_any(), "reconcile failed: {err}");
    backoff(err)
}

pub(super) async fn publish(
    ctx: &Context,
    tenant: &Tenant,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &tenant.object_ref(&())).await {
        tracing::debug!("event for Tenant {}: {e}", tenant.name_any());
    }
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Lists the children in the tenant's namespace from the API server (a consistent read: the
/// reflector stores may lag behind the watch event that triggered this reconcile).
async fn inputs(ctx: &Context, ns: &str) -> Result<Inputs, Error> {
    let lp = ListParams::default();
    Ok(Inputs {
        datastores: ctx
            .api::<Datastore>(ns)
            .list(&lp)
            .await
            .map_err(Error::kube("list", "Datastore", ns))?
            .items,
        prune_policies: ctx
            .api::<PrunePolicy>(ns)
            .list(&lp)
            .await
            .map_err(Error::kube("list", "PrunePolicy", ns))?
            .items,
        retention_locks: ctx
            .api::<RetentionLock>(ns)
            .list(&lp)
            .await
            .map_err(Error::kube("list", "RetentionLock", ns))?
            .items,
        access_key_ids: BTreeMap::new(),
    })
}

/// Reads each S3 datastore's access key id from its credentials Secret.
async fn resolve_keys(
    ctx: &Context,
    ns: &str,
    tenant: &Tenant,
    inputs: &mut Inputs,
) -> Result<(), Error> {
    let secrets: Api<Secret> = ctx.api(ns);
    for ds in &inputs.datastores {
        if ds.spec.tenant != tenant.name_any() {
            continue;
        }
        let Some(r) = ds
            .spec
            .s3
            .as_ref()
            .and_then(|s| s.credentials_secret.as_ref())
        else {
            continue;
        };
        let Some(secret) = get_opt(&secrets, "Secret", &r.name).await? else {
            continue;
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.access_key_id_key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&r.access_key_id_key).cloned())
            });
        if let Some(v) = value {
            inputs
                .access_key_ids
                .insert(ds.name_any(), v.trim().to_string());
        }
    }
    Ok(())
}

/// Renders and applies everything the Tenant owns, then updates its status.
pub async fn reconcile_tenant(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let ns = tenant.namespace().unwrap_or_default();
    let names = Names::of(tenant);
    let secrets: Api<Secret> = ctx.api(&ns);
    let mut inputs = inputs(ctx, &ns).await?;
    resolve_keys(ctx, &ns, tenant, &mut inputs).await?;
    let bound = render::bind(tenant, &inputs);

    let existing = get_opt(&secrets, "Secret", &names.credentials).await?;
    let creds = match existing.as_ref().and_then(Credentials::from_secret) {
        Some(c) => c,
        None => {
            let c = Credentials::generate(&tenant.name_any())?;
            apply(&secrets, "Secret", &render::credentials_secret(tenant, &c)?).await?;
            publish(
                ctx,
                tenant,
                EventType::Normal,
                "CredentialsCreated",
                format!(
                    "generated admin credentials in Secret {}",
                    names.credentials
                ),
            )
            .await;
            c
        }
    };

    let fingerprint = ensure_tls(tenant, ctx, &secrets, &names).await?;

    let config = render::render_config(tenant, &bound, &inputs, &creds);
    let old = get_opt(&secrets, "Secret", &names.config).await?;
    let old_text = old
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(render::CONFIG_KEY))
        .map(|v| v.0.clone());
    if old_text.as_deref() != Some(config.as_bytes()) {
        apply(&secrets, "Secret", &render::config_secret(tenant, &config)?).await?;
        let what = if old.is_some() {
            "ConfigChanged"
        } else {
            "ConfigCreated"
        };
        publish(ctx, tenant, EventType::Normal, what, format!("server config rendered with {} datastore(s), {} prune job(s), {} retention lock(s)", bound.datastores.len(), bound.prune_policies.len(), bound.retention_locks.len())).await;
    }

    if let Some(pvc) = render::data_pvc(tenant)? {
        apply(
            &ctx.api::<PersistentVolumeClaim>(&ns),
            "PersistentVolumeClaim",
            &pvc,
        )
        .await?;
    }
    let deploy = apply(
        &ctx.api::<Deployment>(&ns),
        "Deployment",
        &render::deployment(tenant, &bound, &ctx.image)?,
    )
    .await?;
    apply(
        &ctx.api::<Service>(&ns),
        "Service",
        &render::service(tenant)?,
    )
    .await?;
    let ingresses: Api<Ingress> = ctx.api(&ns);
    match render::ingress(tenant)? {
        Some(ing) => {
            apply(&ingresses, "Ingress", &ing).await?;
        }
        None if tenant
            .status
            .as_ref()
            .is_some_and(|s| s.endpoint.as_deref().is_some_and(|e| e.ends_with(":443"))) =>
        {
            delete_opt(&ingresses, "Ingress", &names.workload).await?;
        }
        None => {}
    }

    super::route::reconcile_route(ctx, tenant).await?;

    for r in &bound.rejected {
        publish(
            ctx,
            tenant,
            EventType::Warning,
            r.reason,
            format!("{} {}: {}", r.kind, r.name, r.message),
        )
        .await;
    }
    update_children(ctx, tenant, &bound, &inputs).await?;
    let ready = update_status(ctx, tenant, &bound, &deploy, &names, fingerprint, &creds).await?;
    Ok(Action::requeue(if ready {
        ctx.usage_interval
    } else {
        REQUEUE
    }))
}

/// Makes sure the TLS Secret exists and returns the certificate's fingerprint.
async fn ensure_tls(
    tenant: &Tenant,
    ctx: &Context,
    secrets: &Api<Secret>,
    names: &Names,
) -> Result<Option<String>, Error> {
    let tls_spec = tenant.spec.tls.clone().unwrap_or_default();
    if let Some(cert) = render::certificate(tenant)? {
        let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
        let api: Api<DynamicObject> = Api::namespaced_with(
            ctx.client.clone(),
            &tenant.namespace().unwrap_or_default(),
            &ApiResource::from_gvk(&gvk),
        );
        api.patch(
            &names.workload,
            &PatchParams::apply(render::MANAGER).force(),
            &Patch::Apply(&cert),
        )
        .await
        .map_err(Error::kube("apply", "Certificate", names.workload.clone()))?;
    }
    let existing = get_opt(secrets, "Secret", &names.tls).await?;
    let material = existing.as_ref().and_then(TlsMaterial::from_secret);
    let material = match material {
        Some(m) => m,
        None if tls_spec.secret_name.is_some() || tls_spec.cert_manager.is_some() => {
            return Ok(None)
        }
        None => {
            let m = render::generate_self_signed(tenant)?;
            apply(secrets, "Secret", &render::tls_secret(tenant, &m)?).await?;
            publish(
                ctx,
                tenant,
                EventType::Normal,
                "CertificateCreated",
                format!("self-signed certificate in Secret {}", names.tls),
            )
            .await;
            m
        }
    };
    Ok(Some(render::fingerprint(tenant, &material.cert_pem)?))
}

async fn update_children(
    ctx: &Context,
    tenant: &Tenant,
    bound: &Bound,
    inputs: &Inputs,
) -> Result<(), Error> {
    let ns = tenant.namespace().unwrap_or_default();
    let now = now();
    let tname = tenant.name_any();
    let rejected = |kind: &str, name: &str| {
        bound
            .rejected
            .iter()
            .find(|r| r.kind == kind && r.name == name)
    };
    let status = |kind: &str, name: String, gen: Option<i64>| match rejected(kind, &name) {
        Some(r) => (
            name,
            condition("Ready", false, r.reason, r.message.clone(), gen, &now),
        ),
        None => (
            name,
            condition(
                "Ready",
                true,
                "Bound",
                format!("rendered into Tenant {tname}"),
                gen,
                &now,
            ),
        ),
    };
    for ds in inputs.datastores.iter().filter(|d| d.spec.tenant == tname) {
        let (name, c) = status("Datastore", ds.name_any(), ds.metadata.generation);
        patch_child_status::<crate::crd::Datastore>(
            ctx,
            &ns,
            &name,
            ds.status.as_ref(),
            c,
            Some(tname.as_str()),
        )
        .await?;
    }
    for p in &bound.prune_policies {
        let (name, c) = status("PrunePolicy", p.name_any(), p.metadata.generation);
        patch_child_status::<crate::crd::PrunePolicy>(
            ctx,
            &ns,
            &name,
            p.status.as_ref(),
            c,
            Some(tname.as_str()),
        )
        .await?;
    }
    for r in bound.rejected.iter().filter(|r| r.kind == "PrunePolicy") {
        let p = inputs
            .prune_policies
            .iter()
            .find(|p| p.name_any() == r.name);
        if let Some(p) = p {
            let (name, c) = status("PrunePolicy", p.name_any(), p.metadata.generation);
            patch_child_status::<crate::crd::PrunePolicy>(
                ctx,
                &ns,
                &name,
                p.status.as_ref(),
                c,
                Some(tname.as_str()),
            )
            .await?;
        }
    }
    for l in &inputs.retention_locks {
        let is_bound = bound
            .retention_locks
            .iter()
            .any(|b| b.name_any() == l.name_any());
        let is_rejected = rejected("RetentionLock", &l.name_any()).is_some();
        if !is_bound && !is_rejected {
            continue;
        }
        let (name, c) = status("RetentionLock", l.name_any(), l.metadata.generation);
        patch_child_status::<crate::crd::RetentionLock>(
            ctx,
            &ns,
            &name,
            l.status.as_ref(),
            c,
            Some(tname.as_str()),
        )
        .await?;
        if is_bound && !is_rejected {
            record_accepted_lock(ctx, l).await?;
        }
    }
    Ok(())
}

async fn update_status(
    ctx: &Context,
    tenant: &Tenant,
    bound: &Bound,
    deploy: &Deployment,
    names: &Names,
    fingerprint: Option<String>,
    creds: &Credentials,
) -> Result<bool, Error> {
    let now = now();
    let gen = tenant.metadata.generation;
    let ready = deploy
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        >= 1;
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
    set_condition(
        &mut conditions,
        condition(
            "Ready",
            ready,
            if ready {
                "ServerReady"
            } else {
                "ServerNotReady"
            },
            rmsg,
            gen,
            &now,
        ),
    );
    set_condition(
        &mut conditions,
        condition(
            "Progressing",
            !ready,
            if ready {
                "RolloutComplete"
            } else {
                "RollingOut"
            },
            pmsg,
            gen,
            &now,
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
            if degraded {
                "ChildrenRejected"
            } else {
                "AsExpected"
            },
            dmsg,
            gen,
            &now,
        ),
    );
    let mut status = TenantStatus {
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
        used_bytes: tenant.status.as_ref().and_then(|s| s.used_bytes),
        usage: tenant.status.as_ref().and_then(|s| s.usage.clone()),
    };
    if let (true, Some(fp)) = (ready, status.certificate_fingerprint.clone()) {
        super::usage::refresh(ctx, tenant, &mut status, creds, &fp).await;
    }
    if tenant
        .status
        .as_ref()
        .is_some_and(|old| same_status(old, &status))
    {
        return Ok(ready);
    }
    let api: Api<Tenant> = ctx.api(&tenant.namespace().unwrap_or_default());
    api.patch_status(
        &tenant.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .map_err(Error::kube("update status of", "Tenant", tenant.name_any()))?;
    Ok(ready)
}

/// Equal apart from transition timestamps (which `set_condition` keeps anyway).
fn same_status(a: &TenantStatus, b: &TenantStatus) -> bool {
    let strip = |s: &TenantStatus| {
        let mut s = s.clone();
        s.conditions
            .iter_mut()
            .for_each(|c| c.last_transition_time.clear());
        s
    };
    strip(a) == strip(b)
}
