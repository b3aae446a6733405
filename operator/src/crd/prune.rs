//! `PrunePolicy`: which snapshots of a datastore to keep, applied on a schedule.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ChildStatus;

/// Desired prune job of one datastore (or namespace subtree).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "pbs.cloud",
    version = "v1alpha1",
    kind = "PrunePolicy",
    namespaced,
    status = "ChildStatus",
    shortname = "pbspp",
    category = "pbs",
    derive = "PartialEq",
    doc = "A prune schedule and keep rules for a Datastore",
    printcolumn(name = "Datastore", type_ = "string", json_path = ".spec.datastore"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
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
pub struct PrunePolicySpec {
    /// Name of the Datastore object (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub datastore: String,
    /// Namespace to start in (`a/b`); the root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    /// Namespace levels below `ns` to include; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 7))]
    pub max_depth: Option<u32>,
    /// PBS calendar event, e.g. `daily` or `*-*-* 02:00`.
    #[serde(default = "default_schedule")]
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// Group filters like PBS's: `type:vm`, `group:vm/100`, `regex:^ct/`.
    #[serde(default)]
    pub group_filter: Vec<String>,
    /// Keep rules; at least one should be set, or prune keeps everything.
    #[serde(default)]
    pub keep: KeepSpec,
    /// Keep the job but do not run it.
    #[serde(default)]
    pub disable: bool,
}

fn default_schedule() -> String {
    "daily".to_string()
}

/// PBS's keep options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeepSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub last: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub hourly: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub daily: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub weekly: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub monthly: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub yearly: Option<u64>,
}
