//! The single error type of the test client library.
//!
//! Protocol tests assert on HTTP status codes and server messages, so every server-side
//! refusal is kept as [`ClientError::Status`] with the status and the plain body text.

/// Errors of the PBS test client (transport, protocol, format and restore checks).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-success status; `body` is its (plain text) message.
    #[error("{context}: HTTP {status}: {body}")]
    Status {
        context: String,
        status: u16,
        body: String,
    },
    #[error("{context}: I/O error: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{context}: HTTP/1.1 error: {source}")]
    Hyper {
        context: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{context}: HTTP/2 error: {source}")]
    H2 {
        context: String,
        #[source]
        source: h2::Error,
    },
    #[error("{context}: invalid JSON: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    /// The server broke the protocol contract (missing field, wrong shape, ...).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Bad input given to the client itself (repository string, names, options).
    #[error("invalid input: {0}")]
    Input(String),
    #[error("blob/index format: {0}")]
    Format(String),
    #[error("crypto: {0}")]
    Crypto(String),
    /// A client-side restore check of server/docs/protocol.md#reader-endpoints failed (csum, size,
    /// CRC, digest).
    #[error("restore check failed: {0}")]
    Verify(String),
    #[error("test server: {0}")]
    Server(String),
}

impl ClientError {
    /// HTTP status of a server refusal, if this error is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Plain-text body of a server refusal, if this error is one.
    pub fn body(&self) -> Option<&str> {
        match self {
            ClientError::Status { body, .. } => Some(body),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ClientError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn h2(context: impl Into<String>, source: h2::Error) -> Self {
        ClientError::H2 {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        ClientError::Json {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of the test client library.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
