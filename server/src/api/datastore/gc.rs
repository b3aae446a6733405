//! `POST`/`GET /admin/datastore/{store}/gc`: start garbage collection as a task (in the
//! datastore's one GC slot, see `jobs::runner`), read status.

use http::Response;
use serde_json::json;

use crate::api::context::Ctx;
use crate::api::jobs::job_error;
use crate::auth::Privileges;
use crate::format::names::BackupNamespace;
use crate::jobs::runner;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn start(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    if !ctx
        .privs(entry, &BackupNamespace::root())
        .contains(Privileges::MODIFY)
    {
        return Err(HttpError::forbidden());
    }
    // The GC slot of the datastore is shared with its scheduled GC: a second start is
    // refused (409) naming the running task.
    let upid = runner::start_manual_gc(&ctx.state, &entry.name, &ctx.id.authid.to_string())
        .map_err(job_error)?;
    Ok(json_data(upid))
}

pub async fn status(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    if !ctx.store_scope(entry).figures() {
        return Err(HttpError::forbidden());
    }
    let mut value = match entry.store.gc().last_status().await {
        Some(gc) => serde_json::to_value(gc)
            .map_err(|e| HttpError::internal(format!("cannot encode gc status: {e}")))?,
        None => json!({}),
    };
    value["store"] = json!(entry.name);
    Ok(json_data(value))
}
