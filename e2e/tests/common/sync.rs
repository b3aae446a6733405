//! Helpers of the sync tests (`sync_pull`, `sync_push`, `sync_onboard`): servers with the
//! sync user, jobs run to their end, listings, restores, and the `prod` fixture on a source.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use pbs_cloud_e2e::fault_proxy::{Fault, FaultProxy};
use pbs_cloud_e2e::sync_pair::{self, with_user};
use pbs_cloud_e2e::{Crypt, PbsClient, TestServer};
use serde_json::{json, Value};

use super::*;

pub const SYNC_USER: &str = "sync@pbs";
pub const SYNC_PASSWORD: &str = "sync-secret-1";
pub const OWNER: &str = "syncer@pbs";
/// Fixed-index chunk size of the test client's images.
pub const IMAGE_CHUNK: usize = 4 << 20;

/// Server A of the pull tests: a read-only sync user.
pub async fn source() -> (TestServer, PbsClient) {
    with_user(SYNC_USER, SYNC_PASSWORD, "DatastoreReader")
        .await
        .expect("start pbs-cloud-server (build it with `cargo build -p pbs-cloud-server`)")
}

pub async fn create_ns(client: &PbsClient, name: &str, parent: Option<&str>) {
    let mut params = json!({ "name": name });
    if let Some(parent) = parent {
        params["parent"] = parent.into();
    }
    client
        .post("admin/datastore/store1/namespace", Some(&params))
        .await
        .unwrap();
}

/// Runs a sync job now and follows it to its end; (status, log, seconds).
pub async fn run_job(client: &PbsClient, id: &str) -> (String, Vec<String>, f64) {
    let run = sync_pair::run_job(client, id, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("sync job {id}: {e}"));
    assert!(
        run.upid
            .contains(":syncjob:site\\x2da\\x3astore1\\x3astore1\\x3a"),
        "{}",
        run.upid
    );
    (run.exitstatus, run.log, run.elapsed.as_secs_f64())
}

/// Starts sync job `id` through `client` and cuts every connection through `proxy` once
/// `target` holds `stored` chunk files; the job's UPID.
pub async fn run_and_cut(
    client: &PbsClient,
    id: &str,
    proxy: &FaultProxy,
    target: &TestServer,
    stored: usize,
) -> String {
    let upid = client
        .post(&format!("admin/sync/{id}/run"), None)
        .await
        .unwrap();
    let upid = upid.as_str().unwrap().to_string();
    for _ in 0..600 {
        if sync_pair::chunk_files(target) >= stored {
            proxy.set(Fault::Cut(None));
            return upid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "job {id} never stored {stored} chunks: {:#?}",
        sync_pair::task_log(client, &upid).await
    );
}

/// Chunks A served to B's pulls since the last call.
pub async fn served_since(a: &PbsClient, seen: &mut BTreeSet<String>) -> usize {
    sync_pair::chunks_served(a, SYNC_USER, seen).await.unwrap()
}

pub async fn forget(client: &PbsClient, ns: &str, id: &str, time: i64) {
    client
        .delete(
            "admin/datastore/store1/snapshots",
            Some(&json!({ "ns": ns, "backup-type": "host", "backup-id": id, "backup-time": time })),
        )
        .await
        .unwrap();
}

pub fn times(list: &[Value]) -> Vec<i64> {
    list.iter()
        .map(|s| s["backup-time"].as_i64().unwrap())
        .collect()
}

pub async fn assert_restores(
    client: &PbsClient,
    ns: Option<&str>,
    id: &str,
    time: i64,
    tree: Option<&Path>,
    image: &[u8],
) {
    let session = reader(client, "store1", ns, id, time, None)
        .await
        .unwrap_or_else(|e| panic!("reader on {ns:?} host/{id}/{time}: {e}"));
    let restored = session.restore_archive("disk.img").await.unwrap();
    assert!(
        restored == image,
        "{ns:?} host/{id}/{time}: disk.img differs"
    );
    if let Some(tree) = tree {
        assert_tree_restores(&session, tree).await;
    }
}

/// `prod` and `prod/child` on `client`'s server and `prod/host/web` at T0 and T0+1h, each a
/// pxar tree, a 3-chunk image and a conf; the tree's directory and the image.
pub async fn prod_web_fixture(client: &PbsClient, seed: u64) -> (tempfile::TempDir, Vec<u8>) {
    create_ns(client, "prod", None).await;
    create_ns(client, "child", Some("prod")).await;
    let tree_dir = tempfile::tempdir().unwrap();
    make_tree(tree_dir.path(), seed);
    let image = random_bytes(seed + 1, 3 * IMAGE_CHUNK);
    for (i, time) in [T0, T0 + 3600].into_iter().enumerate() {
        let conf = format!("web {i}\n");
        backup_web_with(client, tree_dir.path(), &image, conf.as_bytes(), time).await;
    }
    (tree_dir, image)
}

/// One more `prod/host/web` snapshot (conf `web 1`).
pub async fn backup_web(client: &PbsClient, tree: &Path, image: &[u8], time: i64) {
    backup_web_with(client, tree, image, b"web 1\n", time).await;
}

async fn backup_web_with(client: &PbsClient, tree: &Path, image: &[u8], conf: &[u8], time: i64) {
    let content = Content {
        tree: Some(tree),
        image: Some(image),
        conf: Some(conf),
    };
    backup(
        client,
        "store1",
        Some("prod"),
        "web",
        time,
        Crypt::None,
        &content,
    )
    .await
    .unwrap();
}
