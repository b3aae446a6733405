//! Scenarios written for both backends from the start: dedup without requests, GC, the writer
//! lease, aborted backups and listings from memory (see `tests.rs` for the pattern).

use super::*;

on_both_backends!(
    snapshot_lifecycle,
    dedup_survives_reopen,
    gc_removes_only_unreferenced,
    writer_lease_excludes_other_servers,
    aborted_backup_leaves_no_snapshot,
    listings_come_from_memory,
    ranged_reads_return_the_bytes_asked_for,
);

async fn snapshot_lifecycle(kind: Kind) {
    let e = env_on(kind, "lifecycle").await;
    let g = vm("100");
    backup(&e.ds, &root(), &g, T0).await;
    backup(&e.ds, &root(), &g, T0 + 10).await;
    let snaps = e.ds.tree().list_snapshots(&root(), &g).await.unwrap();
    assert_eq!(snaps.len(), 2);
    assert!(snaps.iter().all(|s| s.finished));
    assert_eq!(snaps[0].files, ["index.json.blob", "root.pxar.didx"]);
    assert_eq!(
        e.ds.tree().list_groups(&root()).await.unwrap(),
        std::slice::from_ref(&g)
    );
    let index =
        e.ds.tree()
            .read_snapshot_file(&root(), &snaps[1].dir, "root.pxar.didx")
            .await
            .unwrap();
    assert_eq!(
        index,
        didx(&[(sha256(format!("data {}", T0 + 10).as_bytes()), 10)])
    );

    e.ds.tree()
        .set_protected(&root(), &snaps[0].dir, true)
        .await
        .unwrap();
    let err =
        e.ds.tree()
            .remove_snapshot(&root(), &snaps[0].dir, false)
            .await;
    assert!(matches!(err, Err(DatastoreError::Protected(_))), "{err:?}");
    e.ds.tree()
        .remove_snapshot(&root(), &snaps[1].dir, false)
        .await
        .unwrap();
    assert_eq!(
        e.ds.tree().list_snapshots(&root(), &g).await.unwrap().len(),
        1
    );
    let stats = e.ds.tree().remove_group(&root(), &g).await.unwrap();
    assert_eq!(stats.protected_snapshots, 1);
    e.ds.tree()
        .set_protected(&root(), &snaps[0].dir, false)
        .await
        .unwrap();
    e.ds.tree().remove_group(&root(), &g).await.unwrap();
    assert!(e.ds.tree().list_groups(&root()).await.unwrap().is_empty());
}

async fn dedup_survives_reopen(kind: Kind) {
    let e = env_on(kind, "dedup").await;
    let (digest, raw) = chunk(b"dedup me");
    assert!(
        !e.ds
            .insert_chunk(&digest, raw.clone(), false)
            .await
            .unwrap()
            .duplicate
    );
    let before = e.requests();
    assert!(
        e.ds.insert_chunk(&digest, raw.clone(), false)
            .await
            .unwrap()
            .duplicate
    );
    if kind == Kind::S3 {
        assert_eq!(e.requests(), before, "a known chunk costs no request");
    }
    backup(&e.ds, &root(), &vm("1"), T0).await; // commit journals the known chunks

    // A restarted server (same holder) loads the set from the persisted index.
    let reopened = Datastore::open("test", e.backend.clone()).await.unwrap();
    let before = e.requests();
    assert!(
        reopened
            .insert_chunk(&digest, raw, false)
            .await
            .unwrap()
            .duplicate
    );
    if kind == Kind::S3 {
        assert!(reopened.chunks().known_count() >= 2);
        assert_eq!(e.requests(), before, "known after reopen without a request");
        assert!(e.backend.head(KNOWN_INDEX).await.unwrap().is_some());
    }
    assert_eq!(
        reopened.chunks().load(&digest).await.unwrap(),
        Bytes::from(encode_blob(b"dedup me", false))
    );
}

async fn gc_removes_only_unreferenced(kind: Kind) {
    let e = env_on(kind, "gc").await;
    backup(&e.ds, &root(), &vm("100"), T0).await;
    let referenced = sha256(format!("data {T0}").as_bytes());
    let (garbage, raw_garbage) = chunk(b"garbage");
    e.ds.insert_chunk(&garbage, raw_garbage.clone(), false)
        .await
        .unwrap();
    // Default cutoff (24 h 5 min): nothing is old enough.
    let status = e.ds.gc().run(&|_| {}).await.unwrap();
    assert_eq!(status.removed_chunks, 0);
    assert_eq!(status.pending_chunks, 1);
    assert_eq!(status.disk_chunks, 1);

    tokio::time::sleep(Duration::from_millis(1100)).await; // S3 times have 1 s resolution
    e.ds.gc().set_cutoff(Duration::ZERO);
    let status = e.ds.gc().run(&|_| {}).await.unwrap();
    assert_eq!(status.removed_chunks, 1);
    assert!(e.ds.chunks().exists(&referenced).await.unwrap());
    assert!(!e.ds.chunks().exists(&garbage).await.unwrap());

    // The removed chunk is not "known" any more, in memory or after a restart.
    let reopened = Datastore::open("test", e.backend.clone()).await.unwrap();
    for ds in [&e.ds, &reopened] {
        let out = ds
            .insert_chunk(&garbage, raw_garbage.clone(), false)
            .await
            .unwrap();
        assert!(ds.chunks().exists(&garbage).await.unwrap());
        let _ = out;
    }
    assert_eq!(reopened.gc().last_status().await, Some(status));
}

async fn writer_lease_excludes_other_servers(kind: Kind) {
    let e = env_on(kind, "lease").await;
    let holder = e.ds.lease_holder().to_string();
    let err = Datastore::open_as("test", e.backend.clone(), "other-server")
        .await
        .unwrap_err();
    assert!(matches!(err, DatastoreError::Busy(_)), "{err}");
    assert!(err.to_string().contains(&holder), "names the holder: {err}");

    // The same holder (a restart) gets it back at once; the earlier instance learns at its
    // next renewal that it no longer holds the lease.
    let restarted = Datastore::open_as("test", e.backend.clone(), &holder)
        .await
        .unwrap();
    e.ds.writer.renew().await.unwrap();
    assert!(e.ds.check_writable().is_err(), "the old instance is fenced");
    e.ds.close().await.unwrap_err();

    // After a clean close another server may take over; the closed one refuses writes.
    restarted.close().await.unwrap();
    let other = Datastore::open_as("test", e.backend.clone(), "other-server")
        .await
        .unwrap();
    for ds in [&e.ds, &restarted] {
        let err = ds
            .start_backup(&root(), &vm("1"), T0, AUTH)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("lease") || err.to_string().contains("closing"),
            "{err}"
        );
    }
    backup(&other, &root(), &vm("1"), T0).await;
}

async fn aborted_backup_leaves_no_snapshot(kind: Kind) {
    let e = env_on(kind, "abort").await;
    let g = vm("100");
    let lease = e.ds.start_backup(&root(), &g, T0, AUTH).await.unwrap();
    let (digest, raw) = chunk(b"orphan");
    e.ds.insert_chunk(&digest, raw, false).await.unwrap();
    lease
        .write_file("root.pxar.didx", didx(&[(digest, 6)]))
        .await
        .unwrap();
    drop(lease);
    eventually("aborted backup cleaned up", || async {
        e.ds.tree().list_groups(&root()).await.unwrap().is_empty()
    })
    .await;
    let listed = e.backend.list("", None).await.unwrap();
    for obj in listed.objects {
        assert!(
            obj.key.starts_with(".chunks/") || obj.key.starts_with(LEASE),
            "leftover {}",
            obj.key
        );
    }
}

async fn listings_come_from_memory(kind: Kind) {
    let e = env_on(kind, "listcache").await;
    let g = vm("100");
    backup(&e.ds, &root(), &g, T0).await;
    assert_eq!(
        e.ds.tree().list_snapshots(&root(), &g).await.unwrap().len(),
        1
    );
    assert_eq!(e.ds.tree().list_groups(&root()).await.unwrap().len(), 1);
    let before = e.lists();
    for _ in 0..5 {
        assert_eq!(
            e.ds.tree().list_snapshots(&root(), &g).await.unwrap().len(),
            1
        );
        assert_eq!(e.ds.tree().list_groups(&root()).await.unwrap().len(), 1);
    }
    assert_eq!(e.lists(), before, "no LIST per request");
    // Writes through the datastore invalidate the cached listings.
    backup(&e.ds, &root(), &g, T0 + 1).await;
    backup(&e.ds, &root(), &vm("200"), T0).await;
    assert_eq!(
        e.ds.tree().list_snapshots(&root(), &g).await.unwrap().len(),
        2
    );
    assert_eq!(e.ds.tree().list_groups(&root()).await.unwrap().len(), 2);
}

#[path = "tests_gc.rs"]
mod gc;

async fn ranged_reads_return_the_bytes_asked_for(kind: Kind) {
    let e = env_on(kind, "ranges").await;
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let backend = e.ds.backend();
    backend
        .put(
            ".test/ranged",
            Bytes::from(data.clone()),
            crate::backend::PutOptions::default(),
        )
        .await
        .unwrap();
    for (offset, len) in [
        (0u64, 1u64),
        (0, 10_000),
        (1, 31),
        (4_096, 4_096),
        (9_990, 10),
        (9_990, 100),
    ] {
        let got = backend
            .get_range(".test/ranged", offset, len)
            .await
            .unwrap();
        let end = ((offset + len) as usize).min(data.len());
        assert_eq!(got.as_ref(), &data[offset as usize..end], "{offset}+{len}");
    }
    assert!(backend
        .get_range(".test/ranged", 5, 0)
        .await
        .unwrap()
        .is_empty());
    let missing = backend.get_range(".test/missing", 0, 10).await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
}
