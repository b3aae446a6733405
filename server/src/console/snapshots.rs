//! Content pages: a datastore's namespaces and groups, a group's snapshots (verify state,
//! protection, notes), one snapshot (files with download links, retention lock, notes, and the
//! forms of its actions in `actions.rs`), and a directory of a pxar archive (the `catalog`
//! endpoint) with links to `pxar-file-download`.

use maud::{html, Markup};
use serde_json::Value;

use super::api_client::{enc, query, str_of};
use super::format::{bytes, rfc3339, time};
use super::layout::{frame, Nav};
use super::session::CSRF_FIELD;
use super::{ConsoleError, Query, Session};
use crate::api::datastore::archive::encode_base64_path;

/// `params` plus one more pair, as a query string.
fn with(params: &[(&str, &str)], key: &str, value: &str) -> String {
    let mut all = params.to_vec();
    all.push((key, value));
    query(&all)
}

/// The parameters naming a group (and a snapshot, with `time`).
pub(crate) fn ident<'a>(ns: &'a str, btype: &'a str, bid: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![("backup-type", btype), ("backup-id", bid)];
    if !ns.is_empty() {
        v.insert(0, ("ns", ns));
    }
    v
}

/// Link to a group's page.
pub(crate) fn group_link(store: &str, ns: &str, group: &Value) -> Markup {
    let (t, id) = (str_of(group, "backup-type"), str_of(group, "backup-id"));
    let q = query(&ident(ns, t, id));
    html! {
        a.group href={ "/console/datastore/" (enc(store)) "/group?" (q) } {
            @if !ns.is_empty() { (ns) "/" }
            (t) "/" (id)
        }
    }
}

/// Link to a snapshot's page.
pub(crate) fn snapshot_link(store: &str, ns: &str, snap: &Value) -> Markup {
    let (t, id) = (str_of(snap, "backup-type"), str_of(snap, "backup-id"));
    let when = snap.get("backup-time").and_then(Value::as_i64).unwrap_or(0);
    let w = when.to_string();
    let mut params = ident(ns, t, id);
    params.push(("backup-time", &w));
    html! {
        a.snapshot href={ "/console/datastore/" (enc(store)) "/snapshot?" (query(&params)) } {
            @if !ns.is_empty() { (ns) "/" }
            (t) "/" (id) "/" (rfc3339(when))
        }
    }
}

fn verify_badge(snap: &Value) -> Markup {
    match snap["verification"]["state"].as_str() {
        Some("ok") => html! { span.badge.ok { "verified" } },
        Some("failed") => html! { span.badge.error { "verify failed" } },
        Some(other) => html! { span.badge { (other) } },
        None => html! { span.badge { "not verified" } },
    }
}

/// Namespaces of a store the caller may list (root first); root only when refused.
pub(crate) async fn namespaces(s: &Session, store: &str) -> Result<Vec<String>, ConsoleError> {
    let listed = s
        .api
        .get_opt(&format!("admin/datastore/{}/namespace", enc(store)))
        .await?;
    let mut out: Vec<String> = listed
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|n| str_of(n, "ns").to_string())
        .collect();
    if !out.iter().any(String::is_empty) {
        out.insert(0, String::new());
    }
    Ok(out)
}

/// `GET /console/datastore/{store}?ns=`: child namespaces and the groups of one namespace.
pub(crate) async fn store_page(
    s: &Session,
    store: &str,
    q: &Query,
) -> Result<Markup, ConsoleError> {
    let ns = q.get("ns").unwrap_or("");
    let e = enc(store);
    let nsq = query(&[("ns", ns)]);
    let groups = s
        .api
        .get(&format!("admin/datastore/{e}/groups?{nsq}"))
        .await?;
    let all_ns = namespaces(s, store).await?;
    let children: Vec<&String> = all_ns
        .iter()
        .filter(|n| {
            !n.is_empty()
                && match ns {
                    "" => !n.contains('/'),
                    p => n
                        .strip_prefix(p)
                        .and_then(|r| r.strip_prefix('/'))
                        .is_some_and(|r| !r.contains('/')),
                }
        })
        .collect();
    let body = html! {
        (breadcrumb(store, ns))
        h1 { "Datastore " (store) @if !ns.is_empty() { " – namespace " (ns) } }
        form.action method="post" action={ "/console/datastore/" (e) "/gc" } {
            input type="hidden" name=(CSRF_FIELD) value=(s.csrf);
            button #start-gc type="submit" { "Start garbage collection" }
        }
        @if !children.is_empty() {
            h2 { "Namespaces" }
            ul.namespaces {
                @for c in &children {
                    li { a href={ "/console/datastore/" (e) "?" (query(&[("ns", c)])) } { (c) } }
                }
            }
        }
        h2 { "Backup groups" }
        @let list = groups.as_array().cloned().unwrap_or_default();
        @if list.is_empty() { p.empty { "No backup groups visible." } }
        @else {
            table.groups {
                thead { tr { th { "Group" } th { "Owner" } th { "Snapshots" } th { "Newest" } th { "Notes" } } }
                tbody {
                    @for g in &list {
                        tr {
                            td { (group_link(store, ns, g)) }
                            td { (str_of(g, "owner")) }
                            td { (g.get("backup-count").and_then(Value::as_u64).unwrap_or(0)) }
                            td { (time(g.get("last-backup").and_then(Value::as_i64).unwrap_or(0))) }
                            td { (str_of(g, "comment")) }
                        }
                    }
                }
            }
        }
    };
    Ok(frame(store, Nav::Content, Some(s), body))
}

fn breadcrumb(store: &str, ns: &str) -> Markup {
    html! {
        nav.breadcrumb aria-label="breadcrumb" {
            a href="/" { "Dashboard" } " › "
            a href={ "/console/datastore/" (enc(store)) } { (store) }
            @if !ns.is_empty() {
                " › " a href={ "/console/datastore/" (enc(store)) "?" (query(&[("ns", ns)])) } { (ns) }
            }
        }
    }
}

/// `GET /console/datastore/{store}/group?ns=&backup-type=&backup-id=`: the group's snapshots.
pub(crate) async fn group_page(
    s: &Session,
    store: &str,
    q: &Query,
) -> Result<Markup, ConsoleError> {
    let ns = q.get("ns").unwrap_or("");
    let (t, id) = (q.required("backup-type")?, q.required("backup-id")?);
    let snaps = s
        .api
        .get(&format!(
            "admin/datastore/{}/snapshots?{}",
            enc(store),
            query(&ident(ns, t, id))
        ))
        .await?;
    let mut list = snaps.as_array().cloned().unwrap_or_default();
    list.sort_by_key(|v| std::cmp::Reverse(v.get("backup-time").and_then(Value::as_i64)));
    let body = html! {
        (breadcrumb(store, ns))
        h1 { "Group " (t) "/" (id) }
        table.snapshots {
            thead { tr { th { "Snapshot" } th { "Size" } th { "Verify" } th { "Protected" } th { "Encryption" } th { "Notes" } } }
            tbody {
                @for snap in &list {
                    tr {
                        td { (snapshot_link(store, ns, snap)) }
                        td { (snap.get("size").and_then(Value::as_u64).map(bytes).unwrap_or_default()) }
                        td { (verify_badge(snap)) }
                        td { @if snap["protected"] == true { span.badge.protected { "protected" } } }
                        td { (crypt_summary(snap)) }
                        td.notes { (str_of(snap, "comment")) }
                    }
                }
            }
        }
        (super::prune::simulator_form(s, store, &ident(ns, t, id), q))
    };
    Ok(frame(&format!("{t}/{id}"), Nav::Content, Some(s), body))
}

fn crypt_summary(snap: &Value) -> &'static str {
    let files = snap["files"].as_array().cloned().unwrap_or_default();
    if files.iter().any(|f| f["crypt-mode"] == "encrypt") {
        "encrypted"
    } else if files.iter().any(|f| f["crypt-mode"] == "sign-only") {
        "signed"
    } else {
        "none"
    }
}

/// Hidden fields naming a snapshot plus the CSRF token: the head of every action form.
fn action_fields(s: &Session, params: &[(&str, &str)]) -> Markup {
    html! {
        input type="hidden" name=(CSRF_FIELD) value=(s.csrf);
        @for (k, v) in params { input type="hidden" name=(k) value=(v); }
    }
}

/// What a download of a file is called on disk: blobs, fixed images and dynamic archives
/// decoded (`.blob`, `.fidx`, `.didx` dropped: `root.pxar.didx` downloads as the whole
/// `root.pxar`, which `pxar extract` or `proxmox-backup-client` can read); `None` for other
/// files (the client log and the like).
fn download_name(name: &str) -> Option<&str> {
    name.strip_suffix(".blob")
        .or_else(|| name.strip_suffix(".fidx"))
        .or_else(|| name.strip_suffix(".didx"))
}

/// `GET /console/datastore/{store}/snapshot?…&backup-time=`: files, notes, lock, and the
/// action forms; `notice` is the API's refusal of the last action, shown above them.
pub(crate) async fn snapshot_page(
    s: &Session,
    store: &str,
    q: &Query,
    notice: Option<&str>,
) -> Result<Markup, ConsoleError> {
    let ns = q.get("ns").unwrap_or("");
    let (t, id, when) = (
        q.required("backup-type")?,
        q.required("backup-id")?,
        q.required("backup-time")?,
    );
    let e = enc(store);
    let snaps = s
        .api
        .get(&format!(
            "admin/datastore/{e}/snapshots?{}",
            query(&ident(ns, t, id))
        ))
        .await?;
    let snap = snaps
        .as_array()
        .and_then(|l| {
            l.iter().find(|v| {
                v.get("backup-time")
                    .and_then(Value::as_i64)
                    .map(|x| x.to_string())
                    .as_deref()
                    == Some(when)
            })
        })
        .cloned()
        .ok_or_else(|| ConsoleError::NotFound(format!("snapshot {t}/{id}/{when}")))?;
    let mut params = ident(ns, t, id);
    params.push(("backup-time", when));
    let sq = query(&params);
    let notes = s
        .api
        .get_opt(&format!("admin/datastore/{e}/notes?{sq}"))
        .await?
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let lock = s
        .api
        .get_opt(&format!("admin/datastore/{e}/retention-lock?{sq}"))
        .await?
        .filter(|v| !v.is_null());
    let files = snap["files"].as_array().cloned().unwrap_or_default();
    let stamp = snap.get("backup-time").and_then(Value::as_i64).unwrap_or(0);
    let body = html! {
        (breadcrumb(store, ns))
        h1 #snapshot-title { "Snapshot " (t) "/" (id) "/" (rfc3339(stamp)) }
        @if let Some(m) = notice { p.error #action-error role="alert" { (m) } }
        dl.figures {
            dt { "Time" } dd { (time(stamp)) }
            dt { "Size" } dd { (snap.get("size").and_then(Value::as_u64).map(bytes).unwrap_or_default()) }
            dt { "Owner" } dd { (str_of(&snap, "owner")) }
            dt { "Verify" } dd { (verify_badge(&snap)) }
            dt { "Protected" } dd #protected { @if snap["protected"] == true { "yes" } @else { "no" } }
            dt { "Encryption" } dd { (crypt_summary(&snap)) }
            dt { "Retention lock" }
            dd #retention {
                @match &lock {
                    Some(l) => {
                        (str_of(l, "mode")) " until "
                        (time(l.get("retain-until").and_then(Value::as_i64).unwrap_or(0)))
                        @if l["legal-hold"] == true { ", legal hold" }
                        " (enforced by " (str_of(l, "enforced-by")) ")"
                    }
                    None => { "none" }
                }
            }
        }
        @let protected = snap["protected"] == true;
        div.actions {
            form.action method="post" action={ "/console/datastore/" (e) "/protected" } {
                (action_fields(s, &params))
                input type="hidden" name="protected" value=(if protected { "0" } else { "1" });
                @if protected { button #unprotect type="submit" { "Unprotect" } }
                @else { button #protect type="submit" { "Protect" } }
            }
            form.action method="post" action={ "/console/datastore/" (e) "/forget" } {
                (action_fields(s, &params))
                button #forget .danger type="submit" { "Forget snapshot" }
            }
        }
        h2 { "Notes" }
        @if notes.is_empty() { p.empty { "No notes." } } @else { pre.notes #notes { (notes) } }
        form.notes method="post" action={ "/console/datastore/" (e) "/notes" } {
            (action_fields(s, &params))
            label for="notes-input" { "Edit notes" }
            textarea #notes-input name="notes" rows="4" { (notes) }
            button #save-notes type="submit" { "Save notes" }
        }
        h2 { "Files" }
        table.files {
            thead { tr { th { "File" } th { "Size" } th { "Encryption" } th { "Actions" } } }
            tbody {
                @for f in &files {
                    @let name = str_of(f, "filename");
                    @let plain = f["crypt-mode"] != "encrypt";
                    tr {
                        td.filename { (name) }
                        td { (f.get("size").and_then(Value::as_u64).map(bytes).unwrap_or_default()) }
                        td { (str_of(f, "crypt-mode")) }
                        td {
                            @if let (true, Some(as_name)) = (plain, download_name(name)) {
                                a.download href={ "/api2/json/admin/datastore/" (e) "/download-decoded?" (with(&params, "file-name", name)) } download=(as_name) { "Download" }
                            }
                            @if plain && (name.ends_with(".pxar.didx") || name.ends_with(".mpxar.didx")) {
                                a.browse href={ "/console/datastore/" (e) "/browse?" (with(&params, "archive-name", name)) } { "Browse" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(frame("Snapshot", Nav::Content, Some(s), body))
}

/// `GET /console/datastore/{store}/browse?…&archive-name=&filepath=`: one directory of a
/// pxar archive, files linked to `pxar-file-download`, directories also as ZIP.
pub(crate) async fn browse_page(
    s: &Session,
    store: &str,
    q: &Query,
) -> Result<Markup, ConsoleError> {
    let ns = q.get("ns").unwrap_or("");
    let (t, id, when, archive) = (
        q.required("backup-type")?,
        q.required("backup-id")?,
        q.required("backup-time")?,
        q.required("archive-name")?,
    );
    let filepath = q.get("filepath").unwrap_or("root");
    let e = enc(store);
    let mut params = ident(ns, t, id);
    params.push(("backup-time", when));
    params.push(("archive-name", archive));
    let mut cat = params.clone();
    cat.push(("filepath", filepath));
    let entries = s
        .api
        .get(&format!("admin/datastore/{e}/catalog?{}", query(&cat)))
        .await?;
    let list = entries.as_array().cloned().unwrap_or_default();
    let root = encode_base64_path(b"/");
    let here = if filepath == "root" {
        root.as_str()
    } else {
        filepath
    };
    let zip = with(&params, "filepath", here);
    let body = html! {
        (breadcrumb(store, ns))
        h1 { "Archive " (archive) }
        p { a.download href={ "/api2/json/admin/datastore/" (e) "/pxar-file-download?" (zip) } { "Download this directory (ZIP)" } }
        table.catalog {
            thead { tr { th { "Name" } th { "Type" } th { "Size" } th { "Modified" } } }
            tbody {
                @for entry in &list {
                    @let q = with(&params, "filepath", str_of(entry, "filepath"));
                    tr {
                        td {
                            @if entry["leaf"] == false {
                                a.dir href={ "/console/datastore/" (e) "/browse?" (q) } { (str_of(entry, "text")) "/" }
                            } @else if str_of(entry, "type") == "f" {
                                a.file href={ "/api2/json/admin/datastore/" (e) "/pxar-file-download?" (q) } download=(str_of(entry, "text")) { (str_of(entry, "text")) }
                            } @else {
                                (str_of(entry, "text"))
                            }
                        }
                        td { (str_of(entry, "type")) }
                        td { (entry.get("size").and_then(Value::as_u64).map(bytes).unwrap_or_default()) }
                        td { (entry.get("mtime").and_then(Value::as_i64).map(time).unwrap_or_default()) }
                    }
                }
            }
        }
    };
    Ok(frame(archive, Nav::Content, Some(s), body))
}

#[cfg(test)]
mod tests {
    #[test]
    fn downloads_are_named_after_the_decoded_stream() {
        use super::download_name;
        assert_eq!(download_name("app.conf.blob"), Some("app.conf"));
        assert_eq!(download_name("disk.img.fidx"), Some("disk.img"));
        assert_eq!(download_name("root.pxar.didx"), Some("root.pxar"));
        assert_eq!(download_name("root.mpxar.didx"), Some("root.mpxar"));
        assert_eq!(download_name("index.json"), None);
    }
}
