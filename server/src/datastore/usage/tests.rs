use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::backend::{Backend, LocalBackend, PutOptions};
use crate::format::blob::encode_blob;
use crate::format::dynamic_index::{DynamicEntry, DynamicIndex};
use crate::format::manifest::{CryptMode, FileInfo, Manifest};
use crate::format::names::{BackupGroup, BackupNamespace, BackupType};
use crate::format::{sha256, Digest};

use super::super::layout::ChunkKey;
use super::super::{Datastore, DatastoreError};
use super::*;

const T0: i64 = 1_700_000_000;

async fn open(root: &std::path::Path) -> Arc<Datastore> {
    let backend = Arc::new(LocalBackend::open(root).expect("backend"));
    Datastore::open("test", backend).await.expect("open")
}

/// A committed backup of `vm/<id>` at `time` with one new chunk of `data` and a manifest
/// listing one archive of `logical` bytes.
async fn backup(ds: &Arc<Datastore>, id: &str, time: i64, data: &[u8], logical: u64) -> u64 {
    let group = BackupGroup::new(BackupType::Vm, id).expect("group");
    let ns = BackupNamespace::root();
    let lease = ds
        .start_backup(&ns, &group, time, "a@pbs")
        .await
        .expect("start");
    let raw = Bytes::from(encode_blob(data, false));
    let size = raw.len() as u64;
    ds.insert_chunk(&sha256(data), raw, false)
        .await
        .expect("chunk");
    let index = DynamicIndex {
        uuid: [1; 16],
        ctime: time,
        entries: vec![DynamicEntry {
            end: data.len() as u64,
            digest: sha256(data),
        }],
    };
    lease
        .write_file("root.pxar.didx", Bytes::from(index.to_bytes()))
        .await
        .expect("index");
    let mut m = Manifest::new("vm", id, time);
    m.files.push(FileInfo {
        filename: "disk.img.fidx".into(),
        crypt_mode: CryptMode::None,
        size: logical,
        csum: "00".repeat(32),
    });
    lease
        .commit(Bytes::from(m.to_blob()))
        .await
        .expect("commit");
    size
}

#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl UsageObserver for Events {
    fn backup_finished(&self, tenant: &str, store: &str, snapshot: &str, logical: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("finished {tenant} {store} {snapshot} {logical}"));
    }
    fn snapshot_removed(&self, tenant: &str, store: &str, snapshot: &str, logical: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("removed {tenant} {store} {snapshot} {logical}"));
    }
    fn quota_exceeded(&self, tenant: &str, store: &str, used: u64, limit: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("quota {tenant} {store} {used} {limit}"));
    }
}

#[tokio::test]
async fn counters_follow_backups_and_removals_and_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ds = open(&root).await;
    assert!(
        ds.usage().needs_rescan(),
        "a new store has no persisted counters"
    );
    ds.usage_rescan().await.expect("scan");
    let a = backup(&ds, "100", T0, b"chunk one", 1000).await;
    let b = backup(&ds, "100", T0 + 60, b"chunk two", 3000).await;
    let c = backup(&ds, "200", T0, b"chunk three", 50).await;
    let want = UsageCounters {
        logical_bytes: 4050,
        physical_bytes: a + b + c,
        chunks: 3,
        snapshots: 3,
        groups: 2,
    };
    assert_eq!(ds.usage().counters(), want);
    assert_eq!(ds.usage_rescan().await.unwrap(), want, "scan agrees");

    let group = BackupGroup::new(BackupType::Vm, "200").unwrap();
    let dir200 = crate::format::names::BackupDir { group, time: T0 };
    ds.tree()
        .remove_snapshot(&BackupNamespace::root(), &dir200, false)
        .await
        .unwrap();
    let after = UsageCounters {
        logical_bytes: 4000,
        snapshots: 2,
        groups: 1,
        ..want
    };
    assert_eq!(ds.usage().counters(), after);

    ds.close().await.unwrap();
    drop(ds);
    let ds = open(&root).await;
    assert!(
        !ds.usage().needs_rescan(),
        "clean shutdown: counters trusted"
    );
    assert_eq!(ds.usage().counters(), after);
    // The reopened store marked its counters unclean: a crash now forces a rescan.
    let backend = LocalBackend::open(&root).unwrap();
    let raw = backend.get(USAGE_OBJECT).await.unwrap();
    let p: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(p["clean"], false);
}

/// Counters written before S3 request counts were persisted still load as trusted.
#[tokio::test]
async fn counters_without_request_counts_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ds = open(&root).await;
    ds.usage_rescan().await.expect("scan");
    backup(&ds, "100", T0, b"older format", 12).await;
    let usage = ds.usage().counters();
    ds.close().await.unwrap();
    drop(ds);
    let backend = LocalBackend::open(&root).unwrap();
    let raw = backend.get(USAGE_OBJECT).await.unwrap();
    let mut p: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert!(p["s3-requests"].is_object() && p["clean"] == true, "{p}");
    p.as_object_mut().unwrap().remove("s3-requests");
    let old = Bytes::from(serde_json::to_vec(&p).unwrap());
    backend
        .put(USAGE_OBJECT, old, PutOptions::default())
        .await
        .unwrap();
    let ds = open(&root).await;
    assert!(!ds.usage().needs_rescan());
    assert_eq!(ds.usage().counters(), usage);
}

#[tokio::test]
async fn rescan_repairs_counters_after_an_unclean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ds = open(&root).await;
    let a = backup(&ds, "100", T0, b"some data", 77).await;
    ds.usage().flush(false).await.unwrap();
    let b = backup(&ds, "100", T0 + 1, b"more data", 23).await;
    // No close: the second backup's counters were never persisted.
    drop(ds);
    let ds = open(&root).await;
    assert!(ds.usage().needs_rescan());
    let got = ds.usage_rescan().await.unwrap();
    assert_eq!(got.physical_bytes, a + b);
    assert_eq!(got.logical_bytes, 100);
    assert_eq!((got.chunks, got.snapshots, got.groups), (2, 2, 1));
}

#[tokio::test]
async fn tenant_quota_refuses_new_chunks_and_new_backups_and_tells_once() {
    let dir = tempfile::tempdir().unwrap();
    let ds = open(&dir.path().join("store")).await;
    let meter = TenantMeter::new("acme");
    let events = Arc::new(Events::default());
    meter.set_observer(events.clone());
    ds.usage().attach_meter(meter.clone());
    let first = backup(&ds, "100", T0, b"first backup", 10).await;
    meter.set_quota(Some(first + 5), Some(50));
    assert!(meter.warning());
    let group = BackupGroup::new(BackupType::Vm, "100").unwrap();
    let ns = BackupNamespace::root();
    let lease = ds.start_backup(&ns, &group, T0 + 1, "a@pbs").await.unwrap();
    let raw = Bytes::from(encode_blob(b"second backup data", false));
    let err = ds
        .insert_chunk(&sha256(b"second backup data"), raw.clone(), false)
        .await
        .unwrap_err();
    assert!(matches!(err, DatastoreError::QuotaExceeded(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("'acme'") && msg.contains(&format!("{first} bytes used")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("limit of {} bytes", first + 5)),
        "{msg}"
    );
    // A chunk already stored costs nothing and is accepted.
    ds.insert_chunk(
        &sha256(b"first backup"),
        Bytes::from(encode_blob(b"first backup", false)),
        false,
    )
    .await
    .expect("duplicate chunk within quota");
    drop(lease);
    ds.insert_chunk(&sha256(b"second backup data"), raw, false)
        .await
        .unwrap_err();
    assert_eq!(
        events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("quota"))
            .count(),
        1,
        "one event per crossing: {:?}",
        events.0.lock().unwrap()
    );
    meter.set_quota(Some(first), None);
    let err = ds.check_quota_for_backup().await.unwrap_err();
    assert!(err.to_string().contains("new backup refused"), "{err}");
    meter.set_quota(None, None);
    ds.check_quota_for_backup().await.unwrap();
    assert!(events.0.lock().unwrap()[0].starts_with("finished acme test vm/100/"));
}

#[tokio::test]
async fn gc_reconciles_counters_with_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ds = open(&root).await;
    ds.usage_rescan().await.unwrap();
    let kept = backup(&ds, "100", T0, b"kept chunk", 10).await;
    // An orphan chunk (its backup never finished) that GC will sweep ...
    let orphan = Bytes::from(encode_blob(b"orphan chunk", false));
    ds.insert_chunk(&sha256(b"orphan chunk"), orphan, false)
        .await
        .unwrap();
    // ... and a chunk written behind the counters' back (e.g. by hand or by PBS).
    let stray = encode_blob(b"stray chunk data", false);
    let hex = crate::format::digest_to_hex(&sha256(b"stray chunk data"));
    let path = root.join(".chunks").join(&hex[..4]);
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join(&hex), &stray).unwrap();
    ds.gc().set_cutoff(std::time::Duration::ZERO);
    // Only chunks older than the cutoff go; wait for the mtime second to pass.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let status = ds.gc().run(&|_| {}).await.expect("gc");
    assert_eq!(status.removed_chunks, 2, "{status:?}");
    let u = ds.usage().counters();
    assert_eq!(u.chunks, 1, "orphan and stray swept: {u:?}");
    assert_eq!(u.physical_bytes, kept);
    assert_eq!((u.snapshots, u.logical_bytes), (1, 10));
}

/// GC's recount spans its whole sweep, and verify may move a corrupt chunk aside meanwhile:
/// the moved chunk must not be counted even though the listing still saw it.
#[tokio::test]
async fn a_chunk_moved_aside_during_a_recount_is_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ds = open(&root).await;
    ds.usage_rescan().await.expect("scan");
    backup(&ds, "100", T0, b"chunk one", 10).await;
    let kept = backup(&ds, "200", T0, b"chunk two", 20).await;

    ds.usage.scan_begin();
    let listed = ds.scan_chunks().await;
    assert_eq!(listed.as_ref().map(|c| c.chunks).ok(), Some(2));
    let moved = ds.mark_chunk_bad(&sha256(b"chunk one")).await.unwrap();
    assert!(moved.is_some_and(|key| key.ends_with(".0.bad")));
    let got = super::recount::finish_scan(ds.tree(), ds.usage(), listed)
        .await
        .unwrap();

    assert_eq!((got.chunks, got.physical_bytes), (1, kept));
    assert_eq!(
        ds.usage_rescan().await.unwrap(),
        got,
        "a fresh recount agrees"
    );
}

/// Scans (a recount, GC's sweep) close shard by shard: a chunk stored after its shard's listing (before or
/// after the shard is closed) counts once, a chunk moved aside after it does not count.
#[tokio::test]
async fn a_sharded_recount_counts_changes_around_each_shard_close() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ds = open(&root).await;
    ds.usage_rescan().await.expect("scan");
    backup(&ds, "100", T0, b"chunk one", 10).await;
    backup(&ds, "200", T0, b"chunk two", 20).await;

    ds.usage.scan_begin();
    let listed = whole_listing(&ds).await;
    // stored after the listing, logged while its shard is still open
    backup(&ds, "300", T0, b"chunk three", 30).await;
    for shard in 0..CHUNK_SHARDS {
        let in_shard = listed
            .iter()
            .filter(|(d, _)| chunk_shard(d) == shard)
            .map(|(d, size)| (*d, *size))
            .collect();
        ds.usage.scan_close_shard(shard, in_shard);
    }
    // after every shard closed: one more stored, one listed chunk moved aside
    backup(&ds, "400", T0, b"chunk four", 40).await;
    let moved = ds.mark_chunk_bad(&sha256(b"chunk one")).await.unwrap();
    assert!(moved.is_some());
    let tally = ChunkTally {
        physical: listed.values().sum(),
        chunks: listed.len() as u64,
    };
    let got = super::recount::finish_scan(ds.tree(), ds.usage(), Ok(tally))
        .await
        .unwrap();

    assert_eq!(got.chunks, 3, "two, three and four: {got:?}");
    assert_eq!(
        ds.usage_rescan().await.unwrap(),
        got,
        "a fresh recount agrees"
    );
}

/// Each write of the counters takes the day's sample (its last figures); the samples survive a
/// restart; counters that await their first scan take none.
#[tokio::test]
async fn daily_samples_follow_the_counters_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ds = open(&root).await;
    ds.usage().flush(true).await.unwrap();
    assert!(
        ds.usage().history().samples().is_empty(),
        "counters awaiting their first scan make no sample"
    );
    ds.usage_rescan().await.expect("scan");
    let first_day = history::day_of(chrono::Utc::now().timestamp());
    let a = backup(&ds, "100", T0, b"chunk one", 1000).await;
    ds.usage().flush(false).await.unwrap();
    let figures = |s: &history::DailySample| {
        (
            s.physical_bytes,
            s.logical_bytes,
            s.chunks,
            s.snapshots,
            s.s3_requests,
        )
    };
    let samples = ds.usage().history().samples().to_vec();
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(figures(&samples[0]), (a, 1000, 1, 1, 0));

    let b = backup(&ds, "200", T0, b"chunk two", 50).await;
    ds.close().await.unwrap();
    drop(ds);
    let last_day = history::day_of(chrono::Utc::now().timestamp());
    let ds = open(&root).await;
    let samples = ds.usage().history().samples().to_vec();
    // One sample per day: a second one only if the day changed during the test.
    let days = if last_day == first_day { 1 } else { 2 };
    assert_eq!(samples.len(), days, "{samples:?}");
    let newest = samples.last().unwrap();
    assert_eq!(newest.day, last_day);
    assert_eq!(figures(newest), (a + b, 1050, 2, 2, 0), "read back");
}

/// The sizes of every chunk, from one listing of the whole chunk store.
async fn whole_listing(ds: &Datastore) -> HashMap<Digest, u64> {
    let mut sizes = HashMap::new();
    for shard in 0..CHUNK_SHARDS {
        for (obj, chunk) in ds.chunks.list_shard(shard).await.expect("listing") {
            if let ChunkKey::Chunk(digest) = chunk {
                sizes.insert(digest, obj.size);
            }
        }
    }
    sizes
}
