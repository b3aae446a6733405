//! Tasks: the list (with the API's filters) and one task's log. A running task's log is
//! followed by `console.js`, which reads the API's log endpoint from the last line on; a
//! running task has a stop button (the API's `DELETE`, see `actions.rs`).

use maud::{html, Markup};
use serde_json::Value;

use super::api_client::{enc, query, str_of};
use super::format::time;
use super::layout::{frame, Nav};
use super::session::CSRF_FIELD;
use super::{ConsoleError, Query, Session};

/// A table of task list records.
pub(crate) fn task_table(tasks: &[Value]) -> Markup {
    html! {
        table.tasks {
            thead { tr { th { "Started" } th { "Type" } th { "Object" } th { "User" } th { "Status" } } }
            tbody {
                @for t in tasks {
                    @let status = str_of(t, "status");
                    tr {
                        td { a href={ "/console/tasks/" (enc(str_of(t, "upid"))) } { (time(t.get("starttime").and_then(Value::as_i64).unwrap_or(0))) } }
                        td { (str_of(t, "worker_type")) }
                        td { (str_of(t, "worker_id")) }
                        td { (str_of(t, "user")) }
                        td.error[!status.is_empty() && status != "OK" && !status.starts_with("WARNINGS")] {
                            @if t.get("endtime").is_none() { span.badge { "running" } } @else { (status) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/tasks?typefilter=&running=&errors=`.
pub(crate) async fn list_page(s: &Session, q: &Query) -> Result<Markup, ConsoleError> {
    let typefilter = q.get("typefilter").unwrap_or("");
    let running = q.get("running") == Some("1");
    let errors = q.get("errors") == Some("1");
    let mut params = vec![("limit", "200")];
    if !typefilter.is_empty() {
        params.push(("typefilter", typefilter));
    }
    if running {
        params.push(("running", "1"));
    }
    if errors {
        params.push(("errors", "1"));
    }
    let tasks = s
        .api
        .get(&format!("nodes/localhost/tasks?{}", query(&params)))
        .await?;
    let list = tasks.as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Tasks" }
        form.filters method="get" action="/console/tasks" {
            label for="typefilter" { "Type" }
            input #typefilter type="text" name="typefilter" value=(typefilter) placeholder="garbage_collection";
            label { input type="checkbox" name="running" value="1" checked[running]; " running only" }
            label { input type="checkbox" name="errors" value="1" checked[errors]; " errors only" }
            button type="submit" { "Filter" }
        }
        @if list.is_empty() { p.empty { "No tasks." } } @else { (task_table(&list)) }
    };
    Ok(frame("Tasks", Nav::Tasks, Some(s), body))
}

/// `GET /console/tasks/{upid}`: status and log.
pub(crate) async fn log_page(s: &Session, upid: &str) -> Result<Markup, ConsoleError> {
    let e = enc(upid);
    let status = s
        .api
        .get(&format!("nodes/localhost/tasks/{e}/status"))
        .await?;
    let log = s
        .api
        .get(&format!("nodes/localhost/tasks/{e}/log?limit=0"))
        .await?;
    let lines = log.as_array().cloned().unwrap_or_default();
    let running = str_of(&status, "status") == "running";
    let body = html! {
        h1 { "Task " (str_of(&status, "type")) " " (str_of(&status, "id")) }
        dl.figures {
            dt { "UPID" } dd { code { (upid) } }
            dt { "User" } dd { (str_of(&status, "user")) }
            dt { "Started" } dd { (time(status.get("starttime").and_then(Value::as_i64).unwrap_or(0))) }
            dt { "Status" } dd #task-status { (str_of(&status, "status")) " " (str_of(&status, "exitstatus")) }
        }
        @if running {
            form #stop-task-form method="post" action={ "/console/tasks/" (e) "/stop" } {
                input type="hidden" name=(CSRF_FIELD) value=(s.csrf);
                button #stop-task .danger type="submit" { "Stop task" }
            }
        }
        // `console.js` follows a running task: data-upid names it, data-next is the number of
        // the last line shown (lines count from 1).
        pre #task-log data-upid=(upid) data-next=(lines.len()) data-running=(running) {
            @for l in &lines { (str_of(l, "t")) "\n" }
        }
    };
    Ok(frame("Task", Nav::Tasks, Some(s), body))
}
