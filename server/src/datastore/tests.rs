//! Datastore behaviour, one suite for both backends (docs/design.md#object-storage-backends): each
//! scenario written as `async fn name(kind: Kind)` and listed in [`on_both_backends!`] runs as
//! `name::local` on a temporary directory and as `name::s3` on the real S3 server that
//! `e2e/run-tests.sh` starts (under its own bucket prefix). Plain `#[tokio::test]`s are local-only
//! on purpose: each says why (file times, directories PBS leaves on disk, files planted behind the
//! backend's back).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::backend::s3::{test_env, S3Backend};
use crate::backend::{Backend, BackendCapabilities, LocalBackend};
use crate::format::blob::{assemble_encrypted_blob, encode_blob};
use crate::format::dynamic_index::{DynamicEntry, DynamicIndex};
use crate::format::manifest::{Manifest, VerifyState};
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::format::{sha256, Digest};

use super::*;

const T0: i64 = 1_700_000_000;
const AUTH: &str = "alice@pbs";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Local,
    S3,
}

struct Env {
    _dir: Option<tempfile::TempDir>,
    /// The datastore directory (local backend only; empty on S3).
    root: std::path::PathBuf,
    backend: Arc<dyn Backend>,
    ds: Arc<Datastore>,
}

impl Env {
    /// Requests sent to S3 so far (0 on the local backend).
    fn requests(&self) -> u64 {
        self.backend.request_counts().map_or(0, |c| c.total())
    }

    fn lists(&self) -> u64 {
        self.backend.request_counts().map_or(0, |c| c.list)
    }
}

/// A fresh datastore on `kind`; `name` tags the S3 prefix.
async fn env_on(kind: Kind, name: &str) -> Env {
    let (dir, root, backend): (_, _, Arc<dyn Backend>) = match kind {
        Kind::Local => {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().join("store");
            let backend = Arc::new(LocalBackend::open(&root).expect("backend"));
            (Some(dir), root, backend)
        }
        Kind::S3 => {
            let backend = Arc::new(
                S3Backend::connect(test_env::settings(name))
                    .await
                    .expect("connect to the test S3 server"),
            );
            (None, std::path::PathBuf::new(), backend)
        }
    };
    let ds = Datastore::open("test", backend.clone())
        .await
        .expect("open");
    Env {
        _dir: dir,
        root,
        backend,
        ds,
    }
}

/// A local datastore, for the tests that need the directory itself.
async fn env() -> Env {
    env_on(Kind::Local, "local").await
}

/// One `#[tokio::test]` per backend for each scenario: `<scenario>::local` and `<scenario>::s3`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$scenario(super::Kind::Local).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                super::$scenario(super::Kind::S3).await
            }
        }
    )*};
}

on_both_backends!(
    committed_backup_is_listed_as_finished,
    dropped_lease_leaves_nothing_behind,
    second_backup_of_a_group_is_busy,
    backup_time_must_be_newer_and_unused,
    previous_skips_verify_failed_snapshot,
    previous_and_readers_block_removal,
    protected_snapshot_refuses_removal,
    remove_group_removes_everything_unprotected,
    a_shard_lists_exactly_its_chunks,
    an_aborted_session_leaves_its_uploads_to_the_same_user,
);

/// Each chunk, and a `.bad` file verify left beside one, is listed in its `.chunks/XX` shard
/// and only there, in key order: a local directory lists the shard's 256 directories one by
/// one, an object store the one prefix.
async fn a_shard_lists_exactly_its_chunks(kind: Kind) {
    let e = env_on(kind, "shard-listing").await;
    let mut by_shard: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for i in 0..48u32 {
        let (digest, raw) = chunk(format!("chunk {i}").as_bytes());
        e.ds.insert_chunk(&digest, raw, false).await.unwrap();
        by_shard
            .entry(usize::from(digest[0]))
            .or_default()
            .push(layout::chunk_key(&digest));
    }
    let keys = by_shard.values_mut().next().unwrap();
    let bad = format!("{}.0.bad", keys[0]);
    e.backend
        .put(
            &bad,
            Bytes::from_static(b"corrupt"),
            crate::backend::PutOptions::default(),
        )
        .await
        .unwrap();
    keys.push(bad);
    let empty_shard = (0..usage::CHUNK_SHARDS)
        .find(|shard| !by_shard.contains_key(shard))
        .unwrap();
    by_shard.insert(empty_shard, Vec::new());
    assert!(by_shard.len() > 10, "the chunks fall in many shards");
    for (shard, expected) in &mut by_shard {
        expected.sort();
        let listed: Vec<String> =
            e.ds.chunks
                .list_shard(*shard)
                .await
                .unwrap()
                .into_iter()
                .map(|(obj, _)| obj.key)
                .collect();
        assert_eq!(&listed, expected, "shard {shard:02x}");
    }
}

/// An aborted session's uploads go into a resume record that only the same user's next
/// session of the group can take, once; chunks no longer stored are left out of it.
async fn an_aborted_session_leaves_its_uploads_to_the_same_user(kind: Kind) {
    let e = env_on(kind, "resume").await;
    let g = vm("300");
    let lease = e.ds.start_backup(&root(), &g, T0, AUTH).await.unwrap();
    let mut uploaded = Vec::new();
    for i in 0..3u8 {
        let data = [i; 100];
        let (digest, raw) = chunk(&data);
        e.ds.insert_chunk(&digest, raw, false).await.unwrap();
        lease.register_uploaded_chunk(&digest, 100);
        uploaded.push((digest, 100));
    }
    // A chunk known only from a previous index is not the session's upload.
    lease.register_chunk(&sha256(b"from a previous index"), 7);
    lease.abort().await;
    assert!(
        e.ds.tree().list_groups(&root()).await.unwrap().is_empty(),
        "the aborted session's new group is gone"
    );

    // Another user of the group finds nothing, and leaves the record alone.
    let other = e.ds.start_backup(&root(), &g, T0, "bob@pbs").await.unwrap();
    assert!(other.take_resume_record().await.unwrap().is_empty());
    other.abort().await;

    // `abort` returns with the group released: the next session starts at once.
    let next = e.ds.start_backup(&root(), &g, T0, AUTH).await.unwrap();
    let mut record = next.take_resume_record().await.unwrap();
    record.sort();
    uploaded.sort();
    assert_eq!(record, uploaded);
    assert!(
        next.take_resume_record().await.unwrap().is_empty(),
        "taken once"
    );
    for (digest, size) in &record {
        assert!(next.adopt_resumable_chunk(digest, *size).await.unwrap());
        assert_eq!(next.known_chunk_size(digest), Some(*size));
    }
    let gone = sha256(b"never stored");
    assert!(!next.adopt_resumable_chunk(&gone, 5).await.unwrap());
    assert_eq!(next.known_chunk_size(&gone), None);

    // Cut again: the chunks it took over are in its own record.
    next.abort().await;
    let last = e.ds.start_backup(&root(), &g, T0, AUTH).await.unwrap();
    let mut again = last.take_resume_record().await.unwrap();
    again.sort();
    assert_eq!(again, uploaded);
}

fn vm(id: &str) -> BackupGroup {
    BackupGroup::new(BackupType::Vm, id).expect("group")
}

fn root() -> BackupNamespace {
    BackupNamespace::root()
}

fn manifest_blob(group: &BackupGroup, time: i64) -> Bytes {
    Bytes::from(Manifest::new(group.ty.as_str(), &group.id, time).to_blob())
}

fn chunk(data: &[u8]) -> (Digest, Bytes) {
    (sha256(data), Bytes::from(encode_blob(data, false)))
}

fn didx(chunks: &[(Digest, u64)]) -> Bytes {
    let mut end = 0;
    let entries = chunks
        .iter()
        .map(|(digest, len)| {
            end += len;
            DynamicEntry {
                end,
                digest: *digest,
            }
        })
        .collect();
    let index = DynamicIndex {
        uuid: [7; 16],
        ctime: T0,
        entries,
    };
    Bytes::from(index.to_bytes())
}

/// A finished backup with one dynamic index over `chunks` (which are inserted).
async fn backup(ds: &Arc<Datastore>, ns: &BackupNamespace, group: &BackupGroup, time: i64) {
    let lease = ds.start_backup(ns, group, time, AUTH).await.expect("start");
    let (digest, raw) = chunk(format!("data {time}").as_bytes());
    ds.insert_chunk(&digest, raw, false).await.expect("chunk");
    lease
        .write_file("root.pxar.didx", didx(&[(digest, 10)]))
        .await
        .expect("index");
    lease
        .commit(manifest_blob(group, time))
        .await
        .expect("commit");
}

/// Every stored key except the datastore's writer lease and its known-chunk index.
async fn all_keys(backend: &dyn Backend) -> Vec<String> {
    let listed = backend.list("", None).await.expect("list");
    listed
        .objects
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !k.starts_with(LEASE) && !k.starts_with(".chunks/.index"))
        .collect()
}

/// A backend that counts chunk puts and, while `hold` is set, makes them wait until the test
/// lets them go (while `hold_known_index` is set: only the upload of a merged known-chunk
/// index, `.chunks/.index`).
struct ProbeBackend {
    inner: Arc<dyn Backend>,
    hold: std::sync::atomic::AtomicBool,
    hold_known_index: std::sync::atomic::AtomicBool,
    chunk_puts: std::sync::atomic::AtomicU64,
    started: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl ProbeBackend {
    fn new(inner: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            hold: Default::default(),
            hold_known_index: Default::default(),
            chunk_puts: Default::default(),
            started: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        })
    }
}

#[async_trait::async_trait]
impl Backend for ProbeBackend {
    fn capabilities(&self) -> BackendCapabilities {
        self.inner.capabilities()
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        opts: crate::backend::PutOptions,
    ) -> Result<crate::backend::PutOutcome, crate::backend::BackendError> {
        use std::sync::atomic::Ordering;
        if key.starts_with(".chunks/") {
            self.chunk_puts.fetch_add(1, Ordering::SeqCst);
        }
        let held = (key.starts_with(".chunks/") && self.hold.load(Ordering::SeqCst))
            || (key == chunk_store::KNOWN_INDEX && self.hold_known_index.load(Ordering::SeqCst));
        if held {
            let go = self.release.notified();
            self.started.notify_one();
            go.await;
        }
        self.inner.put(key, data, opts).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, crate::backend::BackendError> {
        self.inner.get(key).await
    }
    async fn head(
        &self,
        key: &str,
    ) -> Result<Option<crate::backend::ObjectMeta>, crate::backend::BackendError> {
        self.inner.head(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<char>,
    ) -> Result<crate::backend::ListResult, crate::backend::BackendError> {
        self.inner.list(prefix, delimiter).await
    }
    async fn delete(&self, key: &str) -> Result<(), crate::backend::BackendError> {
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), crate::backend::BackendError> {
        self.inner.delete_many(keys).await
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, crate::backend::BackendError> {
        self.inner.delete_prefix(prefix).await
    }
    async fn touch(&self, key: &str) -> Result<(), crate::backend::BackendError> {
        self.inner.touch(key).await
    }
    async fn capacity(
        &self,
    ) -> Result<Option<crate::backend::Capacity>, crate::backend::BackendError> {
        self.inner.capacity().await
    }
}

/// Poll until `f` holds (the drop cleanup runs in a spawned task).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Start a backup once the cleanup of a dropped lease has released the group.
async fn start_when_free(ds: &Arc<Datastore>, group: &BackupGroup, time: i64) -> BackupLease {
    for _ in 0..200 {
        match ds.start_backup(&root(), group, time, AUTH).await {
            Ok(lease) => return lease,
            Err(DatastoreError::Busy(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("start_backup: {e}"),
        }
    }
    panic!("group {group} stayed locked");
}

fn age_file(path: &std::path::Path, age: Duration) {
    let when = SystemTime::now() - age;
    let file = std::fs::File::open(path).expect("open for times");
    file.set_times(
        std::fs::FileTimes::new()
            .set_modified(when)
            .set_accessed(when),
    )
    .expect("set times");
}

async fn committed_backup_is_listed_as_finished(kind: Kind) {
    let e = env_on(kind, "commit").await;
    let g = vm("100");
    let lease = e.ds.start_backup(&root(), &g, T0, AUTH).await.unwrap();
    assert!(lease.created_group());
    assert_eq!(lease.owner(), AUTH);
    assert!(lease.previous().is_none());
    lease
        .write_file("conf.blob", Bytes::from(encode_blob(b"x", false)))
        .await
        .unwrap();
    assert!(lease
        .write_file("index.json.blob", Bytes::new())
        .await
        .is_err());
    assert!(lease.write_file("../x.blob", Bytes::new()).await.is_err());
    assert!(lease.write_file("x.txt", Bytes::new()).await.is_err());
    lease.commit(manifest_blob(&g, T0)).await.unwrap();

    let snaps = e.ds.tree().list_snapshots(&root(), &g).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].finished);
    assert!(!snaps[0].protected);
    assert_eq!(snaps[0].files, ["conf.blob", "index.json.blob"]);
    assert_eq!(
        e.ds.tree().list_groups(&root()).await.unwrap(),
        std::slice::from_ref(&g)
    );
    assert_eq!(
        e.ds.tree()
            .group_owner(&root(), &g)
            .await
            .unwrap()
            .as_deref(),
        Some(AUTH)
    );
    assert!(e
        .backend
        .head("vm/100/2023-11-14T22:13:20Z/index.json.blob")
        .await
        .unwrap()
        .is_some());

    let (manifest, len) =
        e.ds.tree()
            .load_manifest(&root(), &snaps[0].dir)
            .await
            .unwrap();
    assert_eq!(manifest.backup_time, T0);
    assert!(len > 0);
    // The group lock was released by commit.
    let next =
        e.ds.start_backup(&root(), &g, T0 + 1, "bob@pbs")
            .await
            .unwrap();
    assert!(!next.created_group());
    assert_eq!(next.owner(), AUTH, "owner stays the creator");
    assert_eq!(next.previous(), Some(&snaps[0].dir));
}

async fn dropped_lease_leaves_nothing_behind(kind: Kind) {
    let e = env_on(kind, "dropped").await;
    let g = vm("100");
    let lease = e.ds.start_backup(&root(), &g, T0, AUTH).await.unwrap();
    lease
        .write_file("a.blob", Bytes::from(encode_blob(b"a", false)))
        .await
        .unwrap();
    drop(lease);
    eventually("aborted snapshot and new group removed", || async {
        all_keys(e.backend.as_ref()).await.is_empty()
    })
    .await;
    let probe = start_when_free(&e.ds, &g, T0).await;
    assert!(
        probe.created_group(),
        "the group was removed with the aborted backup"
    );
    drop(probe);

    // An aborted second backup keeps the first snapshot and the owner.
    let lease = start_when_free(&e.ds, &g, T0 + 10).await;
    let (digest, raw) = chunk(b"first");
    e.ds.insert_chunk(&digest, raw, false).await.unwrap();
    lease
        .write_file("root.pxar.didx", didx(&[(digest, 5)]))
        .await
        .unwrap();
    lease.commit(manifest_blob(&g, T0 + 10)).await.unwrap();
    let lease = e.ds.start_backup(&root(), &g, T0 + 20, AUTH).await.unwrap();
    lease
        .write_file("b.blob", Bytes::from(encode_blob(b"b", false)))
        .await
        .unwrap();
    drop(lease);
    eventually("second aborted snapshot removed", || async {
        e.ds.tree().list_snapshots(&root(), &g).await.unwrap().len() == 1
    })
    .await;
    assert_eq!(
        e.ds.tree()
            .group_owner(&root(), &g)
            .await
            .unwrap()
            .as_deref(),
        Some(AUTH)
    );
}

async fn second_backup_of_a_group_is_busy(kind: Kind) {
    let e = env_on(kind, "busy").await;
    let g = vm("100");
    let _first = e.ds.start_backup(&root(), &g, T0, AUTH).await.unwrap();
    let err =
        e.ds.start_backup(&root(), &g, T0 + 1, AUTH)
            .await
            .unwrap_err();
    assert!(matches!(err, DatastoreError::Busy(_)), "{err}");
    assert!(err
        .to_string()
        .contains("unable to acquire backup group lock for vm/100"));
    assert!(e
        .ds
        .start_backup(&root(), &vm("101"), T0, AUTH)
        .await
        .is_ok());
}

async fn backup_time_must_be_newer_and_unused(kind: Kind) {
    let e = env_on(kind, "newer").await;
    let g = vm("100");
    backup(&e.ds, &root(), &g, T0).await;
    for t in [T0 - 5, T0] {
        let err = e.ds.start_backup(&root(), &g, t, AUTH).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "backup timestamp is older than last backup."
        );
    }
    // A failed start does not leave the group locked.
    assert!(e.ds.start_backup(&root(), &g, T0 + 1, AUTH).await.is_ok());
}

async fn previous_skips_verify_failed_snapshot(kind: Kind) {
    let e = env_on(kind, "previous").await;
    let g = vm("100");
    backup(&e.ds, &root(), &g, T0).await;
    backup(&e.ds, &root(), &g, T0 + 10).await;
    let last = BackupDir::new(g.clone(), T0 + 10).unwrap();
    let state = |s: &str| VerifyState {
        state: s.to_string(),
        upid: "UPID:x".to_string(),
    };
    e.ds.tree()
        .update_manifest(&root(), &last, |m| m.set_verify_state(&state("ok")))
        .await
        .unwrap();
    let lease = e.ds.start_backup(&root(), &g, T0 + 20, AUTH).await.unwrap();
    assert_eq!(lease.previous(), Some(&last));
    assert!(lease.previous_exists().await.unwrap());
    assert!(lease.read_previous_file("root.pxar.didx").await.is_ok());
    drop(lease);

    e.ds.tree()
        .update_manifest(&root(), &last, |m| m.set_verify_state(&state("failed")))
        .await
        .unwrap();
    let (m, _) = e.ds.tree().load_manifest(&root(), &last).await.unwrap();
    assert_eq!(m.verify_state().unwrap().state, "failed");
    let lease = start_when_free(&e.ds, &g, T0 + 20).await;
    assert!(lease.previous().is_none(), "no base after a failed verify");
}

async fn previous_and_readers_block_removal(kind: Kind) {
    let e = env_on(kind, "readers").await;
    let g = vm("100");
    backup(&e.ds, &root(), &g, T0).await;
    let first = BackupDir::new(g.clone(), T0).unwrap();

    let lease = e.ds.start_backup(&root(), &g, T0 + 1, AUTH).await.unwrap();
    let err =
        e.ds.tree()
            .remove_snapshot(&root(), &first, false)
            .await
            .unwrap_err();
    assert!(matches!(err, DatastoreError::Busy(_)), "{err}");
    // The running backup's own snapshot cannot be read.
    let running = lease.dir().clone();
    lease
        .write_file("a.blob", Bytes::from(encode_blob(b"a", false)))
        .await
        .unwrap();
    let err = e.ds.start_reader(&root(), &running).await.unwrap_err();
    assert!(matches!(err, DatastoreError::Busy(_)), "{err}");
    // Readers coexist with the backup using it as previous.
    let reader = e.ds.start_reader(&root(), &first).await.unwrap();
    assert!(reader.read_file("index.json.blob").await.is_ok());
    assert!(reader.read_file("../owner").await.is_err());
    drop(lease);
    eventually("backup released previous", || async {
        e.ds.tree().list_snapshots(&root(), &g).await.unwrap().len() == 1
    })
    .await;
    let err =
        e.ds.tree()
            .remove_snapshot(&root(), &first, false)
            .await
            .unwrap_err();
    assert!(
        matches!(err, DatastoreError::Busy(_)),
        "reader still holds it: {err}"
    );
    drop(reader);
    // The aborted backup's cleanup task may still hold the previous snapshot shared.
    eventually(
        "snapshot removable once reader and cleanup are gone",
        || async {
            e.ds.tree()
                .remove_snapshot(&root(), &first, false)
                .await
                .is_ok()
        },
    )
    .await;
    let missing = e.ds.start_reader(&root(), &first).await.unwrap_err();
    assert!(missing.is_not_found());
}

async fn protected_snapshot_refuses_removal(kind: Kind) {
    let e = env_on(kind, "protected").await;
    let g = vm("100");
    backup(&e.ds, &root(), &g, T0).await;
    let dir = BackupDir::new(g.clone(), T0).unwrap();
    e.ds.tree()
        .set_protected(&root(), &dir, true)
        .await
        .unwrap();
    assert!(e.ds.tree().list_snapshots(&root(), &g).await.unwrap()[0].protected);
    let err =
        e.ds.tree()
            .remove_snapshot(&root(), &dir, false)
            .await
            .unwrap_err();
    assert!(matches!(err, DatastoreError::Protected(_)), "{err}");
    assert!(err
        .to_string()
        .starts_with("cannot remove protected snapshot vm/100/"));
    let stats = e.ds.tree().remove_group(&root(), &g).await.unwrap();
    assert_eq!(stats.protected_snapshots, 1);
    assert!(e
        .ds
        .tree()
        .group_owner(&root(), &g)
        .await
        .unwrap()
        .is_some());

    e.ds.tree()
        .set_protected(&root(), &dir, false)
        .await
        .unwrap();
    e.ds.tree()
        .remove_snapshot(&root(), &dir, false)
        .await
        .unwrap();
    // Last snapshot gone: group (owner) gone too.
    assert!(e.ds.tree().list_groups(&root()).await.unwrap().is_empty());
    assert!(all_keys(e.backend.as_ref())
        .await
        .iter()
        .all(|k| k.starts_with(".chunks/")));

    // force removes a protected snapshot.
    backup(&e.ds, &root(), &g, T0 + 5).await;
    let dir = BackupDir::new(g.clone(), T0 + 5).unwrap();
    e.ds.tree()
        .set_protected(&root(), &dir, true)
        .await
        .unwrap();
    e.ds.tree()
        .remove_snapshot(&root(), &dir, true)
        .await
        .unwrap();
    assert!(!e.ds.tree().snapshot_exists(&root(), &dir).await.unwrap());
}

async fn remove_group_removes_everything_unprotected(kind: Kind) {
    let e = env_on(kind, "rmgroup").await;
    let g = vm("100");
    backup(&e.ds, &root(), &g, T0).await;
    backup(&e.ds, &root(), &g, T0 + 1).await;
    e.ds.tree()
        .set_group_notes(&root(), &g, "notes")
        .await
        .unwrap();
    assert_eq!(
        e.ds.tree()
            .group_notes(&root(), &g)
            .await
            .unwrap()
            .as_deref(),
        Some("notes")
    );
    let stats = e.ds.tree().remove_group(&root(), &g).await.unwrap();
    assert_eq!(stats.removed_snapshots, 2);
    assert_eq!(stats.protected_snapshots, 0);
    assert!(!e.ds.tree().group_exists(&root(), &g).await.unwrap());
    assert!(e
        .ds
        .tree()
        .remove_group(&root(), &g)
        .await
        .unwrap_err()
        .is_not_found());
}

#[path = "tests_store.rs"]
mod store;

#[path = "tests_backends.rs"]
mod backends;

#[path = "tests_fencing.rs"]
mod fencing;
