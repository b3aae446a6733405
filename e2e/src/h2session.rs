//! HTTP/2 client side of an upgraded backup/reader connection
//! (server/docs/protocol.md#session-upgrade, #http2-inside-a-session).
//!
//! Uses the `h2` crate directly so the SETTINGS match the stock client (2^31-2 stream and
//! connection windows, 4 MiB max frame) and so many requests can be in flight at once.

use bytes::{Bytes, BytesMut};
use futures::future::poll_fn;
use h2::client::SendRequest;
use http::{Method, Request};
use serde_json::Value;

use crate::error::{ClientError, Result};
use crate::params::{encode_params, USER_AGENT};

/// Window the stock client advertises per stream and for the connection.
pub const CLIENT_WINDOW: u32 = 2_147_483_646;
/// Largest frame the stock client accepts.
pub const CLIENT_MAX_FRAME: u32 = 4 * 1024 * 1024;
/// Constant `:authority`/scheme the stock client puts in every in-session request.
const AUTHORITY_BASE: &str = "https://localhost:8007";

/// Status and body of one in-session request.
#[derive(Debug, Clone)]
pub struct H2Response {
    pub status: u16,
    pub body: Bytes,
}

impl H2Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One HTTP/2 connection; dropping it aborts the connection task (TCP close, no GOAWAY),
/// which is how the stock client ends sessions.
pub struct H2Session {
    send: SendRequest<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl H2Session {
    /// Runs the HTTP/2 client handshake (prior knowledge) on the upgraded stream.
    pub async fn handshake<T>(io: T) -> Result<H2Session>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(CLIENT_WINDOW)
            .initial_connection_window_size(CLIENT_WINDOW)
            .max_frame_size(CLIENT_MAX_FRAME)
            .handshake::<T, Bytes>(io)
            .await
            .map_err(|e| ClientError::h2("HTTP/2 handshake after upgrade", e))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Session { send, task })
    }

    /// Closes the connection without GOAWAY (same as dropping).
    pub fn abort(self) {
        drop(self)
    }

    /// Sends one request; `path_and_query` has no `/api2/json` prefix (e.g. `finish` or
    /// `fixed_chunk?wid=1&...`). Never fails on a non-2xx status: the caller decides.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<H2Response> {
        let p = path_and_query.trim_start_matches('/');
        let ctx = format!("{method} {p}");
        let req = Request::builder()
            .method(method)
            .uri(format!("{AUTHORITY_BASE}/{p}"))
            .header("user-agent", USER_AGENT)
            .header("content-type", content_type)
            .body(())
            .map_err(|e| ClientError::Input(format!("{ctx}: cannot build request: {e}")))?;
        let mut send = self.send.clone();
        send = send
            .ready()
            .await
            .map_err(|e| ClientError::h2(format!("{ctx}: waiting for stream capacity"), e))?;
        let end = body.is_empty();
        let (resp_fut, stream) = send
            .send_request(req, end)
            .map_err(|e| ClientError::h2(format!("{ctx}: sending headers"), e))?;
        let await_ctx = format!("{ctx}: awaiting response");
        let resp = if end {
            resp_fut.await.map_err(|e| ClientError::h2(await_ctx, e))?
        } else {
            let send_fut = send_body(stream, body);
            tokio::pin!(send_fut);
            tokio::pin!(resp_fut);
            tokio::select! {
                r = &mut resp_fut => r.map_err(|e| ClientError::h2(await_ctx, e))?,
                s = &mut send_fut => match s {
                    // the response still has to arrive
                    Ok(()) => resp_fut.await.map_err(|e| ClientError::h2(await_ctx, e))?,
                    // the server may have answered (e.g. 400) and reset the stream
                    Err(send_err) => match resp_fut.await {
                        Ok(r) => r,
                        Err(_) => return Err(send_err),
                    },
                },
            }
        };
        let status = resp.status().as_u16();
        let mut recv = resp.into_body();
        let mut buf = BytesMut::new();
        while let Some(data) = recv.data().await {
            let data = data.map_err(|e| ClientError::h2(format!("{ctx}: reading body"), e))?;
            let _ = recv.flow_control().release_capacity(data.len());
            buf.extend_from_slice(&data);
        }
        Ok(H2Response {
            status,
            body: buf.freeze(),
        })
    }

    /// Request whose parameters travel in the query; returns the `data` member
    /// (server/docs/protocol.md#success-envelope).
    pub async fn call(&self, method: Method, path: &str, params: Option<&Value>) -> Result<Value> {
        let pq = path_with_query(path, params)?;
        let resp = self
            .request(
                method.clone(),
                &pq,
                "application/x-www-form-urlencoded",
                Bytes::new(),
            )
            .await?;
        data_of(&format!("{method} {pq}"), &resp)
    }

    /// Binary upload with query parameters (`application/octet-stream`); returns `data`.
    pub async fn upload(&self, path: &str, params: Option<&Value>, body: Bytes) -> Result<Value> {
        let pq = path_with_query(path, params)?;
        let resp = self
            .request(Method::POST, &pq, "application/octet-stream", body)
            .await?;
        data_of(&format!("POST {pq}"), &resp)
    }

    /// Request with a JSON body (the `PUT *_index` append calls); returns `data`.
    pub async fn call_json_body(&self, method: Method, path: &str, body: &Value) -> Result<Value> {
        let resp = self
            .request(
                method.clone(),
                path,
                "application/json",
                Bytes::from(body.to_string()),
            )
            .await?;
        data_of(&format!("{method} {path}"), &resp)
    }

    /// GET returning raw bytes (`previous`, `download`, `chunk`).
    pub async fn download(&self, path: &str, params: Option<&Value>) -> Result<Bytes> {
        let pq = path_with_query(path, params)?;
        let resp = self
            .request(
                Method::GET,
                &pq,
                "application/x-www-form-urlencoded",
                Bytes::new(),
            )
            .await?;
        if resp.is_success() {
            Ok(resp.body)
        } else {
            Err(status_err(&format!("GET {pq}"), &resp))
        }
    }
}

fn path_with_query(path: &str, params: Option<&Value>) -> Result<String> {
    let q = params.map(encode_params).unwrap_or_default();
    if q.len() > 4096 {
        return Err(ClientError::Input(format!(
            "query for {path} is {} characters, the stock client refuses more than 4096",
            q.len()
        )));
    }
    Ok(if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    })
}

fn status_err(ctx: &str, resp: &H2Response) -> ClientError {
    ClientError::Status {
        context: ctx.to_string(),
        status: resp.status,
        body: resp.text(),
    }
}

/// Applies the Rust client's H2 result rule: empty → null, else an object with `data`.
fn data_of(ctx: &str, resp: &H2Response) -> Result<Value> {
    if !resp.is_success() {
        return Err(status_err(ctx, resp));
    }
    if resp.body.is_empty() {
        return Ok(Value::Null);
    }
    let mut v: Value = serde_json::from_slice(&resp.body).map_err(|e| ClientError::json(ctx, e))?;
    match v.as_object_mut().and_then(|o| o.remove("data")) {
        Some(d) => Ok(d),
        None => Err(ClientError::Protocol(format!(
            "{ctx}: got result without data property: {}",
            resp.text()
        ))),
    }
}

/// Sends a body respecting the peer's flow-control window.
async fn send_body(mut stream: h2::SendStream<Bytes>, mut data: Bytes) -> Result<()> {
    stream.reserve_capacity(data.len());
    while !data.is_empty() {
        let cap = poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .ok_or_else(|| ClientError::Protocol("stream closed while sending body".into()))?
            .map_err(|e| ClientError::h2("waiting for send window", e))?;
        if cap == 0 {
            continue;
        }
        let piece = data.split_to(cap.min(data.len()));
        stream
            .send_data(piece, data.is_empty())
            .map_err(|e| ClientError::h2("sending body", e))?;
        if !data.is_empty() {
            stream.reserve_capacity(data.len());
        }
    }
    Ok(())
}
