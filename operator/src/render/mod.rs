//! Pure rendering: from a Tenant and the Datastores, PrunePolicies, RetentionLocks and
//! SyncJobs bound to it to the exact objects the operator applies. No I/O here, so every rule is unit-tested.

mod config;
pub mod overlap;
mod route;
mod secrets;
mod workload;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_quota_route;
#[cfg(test)]
mod tests_sync;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{
    weakening, Datastore, PrunePolicy, RetentionLock, RetentionLockSpec, SyncJob, SyncJobSpec,
    Tenant,
};

/// Annotation on a RetentionLock holding the spec the operator last rendered (JSON). API
/// servers before 1.25 ignore the CRD's transition rules; with this the operator still never
/// renders a shorter or weaker lock than one it has enforced.
pub const ACCEPTED_ANNOTATION: &str = "pbs.cloud/accepted-spec";

/// The spec recorded in [`ACCEPTED_ANNOTATION`], if any.
pub fn accepted_spec(lock: &RetentionLock) -> Option<RetentionLockSpec> {
    let text = lock.annotations().get(ACCEPTED_ANNOTATION)?;
    serde_json::from_str(text).ok()
}

pub use config::{render_config, s3_prefix, sync_remote_name, sync_secret_path, CONFIG_KEY};
pub use route::{tls_route, tls_route_gvk};
pub use secrets::{
    certificate, config_secret, credentials_secret, fingerprint, generate_self_signed,
    secret_value, tls_secret, Credentials, TlsMaterial,
};
pub use workload::{data_pvc, deployment, ingress, service};

/// Port the server listens on (PBS's).
pub const SERVER_PORT: i32 = 8007;
/// Where the projected volume with config, certificate and S3 keys is mounted.
pub const CONFIG_DIR: &str = "/etc/pbs-cloud";
/// The server's data directory inside the pod.
pub const DATA_DIR: &str = "/var/lib/pbs-cloud";
/// Label every owned object carries, with the Tenant's name as value.
pub const TENANT_LABEL: &str = "pbs.cloud/tenant";
/// Field manager name for server-side apply.
pub const MANAGER: &str = "pbs-cloud-operator";
/// Image used when neither the Tenant nor the operator names one.
pub const DEFAULT_IMAGE: &str = "ghcr.io/pbs-cloud/pbs-cloud-server:latest";

/// A resource that cannot be rendered as asked.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("Tenant {0} has no uid yet (not read from the API server)")]
    NoUid(String),
    #[error("cannot generate a certificate for Tenant {tenant}: {message}")]
    Certificate { tenant: String, message: String },
    #[error("cannot read certificate of Tenant {tenant}: {message}")]
    BadCertificate { tenant: String, message: String },
    #[error("cannot generate credentials for Tenant {tenant}: {message}")]
    Credentials { tenant: String, message: String },
}

/// Names of everything owned by one Tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub workload: String,
    pub credentials: String,
    pub tls: String,
    pub config: String,
    pub data: String,
}

impl Names {
    /// Names derived from the Tenant's name (`<tenant>-pbs...`).
    pub fn of(tenant: &Tenant) -> Self {
        let base = format!("{}-pbs", tenant.name_any());
        Names {
            credentials: format!("{base}-credentials"),
            tls: tenant
                .spec
                .tls
                .as_ref()
                .and_then(|t| t.secret_name.clone())
                .unwrap_or_else(|| format!("{base}-tls")),
            config: format!("{base}-config"),
            data: format!("{base}-data"),
            workload: base,
        }
    }
}

/// The tenant id inside the server.
pub fn tenant_id(tenant: &Tenant) -> String {
    tenant
        .spec
        .tenant_id
        .clone()
        .unwrap_or_else(|| tenant.name_any())
}

/// The administrator's user id.
pub fn admin_user(tenant: &Tenant) -> String {
    tenant
        .spec
        .admin_user
        .clone()
        .unwrap_or_else(|| "admin@pbs".to_string())
}

/// Labels of every owned object; the selector is the subset without `managed-by`.
pub fn labels(tenant: &Tenant) -> BTreeMap<String, String> {
    let mut l = selector(tenant);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "pbs-cloud-operator".into(),
    );
    l
}

/// Pod selector of the tenant's server.
pub fn selector(tenant: &Tenant) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "pbs-cloud-server".into()),
        ("app.kubernetes.io/instance".into(), tenant.name_any()),
        (TENANT_LABEL.into(), tenant.name_any()),
    ])
}

/// The controller owner reference to the Tenant.
pub fn owner(tenant: &Tenant) -> Result<OwnerReference, RenderError> {
    tenant
        .controller_owner_ref(&())
        .ok_or_else(|| RenderError::NoUid(tenant.name_any()))
}

/// Metadata of an owned object named `name`.
pub fn owned_meta(tenant: &Tenant, name: &str) -> Result<ObjectMeta, RenderError> {
    Ok(ObjectMeta {
        name: Some(name.to_string()),
        namespace: tenant.namespace(),
        labels: Some(labels(tenant)),
        owner_references: Some(vec![owner(tenant)?]),
        ..ObjectMeta::default()
    })
}

/// The in-cluster DNS names of the tenant's Service (and ingress host).
pub fn dns_names(tenant: &Tenant) -> Vec<String> {
    let svc = Names::of(tenant).workload;
    let ns = tenant.namespace().unwrap_or_else(|| "default".into());
    let mut names = vec![
        svc.clone(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ];
    if let Some(ing) = &tenant.spec.ingress {
        names.push(ing.host.clone());
    }
    if let Some(route) = &tenant.spec.tls_route {
        if !names.contains(&route.host) {
            names.push(route.host.clone());
        }
    }
    if let Some(cm) = tenant
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.cert_manager.as_ref())
    {
        names.extend(cm.dns_names.iter().cloned());
    }
    names
}

/// `host:port` clients use: the ingress host (443), the TLSRoute host (its gateway port,
/// 443 by default) or the Service's cluster DNS name.
pub fn endpoint(tenant: &Tenant) -> String {
    match (&tenant.spec.ingress, &tenant.spec.tls_route) {
        (Some(ing), _) => format!("{}:443", ing.host),
        (None, Some(r)) => format!("{}:{}", r.host, r.port.unwrap_or(443)),
        (None, None) => {
            let ns = tenant.namespace().unwrap_or_else(|| "default".into());
            format!("{}.{ns}.svc:{SERVER_PORT}", Names::of(tenant).workload)
        }
    }
}

/// `PBS_REPOSITORY` for `store` (`user@realm@host:port:store`).
pub fn repository(tenant: &Tenant, store: &str) -> String {
    format!("{}@{}:{store}", admin_user(tenant), endpoint(tenant))
}

/// What a Tenant renders from: the tenant, its bound children, and resolved secrets.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub datastores: Vec<Datastore>,
    pub prune_policies: Vec<PrunePolicy>,
    pub retention_locks: Vec<RetentionLock>,
    pub sync_jobs: Vec<SyncJob>,
    /// Names of the SyncJobs whose Secret holds the key they name (their remote's password or
    /// token secret). The key is mounted into the server pod; a missing one would keep the pod
    /// from starting, so such a SyncJob is not rendered.
    pub sync_secrets: BTreeSet<String>,
    /// Access key id per Datastore object name, read from its credentials Secret.
    pub access_key_ids: BTreeMap<String, String>,
    /// Datastore object names whose S3 prefix overlaps one another datastore holds, with the
    /// message (see [`overlap`]).
    pub prefix_conflicts: BTreeMap<String, String>,
}

/// A child object that is not rendered, and why (shown in its status and as an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub kind: &'static str,
    pub name: String,
    pub reason: &'static str,
    pub message: String,
}

/// The children that render, after the binding rules; sorted by object name.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub datastores: Vec<Datastore>,
    pub prune_policies: Vec<PrunePolicy>,
    pub retention_locks: Vec<RetentionLock>,
    pub sync_jobs: Vec<SyncJob>,
    pub rejected: Vec<Rejected>,
}

/// Applies the binding rules: children must name this tenant / a bound datastore, S3 prefixes
/// do not overlap another datastore's, store names are unique, S3 credentials resolve, a
/// RetentionLock binds only to a local datastore or a bucket with Object Lock, and a SyncJob
/// only with its Secret key present and a spec the server accepts.
pub fn bind(tenant: &Tenant, inputs: &Inputs) -> Bound {
    let mut out = Bound::default();
    let mut stores: Vec<&Datastore> = inputs
        .datastores
        .iter()
        .filter(|d| d.spec.tenant == tenant.name_any() && d.meta().deletion_timestamp.is_none())
        .collect();
    stores.sort_by_key(|d| d.name_any());
    let mut seen = BTreeSet::new();
    for ds in stores {
        let reject = |reason, message| Rejected {
            kind: "Datastore",
            name: ds.name_any(),
            reason,
            message,
        };
        if let Some(message) = inputs.prefix_conflicts.get(&ds.name_any()) {
            out.rejected.push(reject("PrefixOverlap", message.clone()));
            continue;
        }
        if !seen.insert(ds.store_name()) {
            out.rejected.push(reject(
                "DuplicateName",
                format!(
                    "datastore name '{}' is already used in this tenant",
                    ds.store_name()
                ),
            ));
            continue;
        }
        if let Some(secret) = ds
            .spec
            .s3
            .as_ref()
            .and_then(|s| s.credentials_secret.as_ref())
        {
            if !inputs.access_key_ids.contains_key(&ds.name_any()) {
                out.rejected.push(reject(
                    "CredentialsMissing",
                    format!(
                        "Secret '{}' with key '{}' not found",
                        secret.name, secret.access_key_id_key
                    ),
                ));
                continue;
            }
        }
        if ds.spec.lifecycle.is_some() && ds.spec.s3.is_none() {
            out.rejected.push(reject(
                "LifecycleNeedsS3",
                "lifecycle rules apply to S3 datastores only; remove spec.lifecycle or add spec.s3"
                    .to_string(),
            ));
            continue;
        }
        out.datastores.push(ds.clone());
    }
    let find = |name: &str| {
        out.datastores
            .iter()
            .find(|d| d.name_any() == name)
            .cloned()
    };
    let mut policies: Vec<&PrunePolicy> = inputs.prune_policies.iter().collect();
    policies.sort_by_key(|p| p.name_any());
    let mut bound_policies = Vec::new();
    let mut rejected = Vec::new();
    for p in policies {
        if !owned_by_tenant(&inputs.datastores, &p.spec.datastore, tenant) {
            continue;
        }
        match find(&p.spec.datastore) {
            Some(_) => bound_policies.push(p.clone()),
            None => rejected.push(Rejected {
                kind: "PrunePolicy",
                name: p.name_any(),
                reason: "DatastoreNotReady",
                message: format!("Datastore '{}' is not bound", p.spec.datastore),
            }),
        }
    }
    let mut locks: Vec<&RetentionLock> = inputs.retention_locks.iter().collect();
    locks.sort_by_key(|l| l.name_any());
    let mut bound_locks = Vec::new();
    for l in locks {
        if !owned_by_tenant(&inputs.datastores, &l.spec.datastore, tenant) {
            continue;
        }
        let reject = |reason, message| Rejected {
            kind: "RetentionLock",
            name: l.name_any(),
            reason,
            message,
        };
        match find(&l.spec.datastore) {
            None => rejected.push(reject(
                "DatastoreNotReady",
                format!("Datastore '{}' is not bound", l.spec.datastore),
            )),
            Some(ds) => match &ds.spec.s3 {
                _ if accepted_spec(l).is_some_and(|a| weakening(&a, &l.spec).is_some()) => {
                    let accepted = accepted_spec(l).unwrap_or_default();
                    let why = weakening(&accepted, &l.spec).unwrap_or_default();
                    rejected.push(reject(
                        "WeakeningRefused",
                        format!("{why}; the previously accepted lock stays in force"),
                    ));
                    let mut kept = l.clone();
                    kept.spec = accepted;
                    bound_locks.push(kept);
                }
                Some(s3) if !s3.object_lock => rejected.push(reject(
                    "ObjectLockMissing",
                    format!(
                        "bucket '{}' of Datastore '{}' is not marked objectLock: true; a retention lock needs S3 Object Lock",
                        s3.bucket,
                        ds.name_any()
                    ),
                )),
                _ => bound_locks.push(l.clone()),
            },
        }
    }
    let mut jobs: Vec<&SyncJob> = inputs.sync_jobs.iter().collect();
    jobs.sort_by_key(|j| j.name_any());
    let mut bound_jobs = Vec::new();
    for j in jobs {
        if !owned_by_tenant(&inputs.datastores, &j.spec.datastore, tenant) {
            continue;
        }
        let reject = |reason, message| Rejected {
            kind: "SyncJob",
            name: j.name_any(),
            reason,
            message,
        };
        let secret = &j.spec.remote.secret_ref;
        if find(&j.spec.datastore).is_none() {
            rejected.push(reject(
                "DatastoreNotReady",
                format!("Datastore '{}' is not bound", j.spec.datastore),
            ));
        } else if !inputs.sync_secrets.contains(&j.name_any()) {
            rejected.push(reject(
                "SecretMissing",
                format!(
                    "Secret '{}' with key '{}' not found",
                    secret.name, secret.key
                ),
            ));
        } else if let Some(message) = sync_spec_error(&j.spec) {
            rejected.push(reject("InvalidSpec", message));
        } else {
            bound_jobs.push(j.clone());
        }
    }
    out.prune_policies = bound_policies;
    out.retention_locks = bound_locks;
    out.sync_jobs = bound_jobs;
    out.rejected.extend(rejected);
    out
}

/// What the server would refuse in a SyncJob's spec that the CRD schema cannot express (the
/// calendar event, group filters, namespaces, a zero rate), checked with the server's own
/// parsers so that a bad job is reported on its object instead of breaking the whole config.
pub fn sync_spec_error(spec: &SyncJobSpec) -> Option<String> {
    use pbs_cloud_server::format::{group_filter::GroupFilter, names::BackupNamespace};
    if let Err(e) = pbs_cloud_server::jobs::calendar::parse(&spec.schedule) {
        return Some(format!("schedule '{}': {e}", spec.schedule));
    }
    for filter in &spec.group_filter {
        if let Err(e) = GroupFilter::parse(filter) {
            return Some(format!("groupFilter '{filter}': {e}"));
        }
    }
    for (field, ns) in [
        ("namespace", &spec.namespace),
        ("remoteNamespace", &spec.remote_namespace),
    ] {
        if let Some(Err(e)) = ns.as_deref().map(BackupNamespace::parse) {
            return Some(format!("{field}: {e}"));
        }
    }
    for (field, rate) in [("rateIn", &spec.rate_in), ("rateOut", &spec.rate_out)] {
        if let Some(rate) = rate {
            if let Err(e) = pbs_cloud_server::config::parse_rate(&toml::Value::String(rate.clone()))
            {
                return Some(format!("{field}: {e}"));
            }
        }
    }
    None
}

/// True when the Datastore object `name` names this tenant (so its children belong here).
fn owned_by_tenant(all: &[Datastore], name: &str, tenant: &Tenant) -> bool {
    all.iter()
        .any(|d| d.name_any() == name && d.spec.tenant == tenant.name_any())
}
