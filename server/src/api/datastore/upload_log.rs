//! `POST /admin/datastore/{store}/upload-backup-log`: raw blob body stored as
//! `client.log.blob` in a finished snapshot (not added to the manifest).

use http::Response;

use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn post(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    let privs = ctx.require_any(entry, &ns, Privileges::BACKUP)?;
    if !privs.contains(Privileges::MODIFY) && !ctx.owns(&entry.store, &ns, &dir.group).await? {
        return Err(HttpError::forbidden());
    }
    entry
        .store
        .add_client_log(&ns, &dir, ctx.body.clone())
        .await
        .map_err(ds_error)?;
    Ok(json_data(serde_json::Value::Null))
}
