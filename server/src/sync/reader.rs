//! A reader session on a remote snapshot (HTTP/2 after the upgrade; docs/protocol.md#reader-session):
//! whole files by name and chunks by digest, several at once on one connection.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioExecutor;

use super::remote::error_text;
use super::SyncError;
use crate::format::{digest_to_hex, Digest};

/// Flow-control windows like the stock client's (corpus: INITIAL_WINDOW_SIZE 2147483646 and
/// 4 MiB frames): a chunk of up to 16 MiB arrives without waiting for window updates.
const WINDOW: u32 = 1 << 30;
const MAX_FRAME: u32 = 4 << 20;
/// Scheme and authority of every in-session request, as the stock client sends them (HTTP/2
/// requires both; PBS ignores them).
const SESSION_BASE: &str = "https://localhost:8007";

/// One open reader session.
pub struct RemoteReader {
    remote: String,
    what: String,
    sender: http2::SendRequest<Empty<Bytes>>,
}

impl RemoteReader {
    pub(super) async fn handshake(
        remote: String,
        what: String,
        upgraded: Upgraded,
    ) -> Result<RemoteReader, SyncError> {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .max_frame_size(MAX_FRAME)
            .handshake(upgraded)
            .await
            .map_err(|e| SyncError::Transport {
                remote: remote.clone(),
                message: format!("{what}: HTTP/2: {e}"),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(RemoteReader {
            remote,
            what,
            sender,
        })
    }

    /// A file of the snapshot as stored (a blob or an index); 404 when it has none.
    pub async fn download(&self, file_name: &str) -> Result<Bytes, SyncError> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("file-name", file_name)
            .finish();
        self.get(&format!("/download?{query}"), file_name).await
    }

    /// A chunk as stored (compressed or encrypted blob).
    pub async fn chunk(&self, digest: &Digest) -> Result<Bytes, SyncError> {
        let hex = digest_to_hex(digest);
        self.get(&format!("/chunk?digest={hex}"), &format!("chunk {hex}"))
            .await
    }

    async fn get(&self, uri: &str, object: &str) -> Result<Bytes, SyncError> {
        let what = || format!("{}: {object}", self.what);
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("{SESSION_BASE}{uri}"))
            .body(Empty::new())
            .map_err(|e| self.transport(format!("{}: {e}", what())))?;
        let mut sender = self.sender.clone();
        sender
            .ready()
            .await
            .map_err(|e| self.transport(format!("{}: {e}", what())))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.transport(format!("{}: {e}", what())))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.transport(format!("{}: {e}", what())))?
            .to_bytes();
        if !status.is_success() {
            return Err(SyncError::Remote {
                remote: self.remote.clone(),
                what: what(),
                status: status.as_u16(),
                message: error_text(&body),
            });
        }
        Ok(body)
    }

    fn transport(&self, message: String) -> SyncError {
        SyncError::Transport {
            remote: self.remote.clone(),
            message,
        }
    }
}
