//! A TCP proxy in front of the test S3 server that injects faults: HTTP 503 answers, S3 error
//! answers (403 `InvalidAccessKeyId`, 404 `NoSuchBucket`, ...), cut connections or stalls, for
//! the next N connections or until told otherwise. It can also record what clients send, so
//! tests can check the headers that reach the store (SSE, storage class, conditions).
//!
//! Switching the fault mode aborts every open proxied connection, so pooled keep-alive
//! connections of the client cannot bypass the fault: its next request opens a new connection,
//! which sees the new mode.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// What the proxy does with new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward to the upstream server.
    Pass,
    /// Answer `503 Service Unavailable` (count: how many connections; `None` = all).
    Unavailable(Option<u32>),
    /// Read the request, then close the connection without an answer.
    Cut(Option<u32>),
    /// Read the request and never answer (the client's request timeout must fire).
    Stall(Option<u32>),
    /// Forward, but hold the body of the store's first answer on a connection back this long
    /// after its head: RGW answers a large DeleteObjects with `200` and a chunked body at once,
    /// and sends the body only when it has deleted every key (7 s for 1000 keys in a bucket
    /// of a million objects).
    Slow(Duration),
    /// Answer every request with this HTTP status and S3 error code (e.g. 403
    /// `InvalidAccessKeyId`, as a store does after the key was revoked).
    S3Error(u16, &'static str),
}

/// Most client bytes kept by [`FaultProxy::record`].
const RECORD_LIMIT: usize = 4 * 1024 * 1024;

struct State {
    fault: Mutex<Fault>,
    conns: Mutex<Vec<AbortHandle>>,
    faults: AtomicU64,
    forwarded: AtomicU64,
    /// Client bytes of forwarded connections, while recording.
    recorded: Mutex<Option<Vec<u8>>>,
    /// Server bytes of forwarded connections, while recording.
    responses: Mutex<Vec<u8>>,
}

/// A running proxy (stops when dropped).
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

impl FaultProxy {
    /// Listen on a free local port and forward to `upstream` (e.g. `127.0.0.1:7480`).
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            fault: Mutex::new(Fault::Pass),
            conns: Mutex::new(Vec::new()),
            faults: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            recorded: Mutex::new(None),
            responses: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = accept_state.clone();
                let fault = next_fault(&state);
                let task = tokio::spawn(async move {
                    let _ = handle(client, upstream, fault, &state).await;
                });
                let mut conns = lock(&accept_state.conns);
                conns.retain(|c| !c.is_finished());
                conns.push(task.abort_handle());
            }
        })
        .abort_handle();
        Ok(FaultProxy {
            addr,
            state,
            accept,
        })
    }

    /// `http://127.0.0.1:<port>`, to use as the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The local port it listens on, to configure as a server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Change the fault mode; open connections are cut so the change applies at once.
    pub fn set(&self, fault: Fault) {
        *lock(&self.state.fault) = fault;
        for conn in lock(&self.state.conns).drain(..) {
            conn.abort();
        }
    }

    /// Start keeping what clients send through forwarded connections (up to 4 MiB), from
    /// connections opened after this call (open ones are cut, as by [`FaultProxy::set`]).
    pub fn record(&self) {
        *lock(&self.state.recorded) = Some(Vec::new());
        lock(&self.state.responses).clear();
        for conn in lock(&self.state.conns).drain(..) {
            conn.abort();
        }
    }

    /// What clients sent since [`FaultProxy::record`] (lossy text; bodies included).
    pub fn recorded(&self) -> String {
        lock(&self.state.recorded)
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    /// What the store answered on recorded connections (lossy text; up to 4 MiB), e.g. to see
    /// the `x-amz-server-side-encryption` response headers.
    pub fn recorded_responses(&self) -> String {
        String::from_utf8_lossy(&lock(&self.state.responses)).into_owned()
    }

    /// Connections answered with a fault so far.
    pub fn faults_injected(&self) -> u64 {
        self.state.faults.load(Ordering::Relaxed)
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for conn in lock(&self.state.conns).drain(..) {
            conn.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fault for a new connection (counting down limited faults).
fn next_fault(state: &State) -> Fault {
    let mut fault = lock(&state.fault);
    let (current, next) = match *fault {
        Fault::Unavailable(Some(n)) => (
            (n > 0).then_some(Fault::Unavailable(Some(n))),
            (n > 1).then_some(Fault::Unavailable(Some(n - 1))),
        ),
        Fault::Cut(Some(n)) => (
            (n > 0).then_some(Fault::Cut(Some(n))),
            (n > 1).then_some(Fault::Cut(Some(n - 1))),
        ),
        Fault::Stall(Some(n)) => (
            (n > 0).then_some(Fault::Stall(Some(n))),
            (n > 1).then_some(Fault::Stall(Some(n - 1))),
        ),
        other => (Some(other), Some(other)),
    };
    *fault = next.unwrap_or(Fault::Pass);
    current.unwrap_or(Fault::Pass)
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    state: &State,
) -> std::io::Result<()> {
    match fault {
        Fault::Pass => {
            state.forwarded.fetch_add(1, Ordering::Relaxed);
            let mut server = TcpStream::connect(upstream).await?;
            if lock(&state.recorded).is_some() {
                forward_recording(client, server, state).await?;
            } else {
                tokio::io::copy_bidirectional(&mut client, &mut server).await?;
            }
        }
        Fault::S3Error(status, code) => {
            state.faults.fetch_add(1, Ordering::Relaxed);
            if read_head(&mut client).await {
                let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>test</RequestId></Error>");
                let answer = format!(
                    "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                client.write_all(answer.as_bytes()).await?;
                client.shutdown().await?;
            }
        }
        Fault::Unavailable(_) => {
            state.faults.fetch_add(1, Ordering::Relaxed);
            read_head(&mut client).await;
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>ServiceUnavailable</Code><Message>injected by the test proxy</Message></Error>";
            let answer = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(answer.as_bytes()).await?;
            client.shutdown().await?;
        }
        Fault::Cut(_) => {
            state.faults.fetch_add(1, Ordering::Relaxed);
            read_head(&mut client).await;
        }
        Fault::Stall(_) => {
            state.faults.fetch_add(1, Ordering::Relaxed);
            read_head(&mut client).await;
            tokio::time::sleep(Duration::from_secs(300)).await;
        }
        Fault::Slow(delay) => {
            state.faults.fetch_add(1, Ordering::Relaxed);
            let server = TcpStream::connect(upstream).await?;
            forward_delayed(client, server, delay).await?;
        }
    }
    Ok(())
}

/// Read until the end of the request head (or a short timeout); false if none came.
async fn read_head(client: &mut TcpStream) -> bool {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    true
}

/// Forward both ways, keeping a copy of what the client sends and of what the store answers.
async fn forward_recording(
    client: TcpStream,
    server: TcpStream,
    state: &State,
) -> std::io::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                server_write.shutdown().await?;
                return Ok::<_, std::io::Error>(());
            }
            if let Some(rec) = lock(&state.recorded).as_mut() {
                let room = RECORD_LIMIT.saturating_sub(rec.len()).min(n);
                rec.extend_from_slice(&buf[..room]);
            }
            server_write.write_all(&buf[..n]).await?;
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return client_write.shutdown().await;
            }
            {
                let mut rec = lock(&state.responses);
                let room = RECORD_LIMIT.saturating_sub(rec.len()).min(n);
                rec.extend_from_slice(&buf[..room]);
            }
            client_write.write_all(&buf[..n]).await?;
        }
    };
    tokio::try_join!(upstream, downstream)?;
    Ok(())
}

/// Forward both ways; the store's first answer is passed on up to the end of its head, and
/// the rest follows after `delay`.
async fn forward_delayed(
    client: TcpStream,
    server: TcpStream,
    delay: Duration,
) -> std::io::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        tokio::io::copy(&mut client_read, &mut server_write).await?;
        server_write.shutdown().await
    };
    let downstream = async {
        let mut head = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let head_end = loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                client_write.write_all(&head).await?;
                return client_write.shutdown().await;
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        client_write.write_all(&head[..head_end]).await?;
        client_write.flush().await?;
        tokio::time::sleep(delay).await;
        client_write.write_all(&head[head_end..]).await?;
        tokio::io::copy(&mut server_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    tokio::try_join!(upstream, downstream)?;
    Ok(())
}

/// A TLS-terminating proxy: accepts HTTPS with the given certificate and forwards the plain
/// bytes to `upstream`, so tests can put the plain-HTTP test S3 server behind a certificate
/// signed by a private CA (the `ca_bundle` setting). Stops when dropped.
pub struct TlsProxy {
    addr: SocketAddr,
    accept: AbortHandle,
}

impl TlsProxy {
    /// Listen on a free local port with `chain` (leaf first) and its private key.
    pub async fn start(
        upstream: SocketAddr,
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> std::io::Result<TlsProxy> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(std::io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: nothing to do.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                    }
                });
            }
        })
        .abort_handle();
        Ok(TlsProxy { addr, accept })
    }

    /// `https://127.0.0.1:<port>` (the certificate must name the IP address 127.0.0.1).
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
