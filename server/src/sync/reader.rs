//! A reader session on a remote snapshot (docs/protocol.md#reader-session): whole files by name
//! and chunks by digest, several at once on one connection.

use bytes::Bytes;
use http::Method;

use super::session::{with_query, H2Session, FORM};
use super::SyncError;
use crate::format::{digest_to_hex, Digest};

/// One open reader session.
pub struct RemoteReader {
    session: H2Session,
}

impl RemoteReader {
    pub(super) fn new(session: H2Session) -> Self {
        RemoteReader { session }
    }

    /// A file of the snapshot as stored (a blob or an index); 404 when it has none.
    pub async fn download(&self, file_name: &str) -> Result<Bytes, SyncError> {
        let path = with_query("download", &[("file-name", file_name.to_string())]);
        self.session
            .request(Method::GET, &path, FORM, Bytes::new(), file_name)
            .await
    }

    /// A chunk as stored (compressed or encrypted blob).
    pub async fn chunk(&self, digest: &Digest) -> Result<Bytes, SyncError> {
        let hex = digest_to_hex(digest);
        self.session
            .request(
                Method::GET,
                &format!("chunk?digest={hex}"),
                FORM,
                Bytes::new(),
                &format!("chunk {hex}"),
            )
            .await
    }
}
