//! Killing the server in the middle of garbage collection: every finished snapshot stays
//! restorable after the restart, and the next GC completes and removes the garbage.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use pbs_cloud_e2e::{Crypt, PbsClient};
use pbs_cloud_server::datastore::layout::chunk_key;
use pbs_cloud_server::format::blob::encode_blob;
use pbs_cloud_server::format::sha256;
use serde_json::json;

/// Synthetic garbage chunks: enough that the sweep takes a moment.
const GARBAGE: usize = 100_000;
const TWO_DAYS: Duration = Duration::from_secs(2 * 24 * 3600);

fn store_root(server: &pbs_cloud_e2e::TestServer) -> PathBuf {
    server.data_dir().join("datastores").join(server.store())
}

fn garbage_payload(i: usize) -> Vec<u8> {
    format!("gc-kill garbage chunk {i}").into_bytes()
}

/// Valid chunk blobs nobody references, written straight into the chunk store.
fn write_garbage(root: &Path) {
    for i in 0..GARBAGE {
        let data = garbage_payload(i);
        let path = root.join(chunk_key(&sha256(&data)));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, encode_blob(&data, false)).unwrap();
    }
}

fn garbage_left(root: &Path) -> usize {
    (0..GARBAGE)
        .filter(|&i| root.join(chunk_key(&sha256(&garbage_payload(i)))).exists())
        .count()
}

/// Every chunk file gets a modified time two days back: older than GC's 24 h 5 min cutoff,
/// so only marking protects the referenced ones.
fn age_all_chunks(root: &Path) {
    let old = SystemTime::now() - TWO_DAYS;
    for dir in std::fs::read_dir(root.join(".chunks")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let path = f.unwrap().path();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(old).unwrap();
        }
    }
}

async fn start_gc(client: &PbsClient, store: &str) -> String {
    client
        .post(&format!("admin/datastore/{store}/gc"), None)
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_gc_loses_no_snapshot_and_the_next_gc_completes() {
    let (mut server, client) = start_server().await;
    let store = server.store().to_string();
    let root = store_root(&server);

    let good = make_good_snapshot(&client, &store).await;
    let image = random_bytes(91, 3 * 1024 * 1024 + 17);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: None,
    };
    backup(&client, &store, None, "second", T0, Crypt::None, &content)
        .await
        .unwrap();
    let doomed = random_bytes(92, 2 * 1024 * 1024);
    let doomed_content = Content {
        tree: None,
        image: Some(&doomed),
        conf: None,
    };
    backup(
        &client,
        &store,
        None,
        "doomed",
        T0,
        Crypt::None,
        &doomed_content,
    )
    .await
    .unwrap();
    client
        .delete(
            &format!("admin/datastore/{store}/snapshots"),
            Some(&json!({"backup-type": "host", "backup-id": "doomed", "backup-time": T0})),
        )
        .await
        .unwrap();
    let root2 = root.clone();
    tokio::task::spawn_blocking(move || {
        write_garbage(&root2);
        age_all_chunks(&root2);
    })
    .await
    .unwrap();

    // GC through the API; SIGKILL as soon as the task log shows the sweep phase.
    let upid = start_gc(&client, &store).await;
    let mut killed = false;
    for _ in 0..6000 {
        let log = task_log(&client, &upid).await;
        if log.iter().any(|l| l.contains("Start GC phase2")) {
            server.stop().await; // SIGKILL
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(killed, "GC never reached phase 2");
    let left = garbage_left(&root);
    eprintln!("killed during the sweep; {left} of {GARBAGE} garbage chunks left");
    assert!(
        left > 0,
        "the kill came after GC had finished; make the store bigger"
    );

    server.restart().await.unwrap();
    let client = server.admin_client().await.unwrap();
    assert_good_snapshot_intact(&client, &store, &good).await;
    let session = reader(&client, &store, None, "second", T0, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image);
    drop(session);

    // The next GC completes, removes the rest of the garbage, and keeps every snapshot.
    let upid = start_gc(&client, &store).await;
    let (status, log) = wait_task_long(&client, &upid).await;
    assert_eq!(status["exitstatus"], "OK", "{log:#?}");
    assert_eq!(garbage_left(&root), 0);
    let removed: u64 = log
        .iter()
        .find_map(|l| l.split("Removed chunks: ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 'Removed chunks' line: {log:#?}"));
    assert!(removed >= left as u64, "{log:#?}");
    for needle in [
        "Start GC phase1 (mark used chunks)",
        "Original data usage:",
        "On-Disk chunks:",
        "Deduplication factor:",
        "Pending removals:",
    ] {
        assert!(log.iter().any(|l| l.contains(needle)), "{needle}: {log:#?}");
    }
    assert_good_snapshot_intact(&client, &store, &good).await;
    let session = reader(&client, &store, None, "second", T0, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image);

    // `status` shows the statistics of that run.
    let ds_status = client
        .get(&format!("admin/datastore/{store}/status"), None)
        .await
        .unwrap();
    let gc = &ds_status["gc-status"];
    assert_eq!(gc["upid"], upid.as_str());
    assert_eq!(gc["removed-chunks"], removed);
    assert_eq!(gc["pending-chunks"], 0);
    assert!(gc["disk-chunks"].as_u64().unwrap() > 0);
    assert!(gc["index-data-bytes"].as_u64().unwrap() > gc["disk-bytes"].as_u64().unwrap() / 2);
    for key in [
        "mark-duration-ms",
        "sweep-duration-ms",
        "index-file-count",
        "still-bad",
    ] {
        assert!(gc.get(key).is_some(), "{key} in {gc}");
    }
}
