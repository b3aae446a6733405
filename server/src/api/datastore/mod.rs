//! `/admin/datastore/...` (docs/protocol.md#rest-endpoints): one module per operation.

pub mod archive;
pub mod catalog;
pub mod change_owner;
pub mod dir_archive;
pub mod download;
pub mod files;
pub mod gc;
pub mod groups;
pub mod job_history;
pub mod list;
pub mod moves;
pub mod namespace;
pub mod notes;
pub mod protected;
pub mod prune;
pub mod pxar_download;
pub mod records;
pub mod retention_lock;
pub mod snapshots;
pub mod status;
pub mod upload_log;
pub mod usage_history;
pub mod verify;

use http::{Method, Response, StatusCode};

use super::context::Ctx;
use super::router::DatastoreOp;
use crate::net::{Body, HttpError};

/// Dispatches an operation on datastore `store` by method.
pub async fn call(
    ctx: &Ctx,
    store: &str,
    op: DatastoreOp,
    method: &Method,
) -> Result<Response<Body>, HttpError> {
    let entry = ctx.store(store)?;
    let e = &entry;
    use DatastoreOp as Op;
    match (op, method) {
        (Op::Status, &Method::GET) => status::get(ctx, e).await,
        (Op::Groups, &Method::GET) => groups::list(ctx, e).await,
        (Op::Groups, &Method::DELETE) => groups::delete(ctx, e).await,
        (Op::Snapshots, &Method::GET) => snapshots::list(ctx, e).await,
        (Op::Snapshots, &Method::DELETE) => snapshots::delete(ctx, e).await,
        (Op::Files, &Method::GET) => files::list(ctx, e).await,
        (Op::Notes, &Method::GET) => notes::get(ctx, e).await,
        (Op::Notes, &Method::PUT) => notes::put(ctx, e).await,
        (Op::GroupNotes, &Method::GET) => notes::get_group(ctx, e).await,
        (Op::GroupNotes, &Method::PUT) => notes::put_group(ctx, e).await,
        (Op::Protected, &Method::GET) => protected::get(ctx, e).await,
        (Op::Protected, &Method::PUT) => protected::put(ctx, e).await,
        (Op::Namespace, &Method::GET) => namespace::list(ctx, e).await,
        (Op::Namespace, &Method::POST) => namespace::create(ctx, e).await,
        (Op::Namespace, &Method::DELETE) => namespace::delete(ctx, e).await,
        (Op::Prune, &Method::POST) => prune::post(ctx, e).await,
        (Op::UploadBackupLog, &Method::POST) => upload_log::post(ctx, e).await,
        (Op::ChangeOwner, &Method::POST) => change_owner::post(ctx, e).await,
        (Op::Gc, &Method::POST) => gc::start(ctx, e).await,
        (Op::Gc, &Method::GET) => gc::status(ctx, e).await,
        (Op::Download, &Method::GET) => download::raw(ctx, e).await,
        (Op::DownloadDecoded, &Method::GET) => download::decoded(ctx, e).await,
        (Op::Catalog, &Method::GET) => catalog::get(ctx, e).await,
        (Op::PxarFileDownload, &Method::GET) => pxar_download::get(ctx, e).await,
        (Op::RetentionLock, &Method::GET) => retention_lock::get(ctx, e).await,
        (Op::RetentionLock, &Method::PUT) => retention_lock::put(ctx, e).await,
        (Op::Verify, &Method::POST) => verify::start(ctx, e).await,
        (Op::JobHistory, &Method::GET) => job_history::list(ctx, e).await,
        (Op::MoveGroup, &Method::POST) => moves::move_group(ctx, e).await,
        (Op::MoveNamespace, &Method::POST) => moves::move_namespace(ctx, e).await,
        (Op::UsageHistory, &Method::GET) => usage_history::get(ctx, e).await,
        (_, m) => Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {m} not allowed on this path"),
        )),
    }
}
