//! Usage metering, `/metrics`, tenant administration and compliance reports against a real
//! server: figures are compared with what the chunk store holds on disk and what the backups'
//! manifests list.

mod common;
mod meter_common;

use common::*;
use meter_common::*;
use pbs_cloud_e2e::{Crypt, CryptConfig, PbsClient, TestServer};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[[tenant]]
id = "acme"

[[datastore]]
name = "store1"
tenant = "acme"
"#;

/// Server with tenant acme (store1), the generated superuser admin@pbs and bob@pbs of acme
/// (DatastoreAdmin on store1, not a superuser).
async fn server() -> (TestServer, PbsClient, PbsClient) {
    let mut server = TestServer::prepare().unwrap();
    server.set_config(CONFIG).unwrap();
    server.launch().await.expect("start pbs-cloud-server");
    server.stop().await;
    server
        .manage(
            &["user", "add", "bob@pbs", "--tenant", "acme"],
            "bob-pass\n",
        )
        .unwrap();
    server
        .manage(
            &[
                "acl",
                "add",
                "/datastore/store1",
                "bob@pbs",
                "DatastoreAdmin",
            ],
            "",
        )
        .unwrap();
    server.launch().await.unwrap();
    let admin = server.admin_client().await.unwrap();
    let bob = server.client().await.unwrap();
    bob.login("bob@pbs", "bob-pass").await.unwrap();
    (server, admin, bob)
}

fn store_dir(server: &TestServer) -> std::path::PathBuf {
    server.data_dir().join("datastores").join("store1")
}

/// The usage document must equal what is on disk and what the manifests list.
async fn assert_usage_exact(
    server: &TestServer,
    client: &PbsClient,
    logical: u64,
    snaps: u64,
    groups: u64,
) -> Value {
    let (bytes, count) = chunks_on_disk(&store_dir(server));
    assert!(count > 0);
    let u = counted_usage(client, "acme").await;
    assert_eq!(u["tenant"], "acme");
    for (key, want) in [
        ("logical-bytes", logical),
        ("physical-bytes", bytes),
        ("chunks", count),
        ("snapshots", snaps),
        ("groups", groups),
    ] {
        assert_eq!(u[key], want, "{key} in {u:#}");
        assert_eq!(u["datastores"][0][key], want, "datastore {key} in {u:#}");
    }
    assert_eq!(u["quota-bytes"], Value::Null);
    assert_eq!(u["quota-warning"], false);
    assert_eq!(u["datastores"][0]["store"], "store1");
    let s3 = &u["datastores"][0]["s3-requests"];
    for kind in ["get", "put", "post", "head", "delete", "list"] {
        assert!(s3[kind].is_u64(), "s3-requests.{kind} in {u:#}");
    }
    u
}

fn logical_of(summary: &pbs_cloud_e2e::BackupSummary) -> u64 {
    summary.manifest.files.iter().map(|f| f.size).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_exact_and_shows_in_metrics_and_survives_a_crash() {
    let (mut server, admin, bob) = server().await;
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path(), 5);
    let image = random_bytes(6, 5 * 1024 * 1024 + 17);
    let conf = b"meter = 1\n".to_vec();
    let content = Content {
        tree: Some(tree.path()),
        image: Some(&image),
        conf: Some(&conf),
    };
    let first = backup(&admin, "store1", None, "a", T0, Crypt::None, &content)
        .await
        .expect("first backup");
    let mut logical = logical_of(&first);
    assert!(logical > image.len() as u64);
    assert_usage_exact(&server, &admin, logical, 1, 1).await;

    // A second group sharing most data: logical doubles, physical grows only by new chunks.
    let second = backup(&admin, "store1", None, "b", T0, Crypt::None, &content)
        .await
        .expect("second backup");
    logical += logical_of(&second);
    let (bytes_before, _) = chunks_on_disk(&store_dir(&server));
    let u = assert_usage_exact(&server, &admin, logical, 2, 2).await;
    assert_eq!(u["physical-bytes"], bytes_before);

    // Tenant users see their tenant's usage too.
    let seen_by_bob = bob.get("tenants/acme/usage", None).await.unwrap();
    assert_eq!(seen_by_bob["physical-bytes"], bytes_before);

    // /metrics: authenticated, parseable, the same figures.
    let anon = server.client().await.unwrap();
    let resp = anon
        .raw(http::Method::GET, "/metrics", None, Vec::new(), &[], false)
        .await
        .unwrap();
    assert_eq!(resp.status, 401, "metrics need authentication");
    let resp = bob
        .raw(http::Method::GET, "/metrics", None, Vec::new(), &[], true)
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let metrics = parse_metrics(&resp.text());
    let series = |name: &str| format!("{name}{{tenant=\"acme\",store=\"store1\"}}");
    assert_eq!(
        metrics[&series("pbs_cloud_physical_bytes")],
        bytes_before as f64
    );
    assert_eq!(metrics[&series("pbs_cloud_logical_bytes")], logical as f64);
    assert_eq!(metrics[&series("pbs_cloud_snapshots")], 2.0);
    assert_eq!(metrics[&series("pbs_cloud_groups")], 2.0);
    assert_eq!(metrics[&series("pbs_cloud_backups_finished_total")], 2.0);
    // bob administers store1 but has no Sys.Audit: no tenant-wide series.
    assert!(
        !metrics.contains_key("pbs_cloud_tenant_quota_warning{tenant=\"acme\"}"),
        "{metrics:?}"
    );
    assert!(metrics.contains_key(
        "pbs_cloud_s3_requests_total{tenant=\"acme\",store=\"store1\",type=\"put\"}"
    ));

    // Forget one snapshot: logical, snapshot and group counts drop at once; chunks stay for GC.
    admin
        .delete(
            "admin/datastore/store1/snapshots",
            Some(&json!({"backup-type": "host", "backup-id": "b", "backup-time": T0})),
        )
        .await
        .expect("forget");
    logical -= logical_of(&second);
    assert_usage_exact(&server, &admin, logical, 1, 1).await;

    // A crash (SIGKILL) leaves counters that are recounted at start: still exact.
    server.restart().await.unwrap();
    let admin = server.admin_client().await.unwrap();
    assert_usage_exact(&server, &admin, logical, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_superusers_create_tenants() {
    let (mut server, admin, bob) = server().await;
    let err = bob
        .post("tenants", Some(&json!({"id": "evil"})))
        .await
        .expect_err("bob is no superuser");
    assert_eq!(err.status(), Some(403), "{err}");
    admin
        .post(
            "tenants",
            Some(&json!({"id": "globex", "comment": "second"})),
        )
        .await
        .expect("admin creates a tenant");
    let err = admin
        .post("tenants", Some(&json!({"id": "globex"})))
        .await
        .expect_err("duplicate");
    assert!(err.to_string().contains("already exists"), "{err}");
    let all = admin.get("tenants", None).await.unwrap();
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["acme", "globex"]);
    let mine = bob.get("tenants", None).await.unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["id"], "acme");
    assert_eq!(mine[0]["quota-bytes"], Value::Null);
    // Persisted in the data dir's auth store (where `tenant add` writes): survives a restart.
    server.restart().await.unwrap();
    let admin = server.admin_client().await.unwrap();
    let bob = server.client().await.unwrap();
    bob.login("bob@pbs", "bob-pass").await.unwrap();
    let all = admin.get("tenants", None).await.unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    // The new tenant has a (zero) usage document; bob may not see it.
    let u = admin.get("tenants/globex/usage", None).await.unwrap();
    assert_eq!(u["physical-bytes"], 0);
    assert_eq!(u["datastores"], json!([]));
    assert!(bob.get("tenants/globex/usage", None).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_report_lists_snapshots_and_job_history_as_json_and_csv() {
    let (server, admin, bob) = server().await;
    let image = random_bytes(9, 300_000);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: None,
    };
    backup(&admin, "store1", None, "plain", T0, Crypt::None, &content)
        .await
        .unwrap();
    let key = CryptConfig::random();
    backup(
        &admin,
        "store1",
        None,
        "secret",
        T0,
        Crypt::Encrypt(key),
        &content,
    )
    .await
    .unwrap();
    admin
        .put(
            "admin/datastore/store1/protected",
            Some(&json!({"backup-type": "host", "backup-id": "plain", "backup-time": T0, "protected": true})),
        )
        .await
        .expect("protect");
    // A prune run as the job history keeps it (written the way `record_job` stores it).
    let history = store_dir(&server).join(".jobs/history/prune");
    std::fs::create_dir_all(&history).unwrap();
    let record = json!({
        "kind": "prune", "job-id": "nightly", "started": T0 + 100, "finished": T0 + 160,
        "outcome": "OK", "dry-run": false, "summary": {"removed": 0}
    });
    std::fs::write(
        history.join(format!("{:012}-abcd.json", T0 + 160)),
        record.to_string(),
    )
    .unwrap();

    let report = bob
        .get(
            "tenants/acme/compliance-report",
            Some(&json!({"format": "json"})),
        )
        .await
        .expect("report");
    assert_eq!(report["tenant"], "acme");
    let ds = &report["datastores"][0];
    assert_eq!(ds["store"], "store1");
    let snaps = ds["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{report:#}");
    let by_id = |id: &str| snaps.iter().find(|s| s["backup-id"] == id).unwrap().clone();
    let plain = by_id("plain");
    assert_eq!(plain["encryption"], "none");
    assert_eq!(plain["protected"], true);
    assert_eq!(plain["verify-state"], "none");
    assert_eq!(plain["verify-time"], Value::Null);
    assert_eq!(plain["lock-mode"], "none");
    assert_eq!(plain["retain-until"], Value::Null);
    assert_eq!(plain["legal-hold"], false);
    assert_eq!(plain["backup-time"], T0);
    let secret = by_id("secret");
    assert_eq!(secret["encryption"], "encrypt");
    assert_eq!(secret["protected"], false);
    let jobs = ds["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{report:#}");
    assert_eq!(jobs[0]["job-id"], "nightly");
    assert_eq!(jobs[0]["kind"], "prune");

    let csv = bob
        .download(
            "tenants/acme/compliance-report",
            Some(&json!({"format": "csv", "store": "store1"})),
        )
        .await
        .expect("csv report");
    let csv = String::from_utf8(csv.to_vec()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("record,tenant,store,namespace,snapshot,encryption,verify-state"));
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines.contains(&"snapshot,acme,store1,,host/plain/2026-01-01T00:00:00Z,none,none,,true,none,,false,,,,,"),
        "{csv}"
    );
    assert!(
        lines.contains(
            &"job,acme,store1,,,,,,,,,,prune,nightly,2026-01-01T00:01:40Z,2026-01-01T00:02:40Z,OK"
        ),
        "{csv}"
    );
    assert!(bob
        .get(
            "tenants/acme/compliance-report",
            Some(&json!({"format": "xml"}))
        )
        .await
        .is_err());

    // The command line asks the running server (credentials and fingerprint from the data dir).
    let port = server.port().to_string();
    let out = server
        .manage(
            &[
                "compliance-report",
                "--tenant",
                "acme",
                "--format",
                "csv",
                "--server",
                &format!("127.0.0.1:{port}"),
            ],
            "",
        )
        .expect("compliance-report command");
    assert_eq!(
        out.replace("\r\n", "\n").trim_end(),
        csv.replace("\r\n", "\n").trim_end()
    );
    let out = server
        .manage(
            &[
                "compliance-report",
                "--tenant",
                "acme",
                "--server",
                &format!("127.0.0.1:{port}"),
            ],
            "",
        )
        .expect("compliance-report json");
    let json: Value = serde_json::from_str(&out).expect("CLI prints JSON");
    assert_eq!(
        json["datastores"][0]["snapshots"].as_array().unwrap().len(),
        2
    );
}
