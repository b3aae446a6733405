//! Scoping over HTTPS against the real server: the probes of the hardening issue. A
//! Backup-only user and a user whose only ACL is on one namespace ask for the tenant's
//! compliance report, usage, `/metrics` and `/tenants`, and get exactly what their snapshot
//! list shows (or a refusal), while an auditor, the tenant's administrator, a user of another
//! tenant and an anonymous caller get their own answers.

mod common;
mod meter_common;

use std::collections::BTreeSet;

use common::*;
use meter_common::parse_metrics;
use pbs_cloud_e2e::{Crypt, PbsClient, TestServer};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[[tenant]]
id = "acme"
quota_bytes = 1099511627776

[[tenant]]
id = "globex"

[[datastore]]
name = "acme-store"
tenant = "acme"

[[datastore]]
name = "globex-store"
tenant = "globex"
"#;

const USERS: &[(&str, &str, &str, &str)] = &[
    (
        "backup@pbs",
        "acme",
        "/datastore/acme-store",
        "DatastoreBackup",
    ),
    (
        "nsuser@pbs",
        "acme",
        "/datastore/acme-store/teamA",
        "DatastoreReader",
    ),
    (
        "audit@pbs",
        "acme",
        "/datastore/acme-store",
        "DatastoreAudit",
    ),
    ("tadmin@pbs", "acme", "/", "Admin"),
    ("gl@pbs", "globex", "/", "Admin"),
];

struct Callers {
    admin: PbsClient,
    backup: PbsClient,
    nsuser: PbsClient,
    audit: PbsClient,
    tadmin: PbsClient,
    gl: PbsClient,
    anon: PbsClient,
}

async fn start() -> (TestServer, Callers) {
    let mut server = TestServer::prepare().unwrap();
    server.set_config(CONFIG).unwrap();
    server.launch().await.expect("start pbs-cloud-server");
    server.stop().await;
    for (user, tenant, path, role) in USERS {
        server
            .manage(&["user", "add", user, "--tenant", tenant], "pw\n")
            .unwrap();
        server
            .manage(&["acl", "add", path, user, role], "")
            .unwrap();
    }
    server.launch().await.unwrap();
    let login = |user: &'static str| {
        let server = &server;
        async move {
            let c = server.client().await.unwrap();
            c.login(user, "pw").await.unwrap();
            c
        }
    };
    let callers = Callers {
        admin: server.admin_client().await.unwrap(),
        backup: login("backup@pbs").await,
        nsuser: login("nsuser@pbs").await,
        audit: login("audit@pbs").await,
        tadmin: login("tadmin@pbs").await,
        gl: login("gl@pbs").await,
        anon: server.client().await.unwrap(),
    };
    (server, callers)
}

fn report_groups(report: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for ds in report["datastores"].as_array().unwrap() {
        for s in ds["snapshots"].as_array().unwrap() {
            out.insert(format!(
                "{}:{}/{}",
                s["ns"].as_str().unwrap(),
                s["backup-type"].as_str().unwrap(),
                s["backup-id"].as_str().unwrap()
            ));
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn status_of(client: &PbsClient, path: &str) -> u16 {
    match client.get(path, None).await {
        Ok(_) => 200,
        Err(e) => e.status().unwrap_or_else(|| panic!("GET {path}: {e}")),
    }
}

async fn metrics(client: &PbsClient) -> (u16, Vec<String>) {
    let resp = client
        .raw(http::Method::GET, "/metrics", None, Vec::new(), &[], true)
        .await
        .unwrap();
    let series = match resp.status {
        200 => parse_metrics(&resp.text()).into_keys().collect(),
        _ => Vec::new(),
    };
    (resp.status, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_usage_metrics_and_tenants_follow_the_snapshot_list_rules() {
    let (_server, c) = start().await;
    let content = Content {
        tree: None,
        image: None,
        conf: Some(b"scoping\n"),
    };
    c.admin
        .post(
            "admin/datastore/acme-store/namespace",
            Some(&json!({"name": "teamA"})),
        )
        .await
        .expect("namespace teamA");
    let image = random_bytes(7, 300_000);
    let with_chunks = Content {
        tree: None,
        image: Some(&image),
        conf: None,
    };
    backup(
        &c.backup,
        "acme-store",
        None,
        "mine",
        T0,
        Crypt::None,
        &with_chunks,
    )
    .await
    .expect("backup of backup@pbs");
    backup(
        &c.admin,
        "acme-store",
        None,
        "theirs",
        T0,
        Crypt::None,
        &content,
    )
    .await
    .expect("backup of the admin");
    backup(
        &c.admin,
        "acme-store",
        Some("teamA"),
        "team",
        T0,
        Crypt::None,
        &content,
    )
    .await
    .expect("backup in teamA");
    backup(
        &c.admin,
        "globex-store",
        None,
        "foreign",
        T0,
        Crypt::None,
        &content,
    )
    .await
    .expect("backup of globex");

    // Compliance report: what the snapshot list shows, and nothing else.
    let report = "tenants/acme/compliance-report";
    let all = set(&[":host/mine", ":host/theirs", "teamA:host/team"]);
    let listed = c
        .backup
        .get("admin/datastore/acme-store/snapshots", None)
        .await
        .unwrap();
    let listed: BTreeSet<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!(":host/{}", s["backup-id"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, set(&[":host/mine"]));
    for (who, client, want) in [
        ("backup-only", &c.backup, listed.clone()),
        ("namespace-scoped", &c.nsuser, set(&["teamA:host/team"])),
        ("auditor", &c.audit, all.clone()),
        ("tenant admin", &c.tadmin, all.clone()),
        ("superuser", &c.admin, all.clone()),
    ] {
        let r = client.get(report, None).await.unwrap();
        assert_eq!(report_groups(&r), want, "{who}: {r:#}");
    }
    let csv = c
        .backup
        .download(report, Some(&json!({"format": "csv"})))
        .await
        .unwrap();
    let csv = String::from_utf8(csv.to_vec()).unwrap();
    assert!(csv.contains("host/mine/") && !csv.contains("host/theirs") && !csv.contains("team"));
    assert_eq!(status_of(&c.gl, report).await, 404);
    assert_eq!(status_of(&c.anon, report).await, 401);

    // Usage: store figures count every owner's data; tenant figures need Sys.Audit.
    let usage = "tenants/acme/usage";
    assert_eq!(status_of(&c.backup, usage).await, 403);
    assert_eq!(status_of(&c.nsuser, usage).await, 403);
    assert_eq!(status_of(&c.gl, usage).await, 404);
    assert_eq!(status_of(&c.anon, usage).await, 401);
    let u = c.audit.get(usage, None).await.unwrap();
    assert_eq!(u["datastores"][0]["store"], "acme-store", "{u:#}");
    assert_eq!(u["snapshots"], 3, "{u:#}");
    assert!(u.get("quota-bytes").is_none(), "{u:#}");
    assert!(u["physical-bytes"].as_u64().unwrap() > 0, "{u:#}");
    let u = c.tadmin.get(usage, None).await.unwrap();
    assert_eq!(u["quota-bytes"], 1099511627776u64, "{u:#}");

    // /metrics: anonymous 401; per-store series only with store figures, tenant series only
    // with tenant figures, nothing of another tenant.
    assert_eq!(metrics(&c.anon).await.0, 401);
    let has = |series: &[String], text: &str| series.iter().any(|s| s.contains(text));
    for (who, client, store, tenant) in [
        ("backup-only", &c.backup, false, false),
        ("namespace-scoped", &c.nsuser, false, false),
        ("auditor", &c.audit, true, false),
        ("tenant admin", &c.tadmin, true, true),
    ] {
        let (status, series) = metrics(client).await;
        assert_eq!(status, 200, "{who}");
        assert_eq!(
            has(&series, "store=\"acme-store\""),
            store,
            "{who}: {series:?}"
        );
        assert_eq!(
            has(&series, "pbs_cloud_tenant_quota_bytes{tenant=\"acme\"}"),
            tenant,
            "{who}: {series:?}"
        );
        assert!(!has(&series, "globex"), "{who}: {series:?}");
    }
    let (_, series) = metrics(&c.gl).await;
    assert!(has(&series, "store=\"globex-store\"") && !has(&series, "acme"));

    // /tenants: own tenant only; figures with Sys.Audit.
    for (who, client, want) in [
        ("backup-only", &c.backup, json!([{"id": "acme"}])),
        ("namespace-scoped", &c.nsuser, json!([{"id": "acme"}])),
        (
            "globex admin",
            &c.gl,
            json!([{"id": "globex", "physical-bytes": null}]),
        ),
    ] {
        let got = c_ids(client.get("tenants", None).await.unwrap());
        assert_eq!(got, c_ids(want), "{who}");
    }
    let mine = c.tadmin.get("tenants/acme", None).await.unwrap();
    assert_eq!(mine["quota-bytes"], 1099511627776u64, "{mine:#}");
    assert!(mine["physical-bytes"].as_u64().unwrap() > 0, "{mine:#}");
    let plain = c.backup.get("tenants/acme", None).await.unwrap();
    assert_eq!(plain, json!({"id": "acme"}));
    assert_eq!(status_of(&c.backup, "tenants/globex").await, 404);
    assert_eq!(status_of(&c.anon, "tenants").await, 401);

    // Probes say ready without any detail.
    let ready = c
        .anon
        .raw(http::Method::GET, "/readyz", None, Vec::new(), &[], false)
        .await
        .unwrap();
    assert_eq!((ready.status, ready.text()), (200, "ready\n".to_string()));
}

/// Tenant list items reduced to their id and whether figures are present.
fn c_ids(list: Value) -> Vec<(String, bool)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t.get("physical-bytes").is_some(),
            )
        })
        .collect()
}
