//! `GET /admin/datastore`: the stores the caller may see (DataStoreListItem,
//! docs/protocol.md#record-shapes).

use http::Response;
use serde::Serialize;

use crate::api::context::Ctx;
use crate::net::{json_data, Body};

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct DataStoreListItem {
    pub store: String,
    /// `null` when unset, as PBS lists it.
    pub comment: Option<String>,
    pub mount_status: &'static str,
    pub backend_type: String,
}

pub fn list(ctx: &Ctx) -> Response<Body> {
    let items: Vec<DataStoreListItem> = ctx
        .state
        .datastores()
        .into_iter()
        .filter(|e| ctx.state.auth.store_visible(&ctx.id, &e.name, &e.tenant))
        .map(|e| DataStoreListItem {
            store: e.name.clone(),
            comment: e.comment.clone(),
            mount_status: "nonremovable",
            backend_type: e.store.backend_kind().to_string(),
        })
        .collect();
    json_data(items)
}
