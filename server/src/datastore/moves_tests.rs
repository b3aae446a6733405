//! Group and namespace moves on the local backend: what moves, what is refused (and that a
//! refusal leaves everything as it was), protection and usage counters.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::lock::LockMode;
use crate::backend::LocalBackend;
use crate::format::blob::encode_blob;
use crate::format::dynamic_index::{DynamicEntry, DynamicIndex};
use crate::format::manifest::Manifest;
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::format::sha256;

use super::retention::LockRule;
use super::*;

const AUTH: &str = "alice@pbs";

fn ns(s: &str) -> BackupNamespace {
    BackupNamespace::parse(s).unwrap()
}

fn host(id: &str) -> BackupGroup {
    BackupGroup::new(BackupType::Host, id).unwrap()
}

async fn store() -> (tempfile::TempDir, Arc<Datastore>) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(LocalBackend::open(&dir.path().join("s")).unwrap());
    let ds = Datastore::open("s", backend).await.unwrap();
    (dir, ds)
}

/// A finished snapshot with one chunk, owned by `owner`.
async fn backup(
    ds: &Arc<Datastore>,
    at: &BackupNamespace,
    group: &BackupGroup,
    time: i64,
    owner: &str,
) {
    let lease = ds.start_backup(at, group, time, owner).await.unwrap();
    let data = format!("{group} {time}");
    let digest = sha256(data.as_bytes());
    ds.insert_chunk(
        &digest,
        Bytes::from(encode_blob(data.as_bytes(), false)),
        false,
    )
    .await
    .unwrap();
    lease.register_chunk(&digest, data.len() as u64);
    let index = DynamicIndex {
        uuid: [1; 16],
        ctime: time,
        entries: vec![DynamicEntry {
            end: data.len() as u64,
            digest,
        }],
    };
    lease
        .write_file("root.pxar.didx", Bytes::from(index.to_bytes()))
        .await
        .unwrap();
    let manifest = Manifest::new("host", &group.id, time).to_blob();
    lease.commit(Bytes::from(manifest)).await.unwrap();
}

async fn times(ds: &Datastore, at: &BackupNamespace, group: &BackupGroup) -> Vec<i64> {
    ds.tree()
        .list_snapshots(at, group)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.dir.time)
        .collect()
}

fn lines() -> (
    Arc<std::sync::Mutex<Vec<String>>>,
    impl Fn(String) + Send + Sync,
) {
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = {
        let out = out.clone();
        move |l: String| out.lock().unwrap().push(l)
    };
    (out, sink)
}

#[tokio::test]
async fn group_moves_with_protection_owner_and_usage() {
    let (_dir, ds) = store().await;
    ds.tree()
        .create_namespace(&BackupNamespace::root(), "a")
        .await
        .unwrap();
    ds.tree()
        .create_namespace(&BackupNamespace::root(), "b")
        .await
        .unwrap();
    let g = host("mv");
    backup(&ds, &ns("a"), &g, 1000, AUTH).await;
    backup(&ds, &ns("a"), &g, 2000, AUTH).await;
    let first = BackupDir::new(g.clone(), 1000).unwrap();
    ds.tree()
        .set_protected(&ns("a"), &first, true)
        .await
        .unwrap();
    let before = ds.usage().counters();

    let (log, sink) = lines();
    let moved = ds
        .tree()
        .move_group(&ns("a"), &g, &ns("b"), true, &sink)
        .await
        .unwrap();
    assert_eq!(moved, 2);
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "moving group 'host/mv' from 'a' to 'b'".to_string(),
            "removing backup group \"ns/a/host/mv\"".to_string(),
        ]
    );
    assert!(!ds.tree().group_exists(&ns("a"), &g).await.unwrap());
    assert_eq!(times(&ds, &ns("b"), &g).await, vec![1000, 2000]);
    assert!(
        ds.tree().is_protected(&ns("b"), &first).await.unwrap(),
        "protection moves along"
    );
    assert_eq!(
        ds.tree()
            .group_owner(&ns("b"), &g)
            .await
            .unwrap()
            .as_deref(),
        Some(AUTH)
    );
    ds.tree().load_manifest(&ns("b"), &first).await.unwrap();
    let after = ds.usage().counters();
    assert_eq!(after.snapshots, before.snapshots);
    assert_eq!(after.logical_bytes, before.logical_bytes);
}

#[tokio::test]
async fn merges_need_the_same_owner_and_distinct_times() {
    let (_dir, ds) = store().await;
    for n in ["a", "b"] {
        ds.tree()
            .create_namespace(&BackupNamespace::root(), n)
            .await
            .unwrap();
    }
    let g = host("m");
    backup(&ds, &ns("a"), &g, 1000, AUTH).await;
    backup(&ds, &ns("b"), &g, 1000, AUTH).await;
    backup(&ds, &ns("b"), &g, 3000, AUTH).await;
    let (_, sink) = lines();

    let err = ds
        .tree()
        .move_group(&ns("a"), &g, &ns("b"), false, &sink)
        .await
        .unwrap_err();
    assert!(matches!(err, DatastoreError::AlreadyExists(_)), "{err}");
    assert!(
        err.to_string().contains("merging was not requested"),
        "{err}"
    );
    let err = ds
        .tree()
        .move_group(&ns("a"), &g, &ns("b"), true, &sink)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exists in both"), "{err}");
    assert_eq!(
        times(&ds, &ns("a"), &g).await,
        vec![1000],
        "refusal keeps the source"
    );
    assert_eq!(times(&ds, &ns("b"), &g).await, vec![1000, 3000]);

    // Different times merge; the target keeps its owner.
    ds.tree()
        .remove_snapshot(&ns("b"), &BackupDir::new(g.clone(), 1000).unwrap(), false)
        .await
        .unwrap();
    ds.tree()
        .move_group(&ns("a"), &g, &ns("b"), true, &sink)
        .await
        .unwrap();
    assert_eq!(times(&ds, &ns("b"), &g).await, vec![1000, 3000]);

    // Another owner's group is not merged into.
    let o = host("other");
    backup(&ds, &ns("a"), &o, 1000, AUTH).await;
    backup(&ds, &ns("b"), &o, 2000, "bob@pbs").await;
    let err = ds
        .tree()
        .move_group(&ns("a"), &o, &ns("b"), true, &sink)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("owners differ"), "{err}");
    assert_eq!(times(&ds, &ns("a"), &o).await, vec![1000]);
}

#[tokio::test]
async fn running_backup_and_missing_target_are_refused() {
    let (_dir, ds) = store().await;
    ds.tree()
        .create_namespace(&BackupNamespace::root(), "a")
        .await
        .unwrap();
    let g = host("busy");
    backup(&ds, &BackupNamespace::root(), &g, 1000, AUTH).await;
    let (_, sink) = lines();
    let err = ds
        .tree()
        .move_group(&BackupNamespace::root(), &g, &ns("nope"), true, &sink)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");

    let lease = ds
        .start_backup(&BackupNamespace::root(), &g, 2000, AUTH)
        .await
        .unwrap();
    let err = ds
        .tree()
        .check_move_group(&BackupNamespace::root(), &g, &ns("a"), true)
        .await
        .unwrap_err();
    assert!(matches!(err, DatastoreError::Busy(_)), "{err}");
    let err = ds
        .tree()
        .move_group(&BackupNamespace::root(), &g, &ns("a"), true, &sink)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("a backup of the group is running"),
        "{err}"
    );
    // Dropping the lease removes the unfinished snapshot, then frees the group.
    drop(lease);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match ds
            .tree()
            .move_group(&BackupNamespace::root(), &g, &ns("a"), true, &sink)
            .await
        {
            Ok(_) => break,
            Err(DatastoreError::Busy(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("move after the backup ended: {e}"),
        }
    }
    assert_eq!(times(&ds, &ns("a"), &g).await, vec![1000]);
}

#[tokio::test]
async fn retention_locked_snapshots_stay_where_they_are() {
    let (_dir, ds) = store().await;
    ds.tree()
        .create_namespace(&BackupNamespace::root(), "w")
        .await
        .unwrap();
    ds.tree()
        .create_namespace(&BackupNamespace::root(), "x")
        .await
        .unwrap();
    ds.retention()
        .set_locks(
            vec![LockRule {
                id: "keep".into(),
                ns: ns("w"),
                groups: vec![],
                mode: LockMode::Governance,
                days: 1,
                legal_hold: false,
            }],
            1,
        )
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let g = host("locked");
    backup(&ds, &ns("w"), &g, now, AUTH).await;
    let (_, sink) = lines();
    let err = ds
        .tree()
        .move_group(&ns("w"), &g, &ns("x"), true, &sink)
        .await
        .unwrap_err();
    assert!(matches!(err, DatastoreError::Locked(_)), "{err}");
    assert!(err.to_string().contains("retention-locked"), "{err}");
    let err = ds
        .tree()
        .check_move_namespace(&ns("w"), &ns("y"), None, true)
        .await
        .unwrap_err();
    assert!(matches!(err, DatastoreError::Locked(_)), "{err}");
    assert_eq!(times(&ds, &ns("w"), &g).await, vec![now]);
}

#[tokio::test]
async fn namespace_moves_with_children_depth_and_source_removal() {
    let (_dir, ds) = store().await;
    let root = BackupNamespace::root();
    ds.tree().create_namespace(&root, "src").await.unwrap();
    ds.tree().create_namespace(&ns("src"), "kid").await.unwrap();
    ds.tree()
        .create_namespace(&ns("src/kid"), "deep")
        .await
        .unwrap();
    ds.tree().create_namespace(&root, "dst").await.unwrap();
    backup(&ds, &ns("src"), &host("top"), 1000, AUTH).await;
    backup(&ds, &ns("src/kid"), &host("child"), 1000, AUTH).await;
    backup(&ds, &ns("src/kid/deep"), &host("deepest"), 1000, AUTH).await;

    let err = ds
        .tree()
        .check_move_namespace(&ns("src"), &ns("src/kid/x"), None, true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("into itself"), "{err}");
    assert!(ds
        .tree()
        .check_move_namespace(&root, &ns("x"), None, true)
        .await
        .is_err());
    assert!(ds
        .tree()
        .check_move_namespace(&ns("src"), &ns("nope/x"), None, true)
        .await
        .unwrap_err()
        .is_not_found());

    // Two levels (src, src/kid): the deepest stays, and with it its parents.
    let (log, sink) = lines();
    let stats = ds
        .tree()
        .move_namespace(&ns("src"), &ns("dst/moved"), Some(1), true, true, &sink)
        .await
        .unwrap();
    assert_eq!((stats.namespaces, stats.groups, stats.snapshots), (2, 2, 2));
    assert_eq!(
        stats.removed_namespaces, 0,
        "src/kid/deep keeps src and src/kid"
    );
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log[0],
        "moving namespace 'src' -> 'dst/moved': 2 namespace(s)"
    );
    assert!(
        log.contains(&"moved group 1 ('host/top' in 'src')".to_string()),
        "{log:?}"
    );
    assert!(
        log.contains(&"moved group 2 ('host/child' in 'src/kid')".to_string()),
        "{log:?}"
    );
    assert_eq!(times(&ds, &ns("dst/moved"), &host("top")).await, vec![1000]);
    assert_eq!(
        times(&ds, &ns("dst/moved/kid"), &host("child")).await,
        vec![1000]
    );
    assert_eq!(
        times(&ds, &ns("src/kid/deep"), &host("deepest")).await,
        vec![1000]
    );

    // The rest, all levels: now the source tree goes away completely.
    let stats = ds
        .tree()
        .move_namespace(&ns("src"), &ns("dst/moved"), None, true, true, &sink)
        .await
        .unwrap();
    assert_eq!(stats.groups, 1);
    assert_eq!(stats.removed_namespaces, 3);
    assert!(!ds.tree().namespace_exists(&ns("src")).await.unwrap());
    assert_eq!(
        times(&ds, &ns("dst/moved/kid/deep"), &host("deepest")).await,
        vec![1000]
    );
    // Without delete-source the emptied source stays.
    ds.tree()
        .move_namespace(&ns("dst/moved/kid"), &ns("k2"), None, false, true, &sink)
        .await
        .unwrap();
    assert!(ds
        .tree()
        .namespace_exists(&ns("dst/moved/kid"))
        .await
        .unwrap());
    assert_eq!(
        times(&ds, &ns("k2/deep"), &host("deepest")).await,
        vec![1000]
    );
}
