//! Object Lock (WORM) and bucket lifecycle operations of a backend
//! (docs/design.md#retention-locks).
//!
//! Only object stores with S3 Object Lock implement [`ObjectLock`]; the local backend has none
//! (`Backend::object_lock` returns `None`) and the datastore enforces locks itself there.

use crate::backend::BackendError;

/// S3 Object Lock retention modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    /// Removable before its date only with the bypass-governance permission.
    Governance,
    /// Nobody can remove or shorten it before its date, not even the bucket owner.
    Compliance,
}

impl LockMode {
    /// `governance` or `compliance` (the config file's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }

    /// Parse the config file's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "governance" => Some(LockMode::Governance),
            "compliance" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// The retention of one object version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    /// Unix seconds.
    pub retain_until: i64,
}

/// One stored version of an object (versioned buckets), or a delete marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Datastore key (without the backend prefix).
    pub key: String,
    pub version_id: String,
    pub delete_marker: bool,
}

/// Lifecycle rules for the backend's prefix (`[datastore.lifecycle]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LifecycleRules {
    /// Expire noncurrent versions this many days after they became noncurrent.
    pub expire_noncurrent_after_days: Option<u32>,
    /// Transition current objects after this many days ...
    pub transition_after_days: Option<u32>,
    /// ... to this (instant-access) storage class.
    pub transition_storage_class: Option<String>,
}

/// Storage classes whose objects must be restored before they can be read. A datastore reads
/// chunks, indexes and manifests at any time (restore, verify, GC marking), so these classes
/// would break it.
pub const ARCHIVE_STORAGE_CLASSES: &[&str] =
    &["GLACIER", "DEEP_ARCHIVE", "GLACIER_FLEXIBLE_RETRIEVAL"];

impl LifecycleRules {
    /// Refuse transitions to archive classes and half-specified transitions.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.transition_after_days, &self.transition_storage_class) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "transition_after_days and transition_storage_class must be set together"
                        .to_string(),
                )
            }
            _ => {}
        }
        if let Some(class) = &self.transition_storage_class {
            let upper = class.to_ascii_uppercase();
            if ARCHIVE_STORAGE_CLASSES.contains(&upper.as_str()) {
                return Err(format!(
                    "storage class '{class}' is an archive class: its objects must be restored \
                     before they can be read, but restores, verification and garbage collection \
                     need every chunk and index readable at once; use an instant-access class \
                     such as STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING or GLACIER_IR"
                ));
            }
        }
        if self.expire_noncurrent_after_days == Some(0) || self.transition_after_days == Some(0) {
            return Err("lifecycle day counts must be at least 1".to_string());
        }
        Ok(())
    }

    /// True when there is no rule to install.
    pub fn is_empty(&self) -> bool {
        self.expire_noncurrent_after_days.is_none() && self.transition_after_days.is_none()
    }
}

/// Object Lock and lifecycle requests on an object store. Keys are datastore keys.
#[async_trait::async_trait]
pub trait ObjectLock: Send + Sync {
    /// Whether the bucket has Object Lock enabled (`Ok(false)` when it has not; an error when
    /// the question could not be asked).
    async fn object_lock_enabled(&self) -> Result<bool, BackendError>;
    /// Set the retention of the current version of `key`. Shortening a governance retention
    /// or changing its mode needs `bypass_governance`; compliance can only be extended.
    async fn set_retention(
        &self,
        key: &str,
        retention: Retention,
        bypass_governance: bool,
    ) -> Result<(), BackendError>;
    /// The retention of the current version of `key`, `None` when it has none.
    async fn get_retention(&self, key: &str) -> Result<Option<Retention>, BackendError>;
    /// Turn the legal hold of the current version of `key` on or off.
    async fn set_legal_hold(&self, key: &str, on: bool) -> Result<(), BackendError>;
    /// Whether the current version of `key` is under legal hold.
    async fn get_legal_hold(&self, key: &str) -> Result<bool, BackendError>;
    /// Every version and delete marker under `prefix`.
    async fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, BackendError>;
    /// Permanently delete one version. `bypass_governance` is only for the explicit admin path.
    async fn delete_version(
        &self,
        key: &str,
        version_id: &str,
        bypass_governance: bool,
    ) -> Result<(), BackendError>;
    /// Install `rules` for this backend's prefix, keeping the rules of other prefixes.
    async fn install_lifecycle(&self, rules: &LifecycleRules) -> Result<(), BackendError>;
    /// The rules installed for this backend's prefix (read back from the bucket).
    async fn lifecycle(&self) -> Result<LifecycleRules, BackendError>;
    /// Object Lock requests (retention and legal-hold reads and writes) sent so far.
    fn lock_request_count(&self) -> u64;
}
