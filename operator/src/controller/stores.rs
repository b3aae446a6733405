//! The operator's caches: one reflector per kind it reads, so that reconciles read from
//! memory instead of the API server, and the watch streams that trigger Tenant reconciles.
//! Each kind is watched once; the Tenant controller drives the streams (a store fills as its
//! stream is polled), and every reconcile first waits until all stores have listed once.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{stream, Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::reflector::{self, store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::crd::{Datastore, PrunePolicy, RetentionLock, SyncJob, Tenant};

/// Label selector of the objects the operator owns.
pub const OWNED_SELECTOR: &str = "app.kubernetes.io/managed-by=pbs-cloud-operator";

/// Read-only views of the caches.
#[derive(Clone)]
pub struct Stores {
    pub tenants: Store<Tenant>,
    pub datastores: Store<Datastore>,
    pub prune_policies: Store<PrunePolicy>,
    pub retention_locks: Store<RetentionLock>,
    pub sync_jobs: Store<SyncJob>,
    /// Every Secret in scope: owned ones, S3 credentials, CA bundles and TLS Secrets that
    /// users or cert-manager provide.
    pub secrets: Store<Secret>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub pvcs: Store<PersistentVolumeClaim>,
    pub ingresses: Store<Ingress>,
    filled: watch::Receiver<u32>,
}

/// Which caches have listed once (one bit per kind). Kept apart from the stores' own
/// readiness futures, which wake only one of several tasks waiting at once.
#[derive(Clone)]
pub struct Filled(watch::Sender<u32>);

impl Filled {
    pub(super) fn mark(&self, bits: u32) {
        self.0.send_modify(|m| *m |= bits);
    }

    /// What [`reflect`] takes to mark kind `bit`.
    pub(super) fn bit(&self, bit: u32) -> Option<(Filled, u32)> {
        Some((self.clone(), bit))
    }
}

pub const TENANTS: u32 = 1;
pub const DATASTORES: u32 = 1 << 1;
pub const PRUNE_POLICIES: u32 = 1 << 2;
pub const RETENTION_LOCKS: u32 = 1 << 3;
pub const SECRETS: u32 = 1 << 4;
pub const DEPLOYMENTS: u32 = 1 << 5;
pub const SERVICES: u32 = 1 << 6;
pub const PVCS: u32 = 1 << 7;
pub const INGRESSES: u32 = 1 << 8;
pub const SYNC_JOBS: u32 = 1 << 9;
/// Every cache.
pub const ALL: u32 = (1 << 10) - 1;

/// The writing halves, consumed by the streams that fill the stores.
pub struct Writers {
    pub filled: Filled,
    pub tenants: Writer<Tenant>,
    pub datastores: Writer<Datastore>,
    pub prune_policies: Writer<PrunePolicy>,
    pub retention_locks: Writer<RetentionLock>,
    pub sync_jobs: Writer<SyncJob>,
    pub secrets: Writer<Secret>,
    pub deployments: Writer<Deployment>,
    pub services: Writer<Service>,
    pub pvcs: Writer<PersistentVolumeClaim>,
    pub ingresses: Writer<Ingress>,
}

/// The caches were dropped before they listed (the controllers are stopping).
#[derive(Debug, thiserror::Error)]
#[error("the caches stopped before they were filled")]
pub struct NotFilled;

impl Stores {
    /// Empty stores and their writers.
    pub fn new() -> (Stores, Writers) {
        let (tenants, wt) = reflector::store();
        let (datastores, wd) = reflector::store();
        let (prune_policies, wp) = reflector::store();
        let (retention_locks, wr) = reflector::store();
        let (sync_jobs, wsj) = reflector::store();
        let (secrets, ws) = reflector::store();
        let (deployments, wdp) = reflector::store();
        let (services, wsv) = reflector::store();
        let (pvcs, wpv) = reflector::store();
        let (ingresses, wi) = reflector::store();
        let (tx, filled) = watch::channel(0);
        (
            Stores {
                tenants,
                datastores,
                prune_policies,
                retention_locks,
                sync_jobs,
                secrets,
                deployments,
                services,
                pvcs,
                ingresses,
                filled,
            },
            Writers {
                filled: Filled(tx),
                tenants: wt,
                datastores: wd,
                prune_policies: wp,
                retention_locks: wr,
                sync_jobs: wsj,
                secrets: ws,
                deployments: wdp,
                services: wsv,
                pvcs: wpv,
                ingresses: wi,
            },
        )
    }

    /// The Tenant of a cached Datastore, if cached.
    pub fn tenant_of(&self, ds: &Datastore) -> Option<Tenant> {
        let ns = ds.namespace().unwrap_or_default();
        get(&self.tenants, &ns, &ds.spec.tenant).map(|t| (*t).clone())
    }

    /// Waits until every store has listed once.
    pub async fn ready(&self) -> Result<(), NotFilled> {
        let mut rx = self.filled.clone();
        rx.wait_for(|m| *m == ALL).await.map_err(|_| NotFilled)?;
        Ok(())
    }
}

/// The cached object `ns/name`.
pub fn get<K>(store: &Store<K>, ns: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(ns))
}

/// The cached objects of namespace `ns`, sorted by name.
pub fn in_namespace<K>(store: &Store<K>, ns: &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut v = store.state_filter(|o| o.meta().namespace.as_deref() == Some(ns));
    v.sort_by_key(|o| o.name_any());
    v
}

pub(super) fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Drops what the operator never reads from cached objects (memory): managed fields and the
/// copy of the whole object `kubectl apply` keeps in an annotation.
fn slim<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
    if let Some(a) = o.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The watch events of `api`, reflected into `writer`; `mark` notes when it listed once.
pub(super) fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    mark: Option<(Filled, u32)>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, config.any_semantic())
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .inspect(move |ev| {
            if let (Ok(watcher::Event::InitDone), Some((f, bit))) = (ev, &mark) {
                f.mark(*bit);
            }
        })
}

/// The objects of a reflected stream whose `key` changed since they were last seen, plus every
/// deleted object. Status-only writes (ours included) leave the key alone, so they trigger
/// nothing.
pub(super) fn changes<K, S>(
    events: S,
    key: fn(&K) -> u64,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    let id = |o: &K| {
        o.meta().uid.clone().unwrap_or_else(|| {
            format!(
                "{}/{}",
                o.meta().namespace.as_deref().unwrap_or(""),
                o.meta().name.as_deref().unwrap_or("")
            )
        })
    };
    events.flat_map(move |ev| {
        let out = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let k = key(&o);
                let fresh = seen.insert(id(&o), k) != Some(k);
                fresh.then_some(Ok(o))
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&id(&o));
                Some(Ok(o))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        stream::iter(out)
    })
}

fn hash<T: std::hash::Hash>(t: &T) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// What a Tenant reconcile depends on: spec (generation), labels, annotations (the abandon
/// annotation), finalizers and deletion. Not status.
pub(super) fn tenant_key(t: &Tenant) -> u64 {
    let m = &t.metadata;
    hash(&(
        m.generation,
        &m.labels,
        &m.annotations,
        &m.finalizers,
        m.deletion_timestamp.as_ref().map(|d| d.0.as_second()),
    ))
}

/// What the Tenant controller reads of a child kind: its spec and its existence.
pub(super) fn spec_key<K: Resource>(o: &K) -> u64 {
    hash(&(
        o.meta().generation,
        o.meta()
            .deletion_timestamp
            .as_ref()
            .map(|d| d.0.as_second()),
    ))
}

/// Any change (for owned objects, whose status matters, e.g. Deployment readiness).
pub(super) fn any_key<K: Resource>(o: &K) -> u64 {
    hash(&o.meta().resource_version)
}
