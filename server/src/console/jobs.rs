//! Jobs: the configured prune, verify and GC jobs as PBS lists them (`/admin/prune`,
//! `/admin/verify`, `/admin/gc`: schedule, next run, last run and its task) with a "Run now" button that
//! posts to `actions.rs`, which calls the API's `POST …/{id}/run`.

use maud::{html, Markup};
use serde_json::Value;

use super::api_client::{enc, str_of};
use super::format::time;
use super::layout::{frame, Nav};
use super::session::CSRF_FIELD;
use super::{ConsoleError, Session};

/// The job kinds of PBS's job endpoints, with their headings.
const KINDS: [(&str, &str); 3] = [
    ("prune", "Prune jobs"),
    ("verify", "Verify jobs"),
    ("gc", "Garbage collection jobs"),
];

fn job_table(s: &Session, kind: &str, jobs: &[Value]) -> Markup {
    html! {
        table.jobs data-kind=(kind) {
            thead { tr { th { "Job" } th { "Datastore" } th { "Schedule" } th { "Next run" } th { "Last run" } th { "Actions" } } }
            tbody {
                @for job in jobs {
                    @let id = str_of(job, "id");
                    @let last = str_of(job, "last-run-state");
                    tr {
                        td.job { (id) }
                        td { (str_of(job, "store")) }
                        td { code { (str_of(job, "schedule")) } }
                        td {
                            @if job["disable"] == true { "disabled" }
                            @else if let Some(next) = job.get("next-run").and_then(Value::as_i64) { (time(next)) }
                        }
                        td.error[!last.is_empty() && last != "OK" && last != "running"] {
                            @match job.get("last-run-upid").and_then(Value::as_str) {
                                Some(upid) => {
                                    a href={ "/console/tasks/" (enc(upid)) } {
                                        @if last.is_empty() { "task" } @else { (last) }
                                    }
                                }
                                None => { "never" }
                            }
                        }
                        td {
                            form.action method="post" action={ "/console/jobs/" (kind) "/" (enc(id)) "/run" } {
                                input type="hidden" name=(CSRF_FIELD) value=(s.csrf);
                                button.run-now type="submit" { "Run now" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/jobs`.
pub(crate) async fn page(s: &Session) -> Result<Markup, ConsoleError> {
    let mut sections = Vec::new();
    for (kind, title) in KINDS {
        let jobs = s
            .api
            .get_opt(&format!("admin/{kind}"))
            .await?
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        sections.push((kind, title, jobs));
    }
    let body = html! {
        h1 { "Jobs" }
        p { "Scheduled jobs come from the configuration file (a datastore's " code { "gc_schedule" } " is its garbage collection job); garbage collection can also be started on a datastore's page." }
        @for (kind, title, jobs) in &sections {
            h2 { (title) }
            @if jobs.is_empty() { p.empty { "No " (title.to_lowercase()) " visible." } }
            @else { (job_table(s, kind, jobs)) }
        }
    };
    Ok(frame("Jobs", Nav::Jobs, Some(s), body))
}
