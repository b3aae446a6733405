//! `POST`/`GET /admin/datastore/{store}/gc`: start garbage collection as a task, read status.

use std::sync::Arc;

use http::Response;
use serde_json::json;

use crate::api::context::Ctx;
use crate::auth::Privileges;
use crate::datastore::Datastore;
use crate::format::names::BackupNamespace;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn start(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    if !ctx
        .privs(entry, &BackupNamespace::root())
        .contains(Privileges::MODIFY)
    {
        return Err(HttpError::forbidden());
    }
    let store: Arc<Datastore> = entry.store.clone();
    let upid = ctx.state.tasks.spawn(
        "garbage_collection",
        Some(&entry.name),
        &ctx.id.authid.to_string(),
        move |log| async move {
            let sink = {
                let log = log.clone();
                move |line: String| log.log(line)
            };
            store
                .garbage_collect_as(Some(log.upid().to_string()), &sink)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
    Ok(json_data(upid))
}

pub async fn status(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    ctx.require_any(
        entry,
        &BackupNamespace::root(),
        Privileges::AUDIT | Privileges::MODIFY,
    )?;
    let mut value = match entry.store.last_gc_status().await {
        Some(gc) => serde_json::to_value(gc)
            .map_err(|e| HttpError::internal(format!("cannot encode gc status: {e}")))?,
        None => json!({}),
    };
    value["store"] = json!(entry.name);
    Ok(json_data(value))
}
