//! The protocol layer's error type and its mapping to HTTP answers. Messages are the texts the
//! stock client shows its user (docs/protocol.md#backup-session, #reader-session), so most variants
//! carry a finished message.

use http::StatusCode;

use crate::datastore::DatastoreError;
use crate::format::FormatError;
use crate::net::HttpError;

/// Everything that can fail inside a backup or reader session.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A request the session state does not allow (400, PBS's default status).
    #[error("{0}")]
    Invalid(String),
    /// A missing file of a snapshot (404).
    #[error("{0}")]
    NotFound(String),
    /// A chunk download that no index of this reader session announced (401).
    #[error("{0}")]
    NotAllowed(String),
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A memory budget of the server, a tenant or the session is spent (503).
    #[error(transparent)]
    Budget(#[from] super::backup::budget::BudgetError),
    /// An already finished HTTP answer (parameter errors from `net::Params`).
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Status for a datastore error: missing objects are 404, storage failures 500, the rest is a
/// request the datastore refused (400).
pub fn datastore_status(err: &DatastoreError) -> StatusCode {
    if err.is_not_found() {
        return StatusCode::NOT_FOUND;
    }
    match err {
        DatastoreError::Backend(_) | DatastoreError::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

impl From<ProtocolError> for HttpError {
    fn from(err: ProtocolError) -> Self {
        match err {
            ProtocolError::Invalid(msg) => HttpError::bad_request(msg),
            ProtocolError::NotFound(msg) => HttpError::not_found(msg),
            ProtocolError::NotAllowed(msg) => HttpError::unauthorized_msg(msg),
            ProtocolError::Datastore(e) => HttpError::new(datastore_status(&e), e.to_string()),
            ProtocolError::Format(e) => HttpError::bad_request(e.to_string()),
            ProtocolError::Budget(e) => e.into(),
            ProtocolError::Http(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let e: HttpError = ProtocolError::NotAllowed("download chunk x not allowed".into()).into();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e: HttpError = ProtocolError::Datastore(DatastoreError::NotFound("gone".into())).into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e: HttpError = ProtocolError::Datastore(DatastoreError::Busy("locked".into())).into();
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::BAD_REQUEST, "locked")
        );
        let e: HttpError = ProtocolError::Datastore(DatastoreError::Internal("boom".into())).into();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        let e: HttpError = ProtocolError::Invalid("no valid previous backup".into()).into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
