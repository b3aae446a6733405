//! Reader session (`proxmox-backup-reader-protocol-v1`, protocol.md §5): upgrade checks, then
//! `download` of snapshot files, `chunk` downloads limited to chunks of indexes downloaded in
//! this session, and `speedtest`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::auth::{owner_matches, Identity, Privileges};
use crate::datastore::ReaderLease;
use crate::format::index::{index_kind_of, AnyIndex};
use crate::format::{digest_to_hex, Digest};
use crate::net::{json_data, octet_stream, Body, HttpError, Params};
use crate::state::AppState;

use super::error::ProtocolError;
use super::params::{archive_name, digest};
use super::upgrade::{
    acl_path, check_upgrade_request, endpoint, path_not_found, serve_h2, switching_protocols,
    READER_PROTOCOL_ID,
};
use super::visible_datastore;

/// Size of the `speedtest` answer.
const SPEEDTEST_SIZE: usize = 1024 * 1024;

/// Shared state of one reader session.
struct ReaderSession {
    lease: ReaderLease,
    /// Digests of every index downloaded in this session; only these may be fetched.
    allowed: Mutex<HashSet<Digest>>,
    label: String,
}

impl ReaderSession {
    fn allow(&self, digests: impl IntoIterator<Item = Digest>) {
        self.allowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(digests);
    }

    fn is_allowed(&self, digest: &Digest) -> bool {
        self.allowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(digest)
    }
}

/// `GET /api2/json/reader` with `Upgrade: proxmox-backup-reader-protocol-v1` (§5.1).
pub async fn upgrade(
    state: Arc<AppState>,
    identity: Identity,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let params = Params::from_query(req.uri().query());
    let store_name = params.required_str("store")?;
    let dir = params.snapshot()?;
    let ns = params.namespace("ns")?;
    params.bool_or("debug", false)?;

    let entry = visible_datastore(&state, &identity, &store_name);
    let store_tenant = entry
        .as_ref()
        .map(|e| e.tenant.clone())
        .unwrap_or_else(|| identity.tenant.clone());
    let privs = state
        .auth
        .privileges(&identity, &store_name, &store_tenant, &ns);
    let priv_read = privs.contains(Privileges::READ);
    if !priv_read && !privs.contains(Privileges::BACKUP) {
        return Err(HttpError::new(
            http::StatusCode::FORBIDDEN,
            format!("no permissions on {}", acl_path(&store_name, &ns)),
        ));
    }
    let entry = entry.ok_or_else(|| super::datastore_missing(&store_name))?;
    check_upgrade_request(&req, READER_PROTOCOL_ID)?;

    let store = entry.store.clone();
    let not_found = || HttpError::not_found(format!("snapshot {} does not exist.", dir.path()));
    if !priv_read {
        // Datastore.Backup alone: only groups the caller owns (§4.1 step 8).
        let owner = store
            .group_owner(&ns, &dir.group)
            .await
            .map_err(ProtocolError::from)?
            .ok_or_else(not_found)?;
        if !owner_matches(&identity.authid, &owner) {
            return Err(HttpError::bad_request(format!(
                "backup owner check failed ({} != {})",
                identity.authid, owner
            )));
        }
    }
    let lease = match store.start_reader(&ns, &dir).await {
        Ok(lease) => lease,
        Err(e) if e.is_not_found() => return Err(not_found()),
        Err(e) => return Err(ProtocolError::from(e).into()),
    };

    let label = if ns.is_root() {
        format!("{store_name}:{}", dir.path())
    } else {
        format!("{store_name}:{}/{}", ns.display_path(), dir.path())
    };
    tracing::info!("reader session started: {label} by {}", identity.authid);
    let session = Arc::new(ReaderSession {
        lease,
        allowed: Mutex::new(HashSet::new()),
        label,
    });
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let result = match on_upgrade.await {
            Ok(upgraded) => {
                let handler_session = session.clone();
                serve_h2(upgraded, move |req| handle(handler_session.clone(), req))
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("upgrade failed: {e}")),
        };
        match result {
            Ok(()) => tracing::info!("reader session ended: {}", session.label),
            // Clients just drop the connection when done; that is not a failure.
            Err(e) => tracing::info!("reader session ended: {} ({e})", session.label),
        }
    });
    Ok(switching_protocols(READER_PROTOCOL_ID))
}

async fn handle(session: Arc<ReaderSession>, req: Request<Incoming>) -> Response<Body> {
    let path = endpoint(&req);
    let result = match (req.method(), path.as_str()) {
        (&Method::GET, "download") => download(&session, &req).await,
        (&Method::GET, "chunk") => download_chunk(&session, &req).await,
        (&Method::GET, "speedtest") => Ok(speedtest()),
        (&Method::GET, "") => Ok(json_data(serde_json::json!([
            { "subdir": "chunk" },
            { "subdir": "download" },
            { "subdir": "speedtest" },
        ]))),
        _ => Err(path_not_found(&req)),
    };
    result.unwrap_or_else(|err| {
        tracing::debug!(
            "reader session {}: /{path} failed: {}",
            session.label,
            err.message
        );
        err.into_response()
    })
}

/// `GET download?file-name=F`: raw file; an index also allows its chunks.
async fn download(
    session: &ReaderSession,
    req: &Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let params = Params::from_query(req.uri().query());
    let name = archive_name(&params, "file-name")?;
    let kind = index_kind_of(&name);
    if kind.is_none() && !name.ends_with(".blob") {
        return Err(HttpError::bad_request(format!(
            "unknown archive type '{name}'"
        )));
    }
    let bytes = session
        .lease
        .read_file(&name)
        .await
        .map_err(ProtocolError::from)?;
    if let Some(kind) = kind {
        let index = AnyIndex::parse(kind, &bytes)
            .map_err(|e| HttpError::bad_request(format!("unable to open index '{name}': {e}")))?;
        session.allow(index.chunks().into_iter().map(|(digest, _)| digest));
    }
    Ok(octet_stream(bytes))
}

/// `GET chunk?digest=D`: the stored chunk blob, if an index of this session lists it.
async fn download_chunk(
    session: &ReaderSession,
    req: &Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let params = Params::from_query(req.uri().query());
    let digest = digest(&params, "digest")?;
    let hex = digest_to_hex(&digest);
    if !session.is_allowed(&digest) {
        return Err(ProtocolError::NotAllowed(format!("download chunk {hex} not allowed")).into());
    }
    let bytes = session
        .lease
        .load_chunk(&digest)
        .await
        .map_err(|e| HttpError::bad_request(format!("reading chunk {hex} failed: {e}")))?;
    Ok(octet_stream(bytes))
}

/// `GET speedtest`: 1 MiB of `A`.
fn speedtest() -> Response<Body> {
    static DATA: [u8; SPEEDTEST_SIZE] = [b'A'; SPEEDTEST_SIZE];
    octet_stream(Bytes::from_static(&DATA))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn speedtest_is_one_mib_of_a() {
        let body = speedtest().into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), SPEEDTEST_SIZE);
        assert!(body.iter().all(|b| *b == 0x41));
    }
}
