//! Verify through the REST API with the real server: the result shows as `verification` in
//! the snapshot list, a flipped byte in a chunk fails the snapshot and moves the chunk to its
//! `.bad` name, and the next backup uploads the chunk again.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use pbs_cloud_e2e::{Crypt, PbsClient};
use serde_json::{json, Value};

async fn verify(client: &PbsClient, params: Value) -> (String, Value, Vec<String>) {
    let upid = client
        .post("admin/datastore/store1/verify", Some(&params))
        .await
        .unwrap();
    let upid = upid.as_str().unwrap().to_string();
    let (status, log) = wait_task(client, &upid).await;
    (upid, status, log)
}

async fn verification(client: &PbsClient, time: i64) -> Value {
    snapshots(client, "store1", None, "ver")
        .await
        .into_iter()
        .find(|s| s["backup-time"] == time)
        .map(|s| s["verification"].clone())
        .unwrap_or(Value::Null)
}

/// Chunk files (64 hex names) under `.chunks`, sorted.
fn chunk_files(store: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(store.join(".chunks")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.len() == 64 + suffix.len() && name.ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_via_rest_sets_state_and_bad_chunks_are_uploaded_again() {
    let (server, client) = start_server().await;
    let store = server.data_dir().join("datastores").join("store1");
    let image = random_bytes(11, 3 * 1024 * 1024);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: Some(b"verify me\n"),
    };
    backup(&client, "store1", None, "ver", T0, Crypt::None, &content)
        .await
        .unwrap();

    let (upid, status, log) = verify(&client, json!({})).await;
    assert_eq!(status["exitstatus"], "OK", "{log:?}");
    assert_eq!(status["type"], "verify");
    assert_eq!(
        verification(&client, T0).await,
        json!({"state": "ok", "upid": upid})
    );
    // Verified snapshots are skipped by default (ignore-verified).
    let (_, _, log) = verify(&client, json!({})).await;
    assert!(log.iter().any(|l| l.contains("SKIPPED")), "{log:?}");

    // Flip a byte in one chunk file: a deep verify of the snapshot fails and moves it aside.
    let chunks = chunk_files(&store, "");
    assert!(!chunks.is_empty());
    let victim = chunks[0].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let params = json!({
        "backup-type": "host", "backup-id": "ver", "backup-time": T0,
        "ignore-verified": false,
    });
    let (failed_upid, status, log) = verify(&client, params).await;
    assert!(
        status["exitstatus"].as_str().unwrap().starts_with("ERROR"),
        "{status}"
    );
    assert_eq!(status["type"], "verify_snapshot");
    assert!(log.iter().any(|l| l.contains("is corrupt")), "{log:?}");
    assert_eq!(
        verification(&client, T0).await,
        json!({"state": "failed", "upid": failed_upid})
    );
    assert!(!victim.exists(), "corrupt chunk moved away");
    let bad = victim.with_file_name(format!(
        "{}.0.bad",
        victim.file_name().unwrap().to_string_lossy()
    ));
    assert!(bad.exists(), "{} missing", bad.display());

    // The next backup of the same data stores the chunk again and verifies fine.
    backup(
        &client,
        "store1",
        None,
        "ver",
        T0 + 60,
        Crypt::None,
        &content,
    )
    .await
    .unwrap();
    assert!(victim.exists(), "the next backup re-uploads the bad chunk");
    let (_, status, log) = verify(&client, json!({})).await;
    assert_eq!(status["exitstatus"], "OK", "{log:?}");
    assert_eq!(verification(&client, T0 + 60).await["state"], "ok");
    let history = client
        .get(
            "admin/datastore/store1/job-history",
            Some(&json!({"kind": "verify"})),
        )
        .await
        .unwrap();
    let runs = history.as_array().unwrap();
    assert_eq!(runs.len(), 4, "{history}");
    // Runs finishing within one second have no defined order: find the failed one.
    let failed: Vec<&Value> = runs
        .iter()
        .filter(|r| r["outcome"].as_str().unwrap().contains("failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{history}");
    assert_eq!(failed[0]["upid"], failed_upid.as_str());
    assert_eq!(failed[0]["job-id"], "manual");
    assert_eq!(
        failed[0]["summary"]["chunks-corrupt"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
