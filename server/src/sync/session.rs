//! An HTTP/2 session on an upgraded connection (docs/protocol.md#transport): the transport of
//! reader and backup sessions, several requests at once.

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::SyncError;

/// Flow-control windows like the stock client's (corpus: INITIAL_WINDOW_SIZE 2147483646 and
/// 4 MiB frames): a chunk of up to 16 MiB travels without waiting for window updates.
const WINDOW: u32 = 1 << 30;
const MAX_FRAME: u32 = 4 << 20;
/// Scheme and authority of every in-session request, as the stock client sends them (HTTP/2
/// requires both; PBS ignores them).
const SESSION_BASE: &str = "https://localhost:8007";

pub(super) const FORM: &str = "application/x-www-form-urlencoded";
pub(super) const OCTETS: &str = "application/octet-stream";
pub(super) const JSON: &str = "application/json";

/// One open session; `what` names it in errors.
pub(super) struct H2Session {
    remote: String,
    what: String,
    sender: http2::SendRequest<Full<Bytes>>,
}

impl H2Session {
    pub(super) async fn handshake(
        remote: String,
        what: String,
        upgraded: Upgraded,
    ) -> Result<H2Session, SyncError> {
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
        Ok(H2Session {
            remote,
            what,
            sender,
        })
    }

    /// One request; the body of a success answer, or the remote's error naming `object`.
    pub(super) async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Bytes,
        object: &str,
    ) -> Result<Bytes, SyncError> {
        let what = || format!("{}: {object}", self.what);
        let request = Request::builder()
            .method(method)
            .uri(format!("{SESSION_BASE}/{path_and_query}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
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

    /// A request whose answer is PBS's `{"data": …}`; the data.
    pub(super) async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Bytes,
        object: &str,
    ) -> Result<Value, SyncError> {
        let raw = self
            .request(method, path_and_query, content_type, body, object)
            .await?;
        let mut answer: Value = serde_json::from_slice(&raw).map_err(|e| SyncError::Answer {
            remote: self.remote.clone(),
            what: format!("{}: {object}", self.what),
            message: e.to_string(),
        })?;
        Ok(answer["data"].take())
    }

    fn transport(&self, message: String) -> SyncError {
        SyncError::Transport {
            remote: self.remote.clone(),
            message,
        }
    }
}

/// `path?k=v&…` with every value encoded.
pub(super) fn with_query(path: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    format!("{path}?{encoded}")
}

/// PBS error bodies are `{"message": …}` or plain text.
pub(super) fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}
