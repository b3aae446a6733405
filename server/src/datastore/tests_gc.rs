//! Garbage collection scenarios on both backends: a backup that reuses old chunks while GC
//! runs, GC after prune, abandoned-backup cleanup, the index cache and the job history.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::sync::Mutex;

use crate::format::blob::BlobView;
use crate::format::index::{index_kind_of, AnyIndex};

use super::*;

on_both_backends!(
    gc_races_a_backup_reusing_old_chunks,
    gc_after_prune_frees_exactly_unreferenced_chunks,
    abandoned_backups_go_after_the_grace_period,
    second_gc_reads_indexes_from_the_cache,
    gc_with_marks_spilled_to_disk_frees_the_same_chunks,
);

const S3_TICK: Duration = Duration::from_millis(1100); // S3 times have 1 s resolution

fn payload(tag: &str, i: usize) -> Vec<u8> {
    format!("{tag} chunk {i} {}", "x".repeat(i * 7 % 50)).into_bytes()
}

/// A finished snapshot whose index references `chunks` (inserted first), in this order.
async fn snapshot_with(ds: &Arc<Datastore>, group: &BackupGroup, time: i64, chunks: &[Vec<u8>]) {
    let lease = ds.start_backup(&root(), group, time, AUTH).await.unwrap();
    let mut entries = Vec::new();
    for data in chunks {
        let (digest, raw) = chunk(data);
        ds.insert_chunk(&digest, raw, false).await.unwrap();
        entries.push((digest, data.len() as u64));
    }
    lease
        .write_file("root.pxar.didx", didx(&entries))
        .await
        .unwrap();
    lease.commit(manifest_blob(group, time)).await.unwrap();
}

/// Every chunk digest in the chunk store.
async fn stored_chunks(raw: &Arc<dyn Backend>) -> BTreeSet<Digest> {
    let listed = raw.list(".chunks/", None).await.unwrap();
    listed
        .objects
        .iter()
        .filter_map(|o| match layout::parse_chunk_key(&o.key) {
            Some(layout::ChunkKey::Chunk(d)) => Some(d),
            _ => None,
        })
        .collect()
}

/// Digests referenced by the indexes of every finished snapshot of the root namespace.
async fn referenced_chunks(ds: &Arc<Datastore>) -> BTreeSet<Digest> {
    let mut out = BTreeSet::new();
    for group in ds.tree().list_groups(&root()).await.unwrap() {
        for snap in ds.tree().list_snapshots(&root(), &group).await.unwrap() {
            for file in &snap.files {
                let Some(kind) = index_kind_of(file) else {
                    continue;
                };
                let data = ds
                    .tree()
                    .read_snapshot_file(&root(), &snap.dir, file)
                    .await
                    .unwrap();
                let index = AnyIndex::parse(kind, &data).unwrap();
                out.extend(index.chunks().into_iter().map(|(d, _)| d));
            }
        }
    }
    out
}

/// Restore a snapshot's `root.pxar.didx` by loading and decoding every chunk.
async fn restore(ds: &Arc<Datastore>, group: &BackupGroup, time: i64) -> Vec<u8> {
    let dir = BackupDir::new(group.clone(), time).unwrap();
    let reader = ds.start_reader(&root(), &dir).await.unwrap();
    let data = reader.read_file("root.pxar.didx").await.unwrap();
    let index = AnyIndex::parse(index_kind_of("root.pxar.didx").unwrap(), &data).unwrap();
    let mut out = Vec::new();
    for (digest, _) in index.chunks() {
        let raw = reader.load_chunk(&digest).await.unwrap_or_else(|e| {
            panic!(
                "chunk {} of {group}: {e}",
                crate::format::digest_to_hex(&digest)
            )
        });
        let view = BlobView::parse(&raw).unwrap();
        let plain = view.decode(16 << 20).unwrap();
        assert_eq!(sha256(&plain), digest);
        out.extend(plain);
    }
    out
}

/// GC runs while backup B is in flight. B's previous snapshot P is reused through the
/// previous index (as `GET previous` registers it); B also re-sends chunks of snapshot A, which
/// is forgotten before GC. GC stops after marking while B re-sends one more of A's chunks,
/// uploads a new one and finishes. The writer margin is 0 so that only marking and reuse
/// times protect B (every old chunk predates B's start).
async fn gc_races_a_backup_reusing_old_chunks(kind: Kind) {
    let e = env_on(kind, "gc-race").await;
    let (a, p) = (vm("100"), vm("200"));
    let a_data: Vec<Vec<u8>> = (0..4).map(|i| payload("A", i)).collect();
    let p_data: Vec<Vec<u8>> = (0..3).map(|i| payload("P", i)).collect();
    snapshot_with(&e.ds, &a, T0, &a_data).await;
    snapshot_with(&e.ds, &p, T0, &p_data).await;
    let (garbage, raw) = chunk(b"garbage");
    e.ds.insert_chunk(&garbage, raw, false).await.unwrap();
    tokio::time::sleep(S3_TICK).await;
    e.ds.gc().set_cutoff(Duration::ZERO);
    e.ds.gc().set_writer_margin(Duration::ZERO);

    let lease = e.ds.start_backup(&root(), &p, T0 + 10, AUTH).await.unwrap();
    assert_eq!(lease.previous().map(|d| d.time), Some(T0));
    let prev = lease.read_previous_file("root.pxar.didx").await.unwrap();
    let prev = AnyIndex::parse(index_kind_of("root.pxar.didx").unwrap(), &prev).unwrap();
    for (digest, size) in prev.chunks() {
        lease.register_chunk(&digest, size);
    }
    let mut b_data: Vec<Vec<u8>> = p_data.clone();
    for data in [&a_data[0], &a_data[1], &payload("B", 0)] {
        let (digest, raw) = chunk(data);
        e.ds.insert_chunk(&digest, raw, false).await.unwrap();
        lease.register_chunk(&digest, data.len() as u64);
        b_data.push(data.clone());
    }
    e.ds.tree()
        .remove_snapshot(&root(), &BackupDir::new(a.clone(), T0).unwrap(), false)
        .await
        .unwrap();
    let busy =
        e.ds.tree()
            .remove_snapshot(&root(), &BackupDir::new(p.clone(), T0).unwrap(), false)
            .await;
    assert!(
        matches!(busy, Err(DatastoreError::Busy(_))),
        "the previous snapshot of a running backup cannot be removed: {busy:?}"
    );

    // GC in a task; it waits after marking until the backup has finished.
    let (marked_tx, marked_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let ds = e.ds.clone();
    let gc = tokio::spawn(async move {
        let log = move |line: String| {
            if line.starts_with("Start GC phase2") {
                marked_tx.send(()).unwrap();
                // Hand this worker's other tasks (S3 connections) to another thread first.
                tokio::task::block_in_place(|| go_rx.lock().unwrap().recv().unwrap());
            }
        };
        ds.gc().run(&log).await
    });
    tokio::task::spawn_blocking(move || marked_rx.recv().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(S3_TICK).await; // the new upload lies after B's start on S3 too
    for data in [&a_data[2], &payload("B", 1)] {
        let (digest, raw) = chunk(data);
        e.ds.insert_chunk(&digest, raw, false).await.unwrap();
        lease.register_chunk(&digest, data.len() as u64);
        b_data.push(data.clone());
    }
    let entries: Vec<(Digest, u64)> = b_data.iter().map(|d| (sha256(d), d.len() as u64)).collect();
    lease
        .write_file("root.pxar.didx", didx(&entries))
        .await
        .unwrap();
    lease.commit(manifest_blob(&p, T0 + 10)).await.unwrap();
    go_tx.send(()).unwrap();
    let status = gc.await.unwrap().unwrap();

    // A's chunk nobody reused and the garbage went; everything B references is there.
    let stored = stored_chunks(&e.backend).await;
    assert!(
        !stored.contains(&sha256(&a_data[3])),
        "unreferenced A chunk removed"
    );
    assert!(!stored.contains(&garbage), "garbage removed");
    assert_eq!(status.removed_chunks, 2, "{status:?}");
    for (digest, _) in &entries {
        assert!(stored.contains(digest), "B's chunk {digest:?} survived");
    }
    assert_eq!(restore(&e.ds, &p, T0 + 10).await, b_data.concat());
    assert_eq!(restore(&e.ds, &p, T0).await, p_data.concat());

    // A later GC with B finished keeps all of it as well.
    tokio::time::sleep(S3_TICK).await;
    let status = e.ds.gc().run(&|_| {}).await.unwrap();
    assert_eq!(status.removed_chunks, 0, "{status:?}");
    assert_eq!(restore(&e.ds, &p, T0 + 10).await, b_data.concat());
}

/// With a mark budget far below the marked chunks, marking spills to temporary files; the
/// sweep must still keep exactly the referenced chunks and count each distinct one once.
async fn gc_with_marks_spilled_to_disk_frees_the_same_chunks(kind: Kind) {
    let e = env_on(kind, "gc-spill").await;
    let (g1, g2) = (vm("1"), vm("2"));
    let first: Vec<Vec<u8>> = (0..300).map(|i| payload("spill", i)).collect();
    // The second snapshot shares 100 chunks with the first and adds 50 of its own.
    let second: Vec<Vec<u8>> = (200..350).map(|i| payload("spill", i)).collect();
    snapshot_with(&e.ds, &g1, T0, &first).await;
    snapshot_with(&e.ds, &g2, T0, &second).await;
    let mut garbage = Vec::new();
    for i in 0..40 {
        let (digest, raw) = chunk(&payload("garbage", i));
        e.ds.insert_chunk(&digest, raw, false).await.unwrap();
        garbage.push(digest);
    }
    tokio::time::sleep(S3_TICK).await;
    e.ds.gc().set_cutoff(Duration::ZERO);
    e.ds.gc().set_mark_budget(0); // the smallest budget: one digest per shard

    let referenced = referenced_chunks(&e.ds).await;
    assert_eq!(referenced.len(), 350);
    let status = e.ds.gc().run(&|_| {}).await.unwrap();
    let after = stored_chunks(&e.backend).await;
    assert_eq!(after, referenced, "exactly the referenced chunks stay");
    assert!(garbage.iter().all(|d| !after.contains(d)));
    assert_eq!(status.removed_chunks, 40, "{status:?}");
    assert_eq!(status.disk_chunks, 350, "{status:?}");
    // 450 references, 350 distinct.
    assert_eq!(
        status.cache_stats,
        Some(GcCacheStats {
            hits: 100,
            misses: 350
        })
    );
}

async fn gc_after_prune_frees_exactly_unreferenced_chunks(kind: Kind) {
    let e = env_on(kind, "gc-prune").await;
    let (g1, g2) = (vm("1"), vm("2"));
    let shared = payload("shared", 0);
    for i in 0..5 {
        let chunks = vec![shared.clone(), payload("g1", i), payload("g1", i + 1)];
        snapshot_with(&e.ds, &g1, T0 + i as i64 * 3600, &chunks).await;
    }
    snapshot_with(&e.ds, &g2, T0, &[shared.clone(), payload("g2", 0)]).await;
    tokio::time::sleep(S3_TICK).await;
    e.ds.gc().set_cutoff(Duration::ZERO);

    // keep-last 2 in g1
    let snaps = e.ds.tree().list_snapshots(&root(), &g1).await.unwrap();
    let candidates: Vec<PruneCandidate> = snaps
        .iter()
        .map(|s| PruneCandidate {
            time: s.dir.time,
            finished: s.finished,
            protected: s.protected,
        })
        .collect();
    let opts = KeepOptions {
        keep_last: Some(2),
        ..KeepOptions::default()
    };
    for (snap, mark) in snaps.iter().zip(compute_prune(&candidates, &opts)) {
        if !mark.keep() {
            e.ds.tree()
                .remove_snapshot(&root(), &snap.dir, false)
                .await
                .unwrap();
        }
    }
    assert_eq!(
        e.ds.tree()
            .list_snapshots(&root(), &g1)
            .await
            .unwrap()
            .len(),
        2
    );

    let before = stored_chunks(&e.backend).await;
    let referenced = referenced_chunks(&e.ds).await;
    let expected: BTreeSet<Digest> = before.difference(&referenced).copied().collect();
    assert_eq!(
        expected.len(),
        3,
        "g1 chunks 0..=2 are referenced only by pruned snapshots"
    );
    let status = e.ds.gc().run(&|_| {}).await.unwrap();
    let after = stored_chunks(&e.backend).await;
    let freed: BTreeSet<Digest> = before.difference(&after).copied().collect();
    assert_eq!(freed, expected);
    assert_eq!(after, referenced);
    assert_eq!(status.removed_chunks, expected.len() as u64);
    assert_eq!(status.disk_chunks, referenced.len() as u64);
    assert_eq!(status.pending_chunks, 0);
    assert_eq!(status.index_file_count, 3);
    // Original data: 3 snapshots' indexes; the shared chunk counts once per index.
    let sizes = |d: &[Vec<u8>]| d.iter().map(|c| c.len() as u64).sum::<u64>();
    let original = sizes(&[shared.clone(), payload("g1", 3), payload("g1", 4)])
        + sizes(&[shared.clone(), payload("g1", 4), payload("g1", 5)])
        + sizes(&[shared.clone(), payload("g2", 0)]);
    assert_eq!(status.index_data_bytes, original);
    assert!(status.dedup_factor().is_some());
    // 8 chunk references, 5 distinct chunks: the shared one is met again twice, g1's 4th once
    assert_eq!(
        status.cache_stats,
        Some(GcCacheStats { hits: 3, misses: 5 })
    );
    // PBS's keys only, as the datastore usage list shows them
    let pbs = status.pbs_json();
    assert_eq!(
        pbs["cache-stats"],
        serde_json::json!({"hits": 3, "misses": 5})
    );
    assert_eq!(pbs["removed-chunks"], 3);
    assert!(pbs.get("mark-duration-ms").is_none() && pbs.get("abandoned-bytes").is_none());

    // The run is in the job history with its statistics, and in `.gc-status`.
    let history =
        e.ds.job_history(Some(JobKind::GarbageCollection))
            .await
            .unwrap();
    let last = history.last().expect("GC recorded");
    assert_eq!(last.outcome, "OK");
    assert_eq!(last.summary["removed-chunks"], 3);
    assert_eq!(last.summary["disk-chunks"], referenced.len() as u64);
    assert!(last.summary.get("mark-duration-ms").is_some());
    assert!(last.summary.get("sweep-duration-ms").is_some());
    let reopened = Datastore::open("test", e.backend.clone()).await.unwrap();
    assert_eq!(reopened.gc().last_status().await, Some(status));
}

/// Objects of a snapshot that never got a manifest, as a killed server leaves them.
async fn leave_abandoned(e: &Env, group: &BackupGroup, time: i64, data: &[u8]) -> Digest {
    let dir = BackupDir::new(group.clone(), time).unwrap();
    let (digest, raw) = chunk(data);
    e.ds.insert_chunk(&digest, raw, false).await.unwrap();
    e.ds.tree()
        .create_group_owner(&root(), group, AUTH)
        .await
        .unwrap();
    let key = layout::snapshot_file_key(&root(), &dir, "root.pxar.didx").unwrap();
    e.ds.backend()
        .put(
            &key,
            didx(&[(digest, data.len() as u64)]),
            Default::default(),
        )
        .await
        .unwrap();
    digest
}

/// Whether any object of the snapshot `group`/T0 is stored.
async fn has_objects(e: &Env, group: &BackupGroup) -> bool {
    let dir = BackupDir::new(group.clone(), T0).unwrap();
    let prefix = layout::snapshot_prefix(&root(), &dir).unwrap();
    !e.backend
        .list(&prefix, None)
        .await
        .unwrap()
        .objects
        .is_empty()
}

async fn abandoned_backups_go_after_the_grace_period(kind: Kind) {
    let e = env_on(kind, "gc-abandoned").await;
    let (old, young, running, done) = (vm("1"), vm("2"), vm("3"), vm("4"));
    snapshot_with(&e.ds, &done, T0, &[payload("done", 0)]).await;
    let old_chunk = leave_abandoned(&e, &old, T0, b"abandoned old").await;
    // A running backup whose objects are as old as the abandoned one.
    let lease =
        e.ds.start_backup(&root(), &running, T0, AUTH)
            .await
            .unwrap();
    let (run_digest, raw) = chunk(b"running");
    e.ds.insert_chunk(&run_digest, raw, false).await.unwrap();
    lease.register_chunk(&run_digest, 7);
    lease
        .write_file("root.pxar.didx", didx(&[(run_digest, 7)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let young_chunk = leave_abandoned(&e, &young, T0, b"abandoned young").await;
    e.ds.gc().set_abandoned_after(Duration::from_secs(2));
    e.ds.gc().set_cutoff(Duration::ZERO);
    // The running backup started after the old chunk was written.
    e.ds.gc().set_writer_margin(Duration::ZERO);

    let lines = Mutex::new(Vec::new());
    let status =
        e.ds.gc()
            .run(&|l| lines.lock().unwrap().push(l))
            .await
            .unwrap();
    let lines = lines.into_inner().unwrap();
    assert_eq!(status.abandoned_snapshots, 1, "{lines:#?}");
    assert!(status.abandoned_bytes > 0);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("removing abandoned backup vm/1/")),
        "{lines:#?}"
    );
    assert!(
        !has_objects(&e, &old).await,
        "abandoned snapshot older than the grace period removed"
    );
    assert!(
        has_objects(&e, &young).await,
        "younger abandoned snapshot kept"
    );
    assert!(has_objects(&e, &running).await, "running backup kept");
    assert!(e
        .ds
        .tree()
        .snapshot_finished(&root(), &BackupDir::new(done.clone(), T0).unwrap())
        .await
        .unwrap());
    let stored = stored_chunks(&e.backend).await;
    assert!(
        !stored.contains(&old_chunk),
        "its chunk is garbage right away"
    );
    assert!(stored.contains(&young_chunk));
    assert!(stored.contains(&run_digest));

    let history =
        e.ds.job_history(Some(JobKind::AbandonedCleanup))
            .await
            .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        history[0].summary["removed-snapshots"][0],
        "vm/1/2023-11-14T22:13:20Z"
    );

    // The running backup finishes normally and restores.
    lease.commit(manifest_blob(&running, T0)).await.unwrap();
    assert_eq!(restore(&e.ds, &running, T0).await, b"running");
}

async fn second_gc_reads_indexes_from_the_cache(kind: Kind) {
    let e = env_on(kind, "gc-cache").await;
    if kind == Kind::Local {
        // Off by default on a local directory (see `gc/index_cache.rs`); its mechanics are the
        // same on both backends, so the rest runs with it on.
        snapshot_with(&e.ds, &vm("off"), T0, &[payload("c", 8)]).await;
        e.ds.gc().run(&|_| {}).await.unwrap();
        assert_eq!(e.ds.gc().index_cache_entries(), 0);
        e.ds.tree().remove_group(&root(), &vm("off")).await.unwrap();
        e.ds.gc()
            .set_index_cache_capacity(crate::datastore::DEFAULT_INDEX_CACHE_DIGESTS);
    }
    for i in 0..6 {
        snapshot_with(
            &e.ds,
            &vm(&i.to_string()),
            T0,
            &[payload("c", i), payload("c", 9)],
        )
        .await;
    }
    let gets = || e.backend.request_counts().map_or(0, |c| c.get);
    let first = e.ds.gc().run(&|_| {}).await.unwrap();
    assert_eq!((first.index_cache_hits, first.index_cache_misses), (0, 6));
    assert_eq!(e.ds.gc().index_cache_entries(), 6);
    let before = gets();
    let second = e.ds.gc().run(&|_| {}).await.unwrap();
    assert_eq!((second.index_cache_hits, second.index_cache_misses), (6, 0));
    assert_eq!(second.index_file_count, 6);
    assert_eq!(second.disk_chunks, first.disk_chunks);
    if kind == Kind::S3 {
        assert_eq!(gets(), before, "no index downloaded again");
    }
    // A removed snapshot leaves the cache; a disabled cache downloads again.
    e.ds.tree().remove_group(&root(), &vm("0")).await.unwrap();
    let third = e.ds.gc().run(&|_| {}).await.unwrap();
    assert_eq!(third.index_file_count, 5);
    assert_eq!(e.ds.gc().index_cache_entries(), 5);
    e.ds.gc().set_index_cache_capacity(0);
    let fourth = e.ds.gc().run(&|_| {}).await.unwrap();
    assert_eq!((fourth.index_cache_hits, fourth.index_cache_misses), (0, 5));
}

/// A stop request (the task's abort) reaches GC while it marks: it ends with an error before
/// sweeping, so an unreferenced chunk is still there and no GC status is recorded; the next
/// GC runs normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_stop_request_ends_it_before_anything_is_swept() {
    let e = env().await;
    snapshot_with(
        &e.ds,
        &vm("1"),
        T0,
        &[payload("kept", 0), payload("kept", 1)],
    )
    .await;
    let (orphan, raw) = chunk(&payload("orphan", 0));
    e.ds.insert_chunk(&orphan, raw, false).await.unwrap();
    age_file(
        &e.root.join(layout::chunk_key(&orphan)),
        Duration::from_secs(3600),
    );
    e.ds.gc().set_cutoff(Duration::from_secs(60));

    let ds = e.ds.clone();
    let stop_when_marking = move |line: String| {
        if line.starts_with("Start GC phase1") {
            ds.gc().request_abort();
        }
    };
    let err = e.ds.gc().run(&stop_when_marking).await.unwrap_err();
    assert!(err.to_string().contains("aborted"), "{err}");
    assert!(stored_chunks(&e.backend).await.contains(&orphan));
    assert!(e.ds.gc().last_status().await.is_none());

    let status = e.ds.gc().run(&|_| {}).await.unwrap();
    assert_eq!(status.removed_chunks, 1);
    assert!(!stored_chunks(&e.backend).await.contains(&orphan));
}

/// On object storage GC journals each group of deletes out of the known-chunk set and, once
/// the journal grew long, merges it into a new `.chunks/.index`. The merge runs after the
/// group's exclusive chunk lock is let go: while its upload is held, a new chunk is stored at
/// once (a merge under the lock blocked every insert for its whole length, 1–2 s at ten million
/// digests). Afterwards the persisted set names exactly what is stored. S3 only: the local
/// backend keeps no known-chunk set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_go_on_while_gc_merges_the_known_set() {
    let s3: Arc<dyn Backend> = Arc::new(
        S3Backend::connect(test_env::settings("gc-merge"))
            .await
            .expect("connect to the test S3 server"),
    );
    let probe = ProbeBackend::new(s3.clone());
    let ds = Datastore::open("test", probe.clone()).await.expect("open");
    // Garbage in more shards than the journal holds before a merge is due (64 objects; each
    // shard's group of deletes writes one).
    let mut garbage = Vec::new();
    for i in 0..300 {
        let (digest, raw) = chunk(&payload("garbage", i));
        ds.insert_chunk(&digest, raw, false).await.unwrap();
        garbage.push(digest);
    }
    let shards: BTreeSet<u8> = garbage.iter().map(|d| d[0]).collect();
    assert!(shards.len() > 100, "garbage in {} shards", shards.len());
    tokio::time::sleep(S3_TICK).await;
    ds.gc().set_cutoff(Duration::ZERO);

    probe
        .hold_known_index
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let merging = probe.started.notified();
    let gc = tokio::spawn({
        let ds = ds.clone();
        async move { ds.gc().run(&|_| {}).await }
    });
    merging.await;
    // GC waits in its merge's upload; a new chunk must not wait for it. Its time lies after
    // GC's start on S3 too, so the rest of the sweep keeps it.
    tokio::time::sleep(S3_TICK).await;
    let (fresh, raw) = chunk(b"stored while GC merges the known set");
    tokio::time::timeout(Duration::from_secs(30), ds.insert_chunk(&fresh, raw, false))
        .await
        .expect("the insert waited for GC's merge of the known set")
        .unwrap();
    probe
        .hold_known_index
        .store(false, std::sync::atomic::Ordering::SeqCst);
    probe.release.notify_one();
    let status = gc.await.unwrap().expect("gc");
    assert_eq!(status.removed_chunks, 300, "{status:?}");

    let stored = stored_chunks(&s3).await;
    assert!(stored.contains(&fresh));
    assert!(garbage.iter().all(|d| !stored.contains(d)));
    assert!(ds.chunks().is_known(&fresh));
    ds.close().await.unwrap();
    let reopened = Datastore::open("test", s3.clone()).await.expect("reopen");
    assert!(reopened.chunks().is_known(&fresh), "persisted as known");
    for d in &garbage {
        assert!(!reopened.chunks().is_known(d), "removed chunk still known");
    }
    reopened.close().await.unwrap();
}
