//! The quota and event sink of one tenant, shared by its datastores: the tenant's physical
//! bytes are the sum over its datastores' [`StoreUsage`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::super::{lock_std, DatastoreError};
use super::StoreUsage;

/// Receives the events the billing webhook and the metrics report.
pub trait UsageObserver: Send + Sync {
    /// A backup committed snapshot `snapshot` (its key prefix) with `logical` bytes.
    fn backup_finished(&self, tenant: &str, store: &str, snapshot: &str, logical: u64);
    /// A snapshot was removed (forget, prune, group or namespace removal).
    fn snapshot_removed(&self, tenant: &str, store: &str, snapshot: &str, logical: u64);
    /// A write was refused because the tenant's quota would be passed (once per crossing).
    fn quota_exceeded(&self, tenant: &str, store: &str, used: u64, limit: u64);
}

/// The quota and event sink of one tenant, shared by its datastores.
pub struct TenantMeter {
    tenant: String,
    limit: Mutex<Option<u64>>,
    warn_percent: Mutex<u8>,
    /// The usage of the tenant's datastores (weak: a closed datastore drops out).
    members: Mutex<Vec<Weak<StoreUsage>>>,
    observer: Mutex<Option<Arc<dyn UsageObserver>>>,
    /// Set when a quota-exceeded event was sent; cleared once usage is below the limit again.
    notified: AtomicBool,
}

/// Warning threshold when the configuration names none.
pub const DEFAULT_QUOTA_WARN_PERCENT: u8 = 90;

impl TenantMeter {
    pub fn new(tenant: &str) -> Arc<Self> {
        Arc::new(Self {
            tenant: tenant.to_string(),
            limit: Mutex::new(None),
            warn_percent: Mutex::new(DEFAULT_QUOTA_WARN_PERCENT),
            members: Mutex::new(Vec::new()),
            observer: Mutex::new(None),
            notified: AtomicBool::new(false),
        })
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Set the quota on physical bytes (None: unlimited) and the warning threshold.
    pub fn set_quota(&self, limit: Option<u64>, warn_percent: Option<u8>) {
        *lock_std(&self.limit) = limit;
        *lock_std(&self.warn_percent) = warn_percent.unwrap_or(DEFAULT_QUOTA_WARN_PERCENT);
    }

    pub fn set_observer(&self, observer: Arc<dyn UsageObserver>) {
        *lock_std(&self.observer) = Some(observer);
    }

    pub fn quota(&self) -> Option<u64> {
        *lock_std(&self.limit)
    }

    pub fn warn_percent(&self) -> u8 {
        *lock_std(&self.warn_percent)
    }

    /// Physical bytes over all live datastores of the tenant.
    pub fn used(&self) -> u64 {
        let mut members = lock_std(&self.members);
        members.retain(|w| w.strong_count() > 0);
        members
            .iter()
            .filter_map(Weak::upgrade)
            .map(|usage| usage.physical())
            .sum()
    }

    /// True when usage reached the warning share of the quota.
    pub fn warning(&self) -> bool {
        match self.quota() {
            Some(limit) => {
                let used = self.used() as u128;
                used * 100 >= limit as u128 * self.warn_percent() as u128
            }
            None => false,
        }
    }

    pub(super) fn observer(&self) -> Option<Arc<dyn UsageObserver>> {
        lock_std(&self.observer).clone()
    }

    pub(super) fn refuse(&self, store: &str, used: u64, limit: u64, what: &str) -> DatastoreError {
        if !self.notified.swap(true, Ordering::SeqCst) {
            if let Some(obs) = self.observer() {
                obs.quota_exceeded(&self.tenant, store, used, limit);
            }
        }
        DatastoreError::QuotaExceeded(format!(
            "quota exceeded for tenant '{}': {used} bytes used of a limit of {limit} bytes; \
             {what} refused (datastore '{store}')",
            self.tenant
        ))
    }

    /// Below the quota again: the next crossing sends a quota-exceeded event again.
    pub(super) fn clear_notified(&self) {
        self.notified.store(false, Ordering::SeqCst);
    }

    pub(super) fn add_member(&self, usage: &Arc<StoreUsage>) {
        let mut members = lock_std(&self.members);
        if !members
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(usage)))
        {
            members.push(Arc::downgrade(usage));
        }
    }

    pub(super) fn remove_member(&self, usage: &Arc<StoreUsage>) {
        lock_std(&self.members).retain(|w| !std::ptr::eq(w.as_ptr(), Arc::as_ptr(usage)));
    }
}
