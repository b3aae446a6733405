//! HTTP/1.1 over TLS at byte level. The replay must send request targets, header names,
//! header order and body framing exactly as recorded (doubled slashes, an empty `?`, a
//! `content-type` without a body, no `content-length` on a body-less POST), which a
//! general-purpose client normalises. Responses are parsed with `httparse`; the framing
//! (content-length or chunked) is kept because clients see it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::ReplayError;

/// Longest accepted response head.
const MAX_HEAD: usize = 64 * 1024;
/// Longest accepted response body (the largest are chunk downloads, ≤ 16 MiB + header).
const MAX_BODY: usize = 32 * 1024 * 1024;
/// How long one response may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

pub type Tls = TlsStream<TcpStream>;

/// How a response body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (1xx, 204, 304).
    None,
    ContentLength,
    Chunked,
    /// Until the connection closed.
    Close,
}

/// A response as read from the wire.
#[derive(Debug, Clone)]
pub struct WireResponse {
    pub status: u16,
    pub reason: String,
    /// Names as sent (the server's spelling), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl WireResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive connection.
pub struct RawConn {
    io: Tls,
    /// Bytes read but not consumed yet.
    buf: Vec<u8>,
}

impl RawConn {
    /// TCP + TLS to `host:port`, pinned to the server's certificate fingerprint.
    pub async fn connect(host: &str, port: u16, fingerprint: &str) -> Result<RawConn, ReplayError> {
        let ctx = format!("connect {host}:{port}");
        let cfg = crate::tls::client_config(fingerprint)?;
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((host, port)))
            .await
            .map_err(|_| ReplayError::Http(format!("{ctx}: timeout")))?
            .map_err(|e| ReplayError::io(&ctx, e))?;
        tcp.set_nodelay(true)
            .map_err(|e| ReplayError::io(&ctx, e))?;
        let io = tokio_rustls::TlsConnector::from(cfg)
            .connect(crate::tls::server_name(host)?, tcp)
            .await
            .map_err(|e| ReplayError::io(format!("{ctx}: TLS handshake"), e))?;
        Ok(RawConn {
            io,
            buf: Vec::new(),
        })
    }

    /// Writes `head` (request line and headers, with the blank line) and `body`.
    pub async fn send(&mut self, head: &[u8], body: &[u8]) -> Result<(), ReplayError> {
        self.io
            .write_all(head)
            .await
            .map_err(|e| ReplayError::io("send request head", e))?;
        if !body.is_empty() {
            self.io
                .write_all(body)
                .await
                .map_err(|e| ReplayError::io("send request body", e))?;
        }
        self.io
            .flush()
            .await
            .map_err(|e| ReplayError::io("flush request", e))
    }

    /// Reads one response; `head_request` for HEAD (no body).
    pub async fn read_response(&mut self, head_request: bool) -> Result<WireResponse, ReplayError> {
        tokio::time::timeout(RESPONSE_TIMEOUT, self.read_response_inner(head_request))
            .await
            .map_err(|_| ReplayError::Http(format!("no response within {RESPONSE_TIMEOUT:?}")))?
    }

    async fn read_response_inner(
        &mut self,
        head_request: bool,
    ) -> Result<WireResponse, ReplayError> {
        let (status, reason, headers, head_len) = loop {
            let mut hdrs = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut hdrs);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let headers = resp
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>();
                    break (
                        resp.code.unwrap_or(0),
                        resp.reason.unwrap_or("").to_string(),
                        headers,
                        n,
                    );
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(ReplayError::Http("response head too long".into()));
                    }
                    if self.fill().await? == 0 {
                        return Err(ReplayError::Http(
                            "connection closed before a complete response head".into(),
                        ));
                    }
                }
                Err(e) => return Err(ReplayError::Http(format!("unparsable response head: {e}"))),
            }
        };
        self.buf.drain(..head_len);
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let no_body =
            head_request || (100..200).contains(&status) || status == 204 || status == 304;
        let (body, framing) = if no_body {
            (Vec::new(), Framing::None)
        } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            (self.read_chunked().await?, Framing::Chunked)
        } else if let Some(len) = find("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| ReplayError::Http(format!("bad content-length {len:?}")))?;
            if len > MAX_BODY {
                return Err(ReplayError::Http(format!(
                    "body of {len} bytes is too large"
                )));
            }
            (self.read_exact_bytes(len).await?, Framing::ContentLength)
        } else {
            while self.fill().await? > 0 {
                if self.buf.len() > MAX_BODY {
                    return Err(ReplayError::Http("close-delimited body too large".into()));
                }
            }
            (std::mem::take(&mut self.buf), Framing::Close)
        };
        Ok(WireResponse {
            status,
            reason,
            headers,
            body,
            framing,
        })
    }

    async fn fill(&mut self) -> Result<usize, ReplayError> {
        let mut tmp = [0u8; 16 * 1024];
        let n = self
            .io
            .read(&mut tmp)
            .await
            .map_err(|e| ReplayError::io("read response", e))?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    async fn read_exact_bytes(&mut self, len: usize) -> Result<Vec<u8>, ReplayError> {
        while self.buf.len() < len {
            if self.fill().await? == 0 {
                return Err(ReplayError::Http(format!(
                    "connection closed after {} of {len} body bytes",
                    self.buf.len()
                )));
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    async fn read_line(&mut self) -> Result<String, ReplayError> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReplayError::Http("chunk header line too long".into()));
            }
            if self.fill().await? == 0 {
                return Err(ReplayError::Http(
                    "connection closed inside a chunked body".into(),
                ));
            }
        }
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, ReplayError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| ReplayError::Http(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                // trailers, up to the empty line
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(ReplayError::Http("chunked body too large".into()));
            }
            body.extend(self.read_exact_bytes(size).await?);
            if !self.read_line().await?.is_empty() {
                return Err(ReplayError::Http("chunk not followed by CRLF".into()));
            }
        }
    }

    /// The connection after a `101`: bytes already read come first.
    pub fn into_upgraded(self) -> Prefixed<Tls> {
        Prefixed {
            prefix: self.buf,
            pos: 0,
            inner: self.io,
        }
    }

    /// Closes the connection (TLS close_notify, then TCP FIN).
    pub async fn close(mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// Builds the request head: request line, headers in the given order and spelling, blank line.
pub fn request_head(method: &str, target: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A stream that first yields `prefix`.
pub struct Prefixed<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_keeps_target_and_header_spelling() {
        let head = request_head(
            "GET",
            "/api2/json/admin/datastore/store1/snapshots?",
            &[
                ("Host".into(), "127.0.0.1:1".into()),
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
            ],
        );
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /api2/json/admin/datastore/store1/snapshots? HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\
             content-type: application/x-www-form-urlencoded\r\n\r\n"
        );
    }
}
