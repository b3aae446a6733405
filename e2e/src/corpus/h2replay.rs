//! HTTP/2 inside an upgraded backup or reader session, with the stock client's settings, the
//! recorded request headers, and a tap on the bytes from the server so the replay can read
//! the server's first SETTINGS frame and connection WINDOW_UPDATE.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::poll_fn;
use http::{HeaderMap, Method, Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::ReplayError;
use crate::h2session::{CLIENT_MAX_FRAME, CLIENT_WINDOW};

/// How many bytes from the server the tap keeps (the opening frames fit easily).
const TAP_LIMIT: usize = 64 * 1024;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_WINDOW_UPDATE: u8 = 0x8;
const FLAG_ACK: u8 = 0x1;

/// What the server sent first on the HTTP/2 connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOpening {
    /// Setting names and values of the first non-ACK SETTINGS frame, in frame order.
    pub settings: Vec<(String, u64)>,
    /// Increment of the first connection-level WINDOW_UPDATE, if one came before any
    /// stream frame.
    pub conn_window_update: Option<u64>,
}

fn setting_name(id: u16) -> String {
    match id {
        1 => "HEADER_TABLE_SIZE".into(),
        2 => "ENABLE_PUSH".into(),
        3 => "MAX_CONCURRENT_STREAMS".into(),
        4 => "INITIAL_WINDOW_SIZE".into(),
        5 => "MAX_FRAME_SIZE".into(),
        6 => "MAX_HEADER_LIST_SIZE".into(),
        8 => "ENABLE_CONNECT_PROTOCOL".into(),
        other => format!("SETTING_{other}"),
    }
}

/// Parses the server's opening frames from the captured bytes; `None` until the first
/// SETTINGS frame is complete.
pub fn parse_opening(bytes: &[u8]) -> Option<ServerOpening> {
    let mut pos = 0;
    let mut opening: Option<ServerOpening> = None;
    while bytes.len() >= pos + 9 {
        let len = u32::from_be_bytes([0, bytes[pos], bytes[pos + 1], bytes[pos + 2]]) as usize;
        let kind = bytes[pos + 3];
        let flags = bytes[pos + 4];
        let stream = u32::from_be_bytes([
            bytes[pos + 5] & 0x7f,
            bytes[pos + 6],
            bytes[pos + 7],
            bytes[pos + 8],
        ]);
        if bytes.len() < pos + 9 + len {
            break;
        }
        let payload = &bytes[pos + 9..pos + 9 + len];
        pos += 9 + len;
        match (kind, stream) {
            (FRAME_SETTINGS, 0) if flags & FLAG_ACK == 0 && opening.is_none() => {
                let settings = payload
                    .chunks_exact(6)
                    .map(|e| {
                        let id = u16::from_be_bytes([e[0], e[1]]);
                        let value = u32::from_be_bytes([e[2], e[3], e[4], e[5]]);
                        (setting_name(id), value as u64)
                    })
                    .collect();
                opening = Some(ServerOpening {
                    settings,
                    conn_window_update: None,
                });
            }
            (FRAME_SETTINGS, 0) => {}
            (FRAME_WINDOW_UPDATE, 0) if payload.len() == 4 => {
                if let Some(o) = opening.as_mut().filter(|o| o.conn_window_update.is_none()) {
                    let inc =
                        u32::from_be_bytes([payload[0] & 0x7f, payload[1], payload[2], payload[3]]);
                    o.conn_window_update = Some(inc as u64);
                }
            }
            // the first frame of a stream ends the opening
            (_, s) if s != 0 => break,
            _ => {}
        }
    }
    opening
}

/// Wraps the upgraded stream and copies the first bytes the server sends.
struct Tap<T> {
    inner: T,
    captured: Arc<Mutex<Vec<u8>>>,
    seen: watch::Sender<usize>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                let total = {
                    let mut cap = self.captured.lock().unwrap_or_else(|p| p.into_inner());
                    let room = TAP_LIMIT.saturating_sub(cap.len());
                    cap.extend_from_slice(&new[..new.len().min(room)]);
                    cap.len()
                };
                let _ = self.seen.send(total);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One in-session answer.
#[derive(Debug, Clone)]
pub struct H2Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP/2 client connection on an upgraded stream. Dropping it closes the connection
/// without GOAWAY, as the stock client usually does.
pub struct H2Conn {
    send: h2::client::SendRequest<Bytes>,
    task: tokio::task::JoinHandle<()>,
    captured: Arc<Mutex<Vec<u8>>>,
    seen: watch::Receiver<usize>,
}

impl Drop for H2Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl H2Conn {
    /// Client handshake with the stock client's SETTINGS (2^31-2 windows, 4 MiB frames).
    pub async fn handshake<T>(io: T) -> Result<H2Conn, ReplayError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let captured = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = watch::channel(0usize);
        let tap = Tap {
            inner: io,
            captured: captured.clone(),
            seen: tx,
        };
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(CLIENT_WINDOW)
            .initial_connection_window_size(CLIENT_WINDOW)
            .max_frame_size(CLIENT_MAX_FRAME)
            .handshake::<_, Bytes>(tap)
            .await
            .map_err(|e| ReplayError::h2("HTTP/2 handshake after the upgrade", e))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Conn {
            send,
            task,
            captured,
            seen: rx,
        })
    }

    /// Waits (up to 10 s) until the server's first SETTINGS frame has arrived.
    pub async fn opening(&mut self) -> Result<ServerOpening, ReplayError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let snapshot = self
                .captured
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(o) = parse_opening(&snapshot) {
                return Ok(o);
            }
            match tokio::time::timeout_at(deadline, self.seen.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(ReplayError::Http(format!(
                        "no SETTINGS frame from the server within 10 s ({} bytes seen)",
                        snapshot.len()
                    )))
                }
            }
        }
    }

    /// Sends one request: `headers` are the regular (non-pseudo) headers in order; the
    /// pseudo-headers come from `method` and `uri`.
    pub async fn request(
        &self,
        method: &str,
        uri: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<H2Answer, ReplayError> {
        let ctx = format!("{method} {uri}");
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|e| ReplayError::Http(format!("{ctx}: bad method: {e}")))?;
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b
            .body(())
            .map_err(|e| ReplayError::Http(format!("{ctx}: cannot build request: {e}")))?;
        let send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| ReplayError::h2(format!("{ctx}: waiting for stream capacity"), e))?;
        let mut send = send;
        let end = body.is_empty();
        let (resp_fut, stream) = send
            .send_request(req, end)
            .map_err(|e| ReplayError::h2(format!("{ctx}: sending headers"), e))?;
        let resp = if end {
            resp_fut
                .await
                .map_err(|e| ReplayError::h2(format!("{ctx}: awaiting response"), e))?
        } else {
            let send_fut = send_body(stream, body);
            tokio::pin!(send_fut);
            tokio::pin!(resp_fut);
            tokio::select! {
                r = &mut resp_fut => r.map_err(|e| ReplayError::h2(format!("{ctx}: awaiting response"), e))?,
                s = &mut send_fut => match s {
                    Ok(()) => resp_fut.await.map_err(|e| ReplayError::h2(format!("{ctx}: awaiting response"), e))?,
                    Err(send_err) => match resp_fut.await {
                        Ok(r) => r,
                        Err(_) => return Err(send_err),
                    },
                },
            }
        };
        let (parts, mut recv) = resp.into_parts();
        let mut buf = BytesMut::new();
        while let Some(data) = recv.data().await {
            let data = data.map_err(|e| ReplayError::h2(format!("{ctx}: reading body"), e))?;
            let _ = recv.flow_control().release_capacity(data.len());
            buf.extend_from_slice(&data);
        }
        Ok(H2Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: buf.freeze(),
        })
    }
}

async fn send_body(mut stream: h2::SendStream<Bytes>, mut data: Bytes) -> Result<(), ReplayError> {
    stream.reserve_capacity(data.len());
    while !data.is_empty() {
        let cap = poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .ok_or_else(|| ReplayError::Http("stream closed while sending the body".into()))?
            .map_err(|e| ReplayError::h2("waiting for send window", e))?;
        if cap == 0 {
            continue;
        }
        let piece = data.split_to(cap.min(data.len()));
        stream
            .send_data(piece, data.is_empty())
            .map_err(|e| ReplayError::h2("sending body", e))?;
        if !data.is_empty() {
            stream.reserve_capacity(data.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_frames() {
        let mut b = Vec::new();
        // SETTINGS: INITIAL_WINDOW_SIZE 33554432, MAX_FRAME_SIZE 4194304
        b.extend_from_slice(&[0, 0, 12, 4, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0, 4, 0x02, 0, 0, 0, 0, 5, 0, 0x40, 0, 0]);
        // WINDOW_UPDATE +33488897 on stream 0
        b.extend_from_slice(&[0, 0, 4, 8, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&33_488_897u32.to_be_bytes());
        let o = parse_opening(&b).unwrap();
        assert_eq!(
            o.settings,
            vec![
                ("INITIAL_WINDOW_SIZE".to_string(), 33_554_432),
                ("MAX_FRAME_SIZE".to_string(), 4_194_304)
            ]
        );
        assert_eq!(o.conn_window_update, Some(33_488_897));
        assert!(parse_opening(&b[..10]).is_none());
    }
}
