//! Datastore, PrunePolicy, RetentionLock and SyncJob: status helpers, and one small controller per
//! kind that reports children whose Tenant or Datastore does not exist (the Tenant
//! controller reports bound and rejected ones).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::stores::{changes, get, reflect, scoped, spec_key};
use super::{Context, Error};
use crate::crd::{
    condition, set_condition, ChildStatus, Condition, Datastore, PrunePolicy, RetentionLock,
    SyncJob,
};
use crate::render::ACCEPTED_ANNOTATION;

/// What the child controllers need to know about a kind.
pub trait ChildKind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    /// Label value of the reconcile metrics.
    const CONTROLLER: &'static str;
    /// The Datastore object it refers to (`None` for a Datastore itself).
    fn datastore_ref(&self) -> Option<&str>;
    /// The Tenant it refers to directly (Datastore only).
    fn tenant_ref(&self) -> Option<&str>;
    fn child_status(&self) -> Option<&ChildStatus>;
}

impl ChildKind for Datastore {
    const KIND: &'static str = "Datastore";
    const CONTROLLER: &'static str = "datastore";
    fn datastore_ref(&self) -> Option<&str> {
        None
    }
    fn tenant_ref(&self) -> Option<&str> {
        Some(&self.spec.tenant)
    }
    fn child_status(&self) -> Option<&ChildStatus> {
        self.status.as_ref()
    }
}

impl ChildKind for PrunePolicy {
    const KIND: &'static str = "PrunePolicy";
    const CONTROLLER: &'static str = "prunepolicy";
    fn datastore_ref(&self) -> Option<&str> {
        Some(&self.spec.datastore)
    }
    fn tenant_ref(&self) -> Option<&str> {
        None
    }
    fn child_status(&self) -> Option<&ChildStatus> {
        self.status.as_ref()
    }
}

impl ChildKind for RetentionLock {
    const KIND: &'static str = "RetentionLock";
    const CONTROLLER: &'static str = "retentionlock";
    fn datastore_ref(&self) -> Option<&str> {
        Some(&self.spec.datastore)
    }
    fn tenant_ref(&self) -> Option<&str> {
        None
    }
    fn child_status(&self) -> Option<&ChildStatus> {
        self.status.as_ref()
    }
}

impl ChildKind for SyncJob {
    const KIND: &'static str = "SyncJob";
    const CONTROLLER: &'static str = "syncjob";
    fn datastore_ref(&self) -> Option<&str> {
        Some(&self.spec.datastore)
    }
    fn tenant_ref(&self) -> Option<&str> {
        None
    }
    fn child_status(&self) -> Option<&ChildStatus> {
        self.status.as_ref().map(|s| &s.child)
    }
}

/// The merge patch for a child's status with condition `c` (`None` when nothing changes).
pub fn child_status_patch(
    old: Option<&ChildStatus>,
    c: Condition,
    generation: Option<i64>,
    tenant: Option<&str>,
) -> Option<serde_json::Value> {
    let mut status = old.cloned().unwrap_or_default();
    let before = status.clone();
    set_condition(&mut status.conditions, c);
    status.observed_generation = generation;
    status.tenant = tenant.map(str::to_string);
    let strip = |s: &ChildStatus| {
        let mut s = s.clone();
        s.conditions
            .iter_mut()
            .for_each(|c| c.last_transition_time.clear());
        s
    };
    (strip(&before) != strip(&status) || old.is_none())
        .then(|| serde_json::json!({ "status": status }))
}

/// Patches a child's status when it changed; `Ok(true)` when written.
pub async fn patch_child_status<K: ChildKind>(
    ctx: &Context,
    ns: &str,
    name: &str,
    old: Option<&ChildStatus>,
    c: Condition,
    tenant: Option<&str>,
) -> Result<bool, Error> {
    let generation = c.observed_generation;
    let Some(patch) = child_status_patch(old, c, generation, tenant) else {
        return Ok(false);
    };
    let api: Api<K> = ctx.api(ns);
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(Error::kube("update status of", K::KIND, name)(e)),
    }
}

/// Records the spec of a RetentionLock the operator rendered, so it never renders less.
pub async fn record_accepted_lock(ctx: &Context, lock: &RetentionLock) -> Result<(), Error> {
    let spec = serde_json::to_string(&lock.spec).unwrap_or_default();
    if lock.annotations().get(ACCEPTED_ANNOTATION) == Some(&spec) {
        return Ok(());
    }
    let api: Api<RetentionLock> = ctx.api(&lock.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {"annotations": {ACCEPTED_ANNOTATION: spec}}});
    api.patch(
        &lock.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(Error::kube("annotate", "RetentionLock", lock.name_any()))?;
    Ok(())
}

/// How long an orphan waits before it is looked at again (its parent may appear without a
/// change of its own).
const ORPHAN_RECHECK: Duration = Duration::from_secs(60);

async fn reconcile_child<K: ChildKind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stores.ready().await?;
    let ns = obj.namespace().unwrap_or_default();
    let gen = obj.meta().generation;
    let now = crate::crd::now();
    let orphan =
        |reason: &str, message: String| condition("Ready", false, reason, message, gen, &now);
    let tenant_name = match (obj.tenant_ref(), obj.datastore_ref()) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(ds)) => match get(&ctx.stores.datastores, &ns, ds) {
            Some(d) => Some(d.spec.tenant.clone()),
            None => {
                let c = orphan(
                    "DatastoreNotFound",
                    format!("Datastore '{ds}' does not exist in namespace {ns}"),
                );
                patch_child_status::<K>(&ctx, &ns, &obj.name_any(), obj.child_status(), c, None)
                    .await?;
                return Ok(Action::requeue(ORPHAN_RECHECK));
            }
        },
        (None, None) => None,
    };
    if let Some(t) = tenant_name {
        if get(&ctx.stores.tenants, &ns, &t).is_none() {
            let c = orphan(
                "TenantNotFound",
                format!("Tenant '{t}' does not exist in namespace {ns}"),
            );
            patch_child_status::<K>(&ctx, &ns, &obj.name_any(), obj.child_status(), c, None)
                .await?;
            return Ok(Action::requeue(ORPHAN_RECHECK));
        }
    }
    Ok(Action::await_change())
}

/// Runs the child controller of kind `K` (own watch; status-only updates trigger nothing).
async fn controller<K: ChildKind>(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (reader, writer) = reflector::store::<K>();
    let api = scoped::<K>(&ctx.client, &ctx.settings.namespace);
    let trigger = changes(
        reflect(api, watcher::Config::default(), writer, None),
        spec_key::<K>,
    );
    Controller::for_stream(trigger, reader)
        .graceful_shutdown_on(shutdown)
        .run(
            |obj: Arc<K>, ctx: Arc<Context>| async move {
                let start = std::time::Instant::now();
                let res = reconcile_child::<K>(obj, ctx.clone()).await;
                let micros = start.elapsed().as_micros() as u64;
                ctx.metrics.reconciled(K::CONTROLLER, micros, res.is_err());
                res
            },
            |_obj: Arc<K>, _e: &Error, _ctx: Arc<Context>| Action::requeue(Duration::from_secs(30)),
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("{} reconcile: {e}", K::KIND);
            }
        })
        .await
}

/// Runs the four child controllers until `shutdown`.
pub(super) async fn controllers(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    futures::join!(
        controller::<Datastore>(ctx.clone(), shutdown.clone()),
        controller::<PrunePolicy>(ctx.clone(), shutdown.clone()),
        controller::<RetentionLock>(ctx.clone(), shutdown.clone()),
        controller::<SyncJob>(ctx, shutdown),
    );
}
