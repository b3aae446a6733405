//! `/nodes/{node}/...`: server identity and worker tasks (protocol.md §3.5). A task is visible
//! to the user that started it (and that user's tokens) and to superusers.

use http::{Response, StatusCode};
use serde_json::json;

use super::context::Ctx;
use crate::net::body::{json_response, text};
use crate::net::{json_data, Body, HttpError};
use crate::tasks::TaskListItem;

/// Default page size of the task log (PBS uses 50).
const DEFAULT_LOG_LIMIT: u64 = 50;
/// Default number of tasks in a task list (PBS uses 50).
const DEFAULT_TASK_LIMIT: u64 = 50;

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

/// Filters of `GET /nodes/{node}/tasks`; the client's `task list` sends `running`, `start`,
/// `limit`, `userfilter` and `store` and expects only running tasks unless `--all`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TaskFilter {
    running: bool,
    errors: bool,
    userfilter: Option<String>,
    store: Option<String>,
    typefilter: Option<String>,
    start: u64,
    /// 0 = no limit.
    limit: u64,
}

impl TaskFilter {
    fn from_params(params: &crate::net::Params) -> Result<Self, HttpError> {
        Ok(Self {
            running: params.bool_or("running", false)?,
            errors: params.bool_or("errors", false)?,
            userfilter: params.str("userfilter")?.filter(|s| !s.is_empty()),
            store: params.str("store")?.filter(|s| !s.is_empty()),
            typefilter: params.str("typefilter")?.filter(|s| !s.is_empty()),
            start: params.u64("start")?.unwrap_or(0),
            limit: params.u64("limit")?.unwrap_or(DEFAULT_TASK_LIMIT),
        })
    }

    fn matches(&self, task: &TaskListItem) -> bool {
        let finished = task.endtime.is_some();
        if self.running && finished {
            return false;
        }
        if self.errors && task.status.as_deref().is_none_or(|s| s == "OK") {
            return false;
        }
        if let Some(user) = &self.userfilter {
            if !task.authid.contains(user.as_str()) {
                return false;
            }
        }
        if let Some(ty) = &self.typefilter {
            if !task.worker_type.contains(ty.as_str()) {
                return false;
            }
        }
        if let Some(store) = &self.store {
            // Datastore tasks carry the store as worker id, or as its first `:` field.
            let on_store = task
                .worker_id
                .as_deref()
                .is_some_and(|id| id == store || id.starts_with(&format!("{store}:")));
            if !on_store {
                return false;
            }
        }
        true
    }

    /// The page selected by `start`/`limit` and the number of matching tasks.
    fn apply(&self, tasks: Vec<TaskListItem>) -> (Vec<TaskListItem>, u64) {
        let matching: Vec<TaskListItem> = tasks.into_iter().filter(|t| self.matches(t)).collect();
        let total = matching.len() as u64;
        let skip = usize::try_from(self.start).unwrap_or(usize::MAX);
        let take = match self.limit {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        (matching.into_iter().skip(skip).take(take).collect(), total)
    }
}

/// Tasks the caller may see, newest first, filtered like PBS (`{"data": [...], "total": n}`).
pub fn list_tasks(ctx: &Ctx) -> Result<Response<Body>, HttpError> {
    let filter = TaskFilter::from_params(&ctx.params)?;
    let visible: Vec<TaskListItem> = ctx
        .state
        .tasks
        .list()
        .into_iter()
        .filter(|t| may_see(ctx, &t.authid))
        .collect();
    let (page, total) = filter.apply(visible);
    let data = serde_json::to_value(page)
        .map_err(|e| HttpError::internal(format!("cannot encode task list: {e}")))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": data, "total": total }),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(
        n: u64,
        worker_type: &str,
        id: Option<&str>,
        authid: &str,
        status: Option<&str>,
    ) -> TaskListItem {
        TaskListItem {
            upid: format!("UPID:{n}"),
            node: "localhost".into(),
            pid: 1,
            pstart: 1,
            starttime: n as i64,
            worker_type: worker_type.into(),
            worker_id: id.map(str::to_string),
            user: authid.into(),
            endtime: status.map(|_| n as i64 + 1),
            status: status.map(str::to_string),
            authid: authid.into(),
        }
    }

    fn tasks() -> Vec<TaskListItem> {
        vec![
            item(5, "garbage_collection", Some("s1"), "alice@pbs", None),
            item(4, "prune", Some("s1:vm/100"), "alice@pbs!tok", Some("OK")),
            item(
                3,
                "garbage_collection",
                Some("s10"),
                "bob@pbs",
                Some("ERROR: boom"),
            ),
            item(
                2,
                "prune",
                Some("s2:ns1:vm/1"),
                "alice@pbs",
                Some("WARNINGS: 1"),
            ),
            item(1, "garbage_collection", Some("s1"), "alice@pbs", Some("OK")),
        ]
    }

    fn upids(list: &[TaskListItem]) -> Vec<&str> {
        list.iter().map(|t| t.upid.as_str()).collect()
    }

    #[test]
    fn client_task_list_shows_only_running_tasks_of_store_and_user() {
        // What `proxmox-backup-client task list` sends without --all.
        let params = crate::net::Params::from_query(Some(
            "running=true&start=0&limit=50&userfilter=alice%40pbs&store=s1",
        ));
        let filter = TaskFilter::from_params(&params).unwrap();
        let (page, total) = filter.apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:5"]);
        assert_eq!(total, 1);
        // --all: stopped tasks too; `s10` is not store `s1`.
        let params = crate::net::Params::from_query(Some(
            "running=false&start=0&limit=50&userfilter=alice%40pbs&store=s1",
        ));
        let (page, _) = TaskFilter::from_params(&params).unwrap().apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:5", "UPID:4", "UPID:1"]);
    }

    #[test]
    fn task_list_errors_type_and_paging() {
        let f = TaskFilter {
            errors: true,
            ..TaskFilter::default()
        };
        assert_eq!(upids(&f.apply(tasks()).0), vec!["UPID:3", "UPID:2"]);
        let f = TaskFilter {
            typefilter: Some("prune".into()),
            ..TaskFilter::default()
        };
        assert_eq!(upids(&f.apply(tasks()).0), vec!["UPID:4", "UPID:2"]);
        let f = TaskFilter {
            start: 1,
            limit: 2,
            ..TaskFilter::default()
        };
        let (page, total) = f.apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:4", "UPID:3"]);
        assert_eq!(total, 5);
        let f = TaskFilter::default();
        assert_eq!(f.apply(tasks()).0.len(), 5, "limit 0 means no limit");
    }
}
