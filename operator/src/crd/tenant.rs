//! `Tenant`: one PBS server pod with its own credentials, certificate and datastores.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, UsageStatus};

/// Desired state of a tenant's PBS endpoint.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "pbs.cloud",
    version = "v1alpha1",
    kind = "Tenant",
    namespaced,
    status = "TenantStatus",
    shortname = "pbst",
    category = "pbs",
    derive = "PartialEq",
    doc = "A PBS Cloud tenant: one PBS-compatible server with its own credentials, TLS certificate and datastores",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Fingerprint",
        type_ = "string",
        json_path = ".status.certificateFingerprint",
        priority = "1"
    ),
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.deletionPolicy"),
    printcolumn(
        name = "Used",
        type_ = "integer",
        json_path = ".status.usedBytes",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Tenant id inside the server; defaults to the object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"))]
    pub tenant_id: Option<String>,
    /// Server image; the operator's default image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `Retain` (default) keeps backup data when the Tenant is deleted; `Delete` removes it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// User id of the generated administrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[^\s:/!@]+@[A-Za-z0-9_.-]{2,32}$"))]
    pub admin_user: Option<String>,
    /// CPU/memory requests and limits of the server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// Persistent volume for the data directory (local datastores, caches); emptyDir when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Where the server certificate comes from; self-signed by the operator when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Optional per-tenant host name, exposed through an Ingress with TLS passthrough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Optional per-tenant host name routed by a Gateway API `TLSRoute` (TLS passthrough).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_route: Option<TlsRouteSpec>,
    /// Physical-bytes quota over all the tenant's datastores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSpec>,
}

/// Tenant-wide quota; backups that would pass `bytes` are refused by the server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSpec {
    /// Physical bytes (unique stored chunks) over all datastores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub bytes: Option<u64>,
    /// Share of the quota, in percent, from which status, events and metrics warn (server
    /// default 90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub warn_percent: Option<u8>,
}

/// A Gateway API `TLSRoute` (v1alpha2) sending a host name's TLS connections, unterminated,
/// to the tenant's Service; PBS clients pin the server certificate, so TLS must pass through.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsRouteSpec {
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
    )]
    pub host: String,
    /// The Gateway (with a TLS listener in `Passthrough` mode) the route attaches to.
    #[schemars(length(min = 1, max = 253))]
    pub gateway_name: String,
    /// Namespace of the Gateway; the Tenant's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_namespace: Option<String>,
    /// Listener name on the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Port clients connect to on the Gateway (for the status endpoint); 443 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// What happens to backup data when the Tenant is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Container resources as quantity strings (`500m`, `1Gi`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

/// A PersistentVolumeClaim for `/var/lib/pbs-cloud`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, e.g. `20Gi`.
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$"))]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Certificate source of the server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// An existing `kubernetes.io/tls` Secret to use as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Ask cert-manager for the certificate instead of self-signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerSpec>,
}

/// The cert-manager issuer that signs the tenant's certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerSpec {
    pub issuer_name: String,
    /// `Issuer` or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    #[schemars(pattern(r"^(Issuer|ClusterIssuer)$"))]
    pub issuer_kind: String,
    /// Extra DNS names for the certificate.
    #[serde(default)]
    pub dns_names: Vec<String>,
}

fn default_issuer_kind() -> String {
    "Issuer".to_string()
}

/// Per-tenant host name. PBS clients pin the server certificate, so TLS is passed through.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
    )]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Extra annotations, e.g. for controllers that enable passthrough per annotation.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Observed state of a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `host:port` of the server inside the cluster (or the ingress host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// SHA-256 fingerprint of the server certificate, as PBS clients pin it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_fingerprint: Option<String>,
    /// `PBS_REPOSITORY` value for the first datastore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Secret holding the generated admin password and API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Datastores rendered into the server configuration.
    #[serde(default)]
    pub datastores: Vec<String>,
    /// Physical bytes stored, as last reported by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Usage as last read from the server's usage endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageStatus>,
}
