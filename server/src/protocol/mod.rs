//! PBS backup and reader sessions: the HTTP/1.1 → HTTP/2 upgrade and everything spoken inside
//! it (docs/protocol.md#session-upgrade, #http2-inside-a-session, #backup-session,
//! #reader-session). The api router authenticates the upgrade request and hands it to
//! [`backup::upgrade`] or [`reader::upgrade`].

pub mod backup;
pub mod body;
pub mod error;
pub mod params;
pub mod reader;
pub mod upgrade;

use std::sync::Arc;

use crate::auth::Identity;
use crate::net::HttpError;
use crate::state::{AppState, DatastoreEntry};

pub use error::ProtocolError;
pub use upgrade::{BACKUP_PROTOCOL_ID, READER_PROTOCOL_ID};

/// The datastore `name` if `identity` may see its tenant; a foreign tenant's store is treated
/// exactly like a missing one so its existence does not leak.
fn visible_datastore(
    state: &AppState,
    identity: &Identity,
    name: &str,
) -> Option<Arc<DatastoreEntry>> {
    state
        .datastore(name)
        .filter(|entry| state.auth.can_see_tenant(identity, &entry.tenant))
}

/// Answer for a datastore that does not exist (or is not visible).
fn datastore_missing(name: &str) -> HttpError {
    HttpError::not_found(format!("datastore '{name}' does not exist"))
}

#[cfg(test)]
mod wire_tests;
