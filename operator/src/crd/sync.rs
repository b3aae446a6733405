//! `SyncJob`: a pull sync job that copies snapshots from a remote PBS-compatible server into a
//! Datastore on a schedule (the server's `[[remote]]` and `[[sync_job]]`, one of each per
//! SyncJob). A resource of its own rather than fields of `Datastore`: a datastore can pull from
//! several remotes, each job has its own credentials Secret and its own run status, and GitOps
//! users add and remove jobs independently of the datastore.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ChildStatus;

/// Desired pull sync job into one datastore (or namespace subtree).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "pbs.cloud",
    version = "v1alpha1",
    kind = "SyncJob",
    namespaced,
    status = "SyncJobStatus",
    shortname = "pbssync",
    category = "pbs",
    derive = "PartialEq",
    doc = "A pull sync job: snapshots of a remote PBS-compatible datastore copied into a Datastore on a schedule",
    printcolumn(name = "Datastore", type_ = "string", json_path = ".spec.datastore"),
    printcolumn(name = "Remote", type_ = "string", json_path = ".spec.remote.host"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(
        name = "Last Run",
        type_ = "string",
        json_path = ".status.lastRunState"
    ),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lagSeconds"),
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
pub struct SyncJobSpec {
    /// `pull` (default: from the remote into the Datastore) or `push` (from the Datastore to
    /// the remote, as a pushing PBS does).
    #[serde(default, skip_serializing_if = "SyncDirection::is_pull")]
    pub direction: SyncDirection,
    /// Name of the Datastore object (same namespace) the snapshots are pulled into (pushed
    /// from).
    #[schemars(length(min = 1, max = 253))]
    pub datastore: String,
    /// The server to pull from.
    pub remote: SyncRemoteSpec,
    /// Datastore name on the remote.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"))]
    pub remote_store: String,
    /// Remote namespace to start in (`a/b`); the root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*){0,6}$"))]
    pub remote_namespace: Option<String>,
    /// Local namespace the remote namespace maps to (`a/b`); the root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*){0,6}$"))]
    pub namespace: Option<String>,
    /// Namespace levels below `remoteNamespace` to include; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 7))]
    pub max_depth: Option<u32>,
    /// PBS calendar event, e.g. `hourly` or `*-*-* 02:00`.
    #[serde(default = "default_schedule")]
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// Group filters like PBS's: `type:vm`, `group:vm/100`, `regex:^ct/`, `exclude:...`.
    #[serde(default)]
    pub group_filter: Vec<String>,
    /// Remove local snapshots, groups and namespaces that vanished on the remote (protected
    /// and retention-locked snapshots stay).
    #[serde(default)]
    pub remove_vanished: bool,
    /// Pull only the newest N snapshots of each group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub transfer_last: Option<u64>,
    /// Local owner (`user@realm`) of the groups the job creates; `root@pam` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[^\s:/!@]+@[A-Za-z0-9_][A-Za-z0-9_.-]{1,31}$"))]
    pub owner: Option<String>,
    /// Pull only snapshots whose last verification passed on the remote.
    #[serde(default)]
    pub verified_only: bool,
    /// Pull only snapshots whose every file is client-side encrypted.
    #[serde(default)]
    pub encrypted_only: bool,
    /// Download limit per second for all of the job's connections, e.g. `20 MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)? ?(B|KB|KiB|MB|MiB|GB|GiB)?$"))]
    pub rate_in: Option<String>,
    /// Upload limit per second for all of the job's connections (push), e.g. `20 MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)? ?(B|KB|KiB|MB|MiB|GB|GiB)?$"))]
    pub rate_out: Option<String>,
    /// Groups pulled at the same time (PBS `worker-threads`); 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub worker_threads: Option<u32>,
    /// Keep the job but do not run it.
    #[serde(default)]
    pub disable: bool,
}

/// Which way a SyncJob copies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncDirection {
    #[default]
    Pull,
    Push,
}

impl SyncDirection {
    fn is_pull(&self) -> bool {
        *self == SyncDirection::Pull
    }
}

fn default_schedule() -> String {
    "hourly".to_string()
}

/// The remote server and how to log in to it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRemoteSpec {
    /// Host name or IP address.
    #[schemars(length(min = 1, max = 253), pattern(r"^[A-Za-z0-9.:-]+$"))]
    pub host: String,
    /// HTTPS port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// `user@realm` (password login) or `user@realm!token` (API token).
    #[schemars(pattern(
        r"^[^\s:/!@]+@[A-Za-z0-9_][A-Za-z0-9_.-]{1,31}(![A-Za-z0-9_][A-Za-z0-9_.-]*)?$"
    ))]
    pub auth_id: String,
    /// SHA-256 fingerprint of the remote's certificate (`ab:cd:...`, 32 bytes), the only
    /// certificate trusted.
    #[schemars(pattern(r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$"))]
    pub fingerprint: String,
    /// Secret key holding the password or the token secret; mounted into the server as a file.
    pub secret_ref: SyncSecretRef,
}

fn default_port() -> u16 {
    8007
}

/// One key of a Secret in the SyncJob's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncSecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Status of a SyncJob: the binding (conditions, tenant) written by the Tenant reconcile, and
/// the last run as the server reports it, written by the poller. The two writers patch
/// disjoint fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncJobStatus {
    #[serde(flatten)]
    pub child: ChildStatus,
    #[serde(flatten)]
    pub run: SyncRunStatus,
}

/// The last run of a sync job, read from the server's `GET /api2/json/admin/sync`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRunStatus {
    /// RFC 3339 time the last finished run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// Result of the last run: `OK`, `ERROR: ...`, or `running` while one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_state: Option<String>,
    /// Task id (UPID) of the last run, for its task log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_upid: Option<String>,
    /// RFC 3339 time of the next scheduled run (absent when disabled or not on the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// RFC 3339 time the last successful run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// Seconds from the end of the last successful run to the operator's last read; absent
    /// before the first success. Rewritten when it moved by 5 minutes or a tenth, whichever is
    /// more (`lastSuccess` is exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
}
