//! The endpoints monitoring and management tools read (recorded against PBS 4.2.3 in the
//! corpus' s4-rest-monitoring): datastore usage, the node list and status, permissions, the
//! user list, and PBS 4's HttpOnly cookie login with logout. Each answers with PBS's keys and
//! only what the caller may see.

mod common;

use pbs_cloud_e2e::{PbsClient, TestServer};
use serde_json::{json, Value};

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

/// Two tenants: alice (DatastoreBackup on acme-store), carol (Audit on `/`, acme), bob
/// (DatastoreAdmin on globex-store) and a token carol@pbs!mon (Audit on `/`).
async fn server() -> (TestServer, String) {
    let mut server = TestServer::prepare().unwrap();
    server.set_config(CONFIG).unwrap();
    server.launch().await.unwrap();
    server.stop().await;
    for (user, tenant) in [
        ("alice@pbs", "acme"),
        ("carol@pbs", "acme"),
        ("bob@pbs", "globex"),
    ] {
        server
            .manage(
                &["user", "add", user, "--tenant", tenant],
                &format!("{user}-pw\n"),
            )
            .unwrap();
    }
    let out = server
        .manage(&["token", "add", "carol@pbs!mon"], "")
        .unwrap();
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap()
        .to_string();
    for (path, who, role) in [
        ("/datastore/acme-store", "alice@pbs", "DatastoreBackup"),
        ("/", "carol@pbs", "Audit"),
        ("/", "carol@pbs!mon", "Audit"),
        ("/datastore/globex-store", "bob@pbs", "DatastoreAdmin"),
    ] {
        server.manage(&["acl", "add", path, who, role], "").unwrap();
    }
    server.launch().await.unwrap();
    (server, secret)
}

async fn login(server: &TestServer, user: &str) -> PbsClient {
    let c = server.client().await.unwrap();
    // Monitoring tools log in with a form body (python http.client, proxmoxer).
    c.login_form(user, &format!("{user}-pw")).await.unwrap();
    c
}

fn stores(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| i["store"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datastore_usage_and_node_endpoints() {
    let (server, _) = server().await;
    let admin = server.admin_client().await.unwrap();
    let alice = login(&server, "alice@pbs").await;
    let carol = login(&server, "carol@pbs").await;
    let bob = login(&server, "bob@pbs").await;

    let usage = admin.get("status/datastore-usage", None).await.unwrap();
    assert_eq!(stores(&usage), vec!["acme-store", "globex-store"]);
    let item = &usage[0];
    for key in [
        "store",
        "total",
        "used",
        "avail",
        "history",
        "history-start",
        "history-delta",
        "mount-status",
        "backend-type",
    ] {
        assert!(item.get(key).is_some(), "{key} missing in {item}");
    }
    assert_eq!(item["history"].as_array().unwrap().len(), 1440);
    assert_eq!(item["history-delta"], 1800);
    assert_eq!(item["mount-status"], "nonremovable");
    assert_eq!(item["backend-type"], "filesystem");
    let status = admin
        .get("admin/datastore/acme-store/status", None)
        .await
        .unwrap();
    assert_eq!(
        item["total"], status["total"],
        "same capacity as the store status"
    );
    // Tenants see only their stores; Audit on `/` stays within the tenant.
    assert_eq!(
        stores(&alice.get("status/datastore-usage", None).await.unwrap()),
        vec!["acme-store"]
    );
    assert_eq!(
        stores(&carol.get("status/datastore-usage", None).await.unwrap()),
        vec!["acme-store"]
    );
    assert_eq!(
        stores(&bob.get("status/datastore-usage", None).await.unwrap()),
        vec!["globex-store"]
    );

    // `/nodes`: PBS answers 403 even to an Admin on `/`; only the superuser gets the list.
    assert_eq!(
        admin.get("nodes", None).await.unwrap(),
        json!([{"node": "localhost"}])
    );
    let err = carol.get("nodes", None).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert_eq!(
        err.body().map(str::trim_end),
        Some("permission check failed")
    );

    // `/nodes/localhost/status` with PBS's keys; needs Sys.Audit.
    let node = carol.get("nodes/localhost/status", None).await.unwrap();
    for key in [
        "boot-info",
        "cpu",
        "cpuinfo",
        "current-kernel",
        "info",
        "kversion",
        "loadavg",
        "memory",
        "root",
        "swap",
        "uptime",
        "wait",
    ] {
        assert!(node.get(key).is_some(), "{key} missing in {node}");
    }
    assert_eq!(node["info"]["fingerprint"], server.fingerprint.as_str());
    assert!(node["kversion"].as_str().unwrap().starts_with("Linux "));
    assert_eq!(node["current-kernel"]["sysname"], "Linux");
    assert_eq!(node["loadavg"].as_array().unwrap().len(), 3);
    assert!(node["cpuinfo"]["cpus"].as_u64().unwrap() >= 1);
    assert!(node["memory"]["total"].as_u64().unwrap() > 0);
    let cpu = node["cpu"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&cpu), "{cpu}");
    let host_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let uptime = node["uptime"].as_f64().unwrap();
    assert!(
        (host_uptime - uptime).abs() < 30.0,
        "{uptime} vs {host_uptime}"
    );
    let err = alice.get("nodes/localhost/status", None).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_and_users_are_scoped() {
    let (server, secret) = server().await;
    let admin = server.admin_client().await.unwrap();
    let alice = login(&server, "alice@pbs").await;
    let carol = login(&server, "carol@pbs").await;
    let bob = login(&server, "bob@pbs").await;

    let mine = alice.get("access/permissions", None).await.unwrap();
    assert_eq!(
        mine,
        json!({"/datastore/acme-store": {"Datastore.Backup": true}})
    );
    let one = alice
        .get(
            "access/permissions",
            Some(&json!({"path": "/datastore/globex-store"})),
        )
        .await
        .unwrap();
    assert_eq!(one, json!({"/datastore/globex-store": {}}));
    // Like PBS: the top-level paths and the subject's ACL paths (the admin's only ACL is
    // Admin on `/`), each with all 23 PBS privileges.
    let root = admin.get("access/permissions", None).await.unwrap();
    let paths: Vec<&String> = root.as_object().unwrap().keys().collect();
    assert_eq!(
        paths,
        ["/", "/access", "/datastore", "/remote", "/system"],
        "{root}"
    );
    for (path, privs) in root.as_object().unwrap() {
        assert_eq!(privs.as_object().unwrap().len(), 23, "{path}: {root}");
        assert_eq!(privs["Sys.Audit"], true, "{path}: {root}");
        assert_eq!(privs["Datastore.Modify"], true, "{path}: {root}");
        assert_eq!(privs["Tape.Read"], true, "{path}: {root}");
    }
    // Carol (Audit on `/`) may look at alice's permissions, alice not at carol's; nobody
    // outside the tenant.
    let of_alice = carol
        .get("access/permissions", Some(&json!({"auth-id": "alice@pbs"})))
        .await
        .unwrap();
    assert_eq!(of_alice, mine);
    let err = alice
        .get("access/permissions", Some(&json!({"auth-id": "carol@pbs"})))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(carol
        .get("access/permissions", Some(&json!({"auth-id": "bob@pbs"})))
        .await
        .is_err());
    let carols = carol.get("access/permissions", None).await.unwrap();
    assert!(carols.get("/datastore/globex-store").is_none(), "{carols}");
    assert_eq!(
        carols["/"],
        json!({"Datastore.Audit": true, "Sys.Audit": true})
    );

    // Users: yourself, or your tenant with Sys.Audit, or everybody as superuser.
    let users = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u["userid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        users(alice.get("access/users", None).await.unwrap()),
        vec!["alice@pbs"]
    );
    assert_eq!(
        users(bob.get("access/users", None).await.unwrap()),
        vec!["bob@pbs"]
    );
    assert_eq!(
        users(carol.get("access/users", None).await.unwrap()),
        vec!["alice@pbs", "carol@pbs"]
    );
    let all = users(admin.get("access/users", None).await.unwrap());
    assert!(all.contains(&"bob@pbs".to_string()) && all.contains(&"alice@pbs".to_string()));
    let with_tokens = carol
        .get("access/users", Some(&json!({"include_tokens": true})))
        .await
        .unwrap();
    let carol_item = with_tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userid"] == "carol@pbs")
        .unwrap();
    assert_eq!(carol_item["tokens"], json!([{"tokenid": "carol@pbs!mon"}]));
    // The list comes with a digest, like PBS's.
    let raw = carol
        .raw(
            http::Method::GET,
            "/api2/json/access/users",
            None,
            Vec::new(),
            &[],
            true,
        )
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(body["digest"].as_str().unwrap().len(), 64);

    // The Audit token in PVE's header form reads the same as carol.
    let token = server
        .client()
        .await
        .unwrap()
        .with_token_pve("carol@pbs!mon", &secret);
    assert_eq!(
        stores(&token.get("status/datastore-usage", None).await.unwrap()),
        vec!["acme-store"]
    );
    token.get("nodes/localhost/status", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_only_cookie_login_and_logout() {
    let (server, _) = server().await;
    let client = server.client().await.unwrap();
    let body = json!({"http-only": true, "password": "carol@pbs-pw", "username": "carol@pbs"});
    let resp = client
        .raw(
            http::Method::POST,
            "/api2/json/access/ticket",
            Some("application/json"),
            body.to_string().into_bytes(),
            &[],
            false,
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let value: Value = serde_json::from_slice(&resp.body).unwrap();
    let data = &value["data"];
    assert!(data.get("ticket").is_none(), "{value}");
    assert_eq!(data["username"], "carol@pbs");
    let info = data["ticket-info"].as_str().unwrap();
    assert!(
        info.starts_with("PBS:carol@pbs:") && info.ends_with("::ticketinfo"),
        "{info}"
    );
    assert_eq!(value["success"], true);
    let cookie = resp.headers["set-cookie"].to_str().unwrap().to_string();
    let ticket = cookie
        .strip_prefix("__Host-PBSAuthCookie=")
        .and_then(|c| c.strip_suffix("; Secure; SameSite=Lax; HttpOnly; Path=/;"))
        .unwrap_or_else(|| panic!("cookie {cookie}"));
    assert!(ticket.starts_with("PBS:carol@pbs:"), "{ticket}");
    let csrf = data["CSRFPreventionToken"].as_str().unwrap();

    let cookie_header = format!("__Host-PBSAuthCookie={ticket}");
    let resp = client
        .raw(
            http::Method::GET,
            "/api2/json/nodes/localhost/identity",
            None,
            Vec::new(),
            &[("cookie", &cookie_header)],
            false,
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());

    let resp = client
        .raw(
            http::Method::DELETE,
            "/api2/json/access/ticket",
            None,
            Vec::new(),
            &[("cookie", &cookie_header), ("CSRFPreventionToken", csrf)],
            false,
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), r#"{"data":{},"status":200,"success":true}"#);
    assert!(resp.headers.get("content-type").is_none());
    assert_eq!(
        resp.headers["set-cookie"],
        "__Host-PBSAuthCookie=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Secure; SameSite=Lax; HttpOnly; Path=/;"
    );
}
