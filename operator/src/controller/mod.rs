//! Controllers: one per kind. The Tenant controller renders and applies everything a tenant
//! owns; the child controllers report children whose Tenant or Datastore does not exist.

mod apply;
mod children;
mod cleanup;
#[cfg(test)]
mod mock_tests;
mod route;
mod tenant;
mod usage;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};

use crate::crd::{Datastore, PrunePolicy, RetentionLock, Tenant};
use crate::render::RenderError;

pub use children::{child_status_patch, ChildKind};
pub use cleanup::ABANDON_ANNOTATION;
pub use tenant::{reconcile_tenant, FINALIZER};
pub use usage::usage_addr;

/// What a reconcile step failed on; the message names the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("finalizer of Tenant {name}: {message}")]
    Finalizer { name: String, message: String },
    /// `deletionPolicy: Delete` could not remove all data yet; the finalizer stays.
    #[error("Tenant {name}: backup data not deleted yet: {message}")]
    DataNotDeleted {
        name: String,
        message: String,
        retry: Duration,
    },
}

impl Error {
    pub(crate) fn kube(
        action: &'static str,
        kind: &'static str,
        name: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Error {
        let name = name.into();
        move |source| Error::Kube {
            action,
            kind,
            name,
            source,
        }
    }
}

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub reconcile_micros: AtomicU64,
    pub tenants_ready: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# TYPE pbs_cloud_operator_reconciles_total counter\npbs_cloud_operator_reconciles_total {}\n\
             # TYPE pbs_cloud_operator_reconcile_errors_total counter\npbs_cloud_operator_reconcile_errors_total {}\n\
             # TYPE pbs_cloud_operator_reconcile_seconds_total counter\npbs_cloud_operator_reconcile_seconds_total {:.6}\n",
            g(&self.reconciles),
            g(&self.reconcile_errors),
            g(&self.reconcile_micros) as f64 / 1e6,
        )
    }
}

/// Shared state of every reconcile.
pub struct Context {
    pub client: Client,
    /// Default server image for Tenants that do not name one.
    pub image: String,
    /// Namespace to watch; all namespaces when `None`.
    pub namespace: Option<String>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub datastores: Store<Datastore>,
    pub prune_policies: Store<PrunePolicy>,
    pub retention_locks: Store<RetentionLock>,
    /// How often the usage of a ready tenant is read from its server.
    pub usage_interval: Duration,
}

impl Context {
    /// An API handle for `K` in `ns`.
    pub fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }
}

fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Starts reflectors for the child kinds and returns the context once they are synced.
pub async fn context(client: Client, image: String, namespace: Option<String>) -> Arc<Context> {
    context_with_metrics(client, image, namespace, Arc::new(Metrics::default())).await
}

/// [`context`] with metrics shared with the HTTP endpoint.
pub async fn context_with_metrics(
    client: Client,
    image: String,
    namespace: Option<String>,
    metrics: Arc<Metrics>,
) -> Arc<Context> {
    let (ds, ds_w) = reflector::store::<Datastore>();
    let (pp, pp_w) = reflector::store::<PrunePolicy>();
    let (rl, rl_w) = reflector::store::<RetentionLock>();
    let wc = watcher::Config::default();
    let run = |s: futures::stream::BoxStream<'static, ()>| tokio::spawn(s.for_each(|_| async {}));
    run(
        reflector::reflector(ds_w, watcher(scoped(&client, &namespace), wc.clone()))
            .default_backoff()
            .map(|_| ())
            .boxed(),
    );
    run(
        reflector::reflector(pp_w, watcher(scoped(&client, &namespace), wc.clone()))
            .default_backoff()
            .map(|_| ())
            .boxed(),
    );
    run(
        reflector::reflector(rl_w, watcher(scoped(&client, &namespace), wc))
            .default_backoff()
            .map(|_| ())
            .boxed(),
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let _ = ds.wait_until_ready().await;
        let _ = pp.wait_until_ready().await;
        let _ = rl.wait_until_ready().await;
    })
    .await;
    let reporter = Reporter {
        controller: "pbs-cloud-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        image,
        namespace,
        metrics,
        datastores: ds,
        prune_policies: pp,
        retention_locks: rl,
        usage_interval: usage_interval(),
    })
}

fn tenant_of_store(
    store: &Store<Datastore>,
    ns: Option<String>,
    ds: &str,
) -> Option<ObjectRef<Tenant>> {
    let ns = ns?;
    let key = ObjectRef::<Datastore>::new(ds).within(&ns);
    let ds = store.get(&key)?;
    Some(ObjectRef::new(&ds.spec.tenant).within(&ns))
}

/// Runs all controllers until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let client = ctx.client.clone();
    let ns = ctx.namespace.clone();
    let owned =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=pbs-cloud-operator");
    let ds_store = ctx.datastores.clone();
    let ds_store2 = ctx.datastores.clone();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let tenants = Controller::new(scoped::<Tenant>(&client, &ns), watcher::Config::default())
        .owns(scoped::<Deployment>(&client, &ns), owned.clone())
        .owns(scoped::<Secret>(&client, &ns), owned.clone())
        .owns(scoped::<Service>(&client, &ns), owned)
        .watches(
            scoped::<Datastore>(&client, &ns),
            watcher::Config::default(),
            |ds| {
                let ns = ds.namespace()?;
                Some(ObjectRef::<Tenant>::new(&ds.spec.tenant).within(&ns))
            },
        )
        .watches(
            scoped::<PrunePolicy>(&client, &ns),
            watcher::Config::default(),
            move |p| tenant_of_store(&ds_store, p.namespace(), &p.spec.datastore),
        )
        .watches(
            scoped::<RetentionLock>(&client, &ns),
            watcher::Config::default(),
            move |l| tenant_of_store(&ds_store2, l.namespace(), &l.spec.datastore),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(tenant::reconcile_entry, tenant::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("tenant reconcile: {e}");
            }
        });
    let ds = children::controller::<Datastore>(&client, &ns, ctx.clone(), shutdown.clone());
    let pp = children::controller::<PrunePolicy>(&client, &ns, ctx.clone(), shutdown.clone());
    let rl = children::controller::<RetentionLock>(&client, &ns, ctx.clone(), shutdown);
    futures::join!(tenants, ds, pp, rl);
}

/// Default interval of usage reads ([`USAGE_INTERVAL_ENV`] overrides it).
pub const USAGE_INTERVAL: Duration = Duration::from_secs(60);
/// Environment variable with the usage interval in seconds.
pub const USAGE_INTERVAL_ENV: &str = "PBS_CLOUD_USAGE_INTERVAL";

fn usage_interval() -> Duration {
    std::env::var(USAGE_INTERVAL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(USAGE_INTERVAL)
}

/// Default requeue of a tenant whose server is not ready (status refresh).
pub const REQUEUE: Duration = Duration::from_secs(300);

/// Requeue after a failed reconcile.
pub fn backoff(err: &Error) -> Action {
    match err {
        Error::DataNotDeleted { retry, .. } => Action::requeue(*retry),
        _ => Action::requeue(Duration::from_secs(15)),
    }
}
