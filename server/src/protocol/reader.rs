//! Reader session (`proxmox-backup-reader-protocol-v1`, docs/protocol.md#reader-session): upgrade
//! checks, then `download` of snapshot files, `chunk` downloads limited to chunks of indexes
//! downloaded in this session, and `speedtest`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::auth::{owner_matches, Identity, Privileges};
use crate::datastore::ReaderLease;
use crate::format::index::{index_kind_of, AnyIndex};
use crate::format::{digest_to_hex, Digest};
use crate::net::{json_data, octet_stream, streamed, Body, HttpError, Params};
use crate::state::AppState;
use crate::tasks::TaskLog;

use super::error::ProtocolError;
use super::params::{archive_name, digest};
use super::upgrade::{
    acl_path, check_upgrade_request, endpoint, path_not_found, serve_h2, switching_protocols,
    SessionLink, READER_PROTOCOL_ID,
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
    /// The session's task (worker type `reader`).
    log: TaskLog,
    /// Key path of the snapshot in the datastore, for task log lines.
    rel_dir: String,
    /// Log every chunk served (`debug=true` at the upgrade).
    debug: bool,
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

/// `GET /api2/json/reader` with `Upgrade: proxmox-backup-reader-protocol-v1`
/// (docs/protocol.md#reader-upgrade-checks).
pub async fn upgrade(
    state: Arc<AppState>,
    identity: Identity,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let params = Params::from_query(req.uri().query());
    let store_name = params.required_str("store")?;
    let dir = params.snapshot()?;
    let ns = params.namespace("ns")?;
    // With `debug` (PBS's pull sends it) every chunk served is logged, as PBS does.
    let debug = params.bool_or("debug", false)?;

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
        // Datastore.Backup alone: only groups the caller owns (docs/protocol.md#group-ownership).
        let owner = store
            .tree()
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
    let rel_dir = crate::datastore::layout::snapshot_prefix(&ns, &dir)
        .map_err(ProtocolError::from)?
        .trim_end_matches('/')
        .to_string();
    // PBS's reader worker id: store, group and the backup time in hex (no namespace).
    let task = state.tasks.start(
        "reader",
        Some(&format!(
            "{store_name}:{}/{:08X}",
            dir.group.path(),
            dir.time
        )),
        &identity.authid.to_string(),
    );
    task.log().log(format!(
        "starting new backup reader datastore '{store_name}': \"{rel_dir}\""
    ));
    let session = Arc::new(ReaderSession {
        lease,
        allowed: Mutex::new(HashSet::new()),
        label,
        log: task.log().clone(),
        rel_dir,
        debug,
    });
    let link = SessionLink::take(&mut req, &state.limits);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let serve = async {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let handler_session = session.clone();
                    serve_h2(upgraded, link, move |req| {
                        handle(handler_session.clone(), req)
                    })
                    .await
                    .map_err(|e| e.to_string())
                }
                Err(e) => Err(format!("upgrade failed: {e}")),
            }
        };
        let result = tokio::select! {
            result = serve => result,
            () = session.log.aborted() => {
                session.log.log("reader failed: task aborted");
                task.finish(Err("task aborted".to_string()));
                tracing::info!("reader session aborted: {}", session.label);
                return;
            }
        };
        match result {
            Ok(()) => tracing::info!("reader session ended: {}", session.label),
            // Clients just drop the connection when done; that is not a failure.
            Err(e) => tracing::info!("reader session ended: {} ({e})", session.label),
        }
        session.log.log("reader finished successfully");
        task.finish(Ok(()));
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
    session
        .log
        .log(format!("download \"{}/{name}\"", session.rel_dir));
    let bytes = session
        .lease
        .read_file(&name)
        .await
        .map_err(ProtocolError::from)?;
    if let Some(kind) = kind {
        let index = AnyIndex::parse(kind, &bytes)
            .map_err(|e| HttpError::bad_request(format!("unable to open index '{name}': {e}")))?;
        session
            .log
            .log(format!("register chunks in '{name}' as downloadable."));
        session.allow(index.chunks().into_iter().map(|(digest, _)| digest));
    }
    // PBS streams file downloads (chunks have a content-length)
    Ok(streamed(octet_stream(bytes)))
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
    if session.debug {
        session.log.log(format!("download chunk {hex}"));
    }
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
