//! Where usage metering and quotas (issue "WORM, quotas, metering") meet the chunk store: the
//! chunk insert and GC report what they stored and removed, and inserts ask for quota first.

use crate::backend::{Backend, BackendError};
use crate::format::Digest;

use super::{Datastore, DatastoreError};

/// Usage counters of one datastore, loaded at open.
#[derive(Debug, Default)]
pub struct UsageState {}

impl UsageState {
    /// Read the persisted counters of the datastore.
    pub async fn load(_backend: &dyn Backend) -> Result<Self, BackendError> {
        Ok(Self::default())
    }
}

impl Datastore {
    /// Called before a new chunk of `size` stored bytes is written; refuses
    /// ([`DatastoreError::QuotaExceeded`]) when the owner's quota would be passed.
    pub(crate) fn usage_check_quota(&self, _size: u64) -> Result<(), DatastoreError> {
        Ok(())
    }

    /// A new chunk object of `size` bytes was written.
    pub(crate) fn usage_chunk_stored(&self, _digest: &Digest, _size: u64) {}

    /// GC removed a chunk object of `size` bytes.
    pub(crate) fn usage_chunk_removed(&self, _size: u64) {}
}
