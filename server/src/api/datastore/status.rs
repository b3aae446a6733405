//! `GET /admin/datastore/{store}/status` (docs/protocol.md#rest-endpoints): capacity and backend
//! type and, for object-store datastores, the request counters as `s3-statistics` (PBS 4.2 reports
//! the same key) and the backend health. With `verbose=true`, as in PBS, also the last GC status,
//! and our retention state. Callers without Audit or Backup get zeros, like PBS; the request
//! counters count every owner's backups, so they need the store figures of `auth::scope` (Audit or
//! Modify). What `total`, `used` and `avail` mean per backend and limit is described in
//! `datastore/usage/capacity.rs`.

use http::Response;
use serde_json::{json, Value};

use crate::api::context::{ds_error, Ctx};
use crate::backend::RequestCounts;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn get(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let scope = ctx.store_scope(entry);
    let verbose = ctx.params.bool_or("verbose", false)?;
    let store = &entry.store;
    let mut value = json!({
        "total": 0u64, "used": 0u64, "avail": 0u64,
        "backend-type": store.backend_kind(),
    });
    if scope.capacity() {
        let cap = store.usage().status_capacity().await.map_err(ds_error)?;
        value["total"] = json!(cap.total);
        value["used"] = json!(cap.used);
        value["avail"] = json!(cap.avail);
        if let Some(gc) = store.gc().last_status().await.filter(|_| verbose) {
            value["gc-status"] = serde_json::to_value(gc)
                .map_err(|e| HttpError::internal(format!("cannot encode gc status: {e}")))?;
        }
        // Request counts cover every owner's backups: a store figure.
        if scope.figures() {
            if let Some(stats) = s3_statistics(store.backend().request_counts())? {
                value["s3-statistics"] = stats;
            }
        }
        if let Some(health) = store.backend().health() {
            value["backend-health"] = serde_json::to_value(health)
                .map_err(|e| HttpError::internal(format!("cannot encode backend health: {e}")))?;
        }
        if verbose {
            value["retention"] = serde_json::to_value(store.retention().status())
                .map_err(|e| HttpError::internal(format!("cannot encode retention status: {e}")))?;
        }
    }
    Ok(json_data(value))
}

/// The counters of a remote backend (`None` for local datastores), as `s3-statistics`.
fn s3_statistics(counts: Option<RequestCounts>) -> Result<Option<Value>, HttpError> {
    counts
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| HttpError::internal(format!("cannot encode s3 statistics: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_use_kebab_case_keys_and_are_absent_for_local_stores() {
        assert_eq!(s3_statistics(None).unwrap(), None);
        let counts = RequestCounts {
            get: 1,
            put: 2,
            post: 3,
            head: 4,
            delete: 5,
            list: 6,
            uploaded: 7,
            downloaded: 8,
        };
        let value = s3_statistics(Some(counts)).unwrap().unwrap();
        assert_eq!(
            value,
            json!({"get": 1, "put": 2, "post": 3, "head": 4, "delete": 5, "list": 6,
                   "uploaded": 7, "downloaded": 8})
        );
    }
}
