//! Snapshot administration as the stock client drives it: notes, protected, prune (dry-run and
//! real), forget, garbage collection as a task, status and namespaces.

mod common;

use common::*;
use pbs_cloud_e2e::{Crypt, PbsClient};
use serde_json::{json, Value};

fn snap(id: &str, time: i64) -> Value {
    json!({"backup-type": "host", "backup-id": id, "backup-time": time})
}

async fn times(client: &PbsClient, store: &str, id: &str) -> Vec<i64> {
    snapshots(client, store, None, id)
        .await
        .iter()
        .map(|s| s["backup-time"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_protected_prune_forget_and_gc() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let hour = 3600;
    let image = random_bytes(5, 4 * 1024 * 1024 + 1);
    for i in 0..4 {
        let conf = format!("run {i}\n");
        backup(
            &client,
            &store,
            None,
            "adm",
            T0 + i * hour,
            Crypt::None,
            &Content {
                tree: None,
                image: Some(&image),
                conf: Some(conf.as_bytes()),
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(
        times(&client, &store, "adm").await,
        vec![T0, T0 + hour, T0 + 2 * hour, T0 + 3 * hour]
    );

    // notes: `snapshot notes update` sends them in the query string
    let notes_path = format!("admin/datastore/{store}/notes");
    let mut params = snap("adm", T0 + 3 * hour);
    params["notes"] = "weekly release\nsecond line".into();
    client.put(&notes_path, Some(&params)).await.unwrap();
    let notes = client
        .get(&notes_path, Some(&snap("adm", T0 + 3 * hour)))
        .await
        .unwrap();
    assert_eq!(notes, "weekly release\nsecond line");
    let listed = snapshots(&client, &store, None, "adm").await;
    assert_eq!(listed.last().unwrap()["comment"], "weekly release");
    // the rewritten manifest still restores
    let session = reader(&client, &store, None, "adm", T0 + 3 * hour, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image);
    drop(session);

    // protected: set on the oldest, as PVE does with a form body
    let protected_path = format!("admin/datastore/{store}/protected");
    let mut params = snap("adm", T0);
    params["protected"] = "1".into();
    client
        .call_form_body(http::Method::PUT, &protected_path, &params)
        .await
        .unwrap();
    assert_eq!(
        client
            .get(&protected_path, Some(&snap("adm", T0)))
            .await
            .unwrap(),
        true
    );
    let err = client
        .delete(
            &format!("admin/datastore/{store}/snapshots"),
            Some(&snap("adm", T0)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        err.body().unwrap_or_default().contains("protected"),
        "{err}"
    );

    // prune --dry-run keep-last 1: nothing removed, result oldest first
    let prune_path = format!("admin/datastore/{store}/prune");
    let dry = client
        .post(&prune_path, Some(&json!({"backup-type": "host", "backup-id": "adm", "keep-last": 1, "dry-run": true})))
        .await
        .unwrap();
    let dry = dry.as_array().unwrap();
    let order: Vec<i64> = dry
        .iter()
        .map(|e| e["backup-time"].as_i64().unwrap())
        .collect();
    assert_eq!(order, vec![T0, T0 + hour, T0 + 2 * hour, T0 + 3 * hour]);
    let keep: Vec<bool> = dry.iter().map(|e| e["keep"].as_bool().unwrap()).collect();
    assert_eq!(keep, vec![true, false, false, true]);
    assert_eq!(dry[0]["protected"], true);
    assert_eq!(times(&client, &store, "adm").await.len(), 4);

    // real prune
    client
        .post(
            &prune_path,
            Some(&json!({"backup-type": "host", "backup-id": "adm", "keep-last": 1})),
        )
        .await
        .unwrap();
    assert_eq!(times(&client, &store, "adm").await, vec![T0, T0 + 3 * hour]);

    // forget after unprotecting
    let mut params = snap("adm", T0);
    params["protected"] = false.into();
    client.put(&protected_path, Some(&params)).await.unwrap();
    client
        .delete(
            &format!("admin/datastore/{store}/snapshots"),
            Some(&snap("adm", T0)),
        )
        .await
        .unwrap();
    assert_eq!(times(&client, &store, "adm").await, vec![T0 + 3 * hour]);

    // garbage-collect: a task with a UPID, followed like the client does
    let upid = client
        .post(&format!("admin/datastore/{store}/gc"), None)
        .await
        .unwrap();
    let upid = upid.as_str().expect("gc returns a UPID string").to_string();
    assert!(upid.starts_with("UPID:") && upid.ends_with(':'), "{upid}");
    let (status, log) = wait_task(&client, &upid).await;
    assert_eq!(status["exitstatus"], "OK", "{status} {log:?}");
    assert!(!log.is_empty());
    // nothing a remaining snapshot needs was removed
    let session = reader(&client, &store, None, "adm", T0 + 3 * hour, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image);

    let status = client
        .get(
            &format!("admin/datastore/{store}/status"),
            Some(&json!({"verbose": true})),
        )
        .await
        .unwrap();
    assert!(status["gc-status"].is_object(), "{status}");
    assert_eq!(status["gc-status"]["upid"], upid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_create_list_backup_delete() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let ns_path = format!("admin/datastore/{store}/namespace");
    // the stock client sends parent "" for root
    let created = client
        .post(&ns_path, Some(&json!({"name": "team-a", "parent": ""})))
        .await
        .unwrap();
    assert_eq!(created, "team-a");
    let created = client
        .post(
            &ns_path,
            Some(&json!({"name": "inner", "parent": "team-a"})),
        )
        .await
        .unwrap();
    assert_eq!(created, "team-a/inner");
    let err = client
        .post(&ns_path, Some(&json!({"name": "team-a", "parent": ""})))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    let listed = client.get(&ns_path, None).await.unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["ns"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["", "team-a", "team-a/inner"]);

    // a backup into the namespace; the root namespace stays empty
    let conf = b"in a namespace\n".to_vec();
    backup(
        &client,
        &store,
        Some("team-a/inner"),
        "nsbox",
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
    assert_eq!(
        snapshots(&client, &store, Some("team-a/inner"), "nsbox")
            .await
            .len(),
        1
    );
    let root_groups = client
        .get(&format!("admin/datastore/{store}/groups"), None)
        .await
        .unwrap();
    assert!(root_groups.as_array().unwrap().is_empty(), "{root_groups}");
    let ns_groups = client
        .get(
            &format!("admin/datastore/{store}/groups"),
            Some(&json!({"ns": "team-a/inner"})),
        )
        .await
        .unwrap();
    assert_eq!(ns_groups.as_array().unwrap().len(), 1);
    let session = reader(&client, &store, Some("team-a/inner"), "nsbox", T0, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("app.conf").await.unwrap(), conf);
    drop(session);

    // backups into a namespace that does not exist are refused with 404
    let err = backup(
        &client,
        &store,
        Some("missing"),
        "nsbox",
        T0,
        Crypt::None,
        &Content {
            tree: None,
            image: None,
            conf: Some(&conf),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");

    // deleting a namespace with groups needs delete-groups
    let err = client
        .delete(&ns_path, Some(&json!({"ns": "team-a/inner"})))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    client
        .delete(
            &ns_path,
            Some(&json!({"ns": "team-a/inner", "delete-groups": true})),
        )
        .await
        .unwrap();
    let listed = client.get(&ns_path, None).await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_identity_and_datastore_list() {
    let (server, client) = start_server().await;
    let version = client.get("version", None).await.unwrap();
    assert!(
        version["version"].is_string() && version["release"].is_string(),
        "{version}"
    );
    let identity = client.get("nodes/localhost/identity", None).await.unwrap();
    assert!(
        identity["pbs-instance-id"].as_str().unwrap().len() >= 16,
        "{identity}"
    );
    let stores = client.get("admin/datastore", None).await.unwrap();
    let stores = stores.as_array().unwrap();
    assert_eq!(stores.len(), 1);
    assert_eq!(stores[0]["store"], server.store());
    assert_eq!(stores[0]["backend-type"], "filesystem");
    // ticket renewal: the current ticket works as password
    let ticket = match client.auth() {
        pbs_cloud_e2e::Auth::Ticket(t) => t,
        other => panic!("admin client should use a ticket, got {other:?}"),
    };
    let renewed = client.login("admin@pbs", &ticket.ticket).await.unwrap();
    assert!(renewed.ticket.starts_with("PBS:admin@pbs:"));
}
