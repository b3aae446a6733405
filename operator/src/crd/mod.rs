//! The five custom resource kinds of group `pbs.cloud`, version `v1alpha1`, and the status
//! shapes they share. Conditions follow the Kubernetes convention (`Ready`, `Progressing`,
//! `Degraded`) so Argo CD and Flux read health without custom scripts.

// Several `printcolumn(type_ = "string", ...)` in one `#[kube]` attribute are distinct columns,
// not duplicates.
#![allow(clippy::duplicated_attributes)]

mod datastore;
mod prune;
mod retention;
mod sync;
mod tenant;
mod usage;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use datastore::{CaBundleRef, Datastore, DatastoreSpec, LifecycleSpec, S3Spec, SecretKeyRef};
pub use prune::{KeepSpec, PrunePolicy, PrunePolicySpec};
pub use retention::{weakening, LockMode, RetentionLock, RetentionLockSpec};
pub use sync::{
    SyncDirection, SyncJob, SyncJobSpec, SyncJobStatus, SyncRemoteSpec, SyncRunStatus,
    SyncSecretRef,
};
pub use tenant::{
    CertManagerSpec, DeletionPolicy, IngressSpec, QuotaSpec, ResourcesSpec, StorageSpec, Tenant,
    TenantSpec, TenantStatus, TlsRouteSpec, TlsSpec,
};
pub use usage::{DatastoreUsage, UsageStatus};

/// API group of every kind.
pub const GROUP: &str = "pbs.cloud";
/// API version of every kind.
pub const VERSION: &str = "v1alpha1";

/// One status condition (the shape of `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason, machine readable.
    pub reason: String,
    /// What happened, for humans.
    pub message: String,
    /// RFC 3339 time of the last status change of this condition.
    pub last_transition_time: String,
    /// The generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status shared by Datastore, PrunePolicy and RetentionLock (and the binding part of a
/// SyncJob's).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The Tenant this object is rendered into, once bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Inserts or replaces the condition of `new.type_`, keeping the old transition time when the
/// status did not change (so `lastTransitionTime` means what it says).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(old) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
        *old = new;
    } else {
        conditions.push(new);
    }
}

/// The current time as condition timestamps carry it: RFC 3339, UTC, whole seconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Builds a condition stamped with `now`.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    // Never empty: some API servers (1.20) store "" as null and then refuse it as a string.
    let message = message.into();
    let message = if message.is_empty() {
        reason.to_string()
    } else {
        message
    };
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: now.to_string(),
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_condition_keeps_transition_time_when_status_unchanged() {
        let mut list = vec![condition("Ready", true, "A", "", Some(1), "t1")];
        set_condition(&mut list, condition("Ready", true, "B", "m", Some(2), "t2"));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, "t1");
        assert_eq!(list[0].reason, "B");
        set_condition(&mut list, condition("Ready", false, "C", "", Some(3), "t3"));
        assert_eq!(list[0].last_transition_time, "t3");
        set_condition(
            &mut list,
            condition("Degraded", false, "D", "", Some(3), "t4"),
        );
        assert_eq!(list.len(), 2);
    }
}
