//! Proxmox VE's storage plugin (PBSPlugin.pm) talking to the server with its own API client:
//! form-encoded ticket login, the ticket in `Cookie: PBSAuthCookie=<uri-escaped>; path=/;
//! secure; SameSite=Strict;` with `CSRFPreventionToken`, or `Authorization: PBSAPIToken=`;
//! `GET /admin/datastore` (activate/scan), `GET …/snapshots?backup-id=<vmid>[&ns=]` (volume
//! list) with every field PVE reads, `GET`/`PUT …/protected` (form body `protected=1|0`).
//! Every success must carry `Content-Type: application/json` (the client enforces it).

mod common;
mod pve_common;

use common::*;
use pbs_cloud_e2e::pve_api::PveApiClient;
use pbs_cloud_e2e::pve_ct::{backup_ct, CtBackup};
use pbs_cloud_e2e::{Crypt, CryptConfig, PxarMode};
use pve_common::*;
use serde_json::{json, Value};

const NS: &str = "pve-ns";

/// Snapshots a PVE storage lists: two VM backups and one CT backup with VMID 100, an encrypted
/// VM backup with VMID 101, one VM backup in a namespace; notes and a verification on some.
struct Seed {
    key: CryptConfig,
    verified_upid: String,
}

async fn seed(pve: &PveServer) -> Seed {
    let store = pve.store();
    let client = pve.client().await;
    for t in [T0, T0 + 3600] {
        diskless_vm_backup(&client, &store, None, "100", t, Crypt::None, None)
            .await
            .unwrap();
    }
    let root = tempfile::tempdir().unwrap();
    ct_rootfs(root.path(), 1);
    backup_ct(
        &client,
        CtBackup {
            store: &store,
            ns: None,
            vmid: "100",
            time: T0 + 60,
            pct_conf: &pct_conf("100"),
            fw_conf: Some(&fw_conf()),
            rootdir: root.path(),
            mode: PxarMode::Legacy,
            crypt: Crypt::None,
            master_key: None,
        },
        || async {},
    )
    .await
    .unwrap();
    let key = CryptConfig::random();
    diskless_vm_backup(
        &client,
        &store,
        None,
        "101",
        T0,
        Crypt::Encrypt(key.clone()),
        None,
    )
    .await
    .unwrap();
    // PVE never creates namespaces: the administrator does
    pve.admin
        .post(
            &format!("admin/datastore/{store}/namespace"),
            Some(&json!({"name": NS, "parent": ""})),
        )
        .await
        .unwrap();
    diskless_vm_backup(&client, &store, Some(NS), "100", T0, Crypt::None, None)
        .await
        .unwrap();
    let mut notes = json!({"backup-type": "vm", "backup-id": "100", "backup-time": T0 + 3600});
    notes["notes"] = "nightly before upgrade\nsecond line".into();
    client
        .put(&format!("admin/datastore/{store}/notes"), Some(&notes))
        .await
        .unwrap();
    let upid = pve
        .admin
        .post(
            &format!("admin/datastore/{store}/verify"),
            Some(&json!({"backup-type": "vm", "backup-id": "100", "backup-time": T0})),
        )
        .await
        .unwrap();
    let upid = upid.as_str().unwrap().to_string();
    let (status, log) = wait_task(&pve.admin, &upid).await;
    assert_eq!(status["exitstatus"], "OK", "{status} {log:?}");
    Seed {
        key,
        verified_upid: upid,
    }
}

fn find<'a>(items: &'a [Value], ty: &str, time: i64) -> &'a Value {
    items
        .iter()
        .find(|i| i["backup-type"] == ty && i["backup-time"] == time)
        .unwrap_or_else(|| panic!("{ty} at {time} missing in {items:?}"))
}

/// PVE's `list_volumes`: keeps vm/ct items with numeric ids; size, verification, comment,
/// protected and encryption from each item.
fn check_item(item: &Value) {
    for key in [
        "backup-type",
        "backup-id",
        "backup-time",
        "files",
        "size",
        "protected",
    ] {
        assert!(item.get(key).is_some(), "{key} missing: {item}");
    }
    assert!(
        matches!(item["backup-type"].as_str(), Some("vm" | "ct")),
        "{item}"
    );
    assert!(
        item["backup-id"].as_str().unwrap().parse::<u32>().is_ok(),
        "{item}"
    );
    assert!(item["backup-time"].is_i64(), "{item}");
    assert!(item["protected"].is_boolean(), "{item}");
    let files = item["files"].as_array().unwrap();
    let sum: u64 = files.iter().map(|f| f["size"].as_u64().unwrap_or(0)).sum();
    assert_eq!(
        item["size"].as_u64(),
        Some(sum),
        "size is the sum of the files: {item}"
    );
    for f in files {
        assert!(f["filename"].is_string(), "{item}");
        if f["filename"] != "client.log.blob" {
            assert!(
                matches!(
                    f["crypt-mode"].as_str(),
                    Some("none" | "encrypt" | "sign-only")
                ),
                "{item}"
            );
        }
    }
}

/// PVE's rule: encrypted when every file but the manifest and the log is `encrypt`.
fn pve_encrypted(item: &Value) -> bool {
    item["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["filename"] != "index.json.blob" && f["filename"] != "client.log.blob")
        .all(|f| f["crypt-mode"] == "encrypt")
}

/// Everything the plugin does with one API client.
async fn plugin_calls(plugin: &PveApiClient, store: &str, seed: &Seed) {
    // activate_storage / scan: the configured store must be listed
    let stores = plugin.get("admin/datastore", &[]).await.unwrap();
    let stores = stores.as_array().unwrap();
    assert!(stores.iter().any(|s| s["store"] == store), "{stores:?}");

    // list_volumes for VMID 100: both guest types, root namespace
    let snaps_path = format!("admin/datastore/{store}/snapshots");
    let items = plugin
        .get(&snaps_path, &[("backup-id", "100")])
        .await
        .unwrap();
    let items = items.as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{items:?}");
    for item in &items {
        check_item(item);
        assert_eq!(item["backup-id"], "100");
        assert!(!pve_encrypted(item), "{item}");
        assert!(item.get("fingerprint").is_none(), "{item}");
    }
    let verified = find(&items, "vm", T0);
    assert_eq!(verified["verification"]["state"], "ok", "{verified}");
    assert_eq!(
        verified["verification"]["upid"],
        seed.verified_upid.as_str()
    );
    let noted = find(&items, "vm", T0 + 3600);
    assert_eq!(noted["comment"], "nightly before upgrade", "{noted}");
    assert!(noted.get("verification").is_none(), "{noted}");
    let ct = find(&items, "ct", T0 + 60);
    let ct_files: Vec<&str> = ct["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    for name in [
        "pct.conf.blob",
        "fw.conf.blob",
        "root.pxar.didx",
        "catalog.pcat1.didx",
    ] {
        assert!(ct_files.contains(&name), "{ct_files:?}");
    }

    // the encrypted VM: fingerprint and every file encrypted
    let enc = plugin
        .get(&snaps_path, &[("backup-id", "101")])
        .await
        .unwrap();
    let enc = &enc.as_array().unwrap()[0];
    check_item(enc);
    assert_eq!(
        enc["fingerprint"],
        seed.key.fingerprint_hex().as_str(),
        "{enc}"
    );
    assert!(pve_encrypted(enc), "{enc}");

    // a storage configured with a namespace
    let in_ns = plugin
        .get(&snaps_path, &[("backup-id", "100"), ("ns", NS)])
        .await
        .unwrap();
    let in_ns = in_ns.as_array().unwrap();
    assert_eq!(in_ns.len(), 1, "{in_ns:?}");
    check_item(&in_ns[0]);

    // protection: GET in the query, PUT as form body with protected=1|0
    let protected_path = format!("admin/datastore/{store}/protected");
    let time = (T0 + 3600).to_string();
    let snap = [
        ("backup-type", "vm"),
        ("backup-id", "100"),
        ("backup-time", time.as_str()),
    ];
    assert_eq!(plugin.get(&protected_path, &snap).await.unwrap(), false);
    let mut set = snap.to_vec();
    set.push(("protected", "1"));
    assert_eq!(
        plugin.put(&protected_path, &set).await.unwrap(),
        Value::Null
    );
    assert_eq!(plugin.get(&protected_path, &snap).await.unwrap(), true);
    let listed = plugin
        .get(&snaps_path, &[("backup-id", "100")])
        .await
        .unwrap();
    assert_eq!(
        find(listed.as_array().unwrap(), "vm", T0 + 3600)["protected"],
        true
    );
    let mut unset = snap.to_vec();
    unset.push(("protected", "0"));
    plugin.put(&protected_path, &unset).await.unwrap();
    assert_eq!(plugin.get(&protected_path, &snap).await.unwrap(), false);
    // and inside the namespace
    let t0 = T0.to_string();
    let ns_snap = [
        ("backup-type", "vm"),
        ("backup-id", "100"),
        ("backup-time", t0.as_str()),
        ("ns", NS),
    ];
    let mut ns_set = ns_snap.to_vec();
    ns_set.push(("protected", "1"));
    plugin.put(&protected_path, &ns_set).await.unwrap();
    assert_eq!(plugin.get(&protected_path, &ns_snap).await.unwrap(), true);
    let mut ns_unset = ns_snap.to_vec();
    ns_unset.push(("protected", "0"));
    plugin.put(&protected_path, &ns_unset).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_storage_plugin_with_form_ticket_login_and_cookie_attributes() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let seed = seed(&pve).await;
    let plugin = pve.plugin_with_ticket().await;
    // the plugin re-logs-in after an hour: it reads the creation time from the ticket
    let ticket = plugin.ticket().unwrap().to_string();
    let (head, sig) = ticket.rsplit_once("::").unwrap();
    let time = head.rsplit(':').next().unwrap();
    assert!(
        time.len() == 8
            && time
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()),
        "{ticket}"
    );
    assert!(!sig.is_empty() && !sig.contains(':') && !sig.contains(char::is_whitespace));

    plugin_calls(&plugin, &store, &seed).await;

    // the CSRF token is what allows a ticket to change anything
    let cookie = plugin
        .auth_headers()
        .into_iter()
        .find(|(k, _)| k == "Cookie")
        .unwrap()
        .1;
    let body = format!(
        "backup-type=vm&backup-id=100&backup-time={}&protected=1",
        T0 + 3600
    );
    let resp = pve
        .admin
        .raw(
            http::Method::PUT,
            &format!("/api2/json/admin/datastore/{store}/protected"),
            Some("application/x-www-form-urlencoded"),
            body.into_bytes(),
            &[("Cookie", cookie.as_str())],
            false,
        )
        .await
        .unwrap();
    assert!(
        matches!(resp.status, 401 | 403),
        "{} {}",
        resp.status,
        resp.text()
    );
    let still = plugin
        .get(
            &format!("admin/datastore/{store}/protected"),
            &[
                ("backup-type", "vm"),
                ("backup-id", "100"),
                ("backup-time", &(T0 + 3600).to_string()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(still, false);

    // a wrong password is a 401 for the plugin too
    let mut wrong = PveApiClient::connect(
        pve.server.host(),
        pve.server.port(),
        &pve.server.fingerprint,
    )
    .await
    .unwrap();
    let err = wrong.login(PVE_USER, "not-the-password").await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_storage_plugin_with_api_token_equals_form() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let seed = seed(&pve).await;
    let plugin = pve.plugin_with_token().await;
    plugin_calls(&plugin, &store, &seed).await;
    // a wrong secret is refused
    let bad = PveApiClient::connect(
        pve.server.host(),
        pve.server.port(),
        &pve.server.fingerprint,
    )
    .await
    .unwrap()
    .with_token(PVE_TOKEN, "00000000-0000-0000-0000-000000000000");
    let err = bad.get("admin/datastore", &[]).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
}
