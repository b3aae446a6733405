//! Retention locks (WORM) against the real S3 server's Object Lock bucket (`pbs-lock`, see
//! `e2e/s3/start-ceph-rgw.sh`) and on the local backend. Locks are short (1 day, 1-day
//! generations): compliance-locked test objects cannot be removed before then.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::lock::{LifecycleRules, LockMode, ObjectLock};
use crate::backend::s3::{test_env, S3Backend};
use crate::backend::{Backend, LocalBackend};
use crate::format::blob::encode_blob;
use crate::format::dynamic_index::{DynamicEntry, DynamicIndex};
use crate::format::manifest::Manifest;
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::format::{sha256, Digest};

use super::layout::{chunk_key, snapshot_prefix};
use super::retention::LockRule;
use super::*;

const AUTH: &str = "alice@pbs";
const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// An S3 backend on the Object Lock bucket (or, with `locked == false`, the plain one).
async fn s3(name: &str, locked: bool) -> Arc<S3Backend> {
    let mut settings = test_env::settings(name);
    if locked {
        settings.bucket = std::env::var("PBS_TEST_S3_LOCK_BUCKET").unwrap_or_else(|_| {
            panic!(
                "PBS_TEST_S3_LOCK_BUCKET is not set: WORM tests need an S3 bucket with Object \
                 Lock. Start one with `eval \"$(e2e/s3/start-ceph-rgw.sh)\"`"
            )
        });
    }
    Arc::new(
        S3Backend::connect(settings)
            .await
            .expect("connect to the test S3 server"),
    )
}

fn rule(mode: LockMode, days: u64) -> LockRule {
    LockRule {
        id: "test-lock".into(),
        ns: BackupNamespace::root(),
        groups: vec![],
        mode,
        days,
        legal_hold: false,
    }
}

fn vm(id: &str) -> BackupGroup {
    BackupGroup::new(BackupType::Vm, id).expect("group")
}

fn root() -> BackupNamespace {
    BackupNamespace::root()
}

/// A finished backup at `time` whose index references the chunks of `parts`.
async fn backup(
    ds: &Arc<Datastore>,
    group: &BackupGroup,
    time: i64,
    parts: &[String],
) -> BackupDir {
    let lease = ds
        .start_backup(&root(), group, time, AUTH)
        .await
        .expect("start");
    let mut entries = Vec::new();
    let mut end = 0;
    for p in parts {
        let digest = sha256(p.as_bytes());
        ds.insert_chunk(
            &digest,
            Bytes::from(encode_blob(p.as_bytes(), false)),
            false,
        )
        .await
        .expect("chunk");
        lease.register_chunk(&digest, p.len() as u64);
        end += p.len() as u64;
        entries.push(DynamicEntry { end, digest });
    }
    let index = DynamicIndex {
        uuid: [7; 16],
        ctime: time,
        entries,
    };
    lease
        .write_file("root.pxar.didx", Bytes::from(index.to_bytes()))
        .await
        .expect("index");
    let manifest = Manifest::new(group.ty.as_str(), &group.id, time).to_blob();
    lease.commit(Bytes::from(manifest)).await.expect("commit");
    BackupDir::new(group.clone(), time).expect("dir")
}

fn parts(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag} chunk {i}")).collect()
}

fn assert_locked(err: DatastoreError) {
    match err {
        DatastoreError::Locked(msg) => assert!(msg.contains("until"), "{msg}"),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worm_compliance_snapshot_survives_forget_prune_gc_and_direct_delete() {
    let raw = s3("worm-compliance", true).await;
    let ds = Datastore::open("worm", raw.clone()).await.expect("open");
    ds.retention()
        .set_locks(vec![rule(LockMode::Compliance, 1)], 1)
        .await
        .expect("Object Lock bucket accepts locks");
    let g = vm("100");
    let t = now();
    let dir = backup(&ds, &g, t, &parts("c", 3)).await;
    let info = ds
        .retention()
        .snapshot_lock(&root(), &dir)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.mode, "compliance");
    assert_eq!(info.enforced_by, "s3-object-lock");
    assert_eq!(info.retain_until % DAY, 0, "rounded to a 1-day generation");
    assert!(info.retain_until >= t + DAY);

    // Forget and prune (both remove snapshots through remove_snapshot).
    assert_locked(
        ds.tree()
            .remove_snapshot(&root(), &dir, false)
            .await
            .unwrap_err(),
    );
    assert_locked(
        ds.tree()
            .remove_snapshot(&root(), &dir, true)
            .await
            .unwrap_err(),
    );
    assert_locked(
        ds.tree()
            .remove_snapshot_bypassing_governance(&root(), &dir)
            .await
            .unwrap_err(),
    );
    let removed = ds.tree().remove_group(&root(), &g).await.unwrap();
    assert_eq!(removed.removed_snapshots, 0);
    ds.gc().set_cutoff(std::time::Duration::ZERO);
    let status = ds.gc().run(&|_| {}).await.unwrap();
    assert_eq!(status.removed_chunks, 0);
    assert!(ds.tree().snapshot_finished(&root(), &dir).await.unwrap());

    // The bucket itself refuses to delete any version, even with governance bypass.
    let ol: &dyn ObjectLock = raw.as_ref();
    let prefix = snapshot_prefix(&root(), &dir).unwrap();
    let mut versions = ol.list_versions(&prefix).await.unwrap();
    for p in parts("c", 3) {
        versions.extend(
            ol.list_versions(&chunk_key(&sha256(p.as_bytes())))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        versions.len(),
        2 + 3,
        "manifest, index and 3 chunks: {versions:?}"
    );
    for v in &versions {
        let r = ol.get_retention(&v.key).await.unwrap().expect("retention");
        assert_eq!(r.mode, LockMode::Compliance, "{}", v.key);
        assert!(r.retain_until >= info.retain_until, "{}", v.key);
        for bypass in [false, true] {
            let err = ol.delete_version(&v.key, &v.version_id, bypass).await;
            assert!(
                err.is_err(),
                "deleting {} (bypass {bypass}) must fail",
                v.key
            );
        }
    }
    assert_eq!(ol.list_versions(&prefix).await.unwrap().len(), 2);
    // Compliance cannot be shortened.
    let short = crate::backend::lock::Retention {
        mode: LockMode::Compliance,
        retain_until: info.retain_until - DAY,
    };
    assert!(ol
        .set_retention(&versions[0].key, short, true)
        .await
        .is_err());

    // Reopened, the server still knows the lock.
    ds.close().await.unwrap();
    let ds = Datastore::open("worm", raw.clone()).await.expect("reopen");
    assert_locked(
        ds.tree()
            .remove_snapshot(&root(), &dir, false)
            .await
            .unwrap_err(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worm_reused_chunks_stay_locked_as_long_as_every_snapshot() {
    let raw = s3("worm-reuse", true).await;
    let ds = Datastore::open("worm", raw.clone()).await.expect("open");
    ds.retention()
        .set_locks(vec![rule(LockMode::Governance, 1)], 1)
        .await
        .expect("locks");
    let g = vm("200");
    // Just after a day boundary, so that a backup a minute later stays in the generation.
    let base = now() - now().rem_euclid(DAY) + 1;
    let mut snaps: Vec<(BackupDir, Vec<Digest>)> = Vec::new();
    let mut lock_requests = Vec::new();
    for day in 0..4i64 {
        // Old chunks are reused; one new chunk per day.
        let mut list = parts("base", 6);
        list.push(format!("day {day}"));
        let before = ObjectLock::lock_request_count(raw.as_ref());
        let dir = backup(&ds, &g, base + day * DAY, &list).await;
        lock_requests.push(ObjectLock::lock_request_count(raw.as_ref()) - before);
        snaps.push((dir, list.iter().map(|p| sha256(p.as_bytes())).collect()));
    }
    // First day: 7 chunks + index + manifest; later days every chunk is extended to the next
    // 1-day generation (1-day locks): still one request per chunk, never more.
    assert_eq!(lock_requests[0], 7 + 2, "{lock_requests:?}");
    let ol: &dyn ObjectLock = raw.as_ref();
    for (dir, digests) in &snaps {
        let info = ds
            .retention()
            .snapshot_lock(&root(), dir)
            .await
            .unwrap()
            .unwrap();
        for d in digests {
            let r = ol
                .get_retention(&chunk_key(d))
                .await
                .unwrap()
                .expect("chunk retention");
            assert!(
                r.retain_until >= info.retain_until,
                "chunk of {dir} locked until {} < snapshot {}",
                r.retain_until,
                info.retain_until
            );
        }
    }
    // Same day again (a second backup within the generation): only its new chunk, index
    // and manifest need a request.
    let before = ObjectLock::lock_request_count(raw.as_ref());
    let mut list = parts("base", 6);
    list.push("late".to_string());
    backup(&ds, &g, base + 3 * DAY + 60, &list).await;
    assert_eq!(ObjectLock::lock_request_count(raw.as_ref()) - before, 1 + 2);

    // Reopened: the chunk records come back, merged into one object per generation, so the
    // next backup of the same generation again needs no request for its reused chunks.
    let recorded = ds.retention().status().locked_chunks;
    assert_eq!(recorded, 6 + 5);
    ds.close().await.unwrap();
    let ds = Datastore::open("worm", raw.clone()).await.expect("reopen");
    ds.retention()
        .set_locks(vec![rule(LockMode::Governance, 1)], 1)
        .await
        .expect("locks");
    assert_eq!(ds.retention().status().locked_chunks, recorded);
    let parts = raw.list(".retention/chunks/", None).await.unwrap().objects;
    let mut dirs: Vec<&str> = parts
        .iter()
        .filter_map(|o| o.key.rsplit_once('/').map(|(d, _)| d))
        .collect();
    let count = dirs.len();
    dirs.dedup();
    assert_eq!(
        dirs.len(),
        count,
        "one part per generation after open: {parts:?}"
    );
    let before = ObjectLock::lock_request_count(raw.as_ref());
    list.push("after reopen".to_string());
    backup(&ds, &g, base + 3 * DAY + 120, &list).await;
    assert_eq!(ObjectLock::lock_request_count(raw.as_ref()) - before, 1 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worm_governance_bypass_only_through_admin_path() {
    let raw = s3("worm-governance", true).await;
    let ds = Datastore::open("worm", raw.clone()).await.expect("open");
    ds.retention()
        .set_locks(vec![rule(LockMode::Governance, 1)], 1)
        .await
        .expect("locks");
    let g = vm("300");
    let dir = backup(&ds, &g, now(), &parts("g", 2)).await;
    assert_locked(
        ds.tree()
            .remove_snapshot(&root(), &dir, false)
            .await
            .unwrap_err(),
    );
    assert_locked(
        ds.tree()
            .remove_snapshot(&root(), &dir, true)
            .await
            .unwrap_err(),
    );
    // Without the bypass header the bucket refuses the version delete too.
    let ol: &dyn ObjectLock = raw.as_ref();
    let prefix = snapshot_prefix(&root(), &dir).unwrap();
    let versions = ol.list_versions(&prefix).await.unwrap();
    assert!(!versions.is_empty());
    assert!(ol
        .delete_version(&versions[0].key, &versions[0].version_id, false)
        .await
        .is_err());

    // A legal hold stops even the bypass, in the server and in the bucket.
    ds.retention()
        .set_legal_hold(&root(), &dir, true)
        .await
        .unwrap();
    assert!(ol.get_legal_hold(&versions[0].key).await.unwrap());
    assert!(ol
        .delete_version(&versions[0].key, &versions[0].version_id, true)
        .await
        .is_err());
    assert_locked(
        ds.tree()
            .remove_snapshot_bypassing_governance(&root(), &dir)
            .await
            .unwrap_err(),
    );
    ds.retention()
        .set_legal_hold(&root(), &dir, false)
        .await
        .unwrap();
    assert!(!ol.get_legal_hold(&versions[0].key).await.unwrap());

    ds.tree()
        .remove_snapshot_bypassing_governance(&root(), &dir)
        .await
        .expect("admin bypass");
    assert!(!ds.tree().snapshot_exists(&root(), &dir).await.unwrap());
    assert!(ol.list_versions(&prefix).await.unwrap().is_empty());
    assert!(ds
        .retention()
        .snapshot_lock(&root(), &dir)
        .await
        .unwrap()
        .is_none());
    // Its chunks are still locked: GC keeps them.
    ds.gc().set_cutoff(std::time::Duration::ZERO);
    let status = ds.gc().run(&|_| {}).await.unwrap();
    assert_eq!(status.removed_chunks, 0);
    for p in parts("g", 2) {
        assert!(raw
            .head(&chunk_key(&sha256(p.as_bytes())))
            .await
            .unwrap()
            .is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worm_lock_on_bucket_without_object_lock_is_refused() {
    let raw = s3("worm-plain", false).await;
    let ds = Datastore::open("plain", raw).await.expect("open");
    let err = ds
        .retention()
        .set_locks(vec![rule(LockMode::Compliance, 1)], 1)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Object Lock"), "{msg}");
    assert!(msg.contains("test-lock"), "{msg}");
    assert_eq!(ds.retention().status().error.as_deref(), Some(msg.as_str()));
    assert!(ds.retention().status().rules.is_empty());
    // Without rules the plain bucket is fine.
    ds.retention()
        .set_locks(vec![], 10)
        .await
        .expect("no locks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worm_local_backend_refuses_forget_and_reports_server_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let raw = Arc::new(LocalBackend::open(&tmp.path().join("s")).expect("local"));
    let ds = Datastore::open("local", raw.clone()).await.expect("open");
    ds.retention()
        .set_locks(vec![rule(LockMode::Compliance, 30)], 10)
        .await
        .expect("the server enforces locks on the local backend");
    let g = vm("400");
    let dir = backup(&ds, &g, now(), &parts("l", 2)).await;
    let info = ds
        .retention()
        .snapshot_lock(&root(), &dir)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.enforced_by, "server");
    assert_eq!(ds.retention().status().enforced_by, "server");
    assert_eq!(info.retain_until % (10 * DAY), 0);
    assert_locked(
        ds.tree()
            .remove_snapshot(&root(), &dir, false)
            .await
            .unwrap_err(),
    );
    // The record is not a file of the snapshot directory.
    let listed = raw
        .list(&snapshot_prefix(&root(), &dir).unwrap(), None)
        .await
        .unwrap();
    assert!(listed.objects.iter().all(|o| !o.key.contains("lock")));
    ds.close().await.unwrap();
    let ds = Datastore::open("local", raw).await.expect("reopen");
    assert_locked(
        ds.tree()
            .remove_snapshot(&root(), &dir, false)
            .await
            .unwrap_err(),
    );
    // A simulated clock past the date lets it go.
    ds.retention().set_clock(Some(info.retain_until + 1));
    ds.tree()
        .remove_snapshot(&root(), &dir, false)
        .await
        .expect("lock passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worm_lifecycle_refuses_archive_classes_and_installs_expiration() {
    let a = s3("worm-lifecycle-a", true).await;
    let b = s3("worm-lifecycle-b", true).await;
    let glacier = LifecycleRules {
        transition_after_days: Some(30),
        transition_storage_class: Some("GLACIER".into()),
        ..LifecycleRules::default()
    };
    let ds = Datastore::open("lc", a.clone()).await.expect("open");
    let msg = ds
        .retention()
        .install_lifecycle(&glacier)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("restore"), "{msg}");
    let deep = LifecycleRules {
        transition_storage_class: Some("DEEP_ARCHIVE".into()),
        ..glacier.clone()
    };
    assert!(ObjectLock::install_lifecycle(a.as_ref(), &deep)
        .await
        .is_err());

    let expire = LifecycleRules {
        expire_noncurrent_after_days: Some(3),
        ..LifecycleRules::default()
    };
    ds.retention()
        .install_lifecycle(&expire)
        .await
        .expect("install");
    ds.retention()
        .install_lifecycle(&expire)
        .await
        .expect("install again");
    let other = LifecycleRules {
        expire_noncurrent_after_days: Some(7),
        ..LifecycleRules::default()
    };
    ObjectLock::install_lifecycle(b.as_ref(), &other)
        .await
        .expect("other prefix");
    assert_eq!(ObjectLock::lifecycle(a.as_ref()).await.unwrap(), expire);
    assert_eq!(ObjectLock::lifecycle(b.as_ref()).await.unwrap(), other);
    // Remove both again (the bucket is shared by every test run).
    for backend in [&a, &b] {
        ObjectLock::install_lifecycle(backend.as_ref(), &LifecycleRules::default())
            .await
            .expect("remove");
    }
    assert!(ObjectLock::lifecycle(a.as_ref()).await.unwrap().is_empty());
}
