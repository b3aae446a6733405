//! The `total`/`used`/`avail` figures a datastore reports in its status. Proxmox VE polls them
//! every 10 s to show how full the storage is, so they must mean something on every backend:
//!
//! * With a limit (the datastore's `quota_bytes`, its `capacity_bytes`, or its tenant's
//!   `quota_bytes`): `used` is what the datastore stores (physical bytes of its chunks),
//!   `avail` the smallest headroom left under those limits (on a local datastore also at most
//!   what the filesystem has free), and `total` = `used` + `avail`.
//! * Without any limit, a local datastore reports its filesystem like PBS (statfs), and an
//!   object-store datastore reports `used` with `total` = `avail` = 0: the bucket has no
//!   size to report, and 0 is how PBS reports figures it cannot give.

use crate::backend::Capacity;

use super::super::{lock_std, DatastoreError};
use super::StoreUsage;

impl StoreUsage {
    /// Set the nominal capacity reported when no quota is tighter (`capacity_bytes`).
    pub fn set_capacity_limit(&self, limit: Option<u64>) {
        *lock_std(&self.capacity_limit) = limit;
    }

    /// The configured nominal capacity.
    pub fn capacity_limit(&self) -> Option<u64> {
        *lock_std(&self.capacity_limit)
    }

    /// The figures of `GET .../status` (see the module docs).
    pub async fn status_capacity(&self) -> Result<Capacity, DatastoreError> {
        let used = self.physical();
        let mut headroom: Option<u64> = None;
        let mut limit_by = |left: u64| headroom = Some(headroom.map_or(left, |h| h.min(left)));
        for limit in [self.store_quota(), self.capacity_limit()]
            .into_iter()
            .flatten()
        {
            limit_by(limit.saturating_sub(used));
        }
        if let Some(meter) = self.meter() {
            if let Some(limit) = meter.quota() {
                limit_by(limit.saturating_sub(meter.used()));
            }
        }
        let filesystem = self.backend.capacity().await?;
        Ok(combine(used, headroom, filesystem))
    }
}

/// Status figures from the datastore's own usage, its tightest headroom and, for local
/// datastores, the filesystem's figures.
fn combine(used: u64, headroom: Option<u64>, filesystem: Option<Capacity>) -> Capacity {
    match (headroom, filesystem) {
        (None, Some(fs)) => fs,
        (None, None) => Capacity {
            total: 0,
            used,
            avail: 0,
        },
        (Some(left), fs) => {
            let avail = fs.map_or(left, |fs| left.min(fs.avail));
            Capacity {
                total: used.saturating_add(avail),
                used,
                avail,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(total: u64, used: u64, avail: u64) -> Capacity {
        Capacity { total, used, avail }
    }

    #[test]
    fn figures_per_case() {
        // local without limits: the filesystem, like PBS
        assert_eq!(combine(5, None, Some(cap(100, 40, 60))), cap(100, 40, 60));
        // object store without limits: only what it stores
        assert_eq!(combine(5, None, None), cap(0, 5, 0));
        // a limit: used + headroom
        assert_eq!(combine(30, Some(70), None), cap(100, 30, 70));
        // over the limit: nothing available
        assert_eq!(combine(130, Some(0), None), cap(130, 130, 0));
        // local with a limit: the filesystem's free space caps the headroom
        assert_eq!(
            combine(30, Some(70), Some(cap(100, 90, 10))),
            cap(40, 30, 10)
        );
    }
}
