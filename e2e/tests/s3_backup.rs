//! The stock-client flow with the datastore in S3 (the Ceph RGW that `e2e/run-tests.sh`
//! starts): backup, restore, incremental, encrypted, restart (the known-chunk set mapped back
//! from the data dir); every object under the configured prefix. Faults injected by a proxy:
//! transient 5xx, cut connections and unanswered requests (timeouts) are retried; a
//! persistent failure fails the backup cleanly while the server stays up.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use pbs_cloud_e2e::fault_proxy::{Fault, FaultProxy};
use pbs_cloud_e2e::{Crypt, CryptConfig, TestServer};
use pbs_cloud_server::backend::Backend;

/// The config of a server whose datastore `store1` lives in the test bucket under `prefix`,
/// reached at `endpoint`.
fn s3_config(server: &TestServer, s3: &S3Env, endpoint: &str, prefix: &str, extra: &str) -> String {
    let table = s3.datastore_table_via(server.data_dir(), endpoint, &s3.bucket, prefix);
    format!("[[datastore]]\nname = \"store1\"\n{table}{extra}")
}

/// A server whose datastore `store1` lives in the test bucket under `prefix`.
async fn s3_server(s3: &S3Env, endpoint: &str, prefix: &str, extra: &str) -> TestServer {
    let mut server = TestServer::prepare().unwrap();
    let config = s3_config(&server, s3, endpoint, prefix, extra);
    server.set_config(&config).unwrap();
    server.launch().await.expect("server with an S3 datastore");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_client_flow_on_s3_keeps_every_object_under_the_prefix() {
    let s3 = s3_env();
    let prefix = unique_prefix("e2e-flow");
    let mut server = s3_server(&s3, &s3.endpoint, &prefix, "").await;
    let client = server.admin_client().await.unwrap();
    let store = server.store().to_string();
    assert_eq!(store, "store1");

    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path(), 31);
    let mut image = random_bytes(32, 6 * 4 * 1024 * 1024 + 5);
    let conf = b"name = s3\n".to_vec();
    let content = Content {
        tree: Some(tree.path()),
        image: Some(&image),
        conf: Some(&conf),
    };
    backup(&client, &store, None, "s3", T0, Crypt::None, &content)
        .await
        .unwrap();
    let session = reader(&client, &store, None, "s3", T0, None).await.unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image);
    assert_tree_restores(&session, tree.path()).await;
    drop(session);

    // Incremental: one changed 4 MiB block is the only image chunk uploaded.
    image[2 * 4 * 1024 * 1024 + 9] ^= 0x55;
    let content = Content {
        tree: Some(tree.path()),
        image: Some(&image),
        conf: Some(&conf),
    };
    let second = backup(
        &client,
        &store,
        None,
        "s3",
        T0 + 3600,
        Crypt::None,
        &content,
    )
    .await
    .unwrap();
    let img = second
        .archives
        .iter()
        .find(|a| a.name == "disk.img.fidx")
        .unwrap();
    assert!(img.used_previous);
    assert_eq!(img.chunks.chunks_uploaded, 1, "{img:?}");

    // Encrypted round trip.
    let key = CryptConfig::random();
    let secret_image = random_bytes(33, 4 * 1024 * 1024 + 1);
    let enc = Content {
        tree: Some(tree.path()),
        image: Some(&secret_image),
        conf: None,
    };
    backup(
        &client,
        &store,
        None,
        "enc",
        T0,
        Crypt::Encrypt(key.clone()),
        &enc,
    )
    .await
    .unwrap();
    let session = reader(&client, &store, None, "enc", T0, Some(key.clone()))
        .await
        .unwrap();
    assert_eq!(
        session.restore_archive("disk.img").await.unwrap(),
        secret_image
    );
    drop(session);

    // A restarted server (same data dir) finds everything in the bucket.
    server.restart().await.unwrap();
    let client = server.admin_client().await.unwrap();
    assert_eq!(snapshots(&client, &store, None, "s3").await.len(), 2);
    let old = reader(&client, &store, None, "s3", T0, None).await.unwrap();
    let old_image = old.restore_archive("disk.img").await.unwrap();
    assert_eq!(old_image.len(), image.len());
    assert_ne!(old_image, image);
    assert_tree_restores(&old, tree.path()).await;

    // Every object of the bucket is under a test prefix, and ours hold the datastore.
    let lister = s3.backend(&s3.bucket, "").await;
    let all = lister.list("", None).await.unwrap();
    let outside: Vec<_> = all
        .objects
        .iter()
        .filter(|o| !o.key.starts_with("t/"))
        .map(|o| o.key.clone())
        .collect();
    assert!(
        outside.is_empty(),
        "objects outside the prefix: {outside:?}"
    );
    let ours = lister.list(&format!("{prefix}/"), None).await.unwrap();
    let keys: Vec<_> = ours.objects.iter().map(|o| o.key.as_str()).collect();
    for expect in [
        ".chunks/",
        "host/s3/2026-01-01T00:00:00Z/index.json.blob",
        "host/s3/2026-01-01T01:00:00Z/disk.img.fidx",
        "host/enc/owner",
        ".lease",
    ] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("{prefix}/{expect}"))),
            "no {expect} under {prefix}: {keys:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_server_on_the_same_prefix_is_refused() {
    let s3 = s3_env();
    let prefix = unique_prefix("e2e-lease");
    let _first = s3_server(&s3, &s3.endpoint, &prefix, "").await;
    let mut second = TestServer::prepare().unwrap();
    let config = s3_config(&second, &s3, &s3.endpoint, &prefix, "");
    second.set_config(&config).unwrap();
    let err = second.launch().await.unwrap_err().to_string();
    assert!(
        err.contains("exited"),
        "the second server must not start: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_faults_are_retried_or_fail_the_backup_cleanly() {
    let s3 = s3_env();
    let upstream: SocketAddr = s3
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("PBS_TEST_S3_ENDPOINT is http://IP:PORT");
    let proxy = Arc::new(FaultProxy::start(upstream).await.unwrap());
    let prefix = unique_prefix("e2e-faults");
    let server = s3_server(
        &s3,
        &proxy.endpoint(),
        &prefix,
        "request_timeout_secs = 3\nmax_retries = 4",
    )
    .await;
    let client = server.admin_client().await.unwrap();
    let store = server.store().to_string();
    let data = |seed: u64| random_bytes(seed, 2 * 4 * 1024 * 1024 + 3);
    let image_only = |image: &[u8]| -> Vec<u8> { image.to_vec() };
    let run = |id: &'static str, time: i64, image: Vec<u8>| {
        let client = &client;
        let store = store.clone();
        async move {
            let content = Content {
                tree: None,
                image: Some(&image),
                conf: Some(b"c"),
            };
            backup(client, &store, None, id, time, Crypt::None, &content).await
        }
    };

    let first = data(41);
    run("f", T0, image_only(&first)).await.unwrap();

    // Transient 503s and cut connections: retried, the backups succeed.
    proxy.set(Fault::Unavailable(Some(3)));
    run("f", T0 + 10, data(42)).await.unwrap();
    proxy.set(Fault::Cut(Some(3)));
    run("f", T0 + 20, data(43)).await.unwrap();
    assert!(proxy.faults_injected() >= 6, "{}", proxy.faults_injected());
    // A request that never gets an answer times out (3 s) and is retried.
    proxy.set(Fault::Stall(Some(1)));
    run("f", T0 + 25, data(46)).await.unwrap();
    assert!(proxy.faults_injected() >= 7, "{}", proxy.faults_injected());

    // A persistent outage fails the backup; no snapshot appears.
    proxy.set(Fault::Unavailable(None));
    let err = run("f", T0 + 30, data(44)).await;
    assert!(err.is_err(), "backup during an S3 outage must fail");
    proxy.set(Fault::Pass);

    // The server is still up, the failed snapshot is absent, earlier ones restore.
    let client = server.admin_client().await.unwrap();
    let snaps = snapshots(&client, &store, None, "f").await;
    let times: Vec<_> = snaps
        .iter()
        .map(|s| s["backup-time"].as_i64().unwrap())
        .collect();
    assert_eq!(times, [T0, T0 + 10, T0 + 20, T0 + 25], "{snaps:?}");
    let session = reader(&client, &store, None, "f", T0, None).await.unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), first);
    drop(session);
    // And the store takes new backups again.
    run("f", T0 + 40, data(45)).await.unwrap();
}

/// The known-chunk set survives a restart as its local copy under the data dir
/// (`known-chunks/`): after the restart, a backup of the same data into a new group costs no
/// request per chunk (the server's own S3 PUT count), because every digest is known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_chunks_come_back_from_the_data_dir_after_a_restart() {
    const CHUNKS: usize = 24;
    let s3 = s3_env();
    let prefix = unique_prefix("e2e-known");
    let mut server = s3_server(&s3, &s3.endpoint, &prefix, "").await;
    let client = server.admin_client().await.unwrap();
    let store = server.store().to_string();
    let image = random_bytes(33, CHUNKS * 4 * 1024 * 1024);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: None,
    };
    backup(&client, &store, None, "first", T0, Crypt::None, &content)
        .await
        .unwrap();

    server.restart().await.unwrap();
    let cache = server.data_dir().join("known-chunks");
    let copies = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("{}: {e}", cache.display()))
        .count();
    assert!(
        copies > 0,
        "no local copy of the known set in {}",
        cache.display()
    );
    let client = server.admin_client().await.unwrap();
    let puts = |status: &serde_json::Value| status["s3-statistics"]["put"].as_u64().unwrap();
    let path = format!("admin/datastore/{store}/status");
    let before = client.get(&path, None).await.unwrap();
    let second = backup(&client, &store, None, "second", T0, Crypt::None, &content)
        .await
        .unwrap();
    let after = client.get(&path, None).await.unwrap();
    let image_stats = &second
        .archives
        .iter()
        .find(|a| a.name == "disk.img.fidx")
        .unwrap()
        .chunks;
    assert_eq!(
        image_stats.chunks_uploaded, CHUNKS,
        "a new group has no previous snapshot: the client sends every chunk"
    );
    let spent = puts(&after) - puts(&before);
    assert!(
        spent < (CHUNKS / 2) as u64,
        "{spent} PUTs for a backup of {CHUNKS} known chunks (index, manifest, owner and \
         journal need a few; a PUT per chunk means the known set was lost)"
    );
}
