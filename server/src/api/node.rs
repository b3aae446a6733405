//! `/nodes/{node}/...`: server identity and worker tasks (protocol.md §3.5). A task is visible
//! to the user that started it (and that user's tokens) and to superusers.

use http::{Response, StatusCode};
use serde_json::json;

use super::context::Ctx;
use crate::net::body::{json_response, text};
use crate::net::{json_data, Body, HttpError};

/// Default page size of the task log (PBS uses 50).
const DEFAULT_LOG_LIMIT: u64 = 50;

pub fn identity(ctx: &Ctx) -> Response<Body> {
    json_data(json!({ "pbs-instance-id": ctx.state.node.instance_id }))
}

/// Whether the caller may see a task started by `authid`.
fn may_see(ctx: &Ctx, authid: &str) -> bool {
    if ctx.id.superuser {
        return true;
    }
    let user = ctx.id.authid.user().to_string();
    match authid.parse::<crate::auth::Authid>() {
        Ok(owner) => owner.user().to_string() == user,
        Err(_) => false,
    }
}

fn unknown(upid: &str) -> HttpError {
    HttpError::not_found(format!("task '{upid}' not found"))
}

pub fn list_tasks(ctx: &Ctx) -> Response<Body> {
    let tasks: Vec<_> = ctx
        .state
        .tasks
        .list()
        .into_iter()
        .filter(|t| may_see(ctx, &t.authid))
        .collect();
    json_data(tasks)
}

pub fn task_status(ctx: &Ctx, upid: &str) -> Result<Response<Body>, HttpError> {
    let status = ctx.state.tasks.status(upid).ok_or_else(|| unknown(upid))?;
    if !may_see(ctx, &status.authid) {
        return Err(HttpError::forbidden());
    }
    Ok(json_data(status))
}

/// `{"data":[{"n","t"}…],"total","active"}`; `download=1` returns the plain log.
pub fn task_log(ctx: &Ctx, upid: &str) -> Result<Response<Body>, HttpError> {
    let status = ctx.state.tasks.status(upid).ok_or_else(|| unknown(upid))?;
    if !may_see(ctx, &status.authid) {
        return Err(HttpError::forbidden());
    }
    if ctx.params.bool_or("download", false)? {
        let log = ctx
            .state
            .tasks
            .log_text(upid)
            .ok_or_else(|| unknown(upid))?;
        return Ok(text(StatusCode::OK, "text/plain", log));
    }
    let start = ctx.params.u64("start")?.unwrap_or(0);
    let limit = ctx.params.u64("limit")?.unwrap_or(DEFAULT_LOG_LIMIT);
    let page = ctx
        .state
        .tasks
        .log(upid, start, limit)
        .ok_or_else(|| unknown(upid))?;
    let lines: Vec<_> = page
        .lines
        .into_iter()
        .map(|(n, t)| json!({ "n": n, "t": t }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "data": lines,
            "total": page.total,
            "active": page.active,
            "success": 1,
        }),
    ))
}

pub fn abort_task(ctx: &Ctx, upid: &str) -> Result<Response<Body>, HttpError> {
    let status = ctx.state.tasks.status(upid).ok_or_else(|| unknown(upid))?;
    if !may_see(ctx, &status.authid) {
        return Err(HttpError::forbidden());
    }
    ctx.state.tasks.abort(upid).ok_or_else(|| unknown(upid))?;
    Ok(json_data(serde_json::Value::Null))
}
