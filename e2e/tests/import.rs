//! `pbs-cloud-server import`: a datastore backed up by a local server is imported into S3 (the
//! Ceph RGW that `e2e/run-tests.sh` starts), interrupted once (objects deleted from the target
//! between two runs, and a half-imported snapshot without manifest), resumed, and restored
//! byte-identical from a server on the S3 datastore.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use pbs_cloud_e2e::{Crypt, CryptConfig, TestServer};
use pbs_cloud_server::backend::Backend;
use serde_json::{json, Value};

/// `[[datastore]] store1` on the test bucket under `prefix` (secret in `dir`).
fn s3_config(s3: &S3Env, dir: &Path, prefix: &str) -> String {
    let table = s3.datastore_table(dir, &s3.bucket, prefix);
    format!("[[datastore]]\nname = \"store1\"\n{table}")
}

/// Runs `pbs-cloud-server import`; returns the JSON summary.
fn run_import(from: &Path, config: &Path, data_dir: &Path) -> Value {
    let bin = pbs_cloud_e2e::server::server_binary().expect("server binary");
    let out = std::process::Command::new(&bin)
        .arg("import")
        .arg("--from")
        .arg(from)
        .arg("--to-config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--store")
        .arg("store1")
        .output()
        .expect("run import");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "import failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("summary {stdout:?}: {e}"))
}

fn local_store_dir(server: &TestServer) -> PathBuf {
    server.data_dir().join("datastores").join("store1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_datastore_imports_into_s3_resumably_and_restores_identically() {
    let s3 = s3_env();
    let prefix = format!("t/import-{}", hex::encode(rand::random::<[u8; 6]>()));

    // A local datastore: two snapshots of one group, an encrypted one in a namespace,
    // a protected flag and group notes.
    let (mut local, client) = start_server().await;
    let store = local.store().to_string();
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path(), 41);
    let mut image = random_bytes(51, 3 * 4 * 1024 * 1024 + 17);
    let conf = b"imported = yes\n".to_vec();
    let img0 = image.clone();
    let first = Content {
        tree: Some(tree.path()),
        image: Some(&img0),
        conf: Some(&conf),
    };
    backup(&client, &store, None, "imp", T0, Crypt::None, &first)
        .await
        .unwrap();
    image[4 * 1024 * 1024 + 3] ^= 0x5a;
    let second = Content {
        tree: None,
        image: Some(&image),
        conf: None,
    };
    backup(&client, &store, None, "imp", T0 + 60, Crypt::None, &second)
        .await
        .unwrap();
    client
        .post(
            &format!("admin/datastore/{store}/namespace"),
            Some(&json!({ "name": "team" })),
        )
        .await
        .unwrap();
    let key = CryptConfig::random();
    let secret = random_bytes(52, 4 * 1024 * 1024 + 9);
    let enc = Content {
        tree: None,
        image: Some(&secret),
        conf: None,
    };
    backup(
        &client,
        &store,
        Some("team"),
        "enc",
        T0,
        Crypt::Encrypt(key.clone()),
        &enc,
    )
    .await
    .unwrap();
    client
        .put(
            &format!("admin/datastore/{store}/protected"),
            Some(
                &json!({"backup-type": "host", "backup-id": "imp", "backup-time": T0,
                         "protected": true}),
            ),
        )
        .await
        .unwrap();
    local.stop().await;
    let source = local_store_dir(&local);

    // First import.
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("server.toml");
    std::fs::write(&config, s3_config(&s3, work.path(), &prefix)).unwrap();
    let first_run = run_import(&source, &config, work.path());
    assert_eq!(first_run["snapshots-imported"], 3, "{first_run}");
    assert_eq!(first_run["chunks-present"], 0, "{first_run}");
    let chunks = first_run["chunks-copied"].as_u64().unwrap();
    assert!(chunks >= 5, "{first_run}");

    // "Interruption": a chunk and a manifest gone, and a snapshot half-imported (files
    // without manifest) - as if the first run had stopped midway.
    let target = s3.backend(&s3.bucket, &prefix).await;
    let listed = target.list(".chunks/", None).await.unwrap();
    let victim = listed
        .objects
        .iter()
        .find(|o| o.key.len() == ".chunks/".len() + 5 + 64)
        .expect("a chunk in the target")
        .key
        .clone();
    target.delete(&victim).await.unwrap();
    target
        .delete("host/imp/2026-01-01T00:01:00Z/index.json.blob")
        .await
        .unwrap();
    target
        .delete("ns/team/host/enc/2026-01-01T00:00:00Z/index.json.blob")
        .await
        .unwrap();
    target
        .delete("ns/team/host/enc/2026-01-01T00:00:00Z/disk.img.fidx")
        .await
        .unwrap();
    // the known-chunk index still lists the deleted chunk: drop it so the resumed import
    // rechecks the chunk store (a crashed import would not have persisted it either)
    target.delete_prefix(".chunks/.").await.unwrap();

    let second_run = run_import(&source, &config, work.path());
    assert_eq!(second_run["snapshots-imported"], 3, "{second_run}");
    assert_eq!(second_run["chunks-copied"], 1, "{second_run}");
    assert_eq!(
        second_run["chunks-present"].as_u64().unwrap(),
        chunks - 1,
        "{second_run}"
    );
    assert_eq!(second_run["files-copied"], 3, "{second_run}");
    assert_eq!(second_run["snapshots-failed"], 0, "{second_run}");

    // A server on the S3 datastore restores everything byte-identical.
    let mut server = TestServer::prepare().unwrap();
    server
        .set_config(&s3_config(&s3, server.data_dir(), &prefix))
        .unwrap();
    server.launch().await.expect("server on the imported store");
    let client = server.admin_client().await.unwrap();
    let snaps = snapshots(&client, "store1", None, "imp").await;
    assert_eq!(snaps.len(), 2);
    let protected: Vec<bool> = snaps
        .iter()
        .map(|s| s["protected"].as_bool().unwrap_or(false))
        .collect();
    assert!(protected.contains(&true), "{snaps:?}");
    let old = reader(&client, "store1", None, "imp", T0, None)
        .await
        .unwrap();
    assert_eq!(old.restore_archive("disk.img").await.unwrap(), img0);
    assert_eq!(old.restore_archive("app.conf").await.unwrap(), conf);
    assert_tree_restores(&old, tree.path()).await;
    drop(old);
    let new = reader(&client, "store1", None, "imp", T0 + 60, None)
        .await
        .unwrap();
    assert_eq!(new.restore_archive("disk.img").await.unwrap(), image);
    drop(new);
    let enc = reader(&client, "store1", Some("team"), "enc", T0, Some(key))
        .await
        .unwrap();
    assert_eq!(enc.restore_archive("disk.img").await.unwrap(), secret);
    drop(enc);

    server.stop().await;
    target.delete_prefix("").await.unwrap();
}
