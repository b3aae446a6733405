//! `RetentionLock`: WORM retention (S3 Object Lock) for the snapshots of a datastore.
//!
//! The CRD carries transition rules (`x-kubernetes-validations` with `oldSelf`) so that the API
//! server itself refuses to shorten the retention, weaken compliance to governance, or move
//! the lock to another scope. API servers older than 1.25 do not evaluate these rules; the
//! operator then still refuses to render a weakened lock it has seen before (see controller).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ChildStatus;

/// Desired retention lock.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "pbs.cloud",
    version = "v1alpha1",
    kind = "RetentionLock",
    namespaced,
    status = "ChildStatus",
    shortname = "pbsrl",
    category = "pbs",
    derive = "PartialEq",
    doc = "WORM retention of a Datastore's snapshots; can be lengthened or strengthened, never shortened or weakened",
    printcolumn(name = "Datastore", type_ = "string", json_path = ".spec.datastore"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Days", type_ = "integer", json_path = ".spec.days"),
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
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.days >= oldSelf.days", "message": "retention days cannot be shortened"},
    {"rule": "oldSelf.mode != 'Compliance' || self.mode == 'Compliance'", "message": "compliance mode cannot be weakened to governance"},
    {"rule": "self.datastore == oldSelf.datastore && (has(self.ns) ? self.ns : '') == (has(oldSelf.ns) ? oldSelf.ns : '')", "message": "datastore and ns of a retention lock are immutable"},
    {"rule": "size(oldSelf.groups) == 0 ? size(self.groups) == 0 : oldSelf.groups.all(g, g in self.groups)", "message": "groups of a retention lock can only be added, and a whole-scope lock cannot be narrowed"},
    {"rule": "!oldSelf.legalHold || self.legalHold", "message": "a legal hold cannot be released through this resource"}
]))]
pub struct RetentionLockSpec {
    /// Name of the Datastore object (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub datastore: String,
    /// Namespace the lock covers (`a/b`); the whole datastore when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    /// Groups (`vm/100`) the lock covers; the whole scope when empty.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `Governance` (can be bypassed by privileged users) or `Compliance` (cannot).
    pub mode: LockMode,
    /// Retention after each snapshot's backup time, in days.
    #[schemars(range(min = 1, max = 36500))]
    pub days: u64,
    /// Place an S3 legal hold on covered snapshots.
    #[serde(default)]
    pub legal_hold: bool,
}

/// S3 Object Lock modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LockMode {
    #[default]
    Governance,
    Compliance,
}

impl LockMode {
    /// The value of the config file's `mode` key.
    pub fn as_config(self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }
}

/// Why `new` would weaken `old`, or `None` when it does not; the operator's own check of the
/// rules the API server enforces from Kubernetes 1.25 on.
pub fn weakening(old: &RetentionLockSpec, new: &RetentionLockSpec) -> Option<String> {
    if new.days < old.days {
        return Some(format!(
            "retention days cannot be shortened ({} -> {})",
            old.days, new.days
        ));
    }
    if old.mode == LockMode::Compliance && new.mode != LockMode::Compliance {
        return Some("compliance mode cannot be weakened to governance".into());
    }
    let ns = |s: &RetentionLockSpec| s.ns.clone().unwrap_or_default();
    if old.datastore != new.datastore || ns(old) != ns(new) {
        return Some("datastore and ns of a retention lock are immutable".into());
    }
    let narrowed = if old.groups.is_empty() {
        !new.groups.is_empty()
    } else {
        old.groups.iter().any(|g| !new.groups.contains(g))
    };
    if narrowed {
        return Some("groups of a retention lock can only be added".into());
    }
    if old.legal_hold && !new.legal_hold {
        return Some("a legal hold cannot be released through this resource".into());
    }
    None
}
