//! `/nodes` and `/nodes/{node}/...` besides tasks: the node list, the server identity and the
//! node status (memory, CPU, load, kernel; see [`crate::host`] for what each figure means in a
//! pod).

use http::Response;
use serde_json::json;

use super::context::Ctx;
use crate::auth::Privileges;
use crate::host::Sampler;
use crate::net::{json_data, Body, HttpError};

pub fn identity(ctx: &Ctx) -> Response<Body> {
    json_data(json!({ "pbs-instance-id": ctx.state.node.instance_id }))
}

/// `GET /nodes`: PBS keeps this compatibility listing for its superuser (`root@pam`) and
/// answers everybody else, Admin on `/` included, with 403; ours does the same for
/// non-superusers.
pub fn list(ctx: &Ctx) -> Result<Response<Body>, HttpError> {
    if !ctx.id.superuser || ctx.id.authid.is_token() {
        return Err(HttpError::forbidden());
    }
    Ok(json_data(json!([{ "node": ctx.state.node.name }])))
}

/// `GET /nodes/{node}/status`: needs `Sys.Audit` on `/` (superusers have it; a token only
/// with its own ACL entry).
pub async fn status(ctx: &Ctx) -> Result<Response<Body>, HttpError> {
    let privs = ctx.state.auth.root_privileges(&ctx.id);
    if !privs.contains(Privileges::SYS_AUDIT) {
        return Err(HttpError::forbidden());
    }
    let figures = Sampler::global().figures().await;
    let mut value = serde_json::to_value(figures)
        .map_err(|e| HttpError::internal(format!("cannot encode node status: {e}")))?;
    let fingerprint = ctx.state.tls_fingerprint.get().cloned().unwrap_or_default();
    value["info"] = json!({ "fingerprint": fingerprint });
    Ok(json_data(value))
}
