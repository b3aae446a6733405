//! Retention locks end to end on the Ceph RGW that `e2e/run-tests.sh` starts: a server
//! configured with a `[[retention_lock]]` on the plain bucket refuses to start with a clear
//! error; on the Object Lock bucket (`PBS_TEST_S3_LOCK_BUCKET`) a stock-client backup is
//! locked in the bucket, forget is refused naming the date, and the lifecycle rule of
//! `[datastore.lifecycle]` is installed for the datastore's prefix.

mod common;

use std::process::Stdio;

use common::*;
use pbs_cloud_e2e::{Crypt, TestServer};
use pbs_cloud_server::backend::lock::{LockMode, ObjectLock};
use pbs_cloud_server::backend::Backend;
use serde_json::json;

fn lock_bucket() -> String {
    std::env::var("PBS_TEST_S3_LOCK_BUCKET").unwrap_or_else(|_| {
        panic!(
            "PBS_TEST_S3_LOCK_BUCKET is not set: WORM tests need an S3 bucket with Object Lock. \
             Start one with `eval \"$(e2e/s3/start-ceph-rgw.sh)\"`"
        )
    })
}

/// Config of datastore `store1` in `bucket` under `prefix`, with `extra` TOML appended.
fn config(server: &TestServer, s3: &S3Env, bucket: &str, prefix: &str, extra: &str) -> String {
    let table = s3.datastore_table(server.data_dir(), bucket, prefix);
    format!("[[datastore]]\nname = \"store1\"\nlock_generation_days = 1\n{table}{extra}")
}

const LOCK: &str = r#"
[[retention_lock]]
id = "worm-e2e"
store = "store1"
mode = "compliance"
days = 1
"#;

#[test]
fn worm_lock_on_plain_bucket_stops_the_start_with_a_clear_error() {
    let s3 = s3_env();
    let server = TestServer::prepare().unwrap();
    let text = config(&server, &s3, &s3.bucket, &unique_prefix("worm-plain"), LOCK);
    let path = server.data_dir().join("server.toml");
    std::fs::write(&path, text).unwrap();
    let bin = pbs_cloud_e2e::server::server_binary().unwrap();
    let out = std::process::Command::new(bin)
        .arg("serve")
        .arg("--data-dir")
        .arg(server.data_dir())
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the server must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("worm-e2e") && stderr.contains("does not have Object Lock enabled"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worm_backup_on_lock_bucket_is_locked_and_forget_is_refused() {
    let s3 = s3_env();
    let bucket = lock_bucket();
    let prefix = unique_prefix("worm-e2e");
    let mut server = TestServer::prepare().unwrap();
    let lifecycle = "[datastore.lifecycle]\nexpire_noncurrent_after_days = 2\n";
    let text = config(
        &server,
        &s3,
        &bucket,
        &prefix,
        &format!("{lifecycle}{LOCK}"),
    );
    server.set_config(&text).unwrap();
    server
        .launch()
        .await
        .expect("server on the Object Lock bucket");
    let client = server.admin_client().await.unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let image = random_bytes(77, 2 * 4 * 1024 * 1024 + 3);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: None,
    };
    backup(&client, "store1", None, "worm", now, Crypt::None, &content)
        .await
        .unwrap();

    let snap = json!({"backup-type": "host", "backup-id": "worm", "backup-time": now});
    let err = client
        .delete("admin/datastore/store1/snapshots", Some(&snap))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("retention-locked") && err.contains("until"),
        "{err}"
    );
    let status = client
        .get(
            "admin/datastore/store1/status",
            Some(&json!({"verbose": true})),
        )
        .await
        .unwrap();
    assert_eq!(
        status["retention"]["enforced-by"], "s3-object-lock",
        "{status}"
    );
    assert_eq!(
        status["retention"]["rules"],
        json!(["worm-e2e"]),
        "{status}"
    );

    // In the bucket: every object of the snapshot and every chunk is compliance-locked.
    let raw = s3.backend(&bucket, &prefix).await;
    let listed = raw.list("", None).await.unwrap();
    let locked: Vec<_> = listed
        .objects
        .iter()
        .filter(|o| {
            let snapshot_file = o.key.starts_with("host/worm/") && o.key.split('/').count() == 4;
            let chunk =
                o.key.starts_with(".chunks/") && !o.key[".chunks/".len()..].starts_with('.');
            snapshot_file || chunk
        })
        .collect();
    assert!(locked.len() >= 4, "{listed:?}");
    for obj in locked {
        let r = raw.get_retention(&obj.key).await.unwrap();
        let r = r.unwrap_or_else(|| panic!("{} has no retention", obj.key));
        assert_eq!(r.mode, LockMode::Compliance, "{}", obj.key);
        assert!(r.retain_until >= now + 86_400, "{}", obj.key);
    }
    let rules = ObjectLock::lifecycle(&raw).await.unwrap();
    assert_eq!(rules.expire_noncurrent_after_days, Some(2));
    // Leave the shared bucket's lifecycle as it was.
    ObjectLock::install_lifecycle(&raw, &Default::default())
        .await
        .unwrap();
    server.stop().await;
}
