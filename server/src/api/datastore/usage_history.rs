//! `GET /admin/datastore/{store}/usage-history` (ours): the datastore's daily usage samples,
//! oldest first, as the console's usage charts show them: per UTC day `physical-bytes`,
//! `logical-bytes`, `chunks`, `snapshots` and the cumulative `s3-requests`, plus
//! `s3-requests-per-day` (the differences). At most `HISTORY_DAYS` days; a day without any
//! change has no sample of its own. These figures count every owner's backups, so they need
//! the store figures of `auth::scope` (Audit or Modify on the datastore).

use http::Response;
use serde_json::json;

use crate::api::context::Ctx;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn get(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    if !ctx.store_scope(entry).figures() {
        return Err(HttpError::forbidden());
    }
    let history = entry.store.usage().history();
    let per_day: Vec<_> = history
        .requests_per_day()
        .into_iter()
        .map(|(day, requests)| json!({"day": day, "requests": requests}))
        .collect();
    Ok(json_data(json!({
        "samples": history.samples(),
        "s3-requests-per-day": per_day,
    })))
}
