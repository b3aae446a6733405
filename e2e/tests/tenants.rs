//! Tenant isolation: users and tokens of one tenant see and touch nothing of another tenant.

mod common;

use common::*;
use pbs_cloud_e2e::{BackupParams, BackupSession, Crypt, PbsClient, TestServer};
use serde_json::json;

const CONFIG: &str = r#"
[[tenant]]
id = "acme"

[[tenant]]
id = "globex"

[[datastore]]
name = "acme-store"
tenant = "acme"

[[datastore]]
name = "globex-store"
tenant = "globex"
"#;

/// Starts a two-tenant server: alice (acme, with token alice@pbs!ci) and bob (globex).
async fn two_tenant_server() -> (TestServer, String) {
    let mut server = TestServer::prepare().unwrap();
    server.set_config(CONFIG).unwrap();
    server.launch().await.unwrap();
    server.stop().await;
    server
        .manage(
            &["user", "add", "alice@pbs", "--tenant", "acme"],
            "alice-pass\n",
        )
        .unwrap();
    server
        .manage(
            &["user", "add", "bob@pbs", "--tenant", "globex"],
            "bob-pass\n",
        )
        .unwrap();
    let out = server
        .manage(&["token", "add", "alice@pbs!ci"], "")
        .unwrap();
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .expect("token secret printed")
        .to_string();
    for (path, who) in [
        ("/datastore/acme-store", "alice@pbs"),
        ("/datastore/acme-store", "alice@pbs!ci"),
        ("/datastore/globex-store", "bob@pbs"),
    ] {
        server
            .manage(&["acl", "add", path, who, "DatastoreAdmin"], "")
            .unwrap();
    }
    server.launch().await.unwrap();
    (server, secret)
}

async fn login(server: &TestServer, user: &str, password: &str) -> PbsClient {
    let client = server.client().await.unwrap();
    client.login(user, password).await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_datastores() {
    let (server, alice_secret) = two_tenant_server().await;
    let alice = login(&server, "alice@pbs", "alice-pass").await;
    let bob = login(&server, "bob@pbs", "bob-pass").await;
    let token = server
        .client()
        .await
        .unwrap()
        .with_token("alice@pbs!ci", &alice_secret);

    // each sees exactly its own datastore
    for (client, store) in [
        (&alice, "acme-store"),
        (&bob, "globex-store"),
        (&token, "acme-store"),
    ] {
        let stores = client.get("admin/datastore", None).await.unwrap();
        let names: Vec<&str> = stores
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["store"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec![store]);
    }

    // alice's token backs up into acme; bob cannot read it, list it or back up there
    let conf = b"acme secret\n".to_vec();
    backup(
        &token,
        "acme-store",
        None,
        "web",
        T0,
        Crypt::None,
        &Content {
            tree: None,
            image: None,
            conf: Some(&conf),
        },
    )
    .await
    .unwrap();
    let err = bob
        .get("admin/datastore/acme-store/snapshots", None)
        .await
        .unwrap_err();
    assert!(matches!(err.status(), Some(403) | Some(404)), "{err}");
    let err = bob
        .get("admin/datastore/acme-store/status", None)
        .await
        .unwrap_err();
    assert!(matches!(err.status(), Some(403) | Some(404)), "{err}");
    let err = reader(&bob, "acme-store", None, "web", T0, None)
        .await
        .err()
        .expect("bob must not read acme");
    assert!(matches!(err.status(), Some(403) | Some(404)), "{err}");
    let err = BackupSession::start(&bob, BackupParams::new("acme-store", "host", "evil", T0))
        .await
        .err()
        .expect("bob must not write acme");
    assert!(matches!(err.status(), Some(403) | Some(404)), "{err}");
    let err = bob
        .delete(
            "admin/datastore/acme-store/snapshots",
            Some(&json!({"backup-type": "host", "backup-id": "web", "backup-time": T0})),
        )
        .await
        .unwrap_err();
    assert!(matches!(err.status(), Some(403) | Some(404)), "{err}");

    // alice's token cannot reach globex either
    let err = token
        .get("admin/datastore/globex-store/groups", None)
        .await
        .unwrap_err();
    assert!(matches!(err.status(), Some(403) | Some(404)), "{err}");

    // the admin (operator, superuser) sees both
    let admin = server.admin_client().await.unwrap();
    let stores = admin.get("admin/datastore", None).await.unwrap();
    assert_eq!(stores.as_array().unwrap().len(), 2);

    // the acme snapshot is intact and restorable by its owner
    let session = reader(&alice, "acme-store", None, "web", T0, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("app.conf").await.unwrap(), conf);

    // a wrong token secret is refused
    let bad = server
        .client()
        .await
        .unwrap()
        .with_token("alice@pbs!ci", "00000000-0000-0000-0000-000000000000");
    let err = bad.get("admin/datastore", None).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    // the PVE spelling of the token header works too
    let pve = server
        .client()
        .await
        .unwrap()
        .with_token_pve("alice@pbs!ci", &alice_secret);
    assert_eq!(
        pve.get("admin/datastore", None)
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
