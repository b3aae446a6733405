//! The Tenant controller and what triggers its reconciles: a Tenant's own spec, labels,
//! annotations, finalizers or deletion (never its status); any change of an object it owns;
//! a change of a Secret it reads (including a SyncJob's remote secret); a spec change or
//! deletion of a child (Datastore, PrunePolicy, RetentionLock, SyncJob), which for a Datastore
//! also reaches the Tenants of other datastores in the same bucket (their prefixes may stop or
//! start to overlap).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::stores::{
    any_key, changes, reflect, scoped, spec_key, tenant_key, Writers, DATASTORES, DEPLOYMENTS,
    INGRESSES, OWNED_SELECTOR, PRUNE_POLICIES, PVCS, RETENTION_LOCKS, SECRETS, SERVICES, SYNC_JOBS,
    TENANTS,
};
use super::{tenant, Context};
use crate::crd::{Datastore, PrunePolicy, RetentionLock, SyncJob, Tenant};
use crate::render::{Names, TENANT_LABEL};

/// Tenant reconciles running at once.
pub const CONCURRENCY: u16 = 16;

fn tenant_ref(ns: &str, name: &str) -> ObjectRef<Tenant> {
    ObjectRef::new(name).within(ns)
}

/// Keeps the refs of existing Tenants and counts them as queued.
fn queue(ctx: &Context, refs: BTreeSet<(String, String)>) -> Vec<ObjectRef<Tenant>> {
    let refs: Vec<ObjectRef<Tenant>> = refs
        .into_iter()
        .map(|(ns, name)| tenant_ref(&ns, &name))
        .filter(|r| ctx.stores.tenants.get(r).is_some())
        .collect();
    ctx.queued(&refs);
    refs
}

/// The Tenant named by an owned object's tenant label.
fn labelled<K: Resource>(o: &K) -> BTreeSet<(String, String)> {
    let ns = o.meta().namespace.clone().unwrap_or_default();
    o.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(TENANT_LABEL))
        .map(|t| (ns, t.clone()))
        .into_iter()
        .collect()
}

/// Tenants reading Secret `s`: its owner by label, Tenants whose TLS Secret it is, Tenants of
/// Datastores that take S3 keys or a CA bundle from it, Tenants of the Datastores SyncJobs
/// pull into that take their remote's secret from it.
fn secret_readers(ctx: &Context, s: &Secret) -> BTreeSet<(String, String)> {
    let mut out = labelled(s);
    let ns = s.namespace().unwrap_or_default();
    let name = s.name_any();
    for t in super::stores::in_namespace(&ctx.stores.tenants, &ns) {
        if Names::of(&t).tls == name {
            out.insert((ns.clone(), t.name_any()));
        }
    }
    for d in super::stores::in_namespace(&ctx.stores.datastores, &ns) {
        let Some(s3) = &d.spec.s3 else { continue };
        let keys = s3.credentials_secret.as_ref().map(|r| r.name.as_str());
        let ca = s3.ca_bundle.as_ref().map(|c| c.secret_name.as_str());
        if keys == Some(name.as_str()) || ca == Some(name.as_str()) {
            out.insert((ns.clone(), d.spec.tenant.clone()));
        }
    }
    for j in super::stores::in_namespace(&ctx.stores.sync_jobs, &ns) {
        if j.spec.remote.secret_ref.name == name {
            out.extend(via_datastore(ctx, Some(ns.clone()), &j.spec.datastore));
        }
    }
    out
}

/// The Datastore's Tenant, and the Tenants of every datastore in the same bucket.
fn datastore_readers(ctx: &Context, d: &Datastore) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::from([(d.namespace().unwrap_or_default(), d.spec.tenant.clone())]);
    if let Some(s3) = &d.spec.s3 {
        for o in ctx.stores.datastores.state() {
            if o.spec.s3.as_ref().is_some_and(|x| x.bucket == s3.bucket) {
                out.insert((o.namespace().unwrap_or_default(), o.spec.tenant.clone()));
            }
        }
    }
    out
}

/// The Tenant of the Datastore a PrunePolicy, RetentionLock or SyncJob names.
fn via_datastore(ctx: &Context, ns: Option<String>, ds: &str) -> BTreeSet<(String, String)> {
    let Some(ns) = ns else {
        return BTreeSet::new();
    };
    super::stores::get(&ctx.stores.datastores, &ns, ds)
        .map(|d| (ns, d.spec.tenant.clone()))
        .into_iter()
        .collect()
}

/// Runs the Tenant controller (and so fills every store) until `shutdown`; running reconciles
/// finish first.
pub(super) async fn tenant_controller(
    ctx: Arc<Context>,
    w: Writers,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = ctx.settings.namespace.clone();
    let all = watcher::Config::default();
    let owned = watcher::Config::default().labels(OWNED_SELECTOR);
    let c = ctx.clone();
    let tenants = changes(
        reflect(
            scoped::<Tenant>(&client, &ns),
            all.clone(),
            w.tenants,
            w.filled.bit(TENANTS),
        ),
        tenant_key,
    )
    .inspect(move |r| {
        if let Ok(t) = r {
            let r = ObjectRef::from_obj(t);
            if c.stores.tenants.get(&r).is_some() {
                c.queued(&[r]);
            }
        }
    });
    let (c1, c2, c3, c4) = (ctx.clone(), ctx.clone(), ctx.clone(), ctx.clone());
    let (c5, c6, c7, c8) = (ctx.clone(), ctx.clone(), ctx.clone(), ctx.clone());
    let c9 = ctx.clone();
    Controller::for_stream(tenants, ctx.stores.tenants.clone())
        .with_config(Config::default().concurrency(CONCURRENCY))
        .watches_stream(
            changes(
                reflect(
                    scoped::<Deployment>(&client, &ns),
                    owned.clone(),
                    w.deployments,
                    w.filled.bit(DEPLOYMENTS),
                ),
                any_key,
            ),
            move |o| queue(&c1, labelled(&o)),
        )
        .watches_stream(
            changes(
                reflect(
                    scoped::<Service>(&client, &ns),
                    owned.clone(),
                    w.services,
                    w.filled.bit(SERVICES),
                ),
                any_key,
            ),
            move |o| queue(&c2, labelled(&o)),
        )
        .watches_stream(
            changes(
                reflect(
                    scoped::<PersistentVolumeClaim>(&client, &ns),
                    owned.clone(),
                    w.pvcs,
                    w.filled.bit(PVCS),
                ),
                any_key,
            ),
            move |o| queue(&c3, labelled(&o)),
        )
        .watches_stream(
            changes(
                reflect(
                    scoped::<Ingress>(&client, &ns),
                    owned,
                    w.ingresses,
                    w.filled.bit(INGRESSES),
                ),
                any_key,
            ),
            move |o| queue(&c4, labelled(&o)),
        )
        .watches_stream(
            changes(
                reflect(
                    scoped::<Secret>(&client, &ns),
                    all.clone(),
                    w.secrets,
                    w.filled.bit(SECRETS),
                ),
                any_key,
            ),
            move |o| {
                let readers = secret_readers(&c5, &o);
                queue(&c5, readers)
            },
        )
        .watches_stream(
            changes(
                reflect(
                    scoped::<Datastore>(&client, &ns),
                    all.clone(),
                    w.datastores,
                    w.filled.bit(DATASTORES),
                ),
                spec_key,
            ),
            move |o| {
                let readers = datastore_readers(&c6, &o);
                queue(&c6, readers)
            },
        )
        .watches_stream(
            changes(
                reflect(
                    scoped::<PrunePolicy>(&client, &ns),
                    all.clone(),
                    w.prune_policies,
                    w.filled.bit(PRUNE_POLICIES),
                ),
                spec_key,
            ),
            move |o| {
                let t = via_datastore(&c7, o.namespace(), &o.spec.datastore);
                queue(&c7, t)
            },
        )
        .watches_stream(
            changes(
                reflect(
                    scoped::<RetentionLock>(&client, &ns),
                    all.clone(),
                    w.retention_locks,
                    w.filled.bit(RETENTION_LOCKS),
                ),
                spec_key,
            ),
            move |o| {
                let t = via_datastore(&c8, o.namespace(), &o.spec.datastore);
                queue(&c8, t)
            },
        )
        .watches_stream(
            changes(
                reflect(
                    scoped::<SyncJob>(&client, &ns),
                    all,
                    w.sync_jobs,
                    w.filled.bit(SYNC_JOBS),
                ),
                spec_key,
            ),
            move |o| {
                let t = via_datastore(&c9, o.namespace(), &o.spec.datastore);
                queue(&c9, t)
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(tenant::reconcile_entry, tenant::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("tenant reconcile: {e}");
            }
        })
        .await
}
