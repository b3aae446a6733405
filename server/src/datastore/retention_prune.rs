//! What prune needs from retention locks: whether a snapshot it selected for removal must
//! stay, and why, so that a dry run shows what the real run will do (the removal itself is
//! refused by `check_snapshot_removal` in any case).

use crate::format::names::{format_backup_time, BackupDir, BackupNamespace};

use super::layout::snapshot_prefix;
use super::{Datastore, DatastoreError};

impl Datastore {
    /// Why the snapshot cannot be removed now: a legal hold, or a retention lock whose
    /// retain-until date lies ahead (`None`: no lock holds it). Read-only, unlike the check
    /// a removal makes (which also forgets a passed lock).
    pub fn retention_hold(
        &self,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<Option<String>, DatastoreError> {
        let Some(info) = self.retention.snapshot(&snapshot_prefix(ns, dir)?) else {
            return Ok(None);
        };
        let until = format_backup_time(info.retain_until)
            .unwrap_or_else(|_| format!("{} (Unix time)", info.retain_until));
        if info.legal_hold {
            return Ok(Some(format!(
                "legal hold ({} mode until {until}, enforced by {})",
                info.mode, info.enforced_by
            )));
        }
        if info.retain_until > self.retention.now() {
            return Ok(Some(format!(
                "{} mode until {until}, enforced by {}",
                info.mode, info.enforced_by
            )));
        }
        Ok(None)
    }
}
