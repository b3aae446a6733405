//! The prune simulator of a group: keep options in, the API's prune with `dry-run=1` (the
//! selection the server runs, `datastore::compute_prune` plus protection and retention locks)
//! out as keep/remove per snapshot, then the same options run for real
//! (docs/formats.md#prune-selection).

use http::Method;
use maud::{html, Markup};
use serde_json::Value;

use super::api_client::{enc, query};
use super::format::{rfc3339, time};
use super::layout::{frame, Nav};
use super::session::CSRF_FIELD;
use super::{ConsoleError, Query, Session};

/// PBS's keep options with their labels, in the order PBS lists them.
pub(crate) const KEEP: [(&str, &str); 6] = [
    ("keep-last", "Last"),
    ("keep-hourly", "Hourly"),
    ("keep-daily", "Daily"),
    ("keep-weekly", "Weekly"),
    ("keep-monthly", "Monthly"),
    ("keep-yearly", "Yearly"),
];

/// The fields naming a group.
const GROUP_FIELDS: [&str; 3] = ["ns", "backup-type", "backup-id"];

/// The given keep options of a form (blank ones are unset).
fn keep_values(form: &Query) -> Vec<(&'static str, String)> {
    KEEP.iter()
        .filter_map(|(k, _)| {
            let v = form.get(k)?.trim();
            (!v.is_empty()).then(|| (*k, v.to_string()))
        })
        .collect()
}

/// A form posting a group and keep options to the prune action.
fn prune_form(
    s: &Session,
    store: &str,
    group: &[(&str, &str)],
    keep: &[(&str, String)],
    dry_run: bool,
    editable: bool,
) -> Markup {
    html! {
        form.prune method="post" action={ "/console/datastore/" (enc(store)) "/prune" } {
            input type="hidden" name=(CSRF_FIELD) value=(s.csrf);
            @for (k, v) in group { input type="hidden" name=(k) value=(v); }
            input type="hidden" name="dry-run" value=(if dry_run { "1" } else { "0" });
            @if editable {
                @for (k, label) in KEEP {
                    @let value = keep.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str()).unwrap_or("");
                    label for=(k) { (label) }
                    input id=(k) type="number" min="1" name=(k) value=(value);
                }
                button #simulate type="submit" { "Simulate prune" }
            } @else {
                @for (k, v) in keep { input type="hidden" name=(k) value=(v); }
                button #run-prune .danger type="submit" { "Run prune" }
            }
        }
    }
}

/// The simulator form under a group's snapshots.
pub(crate) fn simulator_form(
    s: &Session,
    store: &str,
    group: &[(&str, &str)],
    q: &Query,
) -> Markup {
    html! {
        h2 { "Prune simulator" }
        p { "Which snapshots a prune with these keep options would remove (nothing is removed)." }
        (prune_form(s, store, group, &keep_values(q), true, true))
    }
}

/// `POST /console/datastore/{store}/prune`: the API's prune of the group (`dry-run` as
/// posted); the decisions per snapshot, and after a simulation the button to run it.
pub(crate) async fn post(
    s: &Session,
    store: &str,
    form: &Query,
    csrf: &str,
) -> Result<Markup, ConsoleError> {
    let dry_run = form.get("dry-run") != Some("0");
    let keep = keep_values(form);
    let group = form.pick(&GROUP_FIELDS);
    let mut params = group.clone();
    params.extend(keep.iter().map(|(k, v)| (*k, v.as_str())));
    params.push(("dry-run", if dry_run { "1" } else { "0" }));
    let items = s
        .api
        .send(
            Method::POST,
            &format!("admin/datastore/{}/prune", enc(store)),
            &params,
            csrf,
        )
        .await?;
    let mut items = items.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|v| std::cmp::Reverse(v.get("backup-time").and_then(Value::as_i64)));
    let removed = items.iter().filter(|i| i["keep"] == false).count();
    let (t, id) = (
        form.get("backup-type").unwrap_or(""),
        form.get("backup-id").unwrap_or(""),
    );
    let group_link = format!("/console/datastore/{}/group?{}", enc(store), query(&group));
    let body = html! {
        nav.breadcrumb aria-label="breadcrumb" {
            a href="/" { "Dashboard" } " › "
            a href={ "/console/datastore/" (enc(store)) } { (store) } " › "
            a href=(group_link) { (t) "/" (id) }
        }
        h1 { @if dry_run { "Prune simulation " } @else { "Prune " } (t) "/" (id) }
        p #prune-summary {
            @if keep.is_empty() { "No keep options given: every snapshot is kept. " }
            @if dry_run { (removed) " of " (items.len()) " snapshots would be removed." }
            @else { (removed) " of " (items.len()) " snapshots removed." }
        }
        table.prune {
            thead { tr { th { "Snapshot" } th { "Time" } th { "Decision" } th { "Why kept" } } }
            tbody {
                @for item in &items {
                    @let when = item.get("backup-time").and_then(Value::as_i64).unwrap_or(0);
                    @let keep_it = item["keep"] == true;
                    tr.keep[keep_it].remove[!keep_it] {
                        td { (t) "/" (id) "/" (rfc3339(when)) }
                        td { (time(when)) }
                        td.decision {
                            @if keep_it { "keep" } @else if dry_run { "remove" } @else { "removed" }
                        }
                        td {
                            @if item["protected"] == true { "protected " }
                            @if let Some(lock) = item.get("retention-lock").and_then(Value::as_str) {
                                "retention lock: " (lock)
                            }
                        }
                    }
                }
            }
        }
        @if dry_run && removed > 0 {
            h2 { "Run it" }
            p { "Removes the snapshots marked “remove” above, with the same options." }
            (prune_form(s, store, &group, &keep, false, false))
        }
        h2 { "Other options" }
        (prune_form(s, store, &group, &keep, true, true))
        p { a href=(group_link) { "Back to the group" } }
    };
    Ok(frame("Prune", Nav::Content, Some(s), body))
}
