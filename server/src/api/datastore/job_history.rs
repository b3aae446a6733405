//! `GET /admin/datastore/{store}/job-history` (ours): finished maintenance runs of the
//! datastore (GC, prune, verify, abandoned-backup cleanup), oldest first; `kind` filters
//! (`garbage-collection`, `prune`, `verify`, `abandoned-cleanup`).

use http::Response;

use crate::api::context::{ds_error, Ctx};
use crate::datastore::JobKind;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn list(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    if !ctx.store_scope(entry).figures() {
        return Err(HttpError::forbidden());
    }
    let kind = match ctx.params.str("kind")? {
        None => None,
        Some(text) => Some(
            JobKind::ALL
                .into_iter()
                .find(|k| k.as_str() == text)
                .ok_or_else(|| HttpError::bad_param("kind", format!("unknown kind '{text}'")))?,
        ),
    };
    let records = entry.store.job_history(kind).await.map_err(ds_error)?;
    Ok(json_data(records))
}
