//! Backup session (`proxmox-backup-protocol-v1`, docs/protocol.md#backup-session): the upgrade-time
//! checks of docs/protocol.md#backup-upgrade-checks, the session object shared by all HTTP/2
//! streams of one connection, and the router.
//!
//! The datastore's [`BackupLease`] owns the new snapshot and the known-chunk map; it is kept
//! in a `tokio::sync::RwLock<Option<_>>` so ordinary requests share it while `finish` takes it
//! exclusively (waiting for in-flight uploads) to commit it. A connection that ends before a
//! successful `finish` drops the lease, which deletes the snapshot (docs/protocol.md#session-end).

pub mod budget;
mod chunks;
mod finish;
mod index_handlers;
pub mod index_writers;
mod previous;
mod resume;
pub mod session;
mod task_log;

use std::sync::{Arc, Mutex, MutexGuard};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::sync::{RwLock, RwLockReadGuard};

use crate::auth::{owner_matches, Identity, Privileges};
use crate::datastore::{BackupLease, Datastore};
use crate::format::names::{BackupDir, BackupNamespace, BackupType};
use crate::net::{json_data, Body, HttpError, Params};
use crate::state::AppState;
use crate::tasks::{RunningTask, TaskLog};

use super::body::discard;
use super::error::ProtocolError;
use super::upgrade::{
    check_upgrade_request, endpoint, path_not_found, serve_h2, switching_protocols, SessionLink,
    BACKUP_PROTOCOL_ID,
};
use super::visible_datastore;
use session::{SessionState, WriterKind};

/// Shared state of one backup session.
pub(crate) struct BackupSession {
    store: Arc<Datastore>,
    lease: RwLock<Option<BackupLease>>,
    state: Mutex<SessionState>,
    /// Upload buffer budget held by the manifest kept in memory until `finish`.
    manifest_budget: Mutex<Option<budget::BufferPermit>>,
    benchmark: bool,
    /// `store:ns/type/id/time` for log lines.
    label: String,
    /// The session's task (worker type `backup`, or `benchmark`).
    log: TaskLog,
    /// Key path of the snapshot in the datastore (`ns/a/host/x/<time>`), for task log lines.
    rel_dir: String,
}

impl BackupSession {
    fn state(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session's memory budget (a clone: charges go to the same scopes).
    fn budget(&self) -> budget::SessionBudget {
        self.state().budget().clone()
    }

    /// `"<snapshot key path>/<name>"` as the task log quotes files.
    fn file_path(&self, name: &str) -> String {
        format!("\"{}/{name}\"", self.rel_dir)
    }

    /// Refuses a chunk the session does not know yet once it knows as many as its budget
    /// allows (uploads, previous indexes and resume records all count).
    fn check_known_budget(
        &self,
        lease: &BackupLease,
        digest: &crate::format::Digest,
    ) -> Result<(), ProtocolError> {
        if lease.known_chunk_size(digest).is_none() {
            self.budget()
                .check_known_chunks(lease.known_chunk_count(), 1)?;
        }
        Ok(())
    }

    /// Shared access to the lease; fails once `finish` consumed it.
    async fn lease(&self) -> Result<RwLockReadGuard<'_, BackupLease>, ProtocolError> {
        RwLockReadGuard::try_map(self.lease.read().await, |l| l.as_ref())
            .map_err(|_| ProtocolError::Invalid("backup already marked as finished.".into()))
    }
}

/// `GET /api2/json/backup` with `Upgrade: proxmox-backup-protocol-v1`: runs every check of
/// docs/protocol.md#backup-upgrade-checks (PBS's order, except that the owner is checked last),
/// answers 101 and serves the session on the upgraded connection.
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
    let benchmark = params.bool_or("benchmark", false)?;
    params.bool_or("no-cache", false)?;

    let entry = visible_datastore(&state, &identity, &store_name);
    let store_tenant = entry
        .as_ref()
        .map(|e| e.tenant.clone())
        .unwrap_or_else(|| identity.tenant.clone());
    let privs = state
        .auth
        .privileges(&identity, &store_name, &store_tenant, &ns);
    if !privs.contains(Privileges::BACKUP) {
        return Err(HttpError::forbidden());
    }
    let entry = entry.ok_or_else(|| super::datastore_missing(&store_name))?;
    check_upgrade_request(&req, BACKUP_PROTOCOL_ID)?;

    let store = entry.store.clone();
    if !store
        .tree()
        .namespace_exists(&ns)
        .await
        .map_err(ProtocolError::from)?
    {
        return Err(HttpError::not_found("namespace not found"));
    }
    check_benchmark_rule(&dir, benchmark)?;

    if !benchmark {
        // A tenant already at its quota gets no new backup (earlier snapshots stay).
        store
            .check_quota_for_backup()
            .await
            .map_err(ProtocolError::from)?;
    }
    let authid = identity.authid.to_string();
    let lease = store
        .start_backup(&ns, &dir.group, dir.time, &authid)
        .await
        .map_err(ProtocolError::from)?;
    if !benchmark && !owner_matches(&identity.authid, lease.owner()) {
        let msg = format!(
            "backup owner check failed ({} != {})",
            authid,
            lease.owner()
        );
        drop(lease);
        return Err(HttpError::bad_request(msg));
    }

    let label = session_label(&store_name, &ns, &dir);
    tracing::info!(
        "backup session started: {label} by {authid}{}",
        if benchmark { " (benchmark)" } else { "" }
    );
    let rel_dir = crate::datastore::layout::snapshot_prefix(&ns, &dir)
        .map_err(ProtocolError::from)?
        .trim_end_matches('/')
        .to_string();
    // PBS names the task after store and group only (no namespace, no time).
    let worker_type = if benchmark { "benchmark" } else { "backup" };
    let task = state.tasks.start(
        worker_type,
        Some(&format!("{store_name}:{}", dir.group.path())),
        &authid,
    );
    task.log().log(format!(
        "starting new {worker_type} on datastore '{store_name}': \"{rel_dir}\""
    ));
    let session = Arc::new(BackupSession {
        store,
        lease: RwLock::new(Some(lease)),
        state: Mutex::new(SessionState::new(state.uploads.session(&store_tenant))),
        manifest_budget: Mutex::new(None),
        benchmark,
        label,
        log: task.log().clone(),
        rel_dir,
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
        // Stopping the task drops the connection; the unfinished snapshot goes with the lease.
        let result = tokio::select! {
            result = serve => result,
            () = session.log.aborted() => Err("task aborted".to_string()),
        };
        end_session(&session, task, result).await;
    });
    Ok(switching_protocols(BACKUP_PROTOCOL_ID))
}

/// docs/protocol.md#backup-upgrade-checks step 6: `host/benchmark` is reserved for benchmark
/// sessions and vice versa.
fn check_benchmark_rule(dir: &BackupDir, benchmark: bool) -> Result<(), HttpError> {
    let is_benchmark_group = dir.group.ty == BackupType::Host && dir.group.id == "benchmark";
    if is_benchmark_group && !benchmark {
        return Err(HttpError::bad_request(
            "unable to run benchmark without --benchmark flags",
        ));
    }
    if !is_benchmark_group && benchmark {
        return Err(HttpError::bad_request(
            "benchmark flag is only allowed on 'host/benchmark'",
        ));
    }
    Ok(())
}

fn session_label(store: &str, ns: &BackupNamespace, dir: &BackupDir) -> String {
    if ns.is_root() {
        format!("{store}:{}", dir.path())
    } else {
        format!("{store}:{}/{}", ns.display_path(), dir.path())
    }
}

/// Connection gone: an unfinished (or benchmark) snapshot is removed by aborting the lease,
/// before the task ends with PBS's closing lines (so a client that sees the task stopped may
/// start the group's next session at once, and finds the resume record written).
async fn end_session(session: &BackupSession, task: RunningTask, result: Result<(), String>) {
    let lease = session.lease.write().await.take();
    let finished = session.state().is_finished();
    if let Some(lease) = lease {
        lease.abort().await;
    }
    let log = &session.log;
    if session.benchmark {
        log.log("benchmark finished successfully");
        task.finish(Ok(()));
        return;
    }
    match (finished, result) {
        (true, Ok(())) => {
            tracing::info!("backup session finished: {}", session.label);
            log.log("backup finished successfully");
            task.finish(Ok(()));
        }
        (true, Err(e)) => {
            tracing::info!(
                "backup session finished: {} (connection closed with: {e})",
                session.label
            );
            log.log(format!("backup had errors but finished: {e}"));
            task.finish(Ok(()));
        }
        (false, Ok(())) => {
            tracing::warn!(
                "backup session {} ended without finish - snapshot removed",
                session.label
            );
            let err = "backup ended but finished flag is not set.";
            log.log(format!("backup ended and finish failed: {err}"));
            log.log("removing unfinished backup");
            task.finish(Err(err.to_string()));
        }
        (false, Err(e)) => {
            tracing::warn!(
                "backup session {} failed: {e} - snapshot removed",
                session.label
            );
            log.log(format!("backup failed: {e}"));
            log.log("removing failed backup");
            task.finish(Err(e));
        }
    }
}

/// Routes one request of the session (paths without `/api2/json`,
/// docs/protocol.md#backup-endpoints).
async fn handle(session: Arc<BackupSession>, req: Request<Incoming>) -> Response<Body> {
    let path = endpoint(&req);
    let method = req.method().clone();
    let result = match (&method, path.as_str()) {
        (&Method::GET, "previous_backup_time") => previous::previous_backup_time(&session).await,
        (&Method::GET, "previous") => previous::download_previous(&session, req).await,
        (&Method::GET, "resumable_chunks") => resume::resumable_chunks(&session).await,
        (&Method::POST, "blob") => chunks::upload_blob(&session, req).await,
        (&Method::POST, "dynamic_chunk") => {
            chunks::upload_chunk(&session, WriterKind::Dynamic, req).await
        }
        (&Method::POST, "fixed_chunk") => {
            chunks::upload_chunk(&session, WriterKind::Fixed, req).await
        }
        (&Method::POST, "dynamic_index") => index_handlers::create_dynamic(&session, req).await,
        (&Method::POST, "fixed_index") => index_handlers::create_fixed(&session, req).await,
        (&Method::PUT, "dynamic_index") => {
            index_handlers::append(&session, WriterKind::Dynamic, req).await
        }
        (&Method::PUT, "fixed_index") => {
            index_handlers::append(&session, WriterKind::Fixed, req).await
        }
        (&Method::POST, "dynamic_close") => {
            index_handlers::close(&session, WriterKind::Dynamic, req).await
        }
        (&Method::POST, "fixed_close") => {
            index_handlers::close(&session, WriterKind::Fixed, req).await
        }
        (&Method::POST, "finish") => finish::finish(&session).await,
        (&Method::POST, "speedtest") => speedtest(req).await,
        (&Method::GET, "") => Ok(json_data(subdirs())),
        _ => Err(path_not_found(&req)),
    };
    match result {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(
                "backup session {}: {method} /{path} failed: {}",
                session.label,
                err.message
            );
            err.into_response()
        }
    }
}

/// `POST speedtest`: body read and discarded.
async fn speedtest(req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
    discard(req.into_body())
        .await
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    Ok(json_data(serde_json::Value::Null))
}

fn subdirs() -> serde_json::Value {
    let names = [
        "blob",
        "dynamic_chunk",
        "dynamic_close",
        "dynamic_index",
        "finish",
        "fixed_chunk",
        "fixed_close",
        "fixed_index",
        "previous",
        "previous_backup_time",
        "speedtest",
    ];
    serde_json::Value::Array(
        names
            .iter()
            .map(|n| serde_json::json!({ "subdir": n }))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::names::BackupGroup;

    fn dir(ty: BackupType, id: &str) -> BackupDir {
        BackupDir::new(BackupGroup::new(ty, id).unwrap(), 1_700_000_000).unwrap()
    }

    #[test]
    fn benchmark_rule() {
        assert!(check_benchmark_rule(&dir(BackupType::Host, "benchmark"), true).is_ok());
        assert!(check_benchmark_rule(&dir(BackupType::Host, "benchmark"), false).is_err());
        assert!(check_benchmark_rule(&dir(BackupType::Vm, "100"), true).is_err());
        assert!(check_benchmark_rule(&dir(BackupType::Vm, "benchmark"), false).is_ok());
    }

    #[test]
    fn labels() {
        let d = dir(BackupType::Vm, "100");
        assert_eq!(
            session_label("s", &BackupNamespace::root(), &d),
            format!("s:{}", d.path())
        );
        let ns = BackupNamespace::parse("a/b").unwrap();
        assert_eq!(session_label("s", &ns, &d), format!("s:a/b/{}", d.path()));
    }
}
