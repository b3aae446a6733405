//! Sync with other PBS-compatible servers (docs/design.md#sync): a client of the PBS protocol
//! (`remote`, `session`, `reader`, `writer`, `rate`), the pull job that copies a remote
//! datastore's snapshots into a local one (`pull`) and the push job that copies local snapshots
//! to a remote (`push`); only chunks the other side lacks cross the network.
//!
//! Layering: above `datastore/` (it writes snapshots through the same [`BackupLease`] a
//! client's backup session uses, so locks, owners, quotas, retention and usage hold), below
//! `jobs/` (which schedules pull jobs and runs them as tasks).
//!
//! [`BackupLease`]: crate::datastore::BackupLease

mod job;
pub mod pull;
pub mod push;
mod rate;
mod reader;
mod remote;
mod session;
mod writer;

pub use job::{AbortCheck, LogSink};
pub use pull::PullSummary;
pub use push::PushSummary;
pub use rate::{RateLimiter, Throttled};
pub use reader::RemoteReader;
pub use remote::{RemoteClient, RemoteSpec};
pub use writer::RemoteWriter;

use crate::datastore::DatastoreError;
use crate::format::group_filter::GroupFilter;
use crate::format::names::BackupNamespace;
use crate::format::FormatError;

/// Which way a job copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the remote into the local datastore.
    Pull,
    /// From the local datastore to the remote.
    Push,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Pull => "pull",
            Direction::Push => "push",
        }
    }
}

/// A sync job: which local and remote datastore subtrees, which way, and what to copy.
#[derive(Clone, Debug)]
pub struct SyncParams {
    pub direction: Direction,
    pub remote: RemoteSpec,
    pub remote_store: String,
    pub remote_ns: BackupNamespace,
    /// The local namespace that corresponds to `remote_ns`.
    pub ns: BackupNamespace,
    /// Namespace levels below the source's namespace to include; all when absent.
    pub max_depth: Option<usize>,
    pub filters: Vec<GroupFilter>,
    pub remove_vanished: bool,
    pub transfer_last: Option<u64>,
    /// Pull: local owner of the groups the job writes.
    pub owner: String,
    pub verified_only: bool,
    pub encrypted_only: bool,
    /// Download and upload limits, bytes per second.
    pub rate_in: Option<u64>,
    pub rate_out: Option<u64>,
    /// Groups copied at the same time.
    pub worker_threads: usize,
}

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
