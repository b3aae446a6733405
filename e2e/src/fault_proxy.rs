//! A TCP proxy in front of the test S3 server that injects faults: HTTP 503 answers or cut
//! connections, for the next N connections or until told otherwise.
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
}

struct State {
    fault: Mutex<Fault>,
    conns: Mutex<Vec<AbortHandle>>,
    faults: AtomicU64,
    forwarded: AtomicU64,
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

    /// Change the fault mode; open connections are cut so the change applies at once.
    pub fn set(&self, fault: Fault) {
        *lock(&self.state.fault) = fault;
        for conn in lock(&self.state.conns).drain(..) {
            conn.abort();
        }
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
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
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
    }
    Ok(())
}

/// Read until the end of the request head (or a short timeout).
async fn read_head(client: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
}
