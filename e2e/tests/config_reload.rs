//! The server reloads its config file on change: new datastores and users appear, a running
//! backup session is not disturbed, and a broken file is refused while the last good one stays.

mod common;

use std::time::Duration;

use common::*;
use pbs_cloud_e2e::{BackupParams, BackupSession, PbsClient, TestServer, UploadOptions};

const BASE: &str =
    "[[tenant]]\nid = \"acme\"\n\n[[datastore]]\nname = \"acme-store\"\ntenant = \"acme\"\n";

/// `pbs-cloud-server hash-password`, as an admin writing a config file would run it.
fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(pbs_cloud_e2e::server::server_binary().unwrap())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

async fn store_names(client: &PbsClient) -> Vec<String> {
    let stores = client.get("admin/datastore", None).await.unwrap();
    stores
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["store"].as_str().unwrap().to_string())
        .collect()
}

async fn wait_for_stores(client: &PbsClient, want: usize) -> Vec<String> {
    for _ in 0..100 {
        let names = store_names(client).await;
        if names.len() == want {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "config reload did not take effect: {:?}",
        store_names(client).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_stores_and_users_without_dropping_sessions() {
    let mut server = TestServer::prepare().unwrap();
    server.set_config(BASE).unwrap();
    server.launch().await.unwrap();
    let admin = server.admin_client().await.unwrap();
    assert_eq!(store_names(&admin).await, vec!["acme-store"]);

    // a backup runs while the file changes
    let mut session =
        BackupSession::start(&admin, BackupParams::new("acme-store", "host", "live", T0))
            .await
            .unwrap();
    let image = random_bytes(42, 4 * 1024 * 1024 + 10);
    session
        .upload_fixed_image("disk.img", &image, &UploadOptions::default())
        .await
        .unwrap();

    let hash = hash_password("carolpw");
    let grown = format!(
        "{BASE}\n[[datastore]]\nname = \"second\"\ntenant = \"acme\"\n\n[[user]]\nuserid = \"carol@pbs\"\ntenant = \"acme\"\npassword_hash = \"{}\"\n\n[[acl]]\npath = \"/datastore/second\"\nauthid = \"carol@pbs\"\nrole = \"DatastoreBackup\"\n",
        hash.trim()
    );
    server.set_config(&grown).unwrap();
    assert_eq!(
        wait_for_stores(&admin, 2).await,
        vec!["acme-store", "second"]
    );

    // the running session finishes and restores
    session.finish().await.unwrap();
    let restored = reader(&admin, "acme-store", None, "live", T0, None)
        .await
        .unwrap();
    assert_eq!(restored.restore_archive("disk.img").await.unwrap(), image);

    // the new user of the file can log in and sees her store
    let carol = server.client().await.unwrap();
    carol.login("carol@pbs", "carolpw").await.unwrap();
    assert_eq!(store_names(&carol).await, vec!["second"]);

    // a broken file is refused: everything stays as it was
    server.set_config("[[datastore]\nname = ").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(store_names(&admin).await, vec!["acme-store", "second"]);
    let again = server.client().await.unwrap();
    again.login("carol@pbs", "carolpw").await.unwrap();

    // removing a datastore from the file removes it from the server
    server.set_config(BASE).unwrap();
    assert_eq!(wait_for_stores(&admin, 1).await, vec!["acme-store"]);
    let err = carol.login("carol@pbs", "carolpw").await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
}
