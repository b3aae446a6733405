//! The listing half of the permission matrix: for every kind of caller (see [`Who`]), exactly
//! which groups, snapshots, namespaces, datastores, tenants and figures each read endpoint
//! shows. All of them follow `auth::scope`, so the compliance report, usage, `/metrics` and
//! `/tenants` agree with the snapshot list.

use std::collections::BTreeSet;

use http::{Method, StatusCode};
use serde_json::Value;

use super::matrix_fixture::{Fixture, Who};

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn strings(value: &Value, f: impl Fn(&Value) -> String) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(f)
        .collect()
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn group_of(v: &Value) -> String {
    format!("{}/{}", text(v, "backup-type"), text(v, "backup-id"))
}

/// What one caller sees, as sets of names.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// `store:ns:type/id` of every snapshot of the acme compliance report (`None`: 404).
    report: Option<BTreeSet<String>>,
    /// Stores in the acme report.
    report_stores: Option<BTreeSet<String>>,
    /// Groups of st1's root namespace (`None`: refused).
    groups: Option<BTreeSet<String>>,
    /// Groups with snapshots in st1's namespace teamA.
    snapshots_team_a: Option<BTreeSet<String>>,
    /// Namespaces of st1.
    namespaces: Option<BTreeSet<String>>,
    datastores: BTreeSet<String>,
    datastore_usage: BTreeSet<String>,
    /// Stores of the acme usage document and whether it holds the quota (`None`: refused).
    usage: Option<(BTreeSet<String>, bool)>,
    /// Tenants listed, each with `+` when its figures are shown.
    tenants: BTreeSet<String>,
    /// `tenant/store` of the per-datastore metric series.
    metric_stores: BTreeSet<String>,
    /// Tenants of the tenant-wide metric series.
    metric_tenants: BTreeSet<String>,
    /// Whether the backup task of `backup@pbs` is in the task list.
    sees_task: bool,
}

async fn optional(fixture: &Fixture, who: Who, uri: &str) -> Option<Value> {
    let (status, json, text) = fixture.call(who, Method::GET, uri, b"").await;
    match status {
        StatusCode::OK => Some(json["data"].clone()),
        StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => None,
        other => panic!("{who:?} GET {uri}: {other} {text}"),
    }
}

fn metric_labels(exposition: &str, name: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .map(|l| {
            let labels = l.split('}').next().unwrap_or_default();
            labels
                .split(',')
                .filter_map(|kv| kv.split_once('=').map(|(_, v)| v.trim_matches('"')))
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect()
}

async fn seen(fixture: &Fixture, who: Who) -> Seen {
    let base = "/api2/json/admin/datastore/st1";
    let report = optional(fixture, who, "/api2/json/tenants/acme/compliance-report").await;
    let report_snapshots = report.as_ref().map(|r| {
        let mut out = BTreeSet::new();
        for ds in r["datastores"].as_array().unwrap() {
            for s in ds["snapshots"].as_array().unwrap() {
                out.insert(format!(
                    "{}:{}:{}",
                    text(ds, "store"),
                    text(s, "ns"),
                    group_of(s)
                ));
            }
        }
        out
    });
    let report_stores = report
        .as_ref()
        .map(|r| strings(&r["datastores"], |d| text(d, "store")));
    let groups = optional(fixture, who, &format!("{base}/groups"))
        .await
        .map(|v| strings(&v, group_of));
    let snapshots_team_a = optional(fixture, who, &format!("{base}/snapshots?ns=teamA"))
        .await
        .map(|v| strings(&v, group_of));
    let namespaces = optional(fixture, who, &format!("{base}/namespace"))
        .await
        .map(|v| strings(&v, |n| text(n, "ns")));
    let datastores = strings(
        &fixture.data(who, "/api2/json/admin/datastore").await,
        |d| text(d, "store"),
    );
    let datastore_usage = strings(
        &fixture.data(who, "/api2/json/status/datastore-usage").await,
        |d| text(d, "store"),
    );
    let usage = optional(fixture, who, "/api2/json/tenants/acme/usage")
        .await
        .map(|u| {
            let stores = strings(&u["datastores"], |d| text(d, "store"));
            (stores, u.get("quota-warning").is_some())
        });
    let tenants = strings(&fixture.data(who, "/api2/json/tenants").await, |t| {
        let figures = if t.get("physical-bytes").is_some() {
            "+"
        } else {
            ""
        };
        format!("{}{figures}", text(t, "id"))
    });
    let (status, _, exposition) = fixture.call(who, Method::GET, "/metrics", b"").await;
    assert_eq!(status, StatusCode::OK, "{who:?} /metrics: {exposition}");
    let tasks = fixture.data(who, "/api2/json/nodes/localhost/tasks").await;
    Seen {
        report: report_snapshots,
        report_stores,
        groups,
        snapshots_team_a,
        namespaces,
        datastores,
        datastore_usage,
        usage,
        tenants,
        metric_stores: metric_labels(&exposition, "pbs_cloud_physical_bytes"),
        metric_tenants: metric_labels(&exposition, "pbs_cloud_tenant_quota_warning"),
        sees_task: tasks
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["upid"] == fixture.task.as_str()),
    }
}

const ST1_ROOT: [&str; 4] = ["vm/100", "vm/200", "ct/300", "vm/400"];

fn expected(who: Who) -> Seen {
    let st1_all = set([
        "st1::vm/100",
        "st1::vm/200",
        "st1::ct/300",
        "st1::vm/400",
        "st1:teamA:host/a1",
        "st1:teamA:host/a2",
        "st1:teamA/sub:host/deep",
        "st1:teamB:host/b1",
    ]);
    let mut acme_all = st1_all.clone();
    acme_all.insert("st2::vm/900".into());
    let all_namespaces = set(["", "teamA", "teamA/sub", "teamB"]);
    let team_a = set(["host/a1", "host/a2"]);
    // The fields every acme user with some right on st1 shares; changed per kind below.
    let st1_user = Seen {
        report: Some(st1_all.clone()),
        report_stores: Some(set(["st1"])),
        groups: Some(set(ST1_ROOT)),
        snapshots_team_a: Some(team_a.clone()),
        namespaces: Some(all_namespaces.clone()),
        datastores: set(["st1"]),
        datastore_usage: set(["st1"]),
        usage: None,
        tenants: set(["acme"]),
        metric_stores: set([]),
        metric_tenants: set([]),
        sees_task: false,
    };
    match who {
        Who::Superuser => Seen {
            report: Some(acme_all),
            report_stores: Some(set(["st1", "st2"])),
            datastores: set(["gl1", "st1", "st2"]),
            datastore_usage: set(["gl1", "st1", "st2"]),
            usage: Some((set(["st1", "st2"]), true)),
            tenants: set(["acme+", "globex+", "ops+"]),
            metric_stores: set(["acme/st1", "acme/st2", "globex/gl1"]),
            metric_tenants: set(["acme", "globex", "ops"]),
            sees_task: true,
            ..st1_user
        },
        Who::TenantAdmin => Seen {
            report: Some(acme_all),
            report_stores: Some(set(["st1", "st2"])),
            datastores: set(["st1", "st2"]),
            datastore_usage: set(["st1", "st2"]),
            usage: Some((set(["st1", "st2"]), true)),
            tenants: set(["acme+"]),
            metric_stores: set(["acme/st1", "acme/st2"]),
            metric_tenants: set(["acme"]),
            sees_task: true,
            ..st1_user
        },
        Who::Audit | Who::TokenFull => Seen {
            usage: Some((set(["st1"]), false)),
            metric_stores: set(["acme/st1"]),
            ..st1_user
        },
        Who::BackupOwner => Seen {
            report: Some(set(["st1::vm/100", "st1::ct/300", "st1:teamA:host/a1"])),
            groups: Some(set(["vm/100", "ct/300"])),
            snapshots_team_a: Some(set(["host/a1"])),
            sees_task: true,
            ..st1_user
        },
        Who::BackupNonOwner => Seen {
            report: Some(set([])),
            groups: Some(set([])),
            snapshots_team_a: Some(set([])),
            ..st1_user
        },
        Who::TokenSeparated => Seen {
            report: Some(set(["st1::vm/400"])),
            groups: Some(set(["vm/400"])),
            snapshots_team_a: Some(set([])),
            ..st1_user
        },
        Who::Namespace => Seen {
            report: Some(set([
                "st1:teamA:host/a1",
                "st1:teamA:host/a2",
                "st1:teamA/sub:host/deep",
            ])),
            groups: None,
            namespaces: Some(set(["teamA", "teamA/sub"])),
            datastore_usage: set([]),
            ..st1_user
        },
        Who::OtherTenant => Seen {
            report: None,
            report_stores: None,
            groups: None,
            snapshots_team_a: None,
            namespaces: None,
            datastores: set(["gl1"]),
            datastore_usage: set(["gl1"]),
            usage: None,
            tenants: set(["globex+"]),
            metric_stores: set(["globex/gl1"]),
            metric_tenants: set(["globex"]),
            sees_task: false,
        },
        Who::Anonymous => unreachable!("anonymous callers see nothing (401 everywhere)"),
    }
}

#[tokio::test]
async fn each_caller_kind_sees_exactly_its_groups_namespaces_stores_and_figures() {
    let fixture = Fixture::new().await;
    let mut wrong = Vec::new();
    for who in Who::ALL {
        if who == Who::Anonymous {
            continue;
        }
        let got = seen(&fixture, who).await;
        let want = expected(who);
        if got != want {
            wrong.push(format!("{who:?}:\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Without credentials the read endpoints answer 401 and nothing else.
#[tokio::test]
async fn anonymous_callers_see_nothing() {
    let fixture = Fixture::new().await;
    for uri in [
        "/metrics",
        "/api2/json/tenants",
        "/api2/json/tenants/acme/usage",
        "/api2/json/tenants/acme/compliance-report",
        "/api2/json/admin/datastore/st1/snapshots",
    ] {
        let (status, _, text) = fixture.call(Who::Anonymous, Method::GET, uri, b"").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {text}");
        assert!(
            !text.contains("acme") && !text.contains("st1"),
            "{uri}: {text}"
        );
    }
}
