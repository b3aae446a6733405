//! `[upload_limits]`: the memory budget of backup sessions (buffered upload bytes, open index
//! writers and index entries per session, tenant and server). Every field is optional; the
//! defaults are the server's built-in bounds.

use serde::Deserialize;

use crate::protocol::backup::budget::UploadLimits;

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadLimitsConfig {
    /// Chunk, blob and parameter bytes held in memory by all uploads together (MiB).
    pub buffer_mib_per_server: Option<u64>,
    /// The same per tenant (MiB).
    pub buffer_mib_per_tenant: Option<u64>,
    /// Seconds an upload waits for buffer budget before it is refused.
    pub buffer_wait_seconds: Option<u64>,
    /// Open index writers of all backup sessions together.
    pub open_writers_per_server: Option<u64>,
    /// The same per tenant.
    pub open_writers_per_tenant: Option<u64>,
    /// Index entries held by the open writers of one backup session.
    pub index_entries_per_session: Option<u64>,
    /// The same per tenant.
    pub index_entries_per_tenant: Option<u64>,
    /// The same for the whole server.
    pub index_entries_per_server: Option<u64>,
}

impl UploadLimitsConfig {
    /// The limits in force: configured values over the defaults.
    pub fn limits(&self) -> UploadLimits {
        let d = UploadLimits::default();
        UploadLimits {
            buffer_bytes_per_server: self
                .buffer_mib_per_server
                .map_or(d.buffer_bytes_per_server, |m| m.saturating_mul(MIB)),
            buffer_bytes_per_tenant: self
                .buffer_mib_per_tenant
                .map_or(d.buffer_bytes_per_tenant, |m| m.saturating_mul(MIB)),
            buffer_wait: self
                .buffer_wait_seconds
                .map_or(d.buffer_wait, std::time::Duration::from_secs),
            writers_per_server: self.open_writers_per_server.unwrap_or(d.writers_per_server),
            writers_per_tenant: self.open_writers_per_tenant.unwrap_or(d.writers_per_tenant),
            entries_per_session: self
                .index_entries_per_session
                .unwrap_or(d.entries_per_session),
            entries_per_tenant: self
                .index_entries_per_tenant
                .unwrap_or(d.entries_per_tenant),
            entries_per_server: self
                .index_entries_per_server
                .unwrap_or(d.entries_per_server),
        }
    }

    /// `(field, message)` of the first unusable value. A chunk upload needs up to 32 MiB of
    /// buffer (16 MiB encoded plus 16 MiB decoded), so smaller buffer budgets refuse backups.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (field, value) in [
            ("buffer_mib_per_server", self.buffer_mib_per_server),
            ("buffer_mib_per_tenant", self.buffer_mib_per_tenant),
        ] {
            if let Some(v) = value.filter(|v| !(33..=1024 * 1024).contains(v)) {
                return Err((field, format!("{v} is not 33..1048576 MiB")));
            }
        }
        for (field, value) in [
            ("open_writers_per_server", self.open_writers_per_server),
            ("open_writers_per_tenant", self.open_writers_per_tenant),
            ("index_entries_per_session", self.index_entries_per_session),
            ("index_entries_per_tenant", self.index_entries_per_tenant),
            ("index_entries_per_server", self.index_entries_per_server),
        ] {
            if value == Some(0) {
                return Err((field, "must be at least 1".to_string()));
            }
        }
        if let Some(s) = self.buffer_wait_seconds.filter(|s| *s > 3600) {
            return Err(("buffer_wait_seconds", format!("{s} is more than 3600")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(
            UploadLimitsConfig::default().limits(),
            UploadLimits::default()
        );
        let c = UploadLimitsConfig {
            buffer_mib_per_tenant: Some(64),
            index_entries_per_session: Some(1000),
            ..Default::default()
        };
        let l = c.limits();
        assert_eq!(l.buffer_bytes_per_tenant, 64 * MIB);
        assert_eq!(l.entries_per_session, 1000);
        assert!(c.check().is_ok());
        let bad = UploadLimitsConfig {
            buffer_mib_per_server: Some(8),
            ..Default::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "buffer_mib_per_server");
        let bad = UploadLimitsConfig {
            open_writers_per_tenant: Some(0),
            ..Default::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "open_writers_per_tenant");
    }
}
