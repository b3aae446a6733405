//! Group and namespace moves on an S3 datastore (the Ceph RGW that `e2e/run-tests.sh` starts):
//! the moved snapshots restore byte-identical and no object is left at the old keys; on the
//! Object Lock bucket a retention-locked snapshot is not moved, and the refusal names the lock.

mod common;

use common::moves::*;
use common::*;
use pbs_cloud_e2e::{Crypt, TestServer};
use serde_json::json;

/// A server whose datastore `store1` lives in `bucket` under `prefix`, plus `extra` config.
async fn s3_server(s3: &S3Env, bucket: &str, prefix: &str, extra: &str) -> TestServer {
    let mut server = TestServer::prepare().unwrap();
    let table = s3.datastore_table(server.data_dir(), bucket, prefix);
    let config =
        format!("[[datastore]]\nname = \"store1\"\nlock_generation_days = 1\n{table}{extra}");
    server.set_config(&config).unwrap();
    server.launch().await.expect("server with an S3 datastore");
    server
}

/// Every key of the bucket below `prefix/` (read-only listing).
async fn keys_below(s3: &S3Env, prefix: &str) -> Vec<String> {
    s3.objects_below(prefix)
        .await
        .into_iter()
        .map(|(key, _)| key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_on_s3_restore_byte_identical_and_leave_nothing_behind() {
    let s3 = s3_env();
    let prefix = unique_prefix("moves");
    let server = s3_server(&s3, &s3.bucket, &prefix, "").await;
    let client = server.admin_client().await.unwrap();
    create_ns(&client, "store1", "", "a").await;
    create_ns(&client, "store1", "", "b").await;
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path(), 61);
    let image = random_bytes(62, 4 * 1024 * 1024 + 5);
    let content = Content {
        tree: Some(tree.path()),
        image: Some(&image),
        conf: Some(b"s3 = true\n"),
    };
    backup(
        &client,
        "store1",
        Some("a"),
        "mv",
        T0,
        Crypt::None,
        &content,
    )
    .await
    .unwrap();
    client
        .put(
            "admin/datastore/store1/protected",
            Some(
                &json!({"backup-type": "host", "backup-id": "mv", "backup-time": T0,
                         "ns": "a", "protected": true}),
            ),
        )
        .await
        .unwrap();

    let upid = move_group(&client, "store1", "mv", Some("a"), "b", None)
        .await
        .unwrap();
    let (status, log) = follow_task(&client, &upid).await;
    assert_eq!(status["exitstatus"], "OK", "{log:?}");
    let upid = move_namespace(&client, "store1", "b", "c/d", json!({}))
        .await
        .unwrap_err();
    assert_eq!(upid.status(), Some(404), "parent c does not exist: {upid}");
    create_ns(&client, "store1", "", "c").await;
    let upid = move_namespace(&client, "store1", "b", "c/d", json!({}))
        .await
        .unwrap();
    let (status, log) = follow_task(&client, &upid).await;
    assert_eq!(status["exitstatus"], "OK", "{log:?}");

    let keys = keys_below(&s3, &prefix).await;
    let rel: Vec<&str> = keys
        .iter()
        .map(|k| k.strip_prefix(&format!("{prefix}/")).unwrap())
        .filter(|k| !k.starts_with('.'))
        .collect();
    assert!(
        rel.iter()
            .all(|k| !k.starts_with("ns/a/host") && !k.starts_with("ns/b")),
        "objects left at the old keys: {rel:?}"
    );
    assert!(
        rel.contains(&"ns/c/ns/d/host/mv/2026-01-01T00:00:00Z/.protected"),
        "{rel:?}"
    );
    let session = reader(&client, "store1", Some("c/d"), "mv", T0, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image);
    assert_tree_restores(&session, tree.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_locked_snapshot_on_object_lock_bucket_is_not_moved() {
    let s3 = s3_env();
    let bucket = std::env::var("PBS_TEST_S3_LOCK_BUCKET").unwrap_or_else(|_| {
        panic!(
            "PBS_TEST_S3_LOCK_BUCKET is not set: this test needs an S3 bucket with Object Lock. \
             Start one with `eval \"$(e2e/s3/start-ceph-rgw.sh)\"`"
        )
    });
    let prefix = unique_prefix("moves-worm");
    let lock = r#"
[[retention_lock]]
id = "move-worm"
store = "store1"
ns = "worm"
mode = "governance"
days = 1
"#;
    let server = s3_server(&s3, &bucket, &prefix, lock).await;
    let client = server.admin_client().await.unwrap();
    create_ns(&client, "store1", "", "worm").await;
    create_ns(&client, "store1", "", "free").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let content = Content {
        tree: None,
        image: Some(&random_bytes(63, 1024 * 1024)),
        conf: None,
    };
    backup(
        &client,
        "store1",
        Some("worm"),
        "locked",
        now,
        Crypt::None,
        &content,
    )
    .await
    .unwrap();

    let err = move_group(&client, "store1", "locked", Some("worm"), "free", None)
        .await
        .unwrap_err();
    let body = err.body().unwrap_or_default().to_string();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        body.contains("retention-locked")
            && body.contains("s3-object-lock")
            && body.contains("until"),
        "{body}"
    );
    let err = move_namespace(&client, "store1", "worm", "moved", json!({}))
        .await
        .unwrap_err();
    assert!(
        err.body().unwrap_or_default().contains("retention-locked"),
        "{err}"
    );
    assert_eq!(
        group_times(&client, "store1", Some("worm"), "locked").await,
        vec![now]
    );
}
