//! Verify on both backends: a flipped byte and a missing chunk are found, the bad chunk is
//! moved aside and forgotten, and the next backup uploads it again.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::s3::{test_env, S3Backend};
use crate::backend::{Backend, LocalBackend, PutOptions};
use crate::format::blob::encode_blob;
use crate::format::dynamic_index::{DynamicEntry, DynamicIndex};
use crate::format::manifest::{CryptMode, FileInfo, Manifest, VerifyState};
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::format::{digest_to_hex, sha256, Digest};

use super::super::chunk_store::{bad_chunk_key, check_chunk_bytes};
use super::super::layout::chunk_key;
use super::*;

const T0: i64 = 1_700_000_000;
const UPID: &str = "UPID:localhost:00000001:00000001:00000001:6553F100:verify:test:root@pam:";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Local,
    S3,
}

struct Env {
    _dir: Option<tempfile::TempDir>,
    raw: Arc<dyn Backend>,
    ds: Arc<Datastore>,
}

async fn env(kind: Kind, name: &str) -> Env {
    let (dir, raw): (_, Arc<dyn Backend>) = match kind {
        Kind::Local => {
            let dir = tempfile::tempdir().expect("tempdir");
            let backend = Arc::new(LocalBackend::open(&dir.path().join("s")).expect("local"));
            (Some(dir), backend)
        }
        Kind::S3 => {
            let backend = Arc::new(
                S3Backend::connect(test_env::settings(name))
                    .await
                    .expect("connect to the test S3 server"),
            );
            (None, backend)
        }
    };
    let ds = Datastore::open("test", raw.clone()).await.expect("open");
    Env { _dir: dir, raw, ds }
}

fn vm(id: &str) -> BackupGroup {
    BackupGroup::new(BackupType::Vm, id).expect("group")
}

fn root() -> BackupNamespace {
    BackupNamespace::root()
}

fn data(name: &str) -> Vec<u8> {
    format!("verify test chunk {name}").repeat(50).into_bytes()
}

/// A finished backup whose manifest lists one dynamic index over the chunks of `names`.
async fn backup(ds: &Arc<Datastore>, group: &BackupGroup, time: i64, names: &[&str]) -> BackupDir {
    let lease = ds
        .start_backup(&root(), group, time, "alice@pbs")
        .await
        .expect("start");
    let mut end = 0;
    let mut entries = Vec::new();
    for name in names {
        let data = data(name);
        let digest = sha256(&data);
        ds.insert_chunk(&digest, Bytes::from(encode_blob(&data, true)), false)
            .await
            .expect("chunk");
        end += data.len() as u64;
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
    let mut manifest = Manifest::new(group.ty.as_str(), &group.id, time);
    manifest.files.push(FileInfo {
        filename: "root.pxar.didx".into(),
        crypt_mode: CryptMode::None,
        size: index.size(),
        csum: digest_to_hex(&index.csum()),
    });
    lease
        .commit(Bytes::from(manifest.to_blob()))
        .await
        .expect("commit");
    BackupDir::new(group.clone(), time).expect("dir")
}

async fn run(ds: &Datastore, level: ChunkCheck) -> VerifySummary {
    let targets = ds.verify_targets(&root(), None, None, None).await.unwrap();
    let opts = VerifyOptions {
        level,
        ..VerifyOptions::default()
    };
    ds.verify(&targets, &opts, UPID, &|_| {}, &|| false)
        .await
        .expect("verify")
}

async fn state_of(ds: &Datastore, dir: &BackupDir) -> Option<VerifyState> {
    ds.tree()
        .load_manifest(&root(), dir)
        .await
        .unwrap()
        .0
        .verify_state()
}

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

on_both_backends!(finds_flipped_byte_and_missing_chunk);

async fn finds_flipped_byte_and_missing_chunk(kind: Kind) {
    let e = env(kind, "verify").await;
    let g = vm("100");
    let dir = backup(&e.ds, &g, T0, &["one", "two", "three"]).await;
    let (one, two) = (sha256(&data("one")), sha256(&data("two")));

    let gets = e.raw.request_counts().map(|c| c.get);
    let clean = run(&e.ds, ChunkCheck::Cheap).await;
    assert_eq!(clean.snapshots_ok, 1, "{clean:?}");
    assert_eq!(clean.chunks_checked, 3);
    if kind == Kind::S3 {
        // Object attributes answer the cheap verify: no chunk is downloaded.
        let after = e.raw.request_counts().map(|c| c.get);
        let downloads = after.zip(gets).map(|(a, b)| a - b).unwrap_or(u64::MAX);
        assert!(
            downloads <= 3,
            "only the manifest (read, then updated) and the index are read, not the chunks: {downloads} GETs"
        );
    }
    assert_eq!(state_of(&e.ds, &dir).await.unwrap().state, "ok");
    assert!(run(&e.ds, ChunkCheck::Deep)
        .await
        .snapshots_failed
        .is_empty());

    // Flip one byte of chunk "one" and delete chunk "two" behind the datastore's back.
    let mut raw = e.raw.get(&chunk_key(&one)).await.unwrap().to_vec();
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    e.raw
        .put(&chunk_key(&one), Bytes::from(raw), PutOptions::default())
        .await
        .unwrap();
    e.raw.delete(&chunk_key(&two)).await.unwrap();

    let cheap = run(&e.ds, ChunkCheck::Cheap).await;
    assert_eq!(cheap.chunks_missing, vec![digest_to_hex(&two)], "{cheap:?}");
    assert_eq!(cheap.snapshots_failed.len(), 1);
    assert_eq!(state_of(&e.ds, &dir).await.unwrap().state, "failed");

    let deep = run(&e.ds, ChunkCheck::Deep).await;
    assert_eq!(deep.chunks_corrupt, vec![digest_to_hex(&one)], "{deep:?}");
    assert_eq!(deep.chunks_missing, vec![digest_to_hex(&two)]);
    let state = state_of(&e.ds, &dir).await.unwrap();
    assert_eq!(
        (state.state.as_str(), state.upid.as_str()),
        ("failed", UPID)
    );
    assert!(e.raw.head(&chunk_key(&one)).await.unwrap().is_none());
    assert!(e.raw.head(&bad_chunk_key(&one, 0)).await.unwrap().is_some());
    assert!(!e.ds.chunks().is_known(&one) && !e.ds.chunks().is_known(&two));

    // After a restart the bad chunks stay forgotten, and the next backup writes them again.
    drop(e.ds);
    let ds = Datastore::open("test", e.raw.clone())
        .await
        .expect("reopen");
    assert!(!ds.chunks().is_known(&one) && !ds.chunks().is_known(&two));
    for name in ["one", "two"] {
        let data = data(name);
        let outcome = ds
            .insert_chunk(&sha256(&data), Bytes::from(encode_blob(&data, true)), false)
            .await
            .unwrap();
        assert!(!outcome.duplicate, "chunk '{name}' must be stored again");
    }
    let next = backup(&ds, &g, T0 + 10, &["one", "two", "three"]).await;
    let again = run(&ds, ChunkCheck::Deep).await;
    // The re-uploaded chunks heal the old snapshot too.
    assert!(again.snapshots_failed.is_empty(), "{again:?}");
    assert_eq!(again.snapshots_ok, 2);
    assert_eq!(state_of(&ds, &next).await.unwrap().state, "ok");
    // The moved copy stays for GC to account for.
    assert!(e.raw.head(&bad_chunk_key(&one, 0)).await.unwrap().is_some());
}

#[tokio::test]
async fn ignore_verified_and_outdated_after_filter_snapshots() {
    let e = env(Kind::Local, "filter").await;
    backup(&e.ds, &vm("1"), T0, &["a"]).await;
    let targets =
        e.ds.verify_targets(&root(), None, None, None)
            .await
            .unwrap();
    let mut opts = VerifyOptions {
        ignore_verified: true,
        ..VerifyOptions::default()
    };
    let first =
        e.ds.verify(&targets, &opts, UPID, &|_| {}, &|| false)
            .await
            .unwrap();
    assert_eq!((first.snapshots_ok, first.snapshots_skipped), (1, 0));
    let second =
        e.ds.verify(&targets, &opts, UPID, &|_| {}, &|| false)
            .await
            .unwrap();
    assert_eq!((second.snapshots_ok, second.snapshots_skipped), (0, 1));
    // UPID's start time is 2023-11-14: long outdated after one day.
    opts.outdated_after_days = Some(1);
    let third =
        e.ds.verify(&targets, &opts, UPID, &|_| {}, &|| false)
            .await
            .unwrap();
    assert_eq!((third.snapshots_ok, third.snapshots_skipped), (1, 0));
}

#[test]
fn verify_due_follows_pbs() {
    let state = VerifyState {
        state: "failed".into(),
        upid: UPID.into(),
    };
    let start = 0x6553_F100_i64;
    let opts = |ignore, days| VerifyOptions {
        ignore_verified: ignore,
        outdated_after_days: days,
        ..VerifyOptions::default()
    };
    assert!(verify_due(Some(&state), &opts(false, None), start));
    assert!(verify_due(None, &opts(true, None), start));
    assert!(!verify_due(
        Some(&state),
        &opts(true, None),
        start + 1_000_000
    ));
    assert!(!verify_due(
        Some(&state),
        &opts(true, Some(2)),
        start + 2 * 86_400
    ));
    assert!(verify_due(
        Some(&state),
        &opts(true, Some(2)),
        start + 2 * 86_400 + 1
    ));
}

#[test]
fn chunk_bytes_are_checked_against_digest_mode_and_length() {
    let data = b"some chunk data".to_vec();
    let digest: Digest = sha256(&data);
    let blob = encode_blob(&data, false);
    assert_eq!(check_chunk_bytes(&digest, &blob, false, Some(15)), Ok(()));
    assert!(check_chunk_bytes(&digest, &blob, false, Some(16))
        .unwrap_err()
        .contains("length"));
    assert!(check_chunk_bytes(&digest, &blob, true, None)
        .unwrap_err()
        .contains("unencrypted chunk"));
    assert!(check_chunk_bytes(&[0; 32], &blob, false, None)
        .unwrap_err()
        .contains("SHA-256"));
    let mut flipped = blob.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x80;
    assert!(check_chunk_bytes(&digest, &flipped, false, None)
        .unwrap_err()
        .contains("CRC"));
}

#[test]
fn blobs_are_judged_by_their_own_magic() {
    // `rsa-encrypted.key.blob`: plain and uncompressed, listed with crypt mode `encrypt`
    let raw = encode_blob(&[7u8; 256], false);
    let file = |crypt_mode| FileInfo {
        filename: "rsa-encrypted.key.blob".into(),
        crypt_mode,
        size: raw.len() as u64,
        csum: digest_to_hex(&sha256(&raw)),
    };
    assert_eq!(verify_blob(&file(CryptMode::Encrypt), &raw), Ok(()));
    assert_eq!(verify_blob(&file(CryptMode::None), &raw), Ok(()));
    let mut wrong_size = file(CryptMode::Encrypt);
    wrong_size.size += 1;
    assert!(verify_blob(&wrong_size, &raw).unwrap_err().contains("size"));
    let mut flipped = raw.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(verify_blob(&file(CryptMode::Encrypt), &flipped)
        .unwrap_err()
        .contains("CRC"));
}
