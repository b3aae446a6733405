//! `GET /admin/datastore/{store}/status` (§6.1): capacity, last GC status, backend type.
//! Callers without Audit or Backup get zeros, like PBS.

use http::Response;
use serde_json::json;

use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::format::names::BackupNamespace;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn get(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let privs = ctx.privs(entry, &BackupNamespace::root());
    let store = &entry.store;
    let mut value = json!({
        "total": 0u64, "used": 0u64, "avail": 0u64,
        "backend-type": store.backend_kind(),
    });
    if privs.intersects(Privileges::AUDIT | Privileges::BACKUP) {
        if let Some(cap) = store.capacity().await.map_err(ds_error)? {
            value["total"] = json!(cap.total);
            value["used"] = json!(cap.used);
            value["avail"] = json!(cap.avail);
        }
        if let Some(gc) = store.last_gc_status().await {
            value["gc-status"] = serde_json::to_value(gc)
                .map_err(|e| HttpError::internal(format!("cannot encode gc status: {e}")))?;
        }
    }
    Ok(json_data(value))
}
