//! Everything a request handler can reach: authentication, the datastores the server serves,
//! the task registry and the node's identity. Built once by `main` and shared as `Arc<AppState>`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::auth::AuthService;
pub use crate::datastore::DatastoreEntry;
use crate::metering::MeteredServer;
use crate::tasks::TaskRegistry;

/// Who this server is (`/nodes/localhost/identity`, UPIDs).
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// Node name used inside UPIDs.
    pub name: String,
    /// Stable random id kept in the data dir (`pbs-instance-id`).
    pub instance_id: String,
}

/// Shared server state.
pub struct AppState {
    pub auth: AuthService,
    pub tasks: TaskRegistry,
    pub node: NodeIdentity,
    /// Scheduled jobs (prune, verify, GC) and their states.
    pub jobs: crate::jobs::Jobs,
    /// Usage metering, quotas and the billing webhook.
    pub meter: Arc<crate::metering::Metering>,
    /// Memory budget of backup sessions (`[upload_limits]`).
    pub uploads: crate::protocol::backup::budget::UploadBudget,
    /// Connection timeouts and limits of the HTTP edge (set by `serve` before it starts).
    pub limits: crate::net::limits::EdgeLimits,
    /// SHA-256 fingerprint of the server's TLS certificate (node status `info.fingerprint`);
    /// set once by `serve`.
    pub tls_fingerprint: std::sync::OnceLock<String>,
    datastores: RwLock<BTreeMap<String, Arc<DatastoreEntry>>>,
}

impl AppState {
    pub fn new(auth: AuthService, tasks: TaskRegistry, node: NodeIdentity) -> Self {
        Self {
            auth,
            tasks,
            node,
            jobs: crate::jobs::Jobs::default(),
            meter: crate::metering::Metering::new(),
            uploads: Default::default(),
            limits: crate::net::limits::EdgeLimits::default(),
            tls_fingerprint: std::sync::OnceLock::new(),
            datastores: RwLock::new(BTreeMap::new()),
        }
    }

    /// Looks a datastore up by name (tenant checks are the caller's job).
    pub fn datastore(&self, name: &str) -> Option<Arc<DatastoreEntry>> {
        self.datastores
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()
    }

    /// All datastores, sorted by name.
    pub fn datastores(&self) -> Vec<Arc<DatastoreEntry>> {
        self.datastores
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Removes a datastore from what the server offers. Sessions that already hold it finish.
    pub fn remove_datastore(&self, name: &str) -> Option<Arc<DatastoreEntry>> {
        self.datastores
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name)
    }

    /// Adds or replaces a datastore.
    pub fn insert_datastore(&self, entry: DatastoreEntry) {
        self.meter.attach(&entry);
        self.datastores
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(entry.name.clone(), Arc::new(entry));
    }
}

/// What metering's background loops read from the server (see `metering::MeteredServer`).
impl MeteredServer for AppState {
    fn datastores(&self) -> Vec<Arc<DatastoreEntry>> {
        AppState::datastores(self)
    }

    fn tenant_ids(&self) -> Vec<String> {
        self.auth.tenants().into_iter().map(|t| t.id).collect()
    }
}
