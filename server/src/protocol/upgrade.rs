//! The HTTP/1.1 → HTTP/2 switch shared by backup and reader sessions (protocol.md §1.3, §1.4):
//! Upgrade header and HTTP version checks, the 101 answer, and an HTTP/2 server with prior
//! knowledge on the upgraded byte stream with PBS's window and frame settings.

use std::convert::Infallible;
use std::future::Future;

use http::{header, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioExecutor;

use crate::format::names::BackupNamespace;
use crate::net::{Body, HttpError};

/// Upgrade protocol id of backup sessions.
pub const BACKUP_PROTOCOL_ID: &str = "proxmox-backup-protocol-v1";
/// Upgrade protocol id of reader sessions.
pub const READER_PROTOCOL_ID: &str = "proxmox-backup-reader-protocol-v1";

/// PBS's initial stream and connection flow-control windows (32 MiB).
pub const H2_WINDOW_SIZE: u32 = 32 * 1024 * 1024;
/// Largest HTTP/2 frame accepted (4 MiB, what PBS and the client use).
pub const H2_MAX_FRAME_SIZE: u32 = 4 * 1024 * 1024;
/// Concurrent streams allowed per session; the client pipelines many chunk uploads.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

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

/// Serves HTTP/2 (server side, prior knowledge) on an upgraded connection until the client
/// goes away. `handler` answers every request; errors are already turned into responses.
/// `Upgraded` already implements hyper's I/O traits, so it needs no `TokioIo` adapter.
pub async fn serve_h2<F, Fut>(upgraded: Upgraded, handler: F) -> Result<(), hyper::Error>
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = std::sync::Arc::new(handler);
    let service = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req).await) }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(H2_WINDOW_SIZE)
        .initial_connection_window_size(H2_WINDOW_SIZE)
        .max_frame_size(H2_MAX_FRAME_SIZE)
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .serve_connection(upgraded, service)
        .await
}

/// The path of a session request without its leading '/' (`:authority` is ignored).
pub fn endpoint<B>(req: &Request<B>) -> String {
    req.uri().path().trim_start_matches('/').to_string()
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
