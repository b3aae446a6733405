//! Tenant reconcile: bind children, render, apply what differs, report status and events.
//! Everything is read from the caches; API requests are writes of things that changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ApiResource, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::apply::{apply, delete_opt, ensure, ensure_dynamic};
use super::children::{patch_child_status, record_accepted_lock};
use super::stores::{get, in_namespace};
use super::{backoff, status, Context, Error};
use crate::crd::{self, condition, Datastore, PrunePolicy, RetentionLock, SyncJob, Tenant};
use crate::render::{self, overlap, Bound, Credentials, Inputs, Names, TlsMaterial};

/// Finalizer that lets `deletionPolicy: Delete` remove data before the Tenant goes.
pub const FINALIZER: &str = "pbs.cloud/cleanup";

/// Controller entry: finalizer handling around [`reconcile_tenant`].
pub async fn reconcile_entry(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    ctx.started(&ObjectRef::from_obj(&*tenant));
    ctx.metrics
        .reconciles_in_flight
        .fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "{}/{}",
        tenant.namespace().unwrap_or_default(),
        tenant.name_any()
    );
    tracing::debug!(tenant = %name, "reconcile starts");
    let res = reconcile_with_finalizer(tenant, &ctx).await;
    tracing::debug!(tenant = %name, ok = res.is_ok(), "reconcile ends");
    let m = &ctx.metrics;
    m.reconciles_in_flight.fetch_sub(1, Ordering::Relaxed);
    m.reconciled("tenant", start.elapsed().as_micros() as u64, res.is_err());
    res
}

async fn reconcile_with_finalizer(
    tenant: Arc<Tenant>,
    ctx: &Arc<Context>,
) -> Result<Action, Error> {
    ctx.stores.ready().await?;
    let ns = tenant.namespace().unwrap_or_default();
    let api: Api<Tenant> = ctx.api(&ns);
    let name = tenant.name_any();
    let c = ctx.clone();
    finalizer(&api, FINALIZER, tenant, |event| async move {
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
    })
}

/// Requeue policy after an error (logged).
pub fn error_policy(tenant: Arc<Tenant>, err: &Error, _ctx: Arc<Context>) -> Action {
    if err.is_conflict() {
        tracing::debug!(tenant = %tenant.name_any(), "reconcile raced another write: {err}");
    } else {
        tracing::warn!(tenant = %tenant.name_any(), "reconcile failed: {err}");
    }
    backoff(err)
}

/// Secret `ns/name` from the cache, or (when the cache does not have it) read from the API
/// server: generated credentials and certificates are made only when the Secret really does
/// not exist, never because the cache lags behind an earlier write.
async fn cached_or_read(ctx: &Context, ns: &str, name: &str) -> Result<Option<Secret>, Error> {
    if let Some(s) = get(&ctx.stores.secrets, ns, name) {
        return Ok(Some((*s).clone()));
    }
    ctx.api::<Secret>(ns)
        .get_opt(name)
        .await
        .map_err(Error::kube("get", "Secret", name))
}

/// The children in the tenant's namespace, the S3 access key ids, prefix conflicts and which
/// SyncJobs' Secret keys exist, all from the caches.
pub(super) fn inputs(ctx: &Context, tenant: &Tenant) -> Inputs {
    let ns = tenant.namespace().unwrap_or_default();
    fn own<K: Clone>(v: Vec<Arc<K>>) -> Vec<K> {
        v.into_iter().map(|o| (*o).clone()).collect()
    }
    let mut inputs = Inputs {
        datastores: own(in_namespace(&ctx.stores.datastores, &ns)),
        prune_policies: own(in_namespace(&ctx.stores.prune_policies, &ns)),
        retention_locks: own(in_namespace(&ctx.stores.retention_locks, &ns)),
        sync_jobs: own(in_namespace(&ctx.stores.sync_jobs, &ns)),
        sync_secrets: BTreeSet::new(),
        access_key_ids: BTreeMap::new(),
        prefix_conflicts: BTreeMap::new(),
    };
    for j in &inputs.sync_jobs {
        let r = &j.spec.remote.secret_ref;
        if get(&ctx.stores.secrets, &ns, &r.name).is_some_and(|s| has_key(&s, &r.key)) {
            inputs.sync_secrets.insert(j.name_any());
        }
    }
    let all = ctx.stores.datastores.state();
    for ds in inputs
        .datastores
        .iter()
        .filter(|d| d.spec.tenant == tenant.name_any())
    {
        let Some(s3) = &ds.spec.s3 else { continue };
        if let Some(c) =
            overlap::conflict(ds, all.iter().map(|a| &**a), |d| ctx.stores.tenant_of(d))
        {
            inputs.prefix_conflicts.insert(ds.name_any(), c.message());
        }
        let Some(r) = &s3.credentials_secret else {
            continue;
        };
        let value = get(&ctx.stores.secrets, &ns, &r.name)
            .and_then(|s| render::secret_value(&s, &r.access_key_id_key));
        if let Some(v) = value {
            inputs.access_key_ids.insert(ds.name_any(), v);
        }
    }
    inputs
}

/// True when Secret `s` has `key` in `data` (or `stringData`, as a cache may hold it).
fn has_key(s: &Secret, key: &str) -> bool {
    s.data.as_ref().is_some_and(|d| d.contains_key(key))
        || s.string_data.as_ref().is_some_and(|d| d.contains_key(key))
}

/// Renders everything the Tenant owns, applies what differs from the caches, then updates
/// the status and the children's statuses when they changed.
pub async fn reconcile_tenant(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let ns = tenant.namespace().unwrap_or_default();
    let names = Names::of(tenant);
    let inputs = inputs(ctx, tenant);
    let bound = render::bind(tenant, &inputs);
    let secret = |name: &str| get(&ctx.stores.secrets, &ns, name);

    let creds = match cached_or_read(ctx, &ns, &names.credentials)
        .await?
        .as_ref()
        .and_then(Credentials::from_secret)
    {
        Some(c) => c,
        None => {
            let c = Credentials::generate(&tenant.name_any())?;
            let s = super::diff::stamp(render::credentials_secret(tenant, &c)?);
            apply(&ctx.api::<Secret>(&ns), "Secret", &s).await?;
            let note = format!(
                "generated admin credentials in Secret {}",
                names.credentials
            );
            ctx.publish(tenant, EventType::Normal, "CredentialsCreated", note)
                .await;
            c
        }
    };

    let fingerprint = ensure_tls(tenant, ctx, &names).await?;

    let config = render::render_config(tenant, &bound, &inputs, &creds);
    let cfg = ensure(
        ctx,
        "Secret",
        render::config_secret(tenant, &config)?,
        secret(&names.config),
    )
    .await?;
    if cfg.applied {
        let what = if cfg.created {
            "ConfigCreated"
        } else {
            "ConfigChanged"
        };
        let note = format!(
            "server config rendered with {} datastore(s), {} prune job(s), {} retention lock(s), {} sync job(s)",
            bound.datastores.len(),
            bound.prune_policies.len(),
            bound.retention_locks.len(),
            bound.sync_jobs.len()
        );
        ctx.publish(tenant, EventType::Normal, what, note).await;
    }

    if let Some(pvc) = render::data_pvc(tenant)? {
        let live = get(&ctx.stores.pvcs, &ns, &names.data);
        ensure::<PersistentVolumeClaim>(ctx, "PersistentVolumeClaim", pvc, live).await?;
    }
    let deploy = ensure::<Deployment>(
        ctx,
        "Deployment",
        render::deployment(tenant, &bound, &ctx.settings.image)?,
        get(&ctx.stores.deployments, &ns, &names.workload),
    )
    .await?
    .object;
    let live = get(&ctx.stores.services, &ns, &names.workload);
    ensure::<Service>(ctx, "Service", render::service(tenant)?, live).await?;
    let live = get(&ctx.stores.ingresses, &ns, &names.workload);
    match render::ingress(tenant)? {
        Some(ing) => {
            ensure::<Ingress>(ctx, "Ingress", ing, live).await?;
        }
        None if live.is_some() => {
            delete_opt(&ctx.api::<Ingress>(&ns), "Ingress", &names.workload).await?;
        }
        None => {}
    }

    super::route::reconcile_route(ctx, tenant).await?;

    update_children(ctx, tenant, &bound, &inputs).await?;
    let ready = status::deployment_ready(&deploy);
    let want = status::desired(tenant, &bound, ready, &names, fingerprint, &crd::now());
    status::write(ctx, tenant, &want).await?;
    Ok(Action::requeue(ctx.settings.resync))
}

/// Makes sure the TLS Secret exists and returns the certificate's fingerprint.
async fn ensure_tls(
    tenant: &Tenant,
    ctx: &Context,
    names: &Names,
) -> Result<Option<String>, Error> {
    let ns = tenant.namespace().unwrap_or_default();
    let tls_spec = tenant.spec.tls.clone().unwrap_or_default();
    if let Some(cert) = render::certificate(tenant)? {
        let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
        ensure_dynamic(ctx, "Certificate", &ApiResource::from_gvk(&gvk), cert).await?;
    }
    let existing = cached_or_read(ctx, &ns, &names.tls).await?;
    let material = existing.as_ref().and_then(TlsMaterial::from_secret);
    let material = match material {
        Some(m) => m,
        None if tls_spec.secret_name.is_some() || tls_spec.cert_manager.is_some() => {
            return Ok(None)
        }
        None => {
            let m = render::generate_self_signed(tenant)?;
            let s = super::diff::stamp(render::tls_secret(tenant, &m)?);
            apply(&ctx.api::<Secret>(&ns), "Secret", &s).await?;
            let note = format!("self-signed certificate in Secret {}", names.tls);
            ctx.publish(tenant, EventType::Normal, "CertificateCreated", note)
                .await;
            m
        }
    };
    Ok(Some(render::fingerprint(tenant, &material.cert_pem)?))
}

/// Publishes the Warning event of a rejected child (called when its status changed).
async fn warn_rejected(ctx: &Context, tenant: &Tenant, bound: &Bound, kind: &str, name: &str) {
    if let Some(r) = bound
        .rejected
        .iter()
        .find(|r| r.kind == kind && r.name == name)
    {
        let note = format!("{} {}: {}", r.kind, r.name, r.message);
        ctx.publish(tenant, EventType::Warning, r.reason, note)
            .await;
    }
}

/// Sets the `Ready` condition of every child bound to or rejected by this Tenant, when it
/// changed; a rejection is also reported as a Warning event then (once, not per reconcile).
async fn update_children(
    ctx: &Context,
    tenant: &Tenant,
    bound: &Bound,
    inputs: &Inputs,
) -> Result<(), Error> {
    let ns = tenant.namespace().unwrap_or_default();
    let now = crd::now();
    let tname = tenant.name_any();
    let t = Some(tname.as_str());
    let rejected = |kind: &str, name: &str| {
        bound
            .rejected
            .iter()
            .any(|r| r.kind == kind && r.name == name)
    };
    let cond = |kind: &str, name: &str, gen: Option<i64>| match bound
        .rejected
        .iter()
        .find(|r| r.kind == kind && r.name == name)
    {
        Some(r) => condition("Ready", false, r.reason, r.message.clone(), gen, &now),
        None => condition(
            "Ready",
            true,
            "Bound",
            format!("rendered into Tenant {tname}"),
            gen,
            &now,
        ),
    };
    for ds in inputs.datastores.iter().filter(|d| d.spec.tenant == tname) {
        let name = ds.name_any();
        let c = cond("Datastore", &name, ds.metadata.generation);
        if patch_child_status::<Datastore>(ctx, &ns, &name, ds.status.as_ref(), c, t).await? {
            warn_rejected(ctx, tenant, bound, "Datastore", &name).await;
        }
    }
    for p in &inputs.prune_policies {
        let name = p.name_any();
        let is_bound = bound.prune_policies.iter().any(|b| b.name_any() == name);
        if !is_bound && !rejected("PrunePolicy", &name) {
            continue;
        }
        let c = cond("PrunePolicy", &name, p.metadata.generation);
        if patch_child_status::<PrunePolicy>(ctx, &ns, &name, p.status.as_ref(), c, t).await? {
            warn_rejected(ctx, tenant, bound, "PrunePolicy", &name).await;
        }
    }
    for l in &inputs.retention_locks {
        let name = l.name_any();
        let is_bound = bound.retention_locks.iter().any(|b| b.name_any() == name);
        let is_rejected = rejected("RetentionLock", &name);
        if !is_bound && !is_rejected {
            continue;
        }
        let c = cond("RetentionLock", &name, l.metadata.generation);
        if patch_child_status::<RetentionLock>(ctx, &ns, &name, l.status.as_ref(), c, t).await? {
            warn_rejected(ctx, tenant, bound, "RetentionLock", &name).await;
        }
        if is_bound && !is_rejected {
            record_accepted_lock(ctx, l).await?;
        }
    }
    for j in &inputs.sync_jobs {
        let name = j.name_any();
        let is_bound = bound.sync_jobs.iter().any(|b| b.name_any() == name);
        if !is_bound && !rejected("SyncJob", &name) {
            continue;
        }
        let c = cond("SyncJob", &name, j.metadata.generation);
        let old = j.status.as_ref().map(|s| &s.child);
        if patch_child_status::<SyncJob>(ctx, &ns, &name, old, c, t).await? {
            warn_rejected(ctx, tenant, bound, "SyncJob", &name).await;
        }
    }
    Ok(())
}
