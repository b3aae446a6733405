//! Retention locks through the API on a local datastore: forget and prune refuse locked
//! snapshots naming the date, `bypass-governance` is for superusers and governance locks
//! only, and the status says the lock is enforced by the server only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::handle_buffered;
use crate::auth::{AuthSeed, AuthService};
use crate::backend::lock::LockMode;
use crate::backend::LocalBackend;
use crate::datastore::retention::LockRule;
use crate::datastore::Datastore;
use crate::format::manifest::Manifest;
use crate::format::names::{BackupGroup, BackupNamespace, BackupType};
use crate::state::{AppState, DatastoreEntry, NodeIdentity};
use crate::tasks::TaskRegistry;

struct Env {
    _dir: tempfile::TempDir,
    state: Arc<AppState>,
    store: Arc<Datastore>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let auth = AuthService::open(&dir.path().join("auth"), AuthSeed::default()).unwrap();
    auth.set_failure_delay(Duration::ZERO);
    auth.ensure_tenant("ops", None).unwrap();
    auth.ensure_tenant("acme", None).unwrap();
    auth.add_user("root@pam", "ops", "rootpw", true).unwrap();
    auth.add_user("admin@pbs", "acme", "adminpw", false)
        .unwrap();
    auth.add_acl("/datastore/s1", "admin@pbs", "DatastoreAdmin")
        .unwrap();
    let backend = Arc::new(LocalBackend::open(&dir.path().join("s1")).unwrap());
    let store = Datastore::open("s1", backend).await.unwrap();
    let rule = |id: &str, group: &str, mode| LockRule {
        id: id.into(),
        ns: BackupNamespace::root(),
        groups: vec![group.into()],
        mode,
        days: 30,
        legal_hold: false,
    };
    store
        .retention()
        .set_locks(
            vec![
                rule("gov", "vm/100", LockMode::Governance),
                rule("comp", "vm/200", LockMode::Compliance),
            ],
            10,
        )
        .await
        .unwrap();
    let node = NodeIdentity {
        name: "testnode".into(),
        instance_id: "abcdef0123456789".into(),
    };
    let state = Arc::new(AppState::new(auth, TaskRegistry::new("testnode"), node));
    state.insert_datastore(DatastoreEntry {
        name: "s1".into(),
        tenant: "acme".into(),
        comment: None,
        store: store.clone(),
    });
    Env {
        _dir: dir,
        state,
        store,
    }
}

async fn backup(env: &Env, id: &str, time: i64) {
    let group = BackupGroup::new(BackupType::Vm, id).unwrap();
    let lease = env
        .store
        .start_backup(&BackupNamespace::root(), &group, time, "admin@pbs")
        .await
        .unwrap();
    let manifest = Manifest::new("vm", id, time).to_blob();
    lease.commit(Bytes::from(manifest)).await.unwrap();
}

async fn call(
    env: &Env,
    who: &(String, String),
    method: Method,
    uri: &str,
) -> (StatusCode, Value, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("Cookie", who.0.as_str())
        .header("CSRFPreventionToken", who.1.as_str())
        .body(Bytes::new())
        .unwrap();
    let resp = handle_buffered(env.state.clone(), req).await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    )
}

async fn login(env: &Env, user: &str, pw: &str) -> (String, String) {
    let body = serde_json::json!({ "username": user, "password": pw }).to_string();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api2/json/access/ticket")
        .header("Content-Type", "application/json")
        .body(Bytes::from(body))
        .unwrap();
    let resp = handle_buffered(env.state.clone(), req).await;
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    (
        format!("PBSAuthCookie={}", json["data"]["ticket"].as_str().unwrap()),
        json["data"]["CSRFPreventionToken"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

#[tokio::test]
async fn worm_api_forget_prune_and_governance_bypass() {
    let env = env().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    backup(&env, "100", now - 10).await;
    backup(&env, "100", now - 5).await;
    backup(&env, "200", now - 10).await;
    let admin = login(&env, "admin@pbs", "adminpw").await;
    let root = login(&env, "root@pam", "rootpw").await;
    let base = "/api2/json/admin/datastore/s1";
    let gov = format!("backup-type=vm&backup-id=100&backup-time={}", now - 10);
    let comp = format!("backup-type=vm&backup-id=200&backup-time={}", now - 10);

    let (status, _, text) = call(
        &env,
        &admin,
        Method::DELETE,
        &format!("{base}/snapshots?{gov}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        text.contains("retention-locked") && text.contains("until"),
        "{text}"
    );

    // Prune with keep-last=1 leaves the older, locked snapshot in place.
    let (status, _, text) = call(
        &env,
        &admin,
        Method::POST,
        &format!("{base}/prune?backup-type=vm&backup-id=100&keep-last=1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, json, _) = call(&env, &admin, Method::GET, &format!("{base}/snapshots")).await;
    assert_eq!(json["data"].as_array().unwrap().len(), 3, "{json}");

    // The bypass is the superuser's only.
    let bypass = |q: &str| format!("{base}/snapshots?{q}&bypass-governance=1");
    let (status, _, text) = call(&env, &admin, Method::DELETE, &bypass(&gov)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let (status, _, text) = call(&env, &root, Method::DELETE, &bypass(&comp)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("compliance"), "{text}");
    // Lock admin: read by the datastore admin, changes by superusers only; extend, never
    // shorten; a legal hold blocks even the bypass until lifted.
    let lock = |q: &str| format!("{base}/retention-lock?{q}");
    let (status, json, text) = call(&env, &admin, Method::GET, &lock(&comp)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json["data"]["mode"], "compliance");
    assert_eq!(json["data"]["enforced-by"], "server");
    let until = json["data"]["retain-until"].as_i64().unwrap();
    let (status, _, _) = call(
        &env,
        &admin,
        Method::PUT,
        &lock(&format!("{comp}&legal-hold=1")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let shorter = format!("{comp}&retain-until={}", until - 20 * 86_400);
    let (status, _, text) = call(&env, &root, Method::PUT, &lock(&shorter)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("never"), "{text}");
    let longer = format!("{comp}&retain-until={}", until + 5 * 86_400);
    let (status, json, text) = call(&env, &root, Method::PUT, &lock(&longer)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        json["data"]["retain-until"],
        until + 10 * 86_400,
        "rounded to a generation"
    );
    let (status, _, text) = call(
        &env,
        &root,
        Method::PUT,
        &lock(&format!("{gov}&legal-hold=1")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, _, text) = call(&env, &root, Method::DELETE, &bypass(&gov)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("legal hold"), "{text}");
    let (status, _, text) = call(
        &env,
        &root,
        Method::PUT,
        &lock(&format!("{gov}&legal-hold=0")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");

    let (status, _, text) = call(&env, &root, Method::DELETE, &bypass(&gov)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, json, _) = call(&env, &admin, Method::GET, &format!("{base}/snapshots")).await;
    assert_eq!(json["data"].as_array().unwrap().len(), 2, "{json}");

    let (_, json, _) = call(
        &env,
        &admin,
        Method::GET,
        &format!("{base}/status?verbose=true"),
    )
    .await;
    assert_eq!(json["data"]["retention"]["enforced-by"], "server", "{json}");
    assert_eq!(
        json["data"]["retention"]["rules"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn prune_dry_run_shows_retention_locked_snapshots_as_kept() {
    let env = env().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for id in ["100", "300"] {
        backup(&env, id, now - 10).await;
        backup(&env, id, now - 5).await;
    }
    let admin = login(&env, "admin@pbs", "adminpw").await;
    let base = "/api2/json/admin/datastore/s1";
    let prune = |id: &str, dry: bool| {
        format!("{base}/prune?backup-type=vm&backup-id={id}&keep-last=1&dry-run={dry}")
    };
    let items = |json: &Value| -> Vec<Value> { json["data"].as_array().unwrap().clone() };

    // vm/100 is under a governance lock: the older snapshot the keep options drop stays,
    // with the reason; the stock client's fields are all there.
    let (status, json, text) = call(&env, &admin, Method::POST, &prune("100", true)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let dry = items(&json);
    assert_eq!(dry.len(), 2, "{json}");
    assert_eq!(dry[0]["backup-time"], now - 10);
    assert_eq!(dry[0]["keep"], true, "{json}");
    let why = dry[0]["retention-lock"].as_str().unwrap_or_default();
    assert!(why.contains("governance mode until"), "{json}");
    for key in [
        "backup-type",
        "backup-id",
        "backup-time",
        "keep",
        "protected",
    ] {
        assert!(dry[0].get(key).is_some(), "{key}: {json}");
    }
    assert_eq!(dry[0]["protected"], false);
    assert_eq!(dry[1]["keep"], true);
    assert!(dry[1].get("retention-lock").is_none(), "{json}");

    // The real run does what the dry run said: nothing removed, same decisions.
    let (status, json, text) = call(&env, &admin, Method::POST, &prune("100", false)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(items(&json), dry);

    // An unlocked group is pruned as before, without the field.
    let (_, json, _) = call(&env, &admin, Method::POST, &prune("300", true)).await;
    let free = items(&json);
    assert_eq!(free[0]["keep"], false, "{json}");
    assert!(free[0].get("retention-lock").is_none(), "{json}");

    // A prune job's dry run agrees: the locked snapshot is listed as kept, with a log line.
    let params = crate::jobs::prune_job::PruneParams {
        ns: BackupNamespace::root(),
        max_depth: None,
        filters: Vec::new(),
        keep: crate::datastore::KeepOptions {
            keep_last: Some(1),
            ..Default::default()
        },
    };
    let lines = std::sync::Mutex::new(Vec::new());
    let log = |l: String| lines.lock().unwrap().push(l);
    let summary = crate::jobs::prune_job::run(&env.store, &params, true, &log, &|| false)
        .await
        .unwrap();
    let older = |id: &str| {
        let group = BackupGroup::new(BackupType::Vm, id).unwrap();
        crate::format::names::BackupDir::new(group, now - 10)
            .unwrap()
            .path()
    };
    assert!(summary.kept.contains(&older("100")), "{summary:?}");
    assert_eq!(summary.removed, vec![older("300")], "{summary:?}");
    let lines = lines.into_inner().unwrap();
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "would keep {} (retention lock: governance mode until",
            older("100")
        ))),
        "{lines:#?}"
    );
    let (_, json, _) = call(&env, &admin, Method::GET, &format!("{base}/snapshots")).await;
    assert_eq!(json["data"].as_array().unwrap().len(), 4, "{json}");
}
