//! The HTTP/1.1 → HTTP/2 switch shared by backup and reader sessions
//! (docs/protocol.md#session-upgrade, #http2-inside-a-session): Upgrade header and HTTP version
//! checks, the 101 answer, and an HTTP/2 server with prior knowledge on the upgraded byte stream
//! with PBS's window and frame settings.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{header, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::format::names::BackupNamespace;
use crate::net::conn_limit::HeldSlot;
use crate::net::limits::EdgeLimits;
use crate::net::{Body, HttpError};

/// Upgrade protocol id of backup sessions.
pub const BACKUP_PROTOCOL_ID: &str = "proxmox-backup-protocol-v1";
/// Upgrade protocol id of reader sessions.
pub const READER_PROTOCOL_ID: &str = "proxmox-backup-reader-protocol-v1";

/// PBS's initial stream and connection flow-control windows (32 MiB).
pub const H2_WINDOW_SIZE: u32 = 32 * 1024 * 1024;
/// Largest HTTP/2 frame accepted (4 MiB, what PBS and the client use).
pub const H2_MAX_FRAME_SIZE: u32 = 4 * 1024 * 1024;
/// Concurrent streams allowed per session, PBS 4.2's value (the client pipelines chunk
/// uploads well below it).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 200;

/// Checks the `Upgrade` header (value compared byte-exactly) and the HTTP version (< 2).
pub fn check_upgrade_request<B>(req: &Request<B>, protocol: &str) -> Result<(), HttpError> {
    let value = req
        .headers()
        .get(header::UPGRADE)
        .ok_or_else(|| HttpError::bad_request("missing Upgrade header"))?;
    if value.as_bytes() != protocol.as_bytes() {
        return Err(HttpError::bad_request("invalid protocol name"));
    }
    if req.version() >= Version::HTTP_2 {
        return Err(HttpError::bad_request(format!(
            "unexpected http version '{:?}' (expected version < 2)",
            req.version()
        )));
    }
    Ok(())
}

/// The empty 101 answer naming the same protocol.
pub fn switching_protocols(protocol: &'static str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, protocol)
        .body(Body::default())
        .expect("static response parts are valid")
}

/// `/datastore/{store}[/ns…]`, the ACL path named in permission errors.
pub fn acl_path(store: &str, ns: &BackupNamespace) -> String {
    let mut path = format!("/datastore/{store}");
    for component in ns.components() {
        path.push('/');
        path.push_str(component);
    }
    path
}

/// What an upgraded session keeps of its HTTP/1.1 connection: its place in the connection
/// limits (so that the session stays counted until it ends) and the keep-alive settings.
pub struct SessionLink {
    _slot: Option<HeldSlot>,
    keepalive: Option<Duration>,
    keepalive_timeout: Duration,
}

impl SessionLink {
    /// Takes the connection's slot out of the upgrade request.
    pub fn take<B>(req: &mut Request<B>, limits: &EdgeLimits) -> Self {
        Self {
            _slot: req.extensions_mut().remove::<HeldSlot>(),
            keepalive: limits.session_keepalive,
            keepalive_timeout: limits.session_keepalive_timeout,
        }
    }
}

/// Serves HTTP/2 (server side, prior knowledge) on an upgraded connection until the client
/// goes away. `handler` answers every request; errors are already turned into responses.
/// `Upgraded` already implements hyper's I/O traits, so it needs no `TokioIo` adapter.
///
/// A session is never cut for being busy or quiet: a client that sends nothing for the
/// keep-alive interval gets a PING, and only one that leaves it unanswered (a vanished peer)
/// is disconnected. Quiet sessions are normal (a mounted archive, a client reading a large
/// unchanged file), and a busy upload keeps frames flowing, so it is never pinged.
pub async fn serve_h2<F, Fut>(
    upgraded: Upgraded,
    link: SessionLink,
    handler: F,
) -> Result<(), hyper::Error>
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = std::sync::Arc::new(handler);
    let service = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req).await) }
    });
    let result = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(link.keepalive)
        .keep_alive_timeout(link.keepalive_timeout)
        .initial_stream_window_size(H2_WINDOW_SIZE)
        .initial_connection_window_size(H2_WINDOW_SIZE)
        .max_frame_size(H2_MAX_FRAME_SIZE)
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .serve_connection(upgraded, service)
        .await;
    drop(link);
    result
}

/// The path of a session request without slashes around it and with empty segments ignored,
/// as PBS routes it (`:authority` is ignored).
pub fn endpoint<B>(req: &Request<B>) -> String {
    crate::net::path::normalized(req.uri().path())
}

/// PBS's answer for an unknown path.
pub fn path_not_found<B>(req: &Request<B>) -> HttpError {
    HttpError::not_found(format!("Path '{}' not found.", req.uri().path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(upgrade: Option<&str>, version: Version) -> Request<()> {
        let mut b = Request::builder().uri("/api2/json/backup").version(version);
        if let Some(u) = upgrade {
            b = b.header("UPGRADE", u);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn upgrade_header_is_exact() {
        assert!(check_upgrade_request(
            &req(Some(BACKUP_PROTOCOL_ID), Version::HTTP_11),
            BACKUP_PROTOCOL_ID
        )
        .is_ok());
        let e =
            check_upgrade_request(&req(None, Version::HTTP_11), BACKUP_PROTOCOL_ID).unwrap_err();
        assert_eq!(e.message, "missing Upgrade header");
        let e = check_upgrade_request(
            &req(Some("proxmox-backup-protocol-v1, h2c"), Version::HTTP_11),
            BACKUP_PROTOCOL_ID,
        )
        .unwrap_err();
        assert_eq!(e.message, "invalid protocol name");
        assert!(check_upgrade_request(
            &req(Some(READER_PROTOCOL_ID), Version::HTTP_11),
            BACKUP_PROTOCOL_ID
        )
        .is_err());
        assert!(check_upgrade_request(
            &req(Some(BACKUP_PROTOCOL_ID), Version::HTTP_2),
            BACKUP_PROTOCOL_ID
        )
        .is_err());
    }

    #[test]
    fn switching_answer() {
        let r = switching_protocols(READER_PROTOCOL_ID);
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(r.headers()[header::CONNECTION], "upgrade");
        assert_eq!(r.headers()[header::UPGRADE], READER_PROTOCOL_ID);
    }

    #[test]
    fn acl_paths() {
        assert_eq!(acl_path("s1", &BackupNamespace::root()), "/datastore/s1");
        let ns = BackupNamespace::parse("a/b").unwrap();
        assert_eq!(acl_path("s1", &ns), "/datastore/s1/a/b");
    }
}
