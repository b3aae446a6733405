//! Killing the server in the middle of garbage collection, on the local backend and on S3:
//! every finished snapshot stays restorable after the restart, and the next GC completes and
//! removes the garbage. One scenario ([`killed_gc_scenario`]) runs on both; [`ChunkStore`]
//! is what differs (where garbage is written, how chunks get older than GC's cutoff).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use pbs_cloud_e2e::{Crypt, PbsClient, TestServer};
use pbs_cloud_server::backend::s3::{ConditionalWrites, S3Credentials, S3Settings};
use pbs_cloud_server::backend::{Backend, PutOptions, S3Backend};
use pbs_cloud_server::datastore::layout::chunk_key;
use pbs_cloud_server::format::blob::encode_blob;
use pbs_cloud_server::format::sha256;
use serde_json::json;

const TWO_DAYS: Duration = Duration::from_secs(2 * 24 * 3600);
/// GC cutoff of the S3 datastore (`gc_atime_cutoff_minutes = 1`, PBS's smallest): S3 keeps
/// the upload time of an object, which a test cannot move back.
const S3_CUTOFF: Duration = Duration::from_secs(60);

fn garbage_payload(i: usize) -> Vec<u8> {
    format!("gc-kill garbage chunk {i}").into_bytes()
}

fn garbage_key(i: usize) -> String {
    chunk_key(&sha256(&garbage_payload(i)))
}

/// Where the datastore keeps its chunks, seen from the test.
enum ChunkStore {
    /// The chunk directory of a local datastore.
    Local(PathBuf),
    /// The datastore's prefix in the test bucket; `written` is when the last garbage object
    /// was stored.
    S3 {
        backend: Arc<S3Backend>,
        written: Option<std::time::Instant>,
    },
}

impl ChunkStore {
    /// Valid chunk blobs nobody references, written straight into the chunk store.
    async fn write_garbage(&mut self, count: usize) {
        match self {
            ChunkStore::Local(root) => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || {
                    for i in 0..count {
                        let data = garbage_payload(i);
                        let path = root.join(garbage_key(i));
                        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                        std::fs::write(&path, encode_blob(&data, false)).unwrap();
                    }
                })
                .await
                .unwrap();
            }
            ChunkStore::S3 { backend, written } => {
                let backend = backend.clone();
                futures::stream::iter(0..count)
                    .map(|i| {
                        let backend = backend.clone();
                        async move {
                            let blob = Bytes::from(encode_blob(&garbage_payload(i), false));
                            backend
                                .put(&garbage_key(i), blob, PutOptions::default())
                                .await
                                .unwrap_or_else(|e| panic!("garbage chunk {i}: {e}"));
                        }
                    })
                    .buffer_unordered(32)
                    .collect::<()>()
                    .await;
                *written = Some(std::time::Instant::now());
            }
        }
    }

    /// Makes every chunk older than GC's cutoff, so only marking protects the referenced ones:
    /// local chunk files get a modified time two days back; on S3 the test waits until the
    /// datastore's 1-minute cutoff has passed since the last upload.
    async fn age_chunks(&self) {
        match self {
            ChunkStore::Local(root) => {
                let chunks = root.join(".chunks");
                tokio::task::spawn_blocking(move || {
                    let old = SystemTime::now() - TWO_DAYS;
                    for dir in std::fs::read_dir(chunks).unwrap() {
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
                })
                .await
                .unwrap();
            }
            ChunkStore::S3 { written, .. } => {
                let since = written.expect("garbage written before aging").elapsed();
                // Object times have one-second resolution: two seconds of slack.
                let wait = (S3_CUTOFF + Duration::from_secs(2)).saturating_sub(since);
                eprintln!("waiting {wait:?} for the S3 chunks to pass the GC cutoff");
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// How many of the `count` garbage chunks still exist.
    async fn garbage_left(&self, count: usize) -> usize {
        match self {
            ChunkStore::Local(root) => (0..count)
                .filter(|&i| root.join(garbage_key(i)).exists())
                .count(),
            ChunkStore::S3 { backend, .. } => {
                let listed = backend.list(".chunks/", None).await.expect("list chunks");
                let keys: std::collections::HashSet<String> =
                    listed.objects.into_iter().map(|o| o.key).collect();
                (0..count)
                    .filter(|&i| keys.contains(&garbage_key(i)))
                    .count()
            }
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

/// Two finished snapshots and one deleted, `garbage` unreferenced chunks (more than one
/// group of deletes), everything older than the cutoff; GC through the API on a server whose
/// fault injection stops it before its second group of deletes; SIGKILL once it says it
/// stopped there; restart; both snapshots restore byte-identical; the next GC completes,
/// removes the rest of the garbage and reports its statistics.
async fn killed_gc_scenario(mut server: TestServer, mut chunks: ChunkStore, garbage: usize) {
    let client = server.admin_client().await.expect("admin login");
    let store = server.store().to_string();

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
    chunks.write_garbage(garbage).await;
    chunks.age_chunks().await;

    // GC through the API on a server that stops before its second group of deletes; SIGKILL
    // once it says so.
    server
        .shutdown()
        .await
        .expect("clean stop before the GC run");
    server.set_env("PBS_CLOUD_FAULT_PAUSE", "gc-delete-batch");
    server.set_env("PBS_CLOUD_FAULT_HIT", "2");
    server.launch().await.unwrap();
    let client = server.admin_client().await.unwrap();
    let upid = start_gc(&client, &store).await;
    if let Err(e) = server
        .wait_for_output("FAULT-PAUSE gc-delete-batch", Duration::from_secs(600))
        .await
    {
        panic!("{e}; GC log: {:#?}", task_log(&client, &upid).await);
    }
    server.stop().await; // SIGKILL
    let left = chunks.garbage_left(garbage).await;
    eprintln!("killed during the sweep; {left} of {garbage} garbage chunks left");
    assert!(
        left > 0 && left < garbage,
        "the kill comes after the first group of deletes and before the second"
    );

    server.clear_env();
    server.launch().await.unwrap();
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
    assert_eq!(chunks.garbage_left(garbage).await, 0);
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
        .get(
            &format!("admin/datastore/{store}/status"),
            Some(&json!({"verbose": true})),
        )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_gc_loses_no_snapshot_and_the_next_gc_completes() {
    let (server, client) = start_server().await;
    drop(client);
    let root = server.data_dir().join("datastores").join(server.store());
    // Two groups of deletes (4000 keys each): killed before the second.
    killed_gc_scenario(server, ChunkStore::Local(root), 6_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_gc_on_s3_loses_no_snapshot_and_the_next_gc_completes() {
    let s3 = s3_env();
    let prefix = format!("t/gc-kill-{}", hex::encode(rand::random::<[u8; 6]>()));
    let mut server = TestServer::prepare().unwrap();
    let secret = server.data_dir().join("s3-secret");
    std::fs::write(&secret, format!("{}\n", s3.secret_key)).unwrap();
    let config = format!(
        "[[datastore]]\nname = \"store1\"\ngc_atime_cutoff_minutes = {}\n\
         [datastore.s3]\nbucket = \"{}\"\nprefix = \"{prefix}\"\nendpoint = \"{}\"\n\
         region = \"us-east-1\"\npath_style = true\naccess_key_id = \"{}\"\n\
         secret_access_key_file = \"{}\"\n",
        S3_CUTOFF.as_secs() / 60,
        s3.bucket,
        s3.endpoint,
        s3.access_key,
        secret.display(),
    );
    server.set_config(&config).unwrap();
    server.launch().await.expect("server with an S3 datastore");

    let mut settings = S3Settings::new(
        &s3.bucket,
        &prefix,
        S3Credentials::Static {
            access_key_id: s3.access_key.clone(),
            secret_access_key: s3.secret_key.clone(),
        },
    );
    settings.endpoint = Some(s3.endpoint.clone());
    settings.path_style = true;
    settings.conditional_writes = ConditionalWrites::On;
    let backend = Arc::new(S3Backend::connect(settings).await.expect("S3 test client"));
    let chunks = ChunkStore::S3 {
        backend: backend.clone(),
        written: None,
    };
    // Deletes go 4000 keys at a time: killed after the first group was deleted.
    killed_gc_scenario(server, chunks, 6_000).await;
    backend
        .delete_prefix("")
        .await
        .expect("remove the test prefix");
}
