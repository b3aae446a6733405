//! The accept loop: TCP → TLS → HTTP/1.1 with upgrades → `api::handle` (or `console::handle`
//! for the web console's paths). Backup and reader
//! sessions leave HTTP/1.1 through the upgrade and continue as HTTP/2 inside `protocol/`.
//!
//! Every connection is counted against a total and a per-source limit (see `net::limits`) from
//! accept until it closes, upgraded sessions included. One over a limit is answered with a 503
//! saying which limit, on a small bounded side path, so a flood never makes `accept` fail.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::net::body::JSON_CONTENT_TYPE;
use crate::net::conn_limit::{ConnectionRefusal, ConnectionTracker, HeldSlot};
use crate::net::limits::EdgeLimits;
use crate::state::AppState;

/// TCP keepalive, as PBS sets it.
const KEEPALIVE: Duration = Duration::from_secs(120);
/// First byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Refusals answered at once; connections past this are closed without an answer.
const MAX_REFUSALS_IN_FLIGHT: usize = 32;
/// Time a refused client gets for its handshake and request head.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves connections until `shutdown` resolves. Running connections (and their backup
/// sessions) are not cut by shutdown; the process exit ends them.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let limits = state.limits.clone();
    let tracker = ConnectionTracker::new(limits.max_connections, limits.max_connections_per_source);
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    tracing::info!(
        "connection limits: {} in total, {} per source; TLS handshake {} s, request head {} s",
        limits.max_connections,
        limits.max_connections_per_source,
        limits.tls_handshake_timeout.as_secs(),
        limits.header_read_timeout.as_secs()
    );
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: wait for connections to close instead of spinning.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match tracker.try_open(peer.ip()) {
            Ok(slot) => HeldSlot::new(slot),
            Err(refusal) => {
                refuse(stream, peer, refusal, &acceptor, &refusals);
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = handle_connection(stream, peer, acceptor, state, slot).await {
                tracing::debug!("connection from {peer} ended: {err}");
            }
        });
    }
}

type ConnResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn set_socket_options(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<AppState>,
    slot: HeldSlot,
) -> ConnResult {
    set_socket_options(&stream)?;
    let limits = state.limits.clone();
    let Some(tls) = handshake(stream, &acceptor, limits.tls_handshake_timeout).await? else {
        return Ok(());
    };
    let service = service_fn(move |mut req| {
        let state = state.clone();
        // An upgraded session takes the slot along, so it stays counted until it ends.
        req.extensions_mut().insert(slot.clone());
        async move {
            // `/` and `/console/…` are the web console; everything else is the API.
            if crate::console::is_console_path(req.uri().path()) {
                return Ok::<_, Infallible>(crate::console::handle(state, req).await);
            }
            Ok::<_, Infallible>(crate::api::handle(state, req).await)
        }
    });
    tracing::trace!("TLS connection from {peer}");
    http1_builder(&limits)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades()
        .await?;
    Ok(())
}

/// HTTP/1.1 with hyper's timer, so the request-head timeout (which also ends idle keep-alive
/// connections) is in force.
fn http1_builder(limits: &EdgeLimits) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
}

/// Peeks at the first byte (a client that speaks plain HTTP gets a short explanation) and runs
/// the TLS handshake, both within `timeout`. `None` when the connection is already done.
async fn handshake(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    timeout: Duration,
) -> Result<
    Option<tokio_rustls::server::TlsStream<TcpStream>>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let work = async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 0 {
            return Ok(None);
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            refuse_plain_http(stream).await?;
            return Ok(None);
        }
        Ok::<_, std::io::Error>(Some(acceptor.accept(stream).await?))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(format!("TLS handshake not finished within {} s", timeout.as_secs()).into()),
    }
}

/// Answers a connection over a limit with a 503 naming the limit, within a few seconds and at
/// most [`MAX_REFUSALS_IN_FLIGHT`] at a time; past that, the connection is just closed.
fn refuse(
    stream: TcpStream,
    peer: SocketAddr,
    refusal: ConnectionRefusal,
    acceptor: &TlsAcceptor,
    refusals: &Arc<Semaphore>,
) {
    tracing::debug!("refusing connection from {peer}: {refusal}");
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    let acceptor = acceptor.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let work = async {
            let _ = set_socket_options(&stream);
            let Some(tls) = handshake(stream, &acceptor, REFUSAL_TIMEOUT).await? else {
                return Ok(());
            };
            let message = format!("{refusal}, try again later\n");
            let service = service_fn(move |_req| {
                let response = Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header(header::CONTENT_TYPE, JSON_CONTENT_TYPE)
                    .header(header::CONNECTION, "close")
                    .header(header::RETRY_AFTER, "10")
                    .body(crate::net::body::full(Bytes::from(message.clone())))
                    .expect("static response parts are valid");
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(REFUSAL_TIMEOUT)
                .keep_alive(false);
            builder.serve_connection(TokioIo::new(tls), service).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT * 3, work).await;
    });
}

/// A client that spoke plain HTTP to the TLS port gets a short explanation instead of a
/// handshake error it cannot read.
async fn refuse_plain_http(mut stream: TcpStream) -> std::io::Result<()> {
    let body = "this server only speaks HTTPS\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}
