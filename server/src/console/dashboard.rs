//! The dashboard: how to connect (certificate fingerprint, `PBS_REPOSITORY`), then per
//! datastore the usage, deduplication, quota, backend health, last GC, the age of each group's
//! newest snapshot and failed verifies, and the running tasks. All of it from the API.

use std::collections::BTreeMap;

use maud::{html, Markup};
use serde_json::Value;

use super::api_client::{enc, query, str_of};
use super::format::{age, bytes, now, time};
use super::layout::{frame, Nav};
use super::{ConsoleError, Session};

/// A group whose newest snapshot is older than this is marked stale (a day plus slack for a
/// daily schedule).
pub(crate) const STALE_AFTER: i64 = 36 * 3600;

/// What the dashboard shows of one datastore.
#[derive(Debug, Default)]
pub(crate) struct StoreView {
    pub name: String,
    pub comment: Option<String>,
    pub backend: String,
    /// `status?verbose=1` (capacity, gc-status, backend-health), when visible.
    pub status: Option<Value>,
    /// The store's entry of `/tenants/{tenant}/usage`, when visible.
    pub usage: Option<Value>,
    /// Exit status of the last GC task, when visible.
    pub gc_result: Option<String>,
    /// `(namespace, group)` records of `groups`.
    pub groups: Vec<(String, Value)>,
    /// `(namespace, snapshot)` records whose verification failed.
    pub failed_verifies: Vec<(String, Value)>,
}

/// Tenant-wide quota of `/tenants/{tenant}/usage`.
#[derive(Debug, Default)]
pub(crate) struct TenantQuota {
    pub tenant: String,
    pub physical: u64,
    pub quota: Option<u64>,
    pub warning: bool,
}

fn u64_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

async fn gather(s: &Session) -> Result<(Vec<StoreView>, Vec<TenantQuota>), ConsoleError> {
    let mut usage_by_store: BTreeMap<String, Value> = BTreeMap::new();
    let mut quotas = Vec::new();
    let tenants = s.api.get_opt("tenants").await?.unwrap_or(Value::Null);
    for t in tenants.as_array().cloned().unwrap_or_default() {
        let id = str_of(&t, "id").to_string();
        let Some(usage) = s
            .api
            .get_opt(&format!("tenants/{}/usage", enc(&id)))
            .await?
        else {
            continue;
        };
        if usage.get("quota-warn-percent").is_some() {
            quotas.push(TenantQuota {
                tenant: id.clone(),
                physical: u64_of(&usage, "physical-bytes").unwrap_or(0),
                quota: u64_of(&usage, "quota-bytes"),
                warning: usage
                    .get("quota-warning")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            });
        }
        for store in usage["datastores"].as_array().cloned().unwrap_or_default() {
            usage_by_store.insert(str_of(&store, "store").to_string(), store);
        }
    }
    let mut views = Vec::new();
    let list = s.api.get("admin/datastore").await?;
    for item in list.as_array().cloned().unwrap_or_default() {
        let name = str_of(&item, "store").to_string();
        let e = enc(&name);
        let status = s
            .api
            .get_opt(&format!("admin/datastore/{e}/status?verbose=1"))
            .await?;
        let gc_upid = status
            .as_ref()
            .and_then(|st| st.get("gc-status"))
            .map(|gc| str_of(gc, "upid").to_string())
            .filter(|u| !u.is_empty());
        let gc_result = match gc_upid {
            Some(upid) => s
                .api
                .get_opt(&format!("nodes/localhost/tasks/{}/status", enc(&upid)))
                .await?
                .map(|t| match t.get("exitstatus").and_then(Value::as_str) {
                    Some(x) => x.to_string(),
                    None => str_of(&t, "status").to_string(),
                }),
            None => None,
        };
        let mut groups = Vec::new();
        let mut failed = Vec::new();
        for ns in super::snapshots::namespaces(s, &name).await? {
            let q = query(&[("ns", &ns)]);
            if let Some(g) = s
                .api
                .get_opt(&format!("admin/datastore/{e}/groups?{q}"))
                .await?
            {
                for group in g.as_array().cloned().unwrap_or_default() {
                    groups.push((ns.clone(), group));
                }
            }
            if let Some(snaps) = s
                .api
                .get_opt(&format!("admin/datastore/{e}/snapshots?{q}"))
                .await?
            {
                for snap in snaps.as_array().cloned().unwrap_or_default() {
                    if snap["verification"]["state"] == "failed" {
                        failed.push((ns.clone(), snap));
                    }
                }
            }
        }
        views.push(StoreView {
            comment: item
                .get("comment")
                .and_then(Value::as_str)
                .map(str::to_string),
            backend: str_of(&item, "backend-type").to_string(),
            usage: usage_by_store.remove(&name),
            name,
            status,
            gc_result,
            groups,
            failed_verifies: failed,
        });
    }
    Ok((views, quotas))
}

/// `GET /`.
pub(crate) async fn render(s: &Session, host: &str) -> Result<Markup, ConsoleError> {
    let (stores, quotas) = gather(s).await?;
    let running = s
        .api
        .get_opt("nodes/localhost/tasks?running=1&limit=50")
        .await?
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let fingerprint = s.api.state().tls_fingerprint.get().cloned();
    let body = html! {
        h1 { "Dashboard" }
        (connect_box(s, host, fingerprint.as_deref(), &stores))
        @for q in &quotas { (quota_box(q)) }
        @if stores.is_empty() {
            p.empty { "No datastore is visible to you. An administrator grants access with an ACL entry." }
        }
        @for view in &stores { (store_card(view, now())) }
        section.card {
            h2 { "Running tasks" }
            @if running.is_empty() { p.empty { "No task is running." } }
            @else { (super::tasks::task_table(&running)) }
        }
    };
    Ok(frame("Dashboard", Nav::Dashboard, Some(s), body))
}

/// The repository string of `user@realm` on `store` as the stock client reads it
/// (`[[user@]host[:port]:]store`, docs/protocol.md); a host without port is behind a
/// standard-port proxy, so 443 is written out (the client's default is 8007).
pub(crate) fn repository(authid: &str, host: &str, store: &str) -> String {
    let has_port = match host.rsplit_once(':') {
        Some((h, p)) => {
            !h.is_empty()
                && !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && !host.ends_with(']')
        }
        None => false,
    };
    if has_port {
        format!("{authid}@{host}:{store}")
    } else {
        format!("{authid}@{host}:443:{store}")
    }
}

fn connect_box(s: &Session, host: &str, fingerprint: Option<&str>, stores: &[StoreView]) -> Markup {
    let authid = s.id.authid.to_string();
    html! {
        section.card #connect {
            h2 { "Connect a client" }
            @if let Some(fp) = fingerprint {
                p { "Server certificate fingerprint:" }
                pre #fingerprint { "export PBS_FINGERPRINT='" (fp) "'" }
            }
            @for store in stores {
                pre.repository { "export PBS_REPOSITORY='" (repository(&authid, host, &store.name)) "'" }
            }
        }
    }
}

fn quota_box(q: &TenantQuota) -> Markup {
    html! {
        section.card.quota.warning[q.warning] {
            h2 { "Quota of tenant " (q.tenant) }
            @match q.quota {
                Some(limit) => {
                    meter min="0" max=(limit) value=(q.physical) high=(limit / 10 * 8) optimum="0" {}
                    p { (bytes(q.physical)) " of " (bytes(limit)) " used" }
                    @if q.warning { p.error role="alert" { "Quota warning: usage is above the warning level." } }
                }
                None => { p { (bytes(q.physical)) " used, no quota set" } }
            }
        }
    }
}

/// One datastore's card (pure: the unit tests render it from API answers).
pub(crate) fn store_card(v: &StoreView, now: i64) -> Markup {
    let logical = v.usage.as_ref().and_then(|u| u64_of(u, "logical-bytes"));
    let physical = v.usage.as_ref().and_then(|u| u64_of(u, "physical-bytes"));
    let store_quota = v
        .usage
        .as_ref()
        .and_then(|u| u64_of(u, "store-quota-bytes"));
    let health = v.status.as_ref().and_then(|st| st.get("backend-health"));
    let gc = v.status.as_ref().and_then(|st| st.get("gc-status"));
    html! {
        section.card.store data-store=(v.name) {
            h2 {
                a href={ "/console/datastore/" (enc(&v.name)) } { (v.name) }
                " " span.badge { (v.backend) }
            }
            @if let Some(c) = &v.comment { p.comment { (c) } }
            dl.figures {
                @if let (Some(l), Some(p)) = (logical, physical) {
                    dt { "Logical" } dd.logical { (bytes(l)) }
                    dt { "Physical" } dd.physical { (bytes(p)) }
                    dt { "Deduplication" } dd.dedup { (dedup(l, p)) }
                }
                @if let Some(st) = &v.status {
                    @if let (Some(used), Some(total)) = (u64_of(st, "used"), u64_of(st, "total")) {
                        dt { "Capacity" }
                        dd { (bytes(used)) " of " (bytes(total)) }
                    }
                }
            }
            @if v.usage.is_some() {
                p { a.usage-link href={ "/console/datastore/" (enc(&v.name)) "/usage" } { "Usage over time" } }
            }
            @if let (Some(q), Some(p)) = (store_quota, physical) {
                div.quota.warning[p >= q / 10 * 8] {
                    "Store quota: " meter min="0" max=(q) value=(p) high=(q / 10 * 8) optimum="0" {}
                    " " (bytes(p)) " of " (bytes(q))
                }
            }
            @if let Some(h) = health {
                @if h.get("healthy").and_then(Value::as_bool) == Some(false) {
                    p.error.health role="alert" {
                        "Backend unhealthy: " (str_of(h, "message"))
                        @if let Some(since) = h.get("since").and_then(Value::as_i64) { " (since " (time(since)) ")" }
                    }
                } @else {
                    p.ok.health { "Backend healthy" }
                }
            }
            p.gc {
                "Last garbage collection: "
                @if let Some(g) = gc.filter(|g| !str_of(g, "upid").is_empty()) {
                    a href={ "/console/tasks/" (enc(str_of(g, "upid"))) } {
                        (v.gc_result.as_deref().unwrap_or("unknown result"))
                    }
                    " – removed " (bytes(u64_of(g, "removed-bytes").unwrap_or(0)))
                    ", pending " (bytes(u64_of(g, "pending-bytes").unwrap_or(0)))
                } @else {
                    "none yet"
                }
            }
            (groups_table(v, now))
            @if !v.failed_verifies.is_empty() {
                h3.error { "Failed verifies" }
                ul.failed {
                    @for (ns, snap) in &v.failed_verifies {
                        li { (super::snapshots::snapshot_link(&v.name, ns, snap)) }
                    }
                }
            }
        }
    }
}

/// `12.3×` (logical per physical byte).
fn dedup(logical: u64, physical: u64) -> String {
    if physical == 0 {
        "–".to_string()
    } else {
        format!("{:.1}×", logical as f64 / physical as f64)
    }
}

fn groups_table(v: &StoreView, now: i64) -> Markup {
    html! {
        @if v.groups.is_empty() { p.empty { "No backup groups visible." } }
        @else {
            table.groups {
                thead { tr { th { "Group" } th { "Snapshots" } th { "Newest" } th { "Age" } } }
                tbody {
                    @for (ns, g) in &v.groups {
                        @let last = g.get("last-backup").and_then(Value::as_i64).unwrap_or(0);
                        @let old = now - last > STALE_AFTER;
                        tr.stale[old] {
                            td { (super::snapshots::group_link(&v.name, ns, g)) }
                            td { (u64_of(g, "backup-count").unwrap_or(0)) }
                            td { (time(last)) }
                            td.age { (age(now - last)) @if old { " – old" } }
                        }
                    }
                }
            }
        }
    }
}
