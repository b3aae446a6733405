//! `/admin/datastore/{store}/retention-lock` (docs/design.md#retention-locks): the lock of one
//! snapshot. `GET` shows it (mode, retain-until, legal hold, enforced by); `PUT` is for superusers
//! only: `legal-hold=0|1` sets or lifts the legal hold, `retain-until=<Unix time>` extends the lock
//! (rounded up to a generation boundary; shortening is refused).

use http::{Response, StatusCode};

use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn get(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    ctx.check_group(
        entry,
        &ns,
        &dir.group,
        Privileges::AUDIT,
        Privileges::BACKUP,
    )
    .await?;
    let info = entry
        .store
        .retention()
        .snapshot_lock(&ns, &dir)
        .await
        .map_err(ds_error)?;
    let value = serde_json::to_value(info)
        .map_err(|e| HttpError::internal(format!("cannot encode lock info: {e}")))?;
    Ok(json_data(value))
}

pub async fn put(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    if !ctx.id.superuser {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "changing a retention lock is reserved to superusers",
        ));
    }
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    let hold = ctx.params.bool("legal-hold")?;
    let until = ctx.params.i64("retain-until")?;
    if hold.is_none() && until.is_none() {
        return Err(HttpError::bad_request(
            "give legal-hold and/or retain-until".to_string(),
        ));
    }
    let store = &entry.store;
    let mut info = None;
    if let Some(until) = until {
        info = Some(
            store
                .retention()
                .extend_lock(&ns, &dir, until)
                .await
                .map_err(ds_error)?,
        );
    }
    if let Some(hold) = hold {
        info = Some(
            store
                .retention()
                .set_legal_hold(&ns, &dir, hold)
                .await
                .map_err(ds_error)?,
        );
    }
    let value = serde_json::to_value(info)
        .map_err(|e| HttpError::internal(format!("cannot encode lock info: {e}")))?;
    Ok(json_data(value))
}
