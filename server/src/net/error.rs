//! The error every HTTP handler returns. PBS sends errors as plain message text with a status
//! code (docs/protocol.md#errors), labelled `application/json` for historical reasons.

use http::{Response, StatusCode};

use super::body::{text, Body, JSON_CONTENT_TYPE};
use crate::format::FormatError;

/// An error answer: status plus the message the client shows to its user.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    /// 400, the default status for anything the client sent wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 401 with PBS's generic text, so a caller cannot probe which part of a login was wrong.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication failed")
    }
    /// 401 with a specific message (e.g. chunk downloads that were not announced by an index).
    pub fn unauthorized_msg(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    /// 403 with PBS's generic text.
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission check failed")
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    /// A missing required parameter.
    pub fn missing_param(name: &str) -> Self {
        Self::bad_request(format!(
            "parameter '{name}': parameter is missing and it is not optional"
        ))
    }
    /// A parameter that does not parse or is out of range.
    pub fn bad_param(name: &str, why: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("parameter '{name}': {why}"))
    }

    /// The message as it is, without a trailing newline (as PBS sends it).
    pub fn into_response(self) -> Response<Body> {
        text(self.status, JSON_CONTENT_TYPE, self.message)
    }
}

impl From<FormatError> for HttpError {
    fn from(err: FormatError) -> Self {
        Self::bad_request(err.to_string())
    }
}
