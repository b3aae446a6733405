//! Raw connections for hostile-client tests: TLS from a chosen loopback source address (so one
//! test can act as several clients), half-written requests, and readings of the server
//! process's memory and file descriptors from `/proc`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::error::{ClientError, Result};

/// A plain TCP connection to `127.0.0.1:port` from `source` (any 127.0.0.0/8 address).
pub async fn tcp_from(source: IpAddr, port: u16) -> Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| ClientError::io("create socket", e))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| ClientError::io(format!("bind {source}"), e))?;
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    socket
        .connect(server)
        .await
        .map_err(|e| ClientError::io(format!("connect {server} from {source}"), e))
}

/// A TLS connection (certificate pinned by `fingerprint`) from `source`.
pub async fn tls_from(
    source: IpAddr,
    port: u16,
    fingerprint: &str,
) -> Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(source, port).await?;
    let connector = tokio_rustls::TlsConnector::from(crate::tls::client_config(fingerprint)?);
    connector
        .connect(crate::tls::server_name("localhost")?, tcp)
        .await
        .map_err(|e| ClientError::io("TLS handshake", e))
}

/// Reads until the peer closes or `limit` passes; returns what arrived and whether the peer
/// closed (EOF or reset) within the limit.
pub async fn read_until_closed<S>(stream: &mut S, limit: Duration) -> (Vec<u8>, bool)
where
    S: tokio::io::AsyncRead + Unpin,
{
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response head and as much body as `Content-Length` says (or until
/// close), within `limit`. Returns the status and the body text.
pub async fn read_response<S>(stream: &mut S, limit: Duration) -> Result<(u16, String)>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&got, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ClientError::Protocol(format!("bad response head {head:?}")))?;
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            let body_start = end + 4;
            if length.is_none_or(|n| got.len() >= body_start + n) {
                let body_end = length.map_or(got.len(), |n| body_start + n);
                return Ok((
                    status,
                    String::from_utf8_lossy(&got[body_start..body_end]).to_string(),
                ));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return Err(ClientError::Protocol("no complete response in time".into())),
            Ok(Ok(0)) | Ok(Err(_)) if got.is_empty() => {
                return Err(ClientError::Protocol("closed without a response".into()))
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Err(ClientError::Protocol(format!(
                    "closed within a response: {:?}",
                    String::from_utf8_lossy(&got)
                )))
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes `head` and then up to `body_len` bytes of body in 64 KiB pieces until the peer stops
/// taking them; returns the body bytes written.
pub async fn write_request<S>(stream: &mut S, head: &str, body_len: usize) -> u64
where
    S: tokio::io::AsyncWrite + Unpin,
{
    if stream.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let piece = vec![b'x'; 64 * 1024];
    let mut written = 0u64;
    while (written as usize) < body_len {
        let n = piece.len().min(body_len - written as usize);
        match tokio::time::timeout(Duration::from_secs(5), stream.write_all(&piece[..n])).await {
            Ok(Ok(())) => written += n as u64,
            _ => break,
        }
    }
    let _ = stream.flush().await;
    written
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| ClientError::io(format!("read /proc/{pid}/status"), e))?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .ok_or_else(|| ClientError::Protocol(format!("no {field} in /proc/{pid}/status")))
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS, so a later reading shows the
/// peak of what happened in between.
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .map_err(|e| ClientError::io(format!("reset peak RSS of {pid}"), e))
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| ClientError::io(format!("list /proc/{pid}/fd"), e))?
        .count())
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
