//! Controllers: the Tenant controller renders and applies everything a tenant owns; the child
//! controllers report children whose Tenant or Datastore does not exist; the usage poller
//! copies each ready tenant's usage into its status. Reconciles read from the caches in
//! [`stores`] and write only what changed, so a quiet cluster costs no API requests beyond the
//! watches.

mod apply;
mod children;
mod cleanup;
pub mod diff;
#[cfg(test)]
mod mock_tests;
mod route;
mod status;
pub mod stores;
mod tenant;
mod triggers;
mod usage;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::FutureExt;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};

use crate::crd::Tenant;
use crate::metrics::Metrics;
use crate::render::RenderError;

pub use children::{child_status_patch, ChildKind};
pub use cleanup::ABANDON_ANNOTATION;
pub use stores::Stores;
pub use tenant::{reconcile_tenant, FINALIZER};
pub use usage::{usage_addr, usage_changed, BYTES_ROUNDING, REQUESTS_ROUNDING};

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
    #[error(transparent)]
    NotFilled(#[from] stores::NotFilled),
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

    /// True when the API server refused a write because the object changed since it was
    /// read (a precondition on `resourceVersion`).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 409)
    }
}

/// Settings of one controller run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Default server image for Tenants that do not name one.
    pub image: String,
    /// Namespace to watch; all namespaces when `None`.
    pub namespace: Option<String>,
    /// How often the usage of each ready tenant is read from its server.
    pub usage_interval: Duration,
    /// How often every Tenant is reconciled without a change (from the caches: no API
    /// requests unless something drifted).
    pub resync: Duration,
    /// `reportingInstance` of events (the pod name).
    pub instance: Option<String>,
}

impl Settings {
    /// Defaults, with the intervals from the environment ([`USAGE_INTERVAL_ENV`],
    /// [`RESYNC_ENV`]).
    pub fn new(image: String, namespace: Option<String>) -> Self {
        Settings {
            image,
            namespace,
            usage_interval: seconds_from_env(USAGE_INTERVAL_ENV).unwrap_or(USAGE_INTERVAL),
            resync: seconds_from_env(RESYNC_ENV).unwrap_or(RESYNC),
            instance: std::env::var("POD_NAME").ok(),
        }
    }
}

/// Shared state of every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub stores: Stores,
    /// Digests of the objects of optional kinds (TLSRoute, Certificate), which are not
    /// cached, as this process last applied them.
    applied: Mutex<HashMap<String, String>>,
    /// Tenants with a change seen and no reconcile started yet.
    pending: Mutex<HashSet<ObjectRef<Tenant>>>,
}

impl Context {
    /// A context over `stores` (filled by [`Controllers::run`], or by tests).
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>, stores: Stores) -> Self {
        let reporter = Reporter {
            controller: "pbs-cloud-operator".into(),
            instance: settings.instance.clone(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            stores,
            applied: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashSet::new()),
        }
    }

    /// An API handle for `K` in `ns`.
    pub fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Publishes an event on `tenant`; a failure is only logged (events are advisory).
    pub async fn publish(&self, tenant: &Tenant, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &tenant.object_ref(&())).await {
            tracing::debug!("event for Tenant {}: {e}", tenant.name_any());
        }
    }

    /// Notes Tenants a change was seen for (queue depth).
    fn queued(&self, refs: &[ObjectRef<Tenant>]) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.extend(refs.iter().cloned());
        self.metrics
            .queue_depth
            .store(p.len() as u64, Ordering::Relaxed);
    }

    /// Notes that the reconcile of `r` started; forgets Tenants that are gone.
    fn started(&self, r: &ObjectRef<Tenant>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(r);
        p.retain(|t| self.stores.tenants.get(t).is_some());
        self.metrics
            .queue_depth
            .store(p.len() as u64, Ordering::Relaxed);
    }

    /// True when `digest` differs from what this process last applied as `key`.
    fn unapplied(&self, key: &str, digest: &str) -> bool {
        let a = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        a.get(key).map(String::as_str) != Some(digest)
    }

    fn remember(&self, key: String, digest: Option<String>) {
        let mut a = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        match digest {
            Some(d) => a.insert(key, d),
            None => a.remove(&key),
        };
    }
}

/// The controllers of one process, ready to run.
pub struct Controllers {
    pub ctx: Arc<Context>,
    writers: stores::Writers,
}

impl Controllers {
    /// Empty caches; nothing is watched before [`Controllers::run`].
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let (stores, writers) = Stores::new();
        Controllers {
            ctx: Arc::new(Context::new(client, settings, metrics, stores)),
            writers,
        }
    }

    /// Watches, reconciles and polls usage until `shutdown` resolves; then lets the running
    /// reconciles finish and returns. Dropping the future instead aborts them at once.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let shutdown = Box::pin(shutdown).shared();
        let ctx = self.ctx;
        let tenants = triggers::tenant_controller(ctx.clone(), self.writers, shutdown.clone());
        let children = children::controllers(ctx.clone(), shutdown.clone());
        let usage = async {
            tokio::select! {
                _ = usage::poll_forever(ctx.clone()) => {}
                _ = shutdown.clone() => {}
            }
        };
        futures::join!(tenants, children, usage);
    }
}

/// Default interval of usage reads ([`USAGE_INTERVAL_ENV`] overrides it).
pub const USAGE_INTERVAL: Duration = Duration::from_secs(60);
/// Environment variable with the usage interval in seconds.
pub const USAGE_INTERVAL_ENV: &str = "PBS_CLOUD_USAGE_INTERVAL";
/// Default resync interval ([`RESYNC_ENV`] overrides it).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Environment variable with the resync interval in seconds.
pub const RESYNC_ENV: &str = "PBS_CLOUD_RESYNC_INTERVAL";

fn seconds_from_env(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// Requeue after a failed reconcile.
pub fn backoff(err: &Error) -> Action {
    match err {
        Error::DataNotDeleted { retry, .. } => Action::requeue(*retry),
        e if e.is_conflict() => Action::requeue(Duration::from_secs(1)),
        _ => Action::requeue(Duration::from_secs(15)),
    }
}
