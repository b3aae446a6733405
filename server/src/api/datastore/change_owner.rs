//! `POST /admin/datastore/{store}/change-owner`: needs Datastore.Modify.

use http::Response;

use crate::api::context::{ds_error, Ctx};
use crate::auth::{Authid, Privileges};
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn post(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let group = ctx.params.group()?;
    let new_owner: Authid = ctx
        .params
        .required_str("new-owner")?
        .parse()
        .map_err(|e| HttpError::bad_param("new-owner", e))?;
    if !ctx.privs(entry, &ns).contains(Privileges::MODIFY) {
        return Err(HttpError::forbidden());
    }
    // The new owner must belong to the store's tenant.
    match ctx.state.auth.identity_for(&new_owner) {
        Ok(id) if id.tenant == entry.tenant || id.superuser => {}
        _ => {
            return Err(HttpError::bad_param(
                "new-owner",
                format!("no such user or token '{new_owner}'"),
            ))
        }
    }
    entry
        .store
        .tree()
        .set_group_owner(&ns, &group, &new_owner.to_string())
        .await
        .map_err(ds_error)?;
    Ok(json_data(serde_json::Value::Null))
}
