//! `/nodes/{node}/tasks…`: the task list, one task's status and log, and stopping a task
//! (docs/protocol.md#tasks-and-upids), with PBS 4.2's parameters and answers.
//!
//! Who sees a task: the auth id that started it, its user when a token of that user started
//! it, callers with `Sys.Audit` on `/` (within their tenant; superusers see all), and callers
//! allowed to run the job it belongs to (`Datastore.Modify` on the store for garbage collection
//! and prune tasks, `Datastore.Verify` for verify tasks). Stopping needs the same, with
//! `Sys.Modify` in place of `Sys.Audit`.

use std::collections::HashMap;

use http::{Response, StatusCode};
use serde_json::json;

use super::context::Ctx;
use crate::auth::{owner_matches, Authid, Privileges};
use crate::format::names::BackupNamespace;
use crate::net::body::{json_response, json_response_as, text, PLAIN_JSON_CONTENT_TYPE};
use crate::net::{json_data, streamed, Body, HttpError, Params};
use crate::tasks::{TaskListItem, Upid};

/// Default page size of the task log (PBS uses 50).
const DEFAULT_LOG_LIMIT: u64 = 50;
/// Default number of tasks in a task list (PBS uses 50).
const DEFAULT_TASK_LIMIT: u64 = 50;

fn unknown(upid: &str) -> HttpError {
    HttpError::not_found(format!("task '{upid}' not found"))
}

/// The state classes of `statusfilter` (PBS's `TaskStateType`).
fn state_class(status: &str) -> &'static str {
    if status == "OK" {
        "ok"
    } else if status.starts_with("WARNINGS") {
        "warning"
    } else if status.starts_with("ERROR") {
        "error"
    } else {
        "unknown"
    }
}

/// Whether a task belongs to datastore `store`, as PBS decides it for `store=`: backup, prune,
/// verify and garbage collection tasks name the store first in their worker id. Reader and
/// move tasks do not count (PBS lists them only without `store`).
fn task_on_store(worker_type: &str, worker_id: Option<&str>, store: &str) -> bool {
    let Some(id) = worker_id else {
        return false;
    };
    let counted = matches!(
        worker_type,
        "backup" | "prune" | "prunejob" | "garbage_collection"
    ) || worker_type.starts_with("verif");
    counted && (id == store || id.strip_prefix(store).is_some_and(|r| r.starts_with(':')))
}

/// Filters of `GET /nodes/{node}/tasks`. The stock client's `task list` sends `running`,
/// `start`, `limit`, `userfilter` and `store`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TaskFilter {
    running: bool,
    errors: bool,
    userfilter: Option<String>,
    store: Option<String>,
    typefilter: Option<String>,
    /// `ok`, `warning`, `error`, `unknown`; empty = any.
    statusfilter: Vec<String>,
    since: Option<i64>,
    until: Option<i64>,
    start: u64,
    /// 0 = no limit.
    limit: u64,
}

impl TaskFilter {
    fn from_params(params: &Params) -> Result<Self, HttpError> {
        let statusfilter = params.str_list("statusfilter")?;
        for s in &statusfilter {
            if !matches!(s.as_str(), "ok" | "warning" | "error" | "unknown") {
                return Err(HttpError::bad_param(
                    "statusfilter",
                    format!("'{s}' is not one of ok, warning, error, unknown"),
                ));
            }
        }
        Ok(Self {
            running: params.bool_or("running", false)?,
            errors: params.bool_or("errors", false)?,
            userfilter: params.str("userfilter")?.filter(|s| !s.is_empty()),
            store: params.str("store")?.filter(|s| !s.is_empty()),
            typefilter: params.str("typefilter")?.filter(|s| !s.is_empty()),
            statusfilter,
            since: params.i64("since")?,
            until: params.i64("until")?,
            start: params.u64("start")?.unwrap_or(0),
            limit: params.u64("limit")?.unwrap_or(DEFAULT_TASK_LIMIT),
        })
    }

    fn matches(&self, task: &TaskListItem) -> bool {
        if self.until.is_some_and(|until| task.starttime > until) {
            return false;
        }
        if self.since.is_some_and(|since| task.starttime < since) {
            return false;
        }
        if let Some(user) = &self.userfilter {
            if !task.authid.contains(user.as_str()) {
                return false;
            }
        }
        if let Some(store) = &self.store {
            if !task_on_store(&task.worker_type, task.worker_id.as_deref(), store) {
                return false;
            }
        }
        if let Some(ty) = &self.typefilter {
            if !task.worker_type.contains(ty.as_str()) {
                return false;
            }
        }
        match task.status.as_deref() {
            Some(_) if self.running => false,
            Some("OK") if self.errors => false,
            Some(status) if !self.statusfilter.is_empty() => {
                self.statusfilter.iter().any(|s| s == state_class(status))
            }
            None if !self.statusfilter.is_empty() => false,
            _ => true,
        }
    }

    /// The page selected by `start`/`limit` and PBS's `total`: the tasks up to the end of the
    /// page, plus one when the page is full (PBS does not count further than it reads).
    fn apply(&self, tasks: Vec<TaskListItem>) -> (Vec<TaskListItem>, u64) {
        let limit = match self.limit {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let skip = usize::try_from(self.start).unwrap_or(usize::MAX);
        let page: Vec<TaskListItem> = tasks
            .into_iter()
            .filter(|t| self.matches(t))
            .skip(skip)
            .take(limit)
            .collect();
        let mut total = page.len() as u64 + self.start;
        if !page.is_empty() && page.len() >= limit {
            total += 1;
        }
        (page, total)
    }
}

/// Decides which tasks a caller may see or stop.
struct Access<'a> {
    ctx: &'a Ctx,
    root: Privileges,
    /// Tenant of each task owner (looked up once per owner).
    tenants: HashMap<String, Option<String>>,
}

impl<'a> Access<'a> {
    fn new(ctx: &'a Ctx) -> Self {
        let root = ctx.state.auth.root_privileges(&ctx.id);
        Self {
            ctx,
            root,
            tenants: HashMap::new(),
        }
    }

    fn tenant_of(&mut self, authid: &str) -> Option<String> {
        if let Some(t) = self.tenants.get(authid) {
            return t.clone();
        }
        let tenant = authid
            .parse::<Authid>()
            .ok()
            .and_then(|a| self.ctx.state.auth.identity_for(&a).ok())
            .map(|i| i.tenant);
        self.tenants.insert(authid.to_string(), tenant.clone());
        tenant
    }

    /// The caller started the task, or the caller's user started it through a token.
    fn owns(&self, task_authid: &str) -> bool {
        owner_matches(&self.ctx.id.authid, task_authid)
    }

    /// Job tasks (GC, prune, verify) are visible to whoever may run that job on the store.
    fn may_run_job(&self, worker_type: &str, worker_id: Option<&str>) -> bool {
        let needed = match worker_type {
            "garbage_collection" | "prune" | "prunejob" => Privileges::MODIFY,
            t if t.starts_with("verif") => Privileges::VERIFY | Privileges::MODIFY,
            _ => return false,
        };
        let Some(store) = worker_id.map(|id| id.split(':').next().unwrap_or(id)) else {
            return false;
        };
        match self.ctx.state.datastore(store) {
            Some(entry) => self
                .ctx
                .state
                .auth
                .privileges(
                    &self.ctx.id,
                    &entry.name,
                    &entry.tenant,
                    &BackupNamespace::root(),
                )
                .intersects(needed),
            None => false,
        }
    }

    /// `system` is `Sys.Audit` (seeing) or `Sys.Modify` (stopping).
    fn allowed(
        &mut self,
        system: Privileges,
        authid: &str,
        worker_type: &str,
        worker_id: Option<&str>,
    ) -> bool {
        // A superuser's token is limited by its own ACL entries, like on datastores.
        let superuser = self.ctx.id.superuser && !self.ctx.id.authid.is_token();
        if superuser || self.owns(authid) {
            return true;
        }
        if self.root.contains(system)
            && self.tenant_of(authid).as_deref() == Some(self.ctx.id.tenant.as_str())
        {
            return true;
        }
        self.may_run_job(worker_type, worker_id)
    }
}

/// `GET /nodes/{node}/tasks`: `{"total": n, "data": [...]}`.
pub fn list(ctx: &Ctx) -> Result<Response<Body>, HttpError> {
    let filter = TaskFilter::from_params(&ctx.params)?;
    let mut access = Access::new(ctx);
    let visible: Vec<TaskListItem> = ctx
        .state
        .tasks
        .list()
        .into_iter()
        .filter(|t| {
            access.allowed(
                Privileges::SYS_AUDIT,
                &t.authid,
                &t.worker_type,
                t.worker_id.as_deref(),
            )
        })
        .collect();
    let (page, total) = filter.apply(visible);
    let data = serde_json::to_value(page)
        .map_err(|e| HttpError::internal(format!("cannot encode task list: {e}")))?;
    // PBS streams this list (HTTP/1.1: chunked)
    Ok(streamed(json_response(
        StatusCode::OK,
        &json!({ "total": total, "data": data }),
    )))
}

/// Parses the UPID first (a malformed one is a 400 like in PBS), then finds the task.
fn find(ctx: &Ctx, upid: &str, system: Privileges) -> Result<(), HttpError> {
    let parsed: Upid = upid
        .parse()
        .map_err(|e: crate::tasks::TaskError| HttpError::bad_param("upid", e))?;
    let status = ctx.state.tasks.status(upid).ok_or_else(|| unknown(upid))?;
    let mut access = Access::new(ctx);
    if access.allowed(
        system,
        &status.authid,
        &parsed.worker_type,
        parsed.worker_id.as_deref(),
    ) {
        Ok(())
    } else {
        Err(HttpError::forbidden())
    }
}

pub fn status(ctx: &Ctx, upid: &str) -> Result<Response<Body>, HttpError> {
    find(ctx, upid, Privileges::SYS_AUDIT)?;
    let status = ctx.state.tasks.status(upid).ok_or_else(|| unknown(upid))?;
    Ok(json_data(status))
}

/// `{"data":[{"n","t"}…],"total","success":1}` plus `active` with `test-status`; `limit=0`
/// returns every line from `start` on; `download=1` returns the plain log.
pub fn log(ctx: &Ctx, upid: &str) -> Result<Response<Body>, HttpError> {
    find(ctx, upid, Privileges::SYS_AUDIT)?;
    if ctx.params.bool_or("download", false)? {
        if ["start", "limit", "test-status"]
            .iter()
            .any(|p| ctx.params.raw(p).is_some())
        {
            return Err(HttpError::bad_request(
                "Parameter 'download' cannot be used with other parameters",
            ));
        }
        let log = ctx
            .state
            .tasks
            .log_text(upid)
            .ok_or_else(|| unknown(upid))?;
        return Ok(text(StatusCode::OK, "text/plain", log));
    }
    let start = ctx.params.u64("start")?.unwrap_or(0);
    let limit = match ctx.params.u64("limit")?.unwrap_or(DEFAULT_LOG_LIMIT) {
        0 => u64::MAX,
        n => n,
    };
    let test_status = ctx.params.bool_or("test-status", false)?;
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
    let mut body = json!({ "data": lines, "total": page.total, "success": 1 });
    if test_status {
        body["active"] = json!(page.active);
    }
    Ok(json_response_as(
        StatusCode::OK,
        PLAIN_JSON_CONTENT_TYPE,
        &body,
    ))
}

/// `DELETE …/tasks/{upid}`: asks the task to stop; `null` also for a task that already ended.
pub fn stop(ctx: &Ctx, upid: &str) -> Result<Response<Body>, HttpError> {
    find(ctx, upid, Privileges::SYS_MODIFY)?;
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
            starttime: n as i64 * 100,
            worker_type: worker_type.into(),
            worker_id: id.map(str::to_string),
            user: authid.into(),
            endtime: status.map(|_| n as i64 * 100 + 1),
            status: status.map(str::to_string),
            authid: authid.into(),
        }
    }

    /// Newest first, as the registry lists them.
    fn tasks() -> Vec<TaskListItem> {
        vec![
            item(7, "reader", Some("s1:host/a/6650A1B2"), "alice@pbs", None),
            item(
                6,
                "move-group",
                Some("s1:a/host/x:b"),
                "alice@pbs",
                Some("OK"),
            ),
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
                "backup",
                Some("s2:vm/1"),
                "alice@pbs",
                Some("WARNINGS: 1"),
            ),
            item(1, "backup", Some("s1:host/a"), "alice@pbs", Some("OK")),
        ]
    }

    fn upids(list: &[TaskListItem]) -> Vec<&str> {
        list.iter().map(|t| t.upid.as_str()).collect()
    }

    fn filter(query: &str) -> TaskFilter {
        TaskFilter::from_params(&Params::from_query(Some(query))).unwrap()
    }

    /// What `proxmox-backup-client task list` sends (recorded against PBS 4.2.3): running
    /// tasks of the store and user only; readers and moves are not store tasks.
    #[test]
    fn client_task_list_shows_running_store_tasks() {
        let f = filter("limit=50&running=true&start=0&store=s1&userfilter=alice%40pbs");
        let (page, total) = f.apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:5"]);
        assert_eq!(total, 1);
        let f = filter("limit=10&running=false&start=0&store=s1&userfilter=alice%40pbs");
        let (page, total) = f.apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:5", "UPID:4", "UPID:1"]);
        assert_eq!(total, 3);
    }

    /// PBS counts one past a full page (s4-c4-pbs42-commands: limit 10 → total 11).
    #[test]
    fn total_counts_one_past_a_full_page() {
        let (page, total) = filter("limit=3").apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:7", "UPID:6", "UPID:5"]);
        assert_eq!(total, 4);
        let (page, total) = filter("limit=3&start=3").apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:4", "UPID:3", "UPID:2"]);
        assert_eq!(total, 7);
        let (page, total) = filter("limit=3&start=6").apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:1"]);
        assert_eq!(total, 7);
        let (page, total) = filter("limit=0").apply(tasks());
        assert_eq!(page.len(), 7, "limit 0 means no limit");
        assert_eq!(total, 7);
    }

    #[test]
    fn errors_status_type_and_time_filters() {
        let (page, _) = filter("errors=1").apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:7", "UPID:5", "UPID:3", "UPID:2"]);
        let (page, _) = filter("statusfilter=error&statusfilter=warning").apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:3", "UPID:2"]);
        let (page, _) = filter("statusfilter=ok").apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:6", "UPID:4", "UPID:1"]);
        let (page, _) = filter("typefilter=garbage").apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:5", "UPID:3"]);
        let (page, _) = filter("since=300&until=600").apply(tasks());
        assert_eq!(upids(&page), vec!["UPID:6", "UPID:5", "UPID:4", "UPID:3"]);
        assert!(TaskFilter::from_params(&Params::from_query(Some("statusfilter=bad"))).is_err());
    }

    #[test]
    fn store_membership_follows_pbs() {
        assert!(task_on_store("backup", Some("s1:host/a"), "s1"));
        assert!(task_on_store("garbage_collection", Some("s1"), "s1"));
        assert!(!task_on_store("garbage_collection", Some("s10"), "s1"));
        assert!(task_on_store("verificationjob", Some("s1:v1"), "s1"));
        assert!(task_on_store("verify_group", Some("s1:vm/100"), "s1"));
        assert!(!task_on_store("reader", Some("s1:host/a/1"), "s1"));
        assert!(!task_on_store("move-group", Some("s1:a/host/x:b"), "s1"));
        assert!(!task_on_store("backup", None, "s1"));
    }

    #[test]
    fn state_classes() {
        assert_eq!(state_class("OK"), "ok");
        assert_eq!(state_class("WARNINGS: 3"), "warning");
        assert_eq!(state_class("ERROR: x"), "error");
        assert_eq!(state_class("unknown"), "unknown");
    }
}
