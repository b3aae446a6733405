//! The server the permission matrix runs against: three tenants, three datastores with
//! namespaces and groups of several owners, one caller of each kind, a finished task and two
//! configured jobs. Every snapshot is protected, so the matrix's forget, prune and group
//! removal requests stop at the protection and leave the fixture as it was.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::handle_buffered;
use crate::auth::{AuthSeed, AuthService};
use crate::backend::{LocalBackend, PutOptions};
use crate::datastore::layout::snapshot_file_key;
use crate::datastore::Datastore;
use crate::format::manifest::Manifest;
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::state::{AppState, DatastoreEntry, NodeIdentity};
use crate::tasks::TaskRegistry;

/// Backup time of every snapshot.
pub const T0: i64 = 1_700_000_000;

/// The kinds of caller, in the column order of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// `root@pam`: superuser (tenant `ops`).
    Superuser,
    /// `tadmin@pbs`: `Admin` on `/` in tenant `acme`.
    TenantAdmin,
    /// `audit@pbs`: `DatastoreAudit` on `/datastore/st1`.
    Audit,
    /// `backup@pbs`: `DatastoreBackup` on `/datastore/st1`, owns groups.
    BackupOwner,
    /// `other@pbs`: `DatastoreBackup` on `/datastore/st1`, owns nothing.
    BackupNonOwner,
    /// `ns@pbs`: `DatastoreReader` on `/datastore/st1/teamA` only.
    Namespace,
    /// `gl@pbs`: `Admin` on `/` in tenant `globex`.
    OtherTenant,
    /// `dev@pbs!sep`: token with its own, narrower ACL (`DatastoreBackup` on st1) than its user
    /// (`DatastoreAdmin` on st1): privilege separation.
    TokenSeparated,
    /// `dev@pbs!full`: token whose ACL equals its user's (`DatastoreAdmin` on st1).
    TokenFull,
    /// No credentials.
    Anonymous,
}

impl Who {
    pub const ALL: [Who; 10] = [
        Who::Superuser,
        Who::TenantAdmin,
        Who::Audit,
        Who::BackupOwner,
        Who::BackupNonOwner,
        Who::Namespace,
        Who::OtherTenant,
        Who::TokenSeparated,
        Who::TokenFull,
        Who::Anonymous,
    ];
}

/// How a caller authenticates.
enum Credentials {
    Ticket { cookie: String, csrf: String },
    Token(String),
    None,
}

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub state: Arc<AppState>,
    callers: Vec<(Who, Credentials)>,
    /// UPID of a finished `backup` task of `backup@pbs`.
    pub task: String,
}

/// A group of the fixture: store, namespace, group, owner.
pub const GROUPS: &[(&str, &str, &str, &str)] = &[
    ("st1", "", "vm/100", "backup@pbs"),
    ("st1", "", "vm/200", "tadmin@pbs"),
    ("st1", "", "ct/300", "backup@pbs!ci"),
    ("st1", "", "vm/400", "dev@pbs!sep"),
    ("st1", "teamA", "host/a1", "backup@pbs"),
    ("st1", "teamA", "host/a2", "tadmin@pbs"),
    ("st1", "teamA/sub", "host/deep", "tadmin@pbs"),
    ("st1", "teamB", "host/b1", "tadmin@pbs"),
    ("st2", "", "vm/900", "tadmin@pbs"),
    ("gl1", "", "vm/1", "gl@pbs"),
];

/// ACL entries of a user: (path, role).
type Acl = &'static [(&'static str, &'static str)];

/// (user, tenant, superuser, ACL).
const USERS: &[(&str, &str, bool, Acl)] = &[
    ("root@pam", "ops", true, &[]),
    ("tadmin@pbs", "acme", false, &[("/", "Admin")]),
    (
        "audit@pbs",
        "acme",
        false,
        &[("/datastore/st1", "DatastoreAudit")],
    ),
    (
        "backup@pbs",
        "acme",
        false,
        &[("/datastore/st1", "DatastoreBackup")],
    ),
    (
        "other@pbs",
        "acme",
        false,
        &[("/datastore/st1", "DatastoreBackup")],
    ),
    (
        "ns@pbs",
        "acme",
        false,
        &[("/datastore/st1/teamA", "DatastoreReader")],
    ),
    ("gl@pbs", "globex", false, &[("/", "Admin")]),
    (
        "dev@pbs",
        "acme",
        false,
        &[("/datastore/st1", "DatastoreAdmin")],
    ),
];

const JOBS: &str = "[[datastore]]\nname = \"st1\"\ngc_schedule = \"daily\"\n\
    [[prune_job]]\nid = \"p1\"\nstore = \"st1\"\nschedule = \"daily\"\nkeep_last = 1\n\
    [[verify_job]]\nid = \"v1\"\nstore = \"st1\"\nschedule = \"daily\"\nmode = \"cheap\"\n\
    [[remote]]\nname = \"r1\"\nhost = \"127.0.0.1\"\nport = 1\nauth_id = \"sync@pbs\"\n\
    fingerprint = \"ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab:ab\"\n\
    secret_file = \"/nonexistent/r1.secret\"\n\
    [[sync_job]]\nid = \"s1\"\nstore = \"st1\"\nremote = \"r1\"\nremote_store = \"st1\"\nschedule = \"daily\"\n";

fn ns(path: &str) -> BackupNamespace {
    BackupNamespace::parse(path).unwrap()
}

async fn add_store(state: &AppState, root: &std::path::Path, name: &str, tenant: &str) {
    let backend = Arc::new(LocalBackend::open(&root.join(name)).unwrap());
    let store = Datastore::open(name, backend).await.unwrap();
    store.gc().set_cutoff(Duration::ZERO);
    state.insert_datastore(DatastoreEntry {
        name: name.into(),
        tenant: tenant.into(),
        comment: None,
        store,
    });
}

/// A finished, protected snapshot at [`T0`] in `group` (`type/id`) with its owner.
async fn add_group(state: &AppState, store: &str, ns_path: &str, group: &str, owner: &str) {
    let entry = state.datastore(store).unwrap();
    let ns = ns(ns_path);
    let (ty, id) = group.split_once('/').unwrap();
    let ty: BackupType = ty.parse().unwrap();
    let group = BackupGroup::new(ty, id).unwrap();
    let dir = BackupDir::new(group.clone(), T0).unwrap();
    let manifest = Manifest::new(ty.as_str(), id, T0);
    let key = snapshot_file_key(&ns, &dir, "index.json.blob").unwrap();
    entry
        .store
        .backend()
        .put(&key, Bytes::from(manifest.to_blob()), PutOptions::default())
        .await
        .unwrap();
    entry
        .store
        .tree()
        .set_group_owner(&ns, &group, owner)
        .await
        .unwrap();
    entry
        .store
        .tree()
        .set_protected(&ns, &dir, true)
        .await
        .unwrap();
}

impl Fixture {
    pub async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let auth = AuthService::open(&dir.path().join("auth"), AuthSeed::default()).unwrap();
        auth.set_failure_delay(Duration::ZERO);
        for tenant in ["ops", "acme", "globex"] {
            auth.ensure_tenant(tenant, None).unwrap();
        }
        for (user, tenant, superuser, acl) in USERS {
            auth.add_user(user, tenant, "pw", *superuser).unwrap();
            for (path, role) in *acl {
                auth.add_acl(path, user, role).unwrap();
            }
        }
        let sep = auth.add_token("dev@pbs!sep").unwrap();
        auth.add_acl("/datastore/st1", "dev@pbs!sep", "DatastoreBackup")
            .unwrap();
        let full = auth.add_token("dev@pbs!full").unwrap();
        auth.add_acl("/datastore/st1", "dev@pbs!full", "DatastoreAdmin")
            .unwrap();
        let node = NodeIdentity {
            name: "localhost".into(),
            instance_id: "0123456789abcdef".into(),
        };
        let state = Arc::new(AppState::new(auth, TaskRegistry::new("localhost"), node));
        add_store(&state, dir.path(), "st1", "acme").await;
        add_store(&state, dir.path(), "st2", "acme").await;
        add_store(&state, dir.path(), "gl1", "globex").await;
        let s1 = state.datastore("st1").unwrap();
        let root = BackupNamespace::root();
        s1.store
            .tree()
            .create_namespace(&root, "teamA")
            .await
            .unwrap();
        s1.store
            .tree()
            .create_namespace(&ns("teamA"), "sub")
            .await
            .unwrap();
        s1.store
            .tree()
            .create_namespace(&root, "teamB")
            .await
            .unwrap();
        for (store, ns_path, group, owner) in GROUPS {
            add_group(&state, store, ns_path, group, owner).await;
        }
        let config =
            crate::config::Config::parse(std::path::Path::new("server.toml"), JOBS).unwrap();
        state
            .jobs
            .configure(None, crate::jobs::specs_from_config(&config).unwrap());
        let task = state
            .tasks
            .spawn("backup", Some("st1:vm/100"), "backup@pbs", |_| async {
                Ok(())
            });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state
            .tasks
            .status(&task)
            .and_then(|s| s.exitstatus)
            .is_none()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "task {task} never ends"
            );
            tokio::task::yield_now().await;
        }
        let mut fixture = Fixture {
            _dir: dir,
            state,
            callers: Vec::new(),
            task,
        };
        for who in Who::ALL {
            let credentials = match who {
                Who::TokenSeparated => Credentials::Token(format!("dev@pbs!sep:{sep}")),
                Who::TokenFull => Credentials::Token(format!("dev@pbs!full:{full}")),
                Who::Anonymous => Credentials::None,
                _ => fixture.login(who.userid()).await,
            };
            fixture.callers.push((who, credentials));
        }
        fixture
    }

    async fn login(&self, user: &str) -> Credentials {
        let body = format!("username={user}&password=pw");
        let (status, json, text) = self
            .send(
                None,
                Method::POST,
                "/api2/json/access/ticket",
                body.as_bytes(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {user}: {text}");
        Credentials::Ticket {
            cookie: format!("PBSAuthCookie={}", json["data"]["ticket"].as_str().unwrap()),
            csrf: json["data"]["CSRFPreventionToken"]
                .as_str()
                .unwrap()
                .to_string(),
        }
    }

    async fn send(
        &self,
        credentials: Option<&Credentials>,
        method: Method,
        uri: &str,
        body: &[u8],
    ) -> (StatusCode, Value, String) {
        let mut req = Request::builder().method(method).uri(uri);
        match credentials {
            Some(Credentials::Ticket { cookie, csrf }) => {
                req = req
                    .header("Cookie", cookie.as_str())
                    .header("CSRFPreventionToken", csrf.as_str());
            }
            Some(Credentials::Token(token)) => {
                req = req.header("Authorization", format!("PBSAPIToken={token}"));
            }
            Some(Credentials::None) | None => {}
        }
        if !body.is_empty() {
            req = req.header("Content-Type", "application/x-www-form-urlencoded");
        }
        let resp = handle_buffered(
            self.state.clone(),
            req.body(Bytes::from(body.to_vec())).unwrap(),
        )
        .await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json, text)
    }

    /// One request as `who`: status, JSON (or null) and the raw body.
    pub async fn call(
        &self,
        who: Who,
        method: Method,
        uri: &str,
        body: &[u8],
    ) -> (StatusCode, Value, String) {
        let credentials = self.callers.iter().find(|(w, _)| *w == who).map(|(_, c)| c);
        self.send(credentials, method, uri, body).await
    }

    /// `GET` as `who`, expecting 200; the `data` member.
    pub async fn data(&self, who: Who, uri: &str) -> Value {
        let (status, json, text) = self.call(who, Method::GET, uri, b"").await;
        assert_eq!(status, StatusCode::OK, "{who:?} GET {uri}: {text}");
        json["data"].clone()
    }
}

impl Who {
    /// The user behind the caller (the token's user for tokens).
    pub fn userid(self) -> &'static str {
        match self {
            Who::Superuser => "root@pam",
            Who::TenantAdmin => "tadmin@pbs",
            Who::Audit => "audit@pbs",
            Who::BackupOwner => "backup@pbs",
            Who::BackupNonOwner => "other@pbs",
            Who::Namespace => "ns@pbs",
            Who::OtherTenant => "gl@pbs",
            Who::TokenSeparated | Who::TokenFull => "dev@pbs",
            Who::Anonymous => "",
        }
    }
}
