//! Integration-style tests of the API on a temporary local datastore, through
//! [`handle_buffered`] (everything but the socket).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::handle_buffered;
use crate::auth::{AuthSeed, AuthService};
use crate::backend::{Backend, LocalBackend, PutOptions};
use crate::datastore::layout::snapshot_file_key;
use crate::datastore::Datastore;
use crate::format::blob::encode_blob;
use crate::format::manifest::Manifest;
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::state::{AppState, DatastoreEntry, NodeIdentity};
use crate::tasks::TaskRegistry;

const T0: i64 = 1_700_000_000;
const DAY: i64 = 86_400;

pub(super) struct Env {
    _dir: tempfile::TempDir,
    pub(super) state: Arc<AppState>,
    backend: Arc<LocalBackend>,
}

pub(super) async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let auth = AuthService::open(&dir.path().join("auth"), AuthSeed::default()).unwrap();
    auth.set_failure_delay(Duration::ZERO);
    auth.ensure_tenant("ops", None).unwrap();
    auth.ensure_tenant("acme", None).unwrap();
    auth.ensure_tenant("globex", None).unwrap();
    auth.add_user("root@pam", "ops", "rootpw", true).unwrap();
    auth.add_user("alice@pbs", "acme", "alicepw", false)
        .unwrap();
    auth.add_user("admin@pbs", "acme", "adminpw", false)
        .unwrap();
    auth.add_user("bob@pbs", "globex", "bobpw", false).unwrap();
    auth.add_acl("/datastore/s1", "alice@pbs", "DatastorePowerUser")
        .unwrap();
    auth.add_acl("/datastore/s1", "admin@pbs", "DatastoreAdmin")
        .unwrap();
    auth.add_acl("/", "bob@pbs", "Admin").unwrap();
    let backend = Arc::new(LocalBackend::open(&dir.path().join("s1")).unwrap());
    let store = Datastore::open("s1", backend.clone()).await.unwrap();
    store.gc().set_cutoff(Duration::ZERO);
    let node = NodeIdentity {
        name: "testnode".into(),
        instance_id: "abcdef0123456789".into(),
    };
    let state = Arc::new(AppState::new(auth, TaskRegistry::new("testnode"), node));
    state.insert_datastore(DatastoreEntry {
        name: "s1".into(),
        tenant: "acme".into(),
        comment: Some("first store".into()),
        store,
    });
    Env {
        _dir: dir,
        state,
        backend,
    }
}

/// Writes a finished snapshot (manifest only) and the group owner.
async fn snapshot(env: &Env, id: &str, time: i64, owner: &str) -> BackupDir {
    let group = BackupGroup::new(BackupType::Vm, id).unwrap();
    let dir = BackupDir::new(group.clone(), time).unwrap();
    let ns = BackupNamespace::root();
    let manifest = Manifest::new("vm", id, time);
    let key = snapshot_file_key(&ns, &dir, "index.json.blob").unwrap();
    env.backend
        .put(&key, Bytes::from(manifest.to_blob()), PutOptions::default())
        .await
        .unwrap();
    let store = env.state.datastore("s1").unwrap().store.clone();
    store
        .tree()
        .set_group_owner(&ns, &group, owner)
        .await
        .unwrap();
    dir
}

/// A logged-in caller: cookie plus CSRF token.
pub(super) struct Session {
    cookie: String,
    csrf: String,
}

pub(super) async fn call(
    env: &Env,
    who: Option<&Session>,
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (StatusCode, Value, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(s) = who {
        req = req
            .header("Cookie", s.cookie.as_str())
            .header("CSRFPreventionToken", s.csrf.as_str());
    }
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let resp = handle_buffered(
        env.state.clone(),
        req.body(Bytes::from(body.to_vec())).unwrap(),
    )
    .await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, text)
}

async fn get(env: &Env, who: &Session, uri: &str) -> (StatusCode, Value, String) {
    call(env, Some(who), Method::GET, uri, None, b"").await
}

pub(super) async fn login(env: &Env, user: &str, pw: &str) -> Session {
    let body = serde_json::json!({ "username": user, "password": pw }).to_string();
    let (status, json, text) = call(
        env,
        None,
        Method::POST,
        "/api2/json/access/ticket",
        Some("application/json"),
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json["success"], true);
    let ticket = json["data"]["ticket"].as_str().unwrap();
    Session {
        cookie: format!("PBSAuthCookie={ticket}"),
        csrf: json["data"]["CSRFPreventionToken"]
            .as_str()
            .unwrap()
            .to_string(),
    }
}

#[tokio::test]
async fn login_forms_and_auth_failures() {
    let env = env().await;
    let (status, json, _) = call(
        &env,
        None,
        Method::POST,
        "/api2/json/access/ticket",
        Some("application/x-www-form-urlencoded"),
        b"username=alice%40pbs&password=alicepw",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["data"]["username"], "alice@pbs");
    let (status, _, text) = call(
        &env,
        None,
        Method::POST,
        "/api2/json/access/ticket",
        None,
        b"username=alice@pbs&password=nope",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(text, "permission check failed.");
    let (status, _, _) = call(&env, None, Method::GET, "/api2/json/version", None, b"").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let alice = login(&env, "alice@pbs", "alicepw").await;
    let (status, json, _) = get(&env, &alice, "/api2/json/version").await;
    assert_eq!(status, StatusCode::OK);
    assert!(json["data"]["version"].is_string() && json["data"]["release"].is_string());
    let (_, json, _) = get(&env, &alice, "/api2/json/nodes/localhost/identity").await;
    assert_eq!(json["data"]["pbs-instance-id"], "abcdef0123456789");
    let (status, _, text) = get(&env, &alice, "/api2/json/x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(text, "Path '/api2/json/x' not found.");
    let long = format!("/api2/json/version?x={}", "a".repeat(3100));
    assert_eq!(get(&env, &alice, &long).await.0, StatusCode::URI_TOO_LONG);
    // POST with a cookie but without CSRF token is refused.
    let no_csrf = Session {
        cookie: alice.cookie.clone(),
        csrf: "00000000:AAAA".into(),
    };
    let (status, _, _) = call(
        &env,
        Some(&no_csrf),
        Method::POST,
        "/api2/json/admin/datastore/s1/gc",
        None,
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tenant_isolation_and_listing() {
    let env = env().await;
    snapshot(&env, "100", T0, "alice@pbs").await;
    snapshot(&env, "200", T0, "admin@pbs").await;
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let admin = login(&env, "admin@pbs", "adminpw").await;
    let bob = login(&env, "bob@pbs", "bobpw").await;
    let root = login(&env, "root@pam", "rootpw").await;

    let (_, json, _) = get(&env, &alice, "/api2/json/admin/datastore").await;
    assert_eq!(json["data"][0]["store"], "s1");
    assert_eq!(json["data"][0]["mount-status"], "nonremovable");
    assert_eq!(json["data"][0]["backend-type"], "filesystem");
    let (_, json, _) = get(&env, &bob, "/api2/json/admin/datastore").await;
    assert_eq!(json["data"], serde_json::json!([]));
    let (status, _, _) = get(&env, &bob, "/api2/json/admin/datastore/s1/snapshots").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "other tenant's store looks missing"
    );
    let (status, _, _) = get(&env, &bob, "/api2/json/admin/datastore/nope/snapshots").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Backup-only privilege lists owned groups only; Audit lists all.
    let (_, json, _) = get(&env, &alice, "/api2/json/admin/datastore/s1/snapshots").await;
    let items = json["data"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["backup-id"], "100");
    assert_eq!(items[0]["owner"], "alice@pbs");
    assert_eq!(items[0]["files"][0]["filename"], "index.json.blob");
    let (_, json, _) = get(&env, &admin, "/api2/json/admin/datastore/s1/groups").await;
    assert_eq!(json["data"].as_array().unwrap().len(), 2);
    assert_eq!(json["data"][0]["last-backup"], T0);
    let (_, json, _) = get(
        &env,
        &root,
        "/api2/json/admin/datastore/s1/snapshots?backup-id=200",
    )
    .await;
    assert_eq!(json["data"].as_array().unwrap().len(), 1);

    let (_, json, _) = get(&env, &alice, "/api2/json/tenants").await;
    assert_eq!(json["data"].as_array().unwrap().len(), 1);
    assert_eq!(json["data"][0]["id"], "acme");
    let (status, _, _) = call(
        &env,
        Some(&alice),
        Method::POST,
        "/api2/json/tenants",
        None,
        b"id=new",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, text) = call(
        &env,
        Some(&root),
        Method::POST,
        "/api2/json/tenants",
        None,
        b"id=new",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, json, _) = get(&env, &root, "/api2/json/tenants").await;
    assert_eq!(json["data"].as_array().unwrap().len(), 4);
    // A new datastore is counted in the background; the answer says when it is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let json = loop {
        let (_, json, _) = get(&env, &admin, "/api2/json/tenants/acme/usage").await;
        if json["data"]["datastores"][0]["recount-pending"] == false {
            break json;
        }
        assert!(std::time::Instant::now() < deadline, "{json}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(json["data"]["datastores"][0]["snapshots"], 2);
    assert_eq!(json["data"]["datastores"][0]["groups"], 2);
    assert_eq!(
        get(&env, &bob, "/api2/json/tenants/acme/usage").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn protect_notes_forget_and_prune() {
    let env = env().await;
    for i in 0..3 {
        snapshot(&env, "100", T0 + i * DAY, "alice@pbs").await;
    }
    snapshot(&env, "200", T0, "admin@pbs").await;
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let base = "/api2/json/admin/datastore/s1";
    let snap0 = format!("backup-type=vm&backup-id=100&backup-time={T0}");

    let (status, _, text) = call(
        &env,
        Some(&alice),
        Method::PUT,
        &format!("{base}/protected"),
        Some("application/x-www-form-urlencoded"),
        format!("{snap0}&protected=1").as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, json, _) = get(&env, &alice, &format!("{base}/protected?{snap0}")).await;
    assert_eq!(json["data"], true);
    let (status, _, text) = call(
        &env,
        Some(&alice),
        Method::DELETE,
        &format!("{base}/snapshots?{snap0}"),
        None,
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("cannot remove protected snapshot"), "{text}");

    let (status, _, _) = call(
        &env,
        Some(&alice),
        Method::PUT,
        &format!("{base}/notes?{snap0}&notes=hello%0Aworld"),
        None,
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, json, _) = get(&env, &alice, &format!("{base}/notes?{snap0}")).await;
    assert_eq!(json["data"], "hello\nworld");
    let (_, json, _) = get(
        &env,
        &alice,
        &format!("{base}/snapshots?backup-type=vm&backup-id=100"),
    )
    .await;
    assert_eq!(json["data"][0]["comment"], "hello");
    assert_eq!(json["data"][0]["protected"], true);

    // Prune dry-run keep-last=1: oldest first, protected kept, middle removed.
    let body = br#"{"backup-type":"vm","backup-id":"100","keep-last":1,"dry-run":true}"#;
    let (status, json, text) = call(
        &env,
        Some(&alice),
        Method::POST,
        &format!("{base}/prune"),
        Some("application/json"),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let items = json["data"].as_array().unwrap();
    let keeps: Vec<(i64, bool, bool)> = items
        .iter()
        .map(|i| {
            (
                i["backup-time"].as_i64().unwrap(),
                i["keep"].as_bool().unwrap(),
                i["protected"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keeps,
        vec![
            (T0, true, true),
            (T0 + DAY, false, false),
            (T0 + 2 * DAY, true, false)
        ]
    );
    let (_, json, _) = get(&env, &alice, &format!("{base}/snapshots")).await;
    assert_eq!(
        json["data"].as_array().unwrap().len(),
        3,
        "dry run deletes nothing"
    );

    let body = br#"{"backup-type":"vm","backup-id":"100","keep-last":1}"#;
    let (status, _, _) = call(
        &env,
        Some(&alice),
        Method::POST,
        &format!("{base}/prune"),
        Some("application/json"),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, json, _) = get(&env, &alice, &format!("{base}/snapshots")).await;
    let times: Vec<i64> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["backup-time"].as_i64().unwrap())
        .collect();
    assert_eq!(times, vec![T0, T0 + 2 * DAY]);

    // Not her group: prune and forget are forbidden.
    let body = br#"{"backup-type":"vm","backup-id":"200","keep-last":1}"#;
    let (status, _, _) = call(
        &env,
        Some(&alice),
        Method::POST,
        &format!("{base}/prune"),
        Some("application/json"),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(
        &env,
        Some(&alice),
        Method::POST,
        &format!("{base}/change-owner"),
        None,
        b"backup-type=vm&backup-id=100&new-owner=admin%40pbs",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "change-owner needs Modify");

    let snap2 = format!("backup-type=vm&backup-id=100&backup-time={}", T0 + 2 * DAY);
    let (status, _, _) = call(
        &env,
        Some(&alice),
        Method::DELETE,
        &format!("{base}/snapshots?{snap2}"),
        None,
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&env, &alice, &format!("{base}/files?{snap2}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn namespaces_gc_task_and_upload_log() {
    let env = env().await;
    let dir = snapshot(&env, "100", T0, "alice@pbs").await;
    let admin = login(&env, "admin@pbs", "adminpw").await;
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let base = "/api2/json/admin/datastore/s1";

    let (status, json, text) = call(
        &env,
        Some(&admin),
        Method::POST,
        &format!("{base}/namespace"),
        Some("application/json"),
        br#"{"name":"prod","parent":""}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json["data"], "prod");
    let (status, _, _) = call(
        &env,
        Some(&alice),
        Method::POST,
        &format!("{base}/namespace"),
        None,
        b"name=dev",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, json, _) = get(&env, &alice, &format!("{base}/namespace")).await;
    let names: Vec<&str> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["ns"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["", "prod"]);

    // upload-backup-log: raw body, query parameters only.
    let log = encode_blob(b"client log", true);
    let q = format!("backup-type=vm&backup-id=100&backup-time={}", dir.time);
    let uri = format!("{base}/upload-backup-log?{q}");
    let (status, _, text) = call(
        &env,
        Some(&alice),
        Method::POST,
        &uri,
        Some("application/octet-stream"),
        &log,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, _, text) = call(
        &env,
        Some(&alice),
        Method::POST,
        &uri,
        Some("application/octet-stream"),
        &log,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("backup already contains a log."), "{text}");
    let (_, json, _) = get(&env, &alice, &format!("{base}/files?{q}")).await;
    let names: Vec<&str> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["index.json.blob", "client.log.blob"]);
    let resp = get(
        &env,
        &alice,
        &format!("{base}/download-decoded?{q}&file-name=client.log.blob"),
    )
    .await;
    assert_eq!(resp.2, "client log");

    // GC as a task, followed through the task API.
    let (status, _, _) = call(
        &env,
        Some(&alice),
        Method::POST,
        &format!("{base}/gc"),
        None,
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, json, text) = call(
        &env,
        Some(&admin),
        Method::POST,
        &format!("{base}/gc"),
        None,
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let upid = json["data"].as_str().unwrap().to_string();
    assert!(
        upid.starts_with("UPID:testnode:") && upid.contains(":garbage_collection:s1:admin@pbs:")
    );
    let enc: String =
        percent_encoding::utf8_percent_encode(&upid, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let mut finished = Value::Null;
    for _ in 0..500 {
        let (_, json, _) = get(
            &env,
            &admin,
            &format!("/api2/json/nodes/localhost/tasks/{enc}/status"),
        )
        .await;
        if json["data"]["status"] == "stopped" {
            finished = json["data"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(finished["exitstatus"], "OK", "{finished}");
    assert_eq!(finished["type"], "garbage_collection");
    let (_, json, _) = get(
        &env,
        &admin,
        &format!("/api2/json/nodes/localhost/tasks/{enc}/log?start=1&limit=2&test-status=1"),
    )
    .await;
    assert_eq!(json["data"][0]["n"], 1);
    assert_eq!(json["data"].as_array().unwrap().len(), 2);
    assert_eq!(json["active"], false);
    assert!(json["total"].as_u64().unwrap() >= 2);
    let (status, _, _) = get(
        &env,
        &alice,
        &format!("/api2/json/nodes/localhost/tasks/{enc}/status"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another user's task");
    let (_, json, _) = get(&env, &admin, &format!("{base}/gc")).await;
    assert_eq!(json["data"]["store"], "s1");
    assert_eq!(json["data"]["upid"], upid.as_str());
    let (_, json, _) = get(&env, &admin, &format!("{base}/status")).await;
    assert_eq!(json["data"]["backend-type"], "filesystem");
    assert!(json["data"]["total"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn usage_history_lists_the_daily_samples() {
    let env = env().await;
    let admin = login(&env, "admin@pbs", "adminpw").await;
    let uri = "/api2/json/admin/datastore/s1/usage-history";
    let (status, json, text) = get(&env, &admin, uri).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        json["data"]["samples"],
        serde_json::json!([]),
        "no sample before the counters were first counted"
    );

    snapshot(&env, "100", T0, "admin@pbs").await;
    snapshot(&env, "100", T0 + DAY, "admin@pbs").await;
    let store = env.state.datastore("s1").unwrap().store.clone();
    store.usage_rescan().await.unwrap();
    store.usage().flush(true).await.unwrap();
    let (status, json, text) = get(&env, &admin, uri).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let samples = json["data"]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 1, "{text}");
    assert_eq!(samples[0]["snapshots"], 2, "{text}");
    assert_eq!(samples[0]["day"].as_i64().unwrap() % DAY, 0, "a UTC day");
    assert_eq!(json["data"]["s3-requests-per-day"], serde_json::json!([]));
}
