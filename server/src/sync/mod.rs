//! Sync with other PBS-compatible servers (docs/design.md#sync): a client of the PBS protocol
//! (`remote`, `reader`) and the pull job that copies a remote datastore's snapshots into a
//! local one (`pull`), only the chunks the local store lacks crossing the network.
//!
//! Layering: above `datastore/` (it writes snapshots through the same [`BackupLease`] a
//! client's backup session uses, so locks, owners, quotas, retention and usage hold), below
//! `jobs/` (which schedules pull jobs and runs them as tasks).
//!
//! [`BackupLease`]: crate::datastore::BackupLease

pub mod pull;
mod rate;
mod reader;
mod remote;

pub use pull::{PullParams, PullSummary};
pub use rate::{RateLimiter, Throttled};
pub use reader::RemoteReader;
pub use remote::{RemoteClient, RemoteSpec};

use crate::datastore::DatastoreError;
use crate::format::FormatError;

/// Errors of the sync layer; each names the remote or object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("remote '{remote}': unable to connect to {address}: {source}")]
    Connect {
        remote: String,
        address: String,
        source: std::io::Error,
    },
    #[error("remote '{remote}': {message}")]
    Transport { remote: String, message: String },
    #[error("remote '{remote}': reading the secret file {path}: {source}")]
    Secret {
        remote: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The remote answered an error status; `message` is its text.
    #[error("remote '{remote}': {what}: {status} {message}")]
    Remote {
        remote: String,
        what: String,
        status: u16,
        message: String,
    },
    #[error("remote '{remote}': {what}: unexpected answer: {message}")]
    Answer {
        remote: String,
        what: String,
        message: String,
    },
    #[error("{object}: {source}")]
    Format { object: String, source: FormatError },
    #[error("{0}")]
    Datastore(#[from] DatastoreError),
    #[error("{0}")]
    Refused(String),
    #[error("sync aborted")]
    Aborted,
}

impl SyncError {
    /// The remote answered 404 (a file the snapshot does not have).
    pub fn is_not_found(&self) -> bool {
        matches!(self, SyncError::Remote { status: 404, .. })
    }
}
