//! Fencing by the writer lease: takeover is exclusive (one of many concurrent servers wins, on
//! a filesystem and on S3), a server that lost its lease or could not renew it in time refuses
//! every destructive operation, and `close` lets writes in flight land before the lease goes.

use super::*;
use crate::datastore::writer_lease::LEASE_PREFIX;

on_both_backends!(
    concurrent_takeover_has_one_winner,
    a_server_that_lost_its_lease_refuses_every_destructive_operation,
);

/// Lease timing short enough for a test; renewal only when the test asks.
fn short(ttl_secs: u64, margin_secs: u64) -> LeaseTiming {
    LeaseTiming {
        ttl: Duration::from_secs(ttl_secs),
        renew: Duration::from_secs(3600),
        margin: Duration::from_secs(margin_secs),
    }
}

/// A datastore on `kind` opened with a short lease (no background renewal).
async fn short_lease_env(kind: Kind, name: &str, ttl: u64, margin: u64) -> Env {
    let e = env_on(kind, name).await;
    e.ds.close().await.expect("close the default-timed store");
    let ds = Datastore::open_with("test", e.backend.clone(), "server-a", short(ttl, margin))
        .await
        .expect("open with a short lease");
    Env { ds, ..e }
}

/// Polls `open_with` for `holder` until it succeeds (the lease expired), with a deadline.
async fn open_when_expired(backend: &Arc<dyn Backend>, holder: &str) -> Arc<Datastore> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match Datastore::open_with("test", backend.clone(), holder, short(60, 10)).await {
            Ok(ds) => return ds,
            Err(DatastoreError::Busy(msg)) if std::time::Instant::now() < deadline => {
                assert!(msg.contains("server-a"), "{msg}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{holder} could not take the expired lease: {e}"),
        }
    }
}

async fn concurrent_takeover_has_one_winner(kind: Kind) {
    let e = short_lease_env(kind, "takeover", 2, 1).await;
    // Nobody renews server-a's lease: once it expired, eight servers race for it.
    let first = open_when_expired(&e.backend, "probe").await;
    first.close().await.unwrap();
    let attempts = (0..8).map(|i| {
        let backend = e.backend.clone();
        tokio::spawn(async move {
            Datastore::open_with("test", backend, &format!("racer-{i}"), short(60, 10)).await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("task"))
        .filter_map(Result::ok)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one server takes the lease over");
    let winner = &winners[0];
    let listed = e.backend.list(LEASE_PREFIX, None).await.unwrap();
    assert!(!listed.objects.is_empty());
    // The newest generation names the winner.
    let top = listed.objects.iter().map(|o| &o.key).max().unwrap();
    let record = e.backend.get(top).await.unwrap();
    assert!(
        String::from_utf8_lossy(&record).contains(winner.lease_holder()),
        "{}",
        String::from_utf8_lossy(&record)
    );

    // The original holder learns at its next renewal that it lost, and stays fenced.
    e.ds.writer.renew().await.unwrap();
    let err = e.ds.check_writable().unwrap_err().to_string();
    assert!(
        err.contains("lost its writer lease") && err.contains(winner.lease_holder()),
        "{err}"
    );
    let (digest, raw) = chunk(b"late write");
    let err = e.ds.insert_chunk(&digest, raw, false).await.unwrap_err();
    assert!(err.to_string().contains("lease"), "{err}");
    winner.writer.renew().await.unwrap();
    winner
        .check_writable()
        .expect("the winner renews and writes");
}

async fn a_server_that_lost_its_lease_refuses_every_destructive_operation(kind: Kind) {
    let e = short_lease_env(kind, "fenced", 6, 2).await;
    let ns = BackupNamespace::parse("team").unwrap();
    e.ds.tree().create_namespace(&root(), "team").await.unwrap();
    backup(&e.ds, &root(), &vm("100"), T0).await;
    backup(&e.ds, &root(), &vm("100"), T0 + 10).await;
    backup(&e.ds, &ns, &vm("200"), T0).await;
    e.ds.gc().set_cutoff(Duration::ZERO);
    let before = all_keys(e.backend.as_ref()).await;

    // Another server takes over once server-a's lease expired.
    let other = open_when_expired(&e.backend, "server-b").await;
    e.ds.writer.renew().await.unwrap();

    let snaps =
        e.ds.tree()
            .list_snapshots(&root(), &vm("100"))
            .await
            .unwrap();
    let chunk_digest = sha256(format!("data {T0}").as_bytes());
    let refused: Vec<(&str, DatastoreError)> = vec![
        (
            "forget",
            e.ds.tree()
                .remove_snapshot(&root(), &snaps[0].dir, false)
                .await
                .unwrap_err(),
        ),
        (
            "group removal",
            e.ds.tree()
                .remove_group(&root(), &vm("100"))
                .await
                .unwrap_err(),
        ),
        (
            "namespace removal",
            e.ds.tree().delete_namespace(&ns, true).await.unwrap_err(),
        ),
        ("gc", e.ds.gc().run(&|_| {}).await.unwrap_err()),
        (
            "verify's move of a bad chunk",
            e.ds.mark_chunk_bad(&chunk_digest).await.unwrap_err(),
        ),
        (
            "group move",
            e.ds.tree()
                .move_group(&root(), &vm("100"), &ns, false, &|_| {})
                .await
                .unwrap_err(),
        ),
        (
            "namespace move",
            e.ds.tree()
                .move_namespace(
                    &ns,
                    &BackupNamespace::parse("moved").unwrap(),
                    None,
                    true,
                    false,
                    &|_| {},
                )
                .await
                .unwrap_err(),
        ),
    ];
    for (what, err) in &refused {
        assert!(err.to_string().contains("lease"), "{what}: {err}");
    }
    // Prune removes through forget: the job refuses the same way.
    let err =
        e.ds.tree()
            .remove_snapshot(&root(), &snaps[1].dir, false)
            .await;
    assert!(err.is_err(), "prune's removal");
    assert_eq!(
        all_keys(e.backend.as_ref()).await,
        before,
        "nothing was removed by the fenced server"
    );
    // The new holder works normally.
    other
        .tree()
        .remove_snapshot(&root(), &snaps[0].dir, false)
        .await
        .expect("the holder may forget");
}

#[tokio::test]
async fn writes_stop_when_the_lease_is_not_renewed_in_time_and_resume_after() {
    let e = short_lease_env(Kind::Local, "stale", 3, 1).await;
    backup(&e.ds, &root(), &vm("1"), T0).await;
    // No renewal: after TTL − margin = 2 s the server stops writing on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while e.ds.check_writable().is_ok() {
        assert!(std::time::Instant::now() < deadline, "never went stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = e.ds.check_writable().unwrap_err().to_string();
    assert!(err.contains("last renewed"), "{err}");
    let snaps = e.ds.tree().list_snapshots(&root(), &vm("1")).await.unwrap();
    let err =
        e.ds.tree()
            .remove_snapshot(&root(), &snaps[0].dir, false)
            .await;
    assert!(err.unwrap_err().to_string().contains("renewed"));
    let (digest, raw) = chunk(b"while stale");
    assert!(e
        .ds
        .insert_chunk(&digest, raw.clone(), false)
        .await
        .is_err());
    assert!(e
        .ds
        .start_backup(&root(), &vm("2"), T0, AUTH)
        .await
        .is_err());

    // A successful renewal proves nobody took over: writes resume.
    e.ds.writer.renew().await.unwrap();
    e.ds.check_writable().expect("writable after renewal");
    e.ds.insert_chunk(&digest, raw, false).await.unwrap();
    e.ds.tree()
        .remove_snapshot(&root(), &snaps[0].dir, false)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dead_holder_on_this_machine_is_taken_over_at_once() {
    let e = env().await;
    e.ds.close().await.unwrap();
    // A process that has ended: its pid with a start time that cannot match.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let stamp = |pid: u32, start: u64| {
        serde_json::json!({
            "boot_id": std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .unwrap().trim(),
            "pid_ns": std::os::unix::fs::MetadataExt::ino(
                &std::fs::metadata("/proc/self/ns/pid").unwrap()),
            "pid": pid,
            "start": start,
        })
    };
    let far = chrono::Utc::now().timestamp() + 3600;
    let generations = e.backend.list(LEASE_PREFIX, None).await.unwrap();
    let top = generations
        .objects
        .iter()
        .map(|o| o.key.clone())
        .max()
        .unwrap();
    let next = u64::from_str_radix(top.trim_start_matches(LEASE_PREFIX), 16).unwrap() + 1;
    let record = serde_json::json!({
        "holder": "import-ghost", "expires": far, "process": stamp(pid, u64::MAX),
    });
    e.backend
        .put(
            &format!("{LEASE_PREFIX}{next:016x}"),
            Bytes::from(record.to_string()),
            Default::default(),
        )
        .await
        .unwrap();
    let ds = Datastore::open_as("test", e.backend.clone(), "server")
        .await
        .expect("the dead holder's lease is taken over without waiting");
    ds.close().await.unwrap();

    // A live holder (this very process) is respected.
    let own_start = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = own_start[own_start.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let start: u64 = fields[19].parse().unwrap();
    let generations = e.backend.list(LEASE_PREFIX, None).await.unwrap();
    let top = generations
        .objects
        .iter()
        .map(|o| o.key.clone())
        .max()
        .unwrap();
    let next = u64::from_str_radix(top.trim_start_matches(LEASE_PREFIX), 16).unwrap() + 1;
    let record = serde_json::json!({
        "holder": "import-alive", "expires": far,
        "process": stamp(std::process::id(), start),
    });
    e.backend
        .put(
            &format!("{LEASE_PREFIX}{next:016x}"),
            Bytes::from(record.to_string()),
            Default::default(),
        )
        .await
        .unwrap();
    let err = Datastore::open_as("test", e.backend.clone(), "server")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("import-alive"), "{err}");
}

#[tokio::test]
async fn a_live_lease_of_an_earlier_version_is_respected() {
    let e = env().await;
    e.ds.close().await.unwrap();
    let far = chrono::Utc::now().timestamp() + 3600;
    let old = serde_json::json!({"holder": "old-server", "expires": far});
    e.backend
        .put(LEASE, Bytes::from(old.to_string()), Default::default())
        .await
        .unwrap();
    let err = Datastore::open_as("test", e.backend.clone(), "new-server")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("old-server"), "{err}");
    let expired = serde_json::json!({"holder": "old-server", "expires": 1});
    e.backend
        .put(LEASE, Bytes::from(expired.to_string()), Default::default())
        .await
        .unwrap();
    Datastore::open_as("test", e.backend.clone(), "new-server")
        .await
        .unwrap();
    assert!(
        e.backend.head(LEASE).await.unwrap().is_none(),
        "old object removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_lets_writes_in_flight_land_before_the_lease_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Backend> = Arc::new(LocalBackend::open(&dir.path().join("s")).unwrap());
    let held = ProbeBackend::new(local.clone());
    held.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let ds = Datastore::open("test", held.clone()).await.unwrap();
    let (digest, raw) = chunk(b"in flight at shutdown");
    let started = held.started.notified();
    let insert = tokio::spawn({
        let ds = ds.clone();
        async move { ds.insert_chunk(&digest, raw, false).await }
    });
    started.await;
    let closing = tokio::spawn({
        let ds = ds.clone();
        async move { ds.close().await }
    });
    // Closing refuses new writes at once, but waits for the one in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ds.is_closing() {
        assert!(std::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    let (other, other_raw) = chunk(b"after close began");
    let err = ds.insert_chunk(&other, other_raw, false).await.unwrap_err();
    assert!(err.to_string().contains("closing"), "{err}");
    assert!(
        !closing.is_finished(),
        "close waits for the write in flight"
    );
    let lease_before = local.list(LEASE_PREFIX, None).await.unwrap().objects;
    held.release.notify_one();
    insert.await.unwrap().expect("the write in flight lands");
    closing.await.unwrap().expect("close");
    assert!(local
        .head(&layout::chunk_key(&digest))
        .await
        .unwrap()
        .is_some());
    // Released only afterwards: the newest generation says so, and another server may start.
    let lease_after = local.list(LEASE_PREFIX, None).await.unwrap().objects;
    assert_ne!(lease_before, lease_after);
    Datastore::open_as("test", local, "next-server")
        .await
        .expect("released lease is free at once");
}
