//! `Datastore`: a PBS datastore of one tenant, local or under an S3 bucket prefix.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ChildStatus;

/// Desired state of one datastore.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "pbs.cloud",
    version = "v1alpha1",
    kind = "Datastore",
    namespaced,
    status = "ChildStatus",
    shortname = "pbsds",
    category = "pbs",
    derive = "PartialEq",
    doc = "A PBS datastore of a Tenant, kept in a local directory or under an S3 bucket prefix",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenant"),
    printcolumn(name = "Bucket", type_ = "string", json_path = ".spec.s3.bucket"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatastoreSpec {
    /// Name of the Tenant (same namespace) that serves this datastore.
    #[schemars(length(min = 1, max = 253))]
    pub tenant: String,
    /// Datastore name clients use (`PBS_REPOSITORY=...:<name>`); defaults to the object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 32), pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Keep the datastore in S3 instead of the tenant's data volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    /// PBS calendar event for garbage collection, e.g. `daily`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_schedule: Option<String>,
    /// Physical-bytes quota; new backups are refused past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub quota_bytes: Option<u64>,
    /// Object Lock retain-until dates are rounded up to multiples of this many days, so a
    /// reused chunk's lock is extended at most once per generation (server default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3650))]
    pub lock_generation_days: Option<u64>,
    /// Bucket lifecycle rules the server installs for this datastore's prefix (S3 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleSpec>,
}

/// Bucket lifecycle rules for the datastore's prefix.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleSpec {
    /// Expire noncurrent object versions this many days after they became noncurrent (their
    /// Object Lock still has to pass first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub expire_noncurrent_after_days: Option<u64>,
    /// Move current objects to `transitionStorageClass` after this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub transition_after_days: Option<u64>,
    /// An instant-access class such as `STANDARD_IA`; archive classes are refused by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub transition_storage_class: Option<String>,
}

/// S3 location and credentials of a datastore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix; `<namespace>/<tenant id>/<datastore>` when absent. Path segments joined by
    /// single `/` (none leading, trailing or empty), so that prefixes compare exactly; it must
    /// neither contain nor lie inside another datastore's prefix in the same bucket (checked by
    /// the operator: condition `Ready=False`, reason `PrefixOverlap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 512),
        pattern(r"^[A-Za-z0-9!_.*'()=+-]+(/[A-Za-z0-9!_.*'()=+-]+)*$")
    )]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://.+$"))]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default)]
    pub path_style: bool,
    /// Secret with the access key id and secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretKeyRef>,
    /// Credential source when no Secret is given: `env` or `default-chain` (IRSA, instance
    /// profile, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(env|default-chain)$"))]
    pub credentials: Option<String>,
    /// Storage class of new objects; archive classes are refused by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Server-side encryption: `AES256` or `aws:kms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(AES256|aws:kms)$"))]
    pub sse: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_kms_key_id: Option<String>,
    /// Secret key holding a PEM bundle of extra CAs for the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleRef>,
    /// The bucket was created with S3 Object Lock; required before a RetentionLock binds.
    #[serde(default)]
    pub object_lock: bool,
}

/// A Secret with the two S3 keys.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub name: String,
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

/// One key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    pub secret_name: String,
    #[serde(default = "default_ca_key")]
    pub key: String,
}

fn default_access_key_id_key() -> String {
    "access-key-id".to_string()
}
fn default_secret_access_key_key() -> String {
    "secret-access-key".to_string()
}
fn default_ca_key() -> String {
    "ca.crt".to_string()
}

impl Datastore {
    /// The datastore name inside the server.
    pub fn store_name(&self) -> String {
        self.spec
            .name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}
