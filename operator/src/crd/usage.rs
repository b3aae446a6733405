//! Usage of a tenant as the server reports it, kept in the Tenant's status so `kubectl` and
//! billing see it without talking to the server.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tenant-wide usage, last read from the server's usage endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageStatus {
    /// Bytes the snapshots reference (before deduplication).
    pub logical_bytes: u64,
    /// Bytes of unique chunks stored (what the quota counts).
    pub physical_bytes: u64,
    pub chunks: u64,
    pub snapshots: u64,
    pub groups: u64,
    /// The quota the server enforces, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
    /// The server reports usage past the warning share of the quota.
    #[serde(default)]
    pub quota_warning: bool,
    /// Per datastore.
    #[serde(default)]
    pub datastores: Vec<DatastoreUsage>,
    /// RFC 3339 time the operator read these figures.
    pub read_at: String,
}

/// Usage of one datastore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatastoreUsage {
    pub store: String,
    pub logical_bytes: u64,
    pub physical_bytes: u64,
    pub chunks: u64,
    pub snapshots: u64,
    pub groups: u64,
    /// S3 requests the server made for this datastore (absent for local datastores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_requests: Option<u64>,
}
