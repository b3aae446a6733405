//! The error of pxar and catalog parsing.

/// What went wrong while reading a pxar archive or a catalog. `Malformed` and the lookup
/// errors are the archive's or the caller's fault; `Source` is a failure to fetch the bytes.
#[derive(Debug, thiserror::Error)]
pub enum PxarError {
    /// The bytes do not form a valid archive; the message names the offset and the item.
    #[error("{what}: {msg}")]
    Malformed { what: &'static str, msg: String },
    /// A limit that protects the server was passed (depth, table size, collisions).
    #[error("{what}: {msg}")]
    Limit { what: &'static str, msg: String },
    /// A path component does not exist.
    #[error("error opening '{0}'")]
    NotFound(String),
    /// A path tried to leave the archive.
    #[error("cannot enter parent directory in archive")]
    ParentDir,
    /// The path names something that is not a directory where one is needed.
    #[error("expected directory entry, got entry kind {0}")]
    NotADirectory(&'static str),
    /// The byte source failed (chunk missing, corrupt, backend error).
    #[error("{0}")]
    Source(String),
}

impl PxarError {
    pub(crate) fn malformed(what: &'static str, msg: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            msg: msg.into(),
        }
    }

    pub(crate) fn limit(what: &'static str, msg: impl Into<String>) -> Self {
        Self::Limit {
            what,
            msg: msg.into(),
        }
    }

    /// True when the archive's bytes (not the caller's request or the storage) are at fault.
    pub fn is_malformed(&self) -> bool {
        matches!(self, Self::Malformed { .. } | Self::Limit { .. })
    }
}
