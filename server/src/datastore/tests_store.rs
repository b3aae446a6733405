//! Namespaces, chunks, GC, client logs and path handling, on both backends where the
//! behaviour is backend-independent (see `tests.rs`).

use super::*;

on_both_backends!(
    namespaces_create_list_delete,
    insert_chunk_deduplicates,
    client_log_rules,
    path_tricks_are_rejected,
);

async fn namespaces_create_list_delete(kind: Kind) {
    let e = env_on(kind, "ns").await;
    let a = e.ds.tree().create_namespace(&root(), "a").await.unwrap();
    let ab = e.ds.tree().create_namespace(&a, "b").await.unwrap();
    let c = e.ds.tree().create_namespace(&root(), "c").await.unwrap();
    assert!(e
        .backend
        .head("ns/a/ns/b/.namespace")
        .await
        .unwrap()
        .is_some());
    let err =
        e.ds.tree()
            .create_namespace(&root(), "a")
            .await
            .unwrap_err();
    assert!(matches!(err, DatastoreError::AlreadyExists(_)), "{err}");
    let missing = BackupNamespace::parse("x").unwrap();
    assert!(e
        .ds
        .tree()
        .create_namespace(&missing, "y")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(e
        .ds
        .tree()
        .create_namespace(&root(), "../evil")
        .await
        .is_err());

    let all = e.ds.tree().list_namespaces(&root(), None).await.unwrap();
    assert_eq!(all, [root(), a.clone(), ab.clone(), c.clone()]);
    let shallow = e.ds.tree().list_namespaces(&root(), Some(1)).await.unwrap();
    assert_eq!(shallow, [root(), a.clone(), c.clone()]);
    assert_eq!(
        e.ds.tree().list_namespaces(&a, Some(0)).await.unwrap(),
        std::slice::from_ref(&a)
    );

    let err =
        e.ds.start_backup(&missing, &vm("1"), T0, AUTH)
            .await
            .unwrap_err();
    assert_eq!(err.to_string(), "namespace 'x' not found");

    // Groups block deletion unless delete_groups; protected snapshots survive.
    backup(&e.ds, &ab, &vm("1"), T0).await;
    backup(&e.ds, &a, &vm("2"), T0).await;
    assert!(e.ds.tree().delete_namespace(&a, false).await.is_err());
    assert!(e.ds.tree().delete_namespace(&root(), true).await.is_err());
    let keep = BackupDir::new(vm("2"), T0).unwrap();
    e.ds.tree().set_protected(&a, &keep, true).await.unwrap();
    let stats = e.ds.tree().delete_namespace(&a, true).await.unwrap();
    assert_eq!(stats.removed_snapshots, 1);
    assert_eq!(stats.protected_snapshots, 1);
    assert_eq!(stats.removed_namespaces, 1, "only a/b goes");
    assert!(e.ds.tree().namespace_exists(&a).await.unwrap());
    assert!(!e.ds.tree().namespace_exists(&ab).await.unwrap());

    e.ds.tree().set_protected(&a, &keep, false).await.unwrap();
    let stats = e.ds.tree().delete_namespace(&a, true).await.unwrap();
    assert_eq!(stats.removed_namespaces, 1);
    assert!(!e.ds.tree().namespace_exists(&a).await.unwrap());
    let stats = e.ds.tree().delete_namespace(&c, false).await.unwrap();
    assert_eq!(stats.removed_namespaces, 1);
    assert_eq!(
        e.ds.tree().list_namespaces(&root(), None).await.unwrap(),
        [root()]
    );
}

/// Local only: PBS leaves namespace and group directories on disk (an empty `ns/empty` counts as
/// a namespace); object stores have no directories.
#[tokio::test]
async fn pbs_written_namespace_directory_counts() {
    let e = env().await;
    std::fs::create_dir_all(e.root.join("ns/legacy/vm/5/2020-01-01T00:00:00Z")).unwrap();
    std::fs::write(e.root.join("ns/legacy/vm/5/owner"), "root@pam\n").unwrap();
    std::fs::create_dir_all(e.root.join("ns/empty")).unwrap();
    let legacy = BackupNamespace::parse("legacy").unwrap();
    assert!(e.ds.tree().namespace_exists(&legacy).await.unwrap());
    assert!(e
        .ds
        .tree()
        .namespace_exists(&BackupNamespace::parse("empty").unwrap())
        .await
        .unwrap());
    assert_eq!(e.ds.tree().list_groups(&legacy).await.unwrap(), [vm("5")]);
    assert_eq!(
        e.ds.tree()
            .group_owner(&legacy, &vm("5"))
            .await
            .unwrap()
            .as_deref(),
        Some("root@pam")
    );
}

async fn insert_chunk_deduplicates(kind: Kind) {
    let e = env_on(kind, "dedupsize").await;
    let data = vec![0u8; 64 * 1024];
    let digest = sha256(&data);
    let plain = Bytes::from(encode_blob(&data, false));
    let small = Bytes::from(encode_blob(&data, true));
    assert!(small.len() < plain.len());

    let out =
        e.ds.insert_chunk(&digest, plain.clone(), false)
            .await
            .unwrap();
    assert!(!out.duplicate);
    assert!(e.ds.chunks().exists(&digest).await.unwrap());
    let out =
        e.ds.insert_chunk(&digest, plain.clone(), false)
            .await
            .unwrap();
    assert!(out.duplicate);
    let out =
        e.ds.insert_chunk(&digest, small.clone(), false)
            .await
            .unwrap();
    if kind == Kind::Local {
        // A smaller plain copy replaces the stored one; a bigger one does not.
        assert!(!out.duplicate);
        assert_eq!(e.ds.chunks().load(&digest).await.unwrap(), small);
    } else {
        // On S3 a known digest costs no request at all (docs/design.md#known-chunk-set): the first
        // copy stays, which is as valid as the smaller one.
        assert!(out.duplicate);
        assert_eq!(e.ds.chunks().load(&digest).await.unwrap(), plain);
    }
    let before = e.requests();
    let out =
        e.ds.insert_chunk(&digest, plain.clone(), false)
            .await
            .unwrap();
    assert!(out.duplicate);
    assert_eq!(e.requests(), before, "a known chunk costs no S3 request");

    // Encrypted data over a stored plain chunk: refused locally (the stored object is read to
    // compare); on S3 the known digest answers "duplicate" without a request. Either way the
    // stored chunk is left as it was.
    let stored = e.ds.chunks().load(&digest).await.unwrap();
    let enc = Bytes::from(assemble_encrypted_blob(
        false, &[1; 16], &[2; 16], &[3; 100],
    ));
    let result = e.ds.insert_chunk(&digest, enc, true).await;
    match kind {
        Kind::Local => {
            let err = result.unwrap_err();
            assert!(matches!(err, DatastoreError::Invalid(_)), "{err}");
        }
        Kind::S3 => assert!(result.unwrap().duplicate),
    }
    assert_eq!(e.ds.chunks().load(&digest).await.unwrap(), stored);

    // Both encrypted and uncompressed with different lengths: refused locally, a no-op
    // duplicate on S3 (as above).
    let d2 = sha256(b"other");
    let e1 = Bytes::from(assemble_encrypted_blob(
        false, &[1; 16], &[2; 16], &[3; 100],
    ));
    let e2 = Bytes::from(assemble_encrypted_blob(false, &[1; 16], &[2; 16], &[3; 90]));
    assert!(
        !e.ds
            .insert_chunk(&d2, e1.clone(), true)
            .await
            .unwrap()
            .duplicate
    );
    let result = e.ds.insert_chunk(&d2, e2, true).await;
    assert_eq!(result.is_err(), kind == Kind::Local, "{result:?}");
    assert_eq!(e.ds.chunks().load(&d2).await.unwrap(), e1);

    // A 0-byte stored object (an interrupted write of an older server) is overwritten.
    let d3 = sha256(b"zero");
    let key = layout::chunk_key(&d3);
    e.backend
        .put(&key, Bytes::new(), crate::backend::PutOptions::default())
        .await
        .unwrap();
    let blob = Bytes::from(encode_blob(b"zero", false));
    assert!(
        !e.ds
            .insert_chunk(&d3, blob.clone(), false)
            .await
            .unwrap()
            .duplicate
    );
    assert_eq!(e.ds.chunks().load(&d3).await.unwrap(), blob);

    assert!(e
        .ds
        .chunks()
        .load(&sha256(b"nope"))
        .await
        .unwrap_err()
        .is_not_found());
}

/// Local only: it ages chunk files by setting their modification time, which S3 cannot do (the
/// both-backends form, with a zero cutoff instead, is `gc_removes_only_unreferenced`).
/// Like PBS's chunk store, the local insert looks before it writes: a duplicate is never
/// written (and synced) in full a second time.
#[tokio::test]
async fn local_insert_of_a_duplicate_writes_nothing() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Backend> = Arc::new(LocalBackend::open(&dir.path().join("s")).unwrap());
    let probe = ProbeBackend::new(local);
    let ds = Datastore::open("test", probe.clone()).await.unwrap();
    let (digest, raw) = chunk(b"stored once");
    assert!(
        !ds.insert_chunk(&digest, raw.clone(), false)
            .await
            .unwrap()
            .duplicate
    );
    assert_eq!(probe.chunk_puts.load(Ordering::SeqCst), 1);
    let path = dir.path().join("s").join(layout::chunk_key(&digest));
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    for _ in 0..3 {
        assert!(
            ds.insert_chunk(&digest, raw.clone(), false)
                .await
                .unwrap()
                .duplicate
        );
    }
    assert_eq!(
        probe.chunk_puts.load(Ordering::SeqCst),
        1,
        "no second write"
    );
    // The duplicate still counts as a reuse for GC (the file's time moved forward).
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert!(modified > old + Duration::from_secs(3000));
}

#[tokio::test]
async fn gc_sweeps_only_unreferenced_old_chunks() {
    let e = env().await;
    let g = vm("100");
    backup(&e.ds, &root(), &g, T0).await; // inserts and references chunk "data T0"
    let referenced = sha256(format!("data {T0}").as_bytes());
    let (garbage, raw) = chunk(b"garbage");
    e.ds.insert_chunk(&garbage, raw, false).await.unwrap();
    let (leased, raw) = chunk(b"leased");
    e.ds.insert_chunk(&leased, raw, false).await.unwrap();
    let (young, raw) = chunk(b"young");
    e.ds.insert_chunk(&young, raw, false).await.unwrap();
    for d in [referenced, garbage, leased] {
        age_file(
            &e.root.join(layout::chunk_key(&d)),
            Duration::from_secs(2 * 86_400),
        );
    }

    // Default cutoff: the young unreferenced chunk is only pending.
    let lease =
        e.ds.start_backup(&root(), &vm("200"), T0, AUTH)
            .await
            .unwrap();
    lease.register_chunk(&leased, 6);
    assert_eq!(lease.known_chunk_size(&leased), Some(6));
    let lines = std::sync::Mutex::new(Vec::new());
    let log = |l: String| lines.lock().unwrap().push(l);
    let status = e.ds.gc().run(&log).await.unwrap();
    assert!(!e.ds.chunks().exists(&garbage).await.unwrap());
    assert!(e.ds.chunks().exists(&referenced).await.unwrap());
    assert!(e.ds.chunks().exists(&leased).await.unwrap());
    assert!(e.ds.chunks().exists(&young).await.unwrap());
    assert_eq!(status.removed_chunks, 1);
    assert_eq!(status.pending_chunks, 1);
    assert_eq!(status.disk_chunks, 2);
    assert_eq!(status.index_file_count, 1);
    assert_eq!(status.index_data_bytes, 10);
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("Removed chunks: 1")));

    // Cutoff 0 with the lease gone: the young and the formerly leased chunk go too.
    drop(lease);
    e.ds.gc().set_cutoff(Duration::ZERO);
    eventually("lease cleanup done", || async {
        e.ds.tree().list_groups(&root()).await.unwrap().len() == 1
    })
    .await;
    let status = e.ds.gc().run(&|_| {}).await.unwrap();
    assert_eq!(status.removed_chunks, 2);
    assert!(e.ds.chunks().exists(&referenced).await.unwrap());
    assert!(!e.ds.chunks().exists(&young).await.unwrap());
    assert!(!e.ds.chunks().exists(&leased).await.unwrap());

    // Status persisted and read back on open.
    assert_eq!(e.ds.gc().last_status().await, Some(status.clone()));
    let reopened = Datastore::open("test", e.backend.clone()).await.unwrap();
    assert_eq!(reopened.gc().last_status().await, Some(status));
    let text = std::fs::read_to_string(e.root.join(".gc-status")).unwrap();
    assert!(text.contains("\"removed-chunks\": 2"), "{text}");
}

async fn client_log_rules(kind: Kind) {
    let e = env_on(kind, "clientlog").await;
    let g = vm("100");
    let dir = BackupDir::new(g.clone(), T0).unwrap();
    let log = Bytes::from(encode_blob(b"log text", true));
    assert!(e
        .ds
        .tree()
        .add_client_log(&root(), &dir, log.clone())
        .await
        .unwrap_err()
        .is_not_found());
    backup(&e.ds, &root(), &g, T0).await;
    let mut corrupt = log.to_vec();
    corrupt[8] ^= 0xff;
    let err =
        e.ds.tree()
            .add_client_log(&root(), &dir, Bytes::from(corrupt))
            .await
            .unwrap_err();
    assert!(matches!(err, DatastoreError::Corrupt { .. }), "{err}");
    e.ds.tree()
        .add_client_log(&root(), &dir, log.clone())
        .await
        .unwrap();
    let err =
        e.ds.tree()
            .add_client_log(&root(), &dir, log)
            .await
            .unwrap_err();
    assert_eq!(err.to_string(), "backup already contains a log.");
    let snaps = e.ds.tree().list_snapshots(&root(), &g).await.unwrap();
    assert!(snaps[0].files.contains(&"client.log.blob".to_string()));
}

async fn path_tricks_are_rejected(kind: Kind) {
    let e = env_on(kind, "paths").await;
    let g = vm("100");
    backup(&e.ds, &root(), &g, T0).await;
    let dir = BackupDir::new(g.clone(), T0).unwrap();
    for name in ["../owner", "..", "a/b.blob", "", "/etc/passwd", "x\\y.blob"] {
        assert!(
            e.ds.tree()
                .read_snapshot_file(&root(), &dir, name)
                .await
                .is_err(),
            "{name:?}"
        );
    }
    assert!(BackupNamespace::parse("a/../b").is_err());
    assert!(BackupGroup::new(BackupType::Vm, "../x").is_err());
    assert!(e.backend.get("../outside").await.is_err());
    // Junk objects are ignored by listings.
    for junk in [
        "vm/bad id/owner",
        "xx/100/owner",
        "vm/100/not-a-time/x.blob",
    ] {
        e.backend
            .put(junk, Bytes::from_static(b"x"), Default::default())
            .await
            .unwrap();
    }
    let reopened = Datastore::open("test", e.backend.clone()).await.unwrap();
    assert_eq!(
        reopened.tree().list_groups(&root()).await.unwrap(),
        std::slice::from_ref(&g)
    );
    assert_eq!(
        reopened
            .tree()
            .list_snapshots(&root(), &g)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Local only: directories without objects in them, made behind the backend's back (object
/// stores have no empty directories; the object form of this case is in
/// `path_tricks_are_rejected`).
#[tokio::test]
async fn junk_directories_are_ignored() {
    let e = env().await;
    let g = vm("100");
    backup(&e.ds, &root(), &g, T0).await;
    std::fs::create_dir_all(e.root.join("vm/bad id")).unwrap();
    std::fs::create_dir_all(e.root.join("xx/100")).unwrap();
    std::fs::create_dir_all(e.root.join("vm/100/not-a-time")).unwrap();
    std::fs::write(e.root.join("vm/100/not-a-time/x.blob"), b"x").unwrap();
    assert_eq!(
        e.ds.tree().list_groups(&root()).await.unwrap(),
        std::slice::from_ref(&g)
    );
    assert_eq!(
        e.ds.tree().list_snapshots(&root(), &g).await.unwrap().len(),
        1
    );
}
