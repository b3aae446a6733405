//! Connection loss and concurrency (server/docs/protocol.md#session-end, #backup-upgrade-checks
//! steps 8 and 9, #client-call-sequences B): a backup that ends without `finish` leaves nothing
//! behind (quickly, so the group is usable again at once), one after `finish` is kept, two writers
//! of one group are refused, and readers of the previous snapshot coexist with a backup that
//! share-locks it against forget.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::Method;
use pbs_cloud_e2e::{wire, BackupParams, BackupSession, PbsClient, UploadOptions};
use serde_json::json;

const OCTET: &str = "application/octet-stream";
const FORM: &str = "application/x-www-form-urlencoded";
const MIB: usize = 1024 * 1024;
/// How fast an aborted session must be cleaned up.
const CLEANUP: Duration = Duration::from_secs(2);

async fn start(client: &PbsClient, store: &str, id: &str, time: i64) -> BackupSession {
    BackupSession::start(client, BackupParams::new(store, "host", id, time))
        .await
        .expect("backup start")
}

/// `DELETE …/snapshots` (forget) of `host/<id>/<time>`: status and message.
async fn forget(client: &PbsClient, store: &str, id: &str, time: i64) -> (u16, String) {
    let q = query(&[
        ("backup-type", "host"),
        ("backup-id", id),
        ("backup-time", &time.to_string()),
    ]);
    let r = client
        .raw(
            Method::DELETE,
            &format!("/api2/json/admin/datastore/{store}/snapshots?{q}"),
            Some(FORM),
            vec![],
            &[],
            true,
        )
        .await
        .unwrap();
    (r.status, r.text())
}

/// Uploads the manifest as `finish` would, without sending `finish`.
async fn upload_manifest(s: &BackupSession) {
    let blob = s.build_manifest().unwrap().to_blob().unwrap();
    let q = format!("blob?file-name=index.json.blob&encoded-size={}", blob.len());
    let (status, body) = req(s, Method::POST, &q, OCTET, blob).await;
    assert_eq!(status, 200, "manifest upload: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_mid_backup_leaves_nothing_and_frees_the_group() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;
    let opts = UploadOptions::default();

    let mut s = start(&client, &store, "drop", T0).await;
    s.upload_blob("app.conf", b"half done\n").await.unwrap();
    let image = random_bytes(400, 2 * 4 * MIB + 9);
    s.upload_fixed_image("disk.img", &image, &opts)
        .await
        .unwrap();
    // an open dynamic writer with one chunk uploaded and appended
    let (status, body) = req(
        &s,
        Method::POST,
        "dynamic_index?archive-name=open.didx",
        FORM,
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = random_bytes(401, 70_000);
    let d = wire::hex(&wire::sha256(&data));
    let blob = wire::encode_plain_blob(&data, true);
    let q = format!(
        "dynamic_chunk?wid=2&digest={d}&size={}&encoded-size={}",
        data.len(),
        blob.len()
    );
    assert_eq!(req(&s, Method::POST, &q, OCTET, blob).await.0, 200);
    let append = json!({"wid": 2, "digest-list": [d], "offset-list": [0]});
    let put = req(
        &s,
        Method::PUT,
        "dynamic_index",
        "application/json",
        append.to_string().into_bytes(),
    )
    .await;
    assert_eq!(put.0, 200, "{put:?}");
    // the running backup is visible (so the checks below can see a leftover)
    assert_eq!(snapshots(&client, &store, None, "drop").await.len(), 1);
    assert_eq!(snapshot_dirs_on_disk(&server, "drop").len(), 1);

    let dropped = Instant::now();
    drop(s);
    assert_no_snapshot_left(&server, &client, "drop", CLEANUP).await;
    let took = dropped.elapsed();

    // the same group, even the same backup time, is usable again within the cleanup window
    // (the group lock is released right after the snapshot directory is deleted)
    let conf = b"second try\n".to_vec();
    let mut again = loop {
        match BackupSession::start(&client, BackupParams::new(&store, "host", "drop", T0)).await {
            Ok(s) => break s,
            Err(e)
                if dropped.elapsed() < CLEANUP && e.body().is_some_and(|b| b.contains("lock")) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!(
                "backup {:?} after the abort (listing empty after {took:?}) failed: {e}",
                dropped.elapsed()
            ),
        }
    };
    again.upload_blob("app.conf", &conf).await.unwrap();
    again
        .upload_fixed_image("disk.img", &image, &opts)
        .await
        .unwrap();
    again.finish().await.unwrap();
    let r = reader(&client, &store, None, "drop", T0, None)
        .await
        .unwrap();
    assert_eq!(r.restore_archive("disk.img").await.unwrap(), image);
    assert_eq!(r.restore_archive("app.conf").await.unwrap(), conf);
    let m = r.manifest().await.unwrap();
    assert!(m.file("open.didx").is_none(), "{m:?}");
    drop(r);
    assert_good_snapshot_intact(&client, &store, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_after_manifest_before_finish_leaves_nothing() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;

    let mut s = start(&client, &store, "nofinish", T0).await;
    s.upload_blob("app.conf", b"almost\n").await.unwrap();
    s.upload_fixed_image(
        "disk.img",
        &random_bytes(500, 4 * MIB + 1),
        &UploadOptions::default(),
    )
    .await
    .unwrap();
    upload_manifest(&s).await;
    assert_eq!(snapshots(&client, &store, None, "nofinish").await.len(), 1);
    drop(s);
    assert_no_snapshot_left(&server, &client, "nofinish", CLEANUP).await;
    let groups = client
        .get(&format!("admin/datastore/{store}/groups"), None)
        .await
        .unwrap();
    assert!(
        !groups.to_string().contains("nofinish"),
        "aborted group still listed: {groups}"
    );
    assert_good_snapshot_intact(&client, &store, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_after_finish_keeps_the_snapshot() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;

    let image = random_bytes(600, 4 * MIB + 4 * MIB / 2);
    let conf = b"kept\n".to_vec();
    let mut s = start(&client, &store, "kept", T0).await;
    s.upload_blob("app.conf", &conf).await.unwrap();
    s.upload_fixed_image("disk.img", &image, &UploadOptions::default())
        .await
        .unwrap();
    upload_manifest(&s).await;
    let (status, body) = req(&s, Method::POST, "finish", FORM, vec![]).await;
    assert_eq!(status, 200, "finish: {body}");
    // abrupt close (no GOAWAY) right after the successful finish
    drop(s);
    tokio::time::sleep(CLEANUP + Duration::from_millis(500)).await;

    let snaps = snapshots(&client, &store, None, "kept").await;
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snapshot_dirs_on_disk(&server, "kept").len(), 1);
    let r = reader(&client, &store, None, "kept", T0, None)
        .await
        .unwrap();
    assert_eq!(r.restore_archive("disk.img").await.unwrap(), image);
    assert_eq!(r.restore_archive("app.conf").await.unwrap(), conf);
    drop(r);
    assert_good_snapshot_intact(&client, &store, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_concurrent_backup_of_a_group_is_refused() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;
    let other = server.admin_client().await.unwrap();

    let image = random_bytes(700, 4 * MIB + 77);
    let mut first = start(&client, &store, "conc", T0).await;
    first.upload_blob("app.conf", b"first\n").await.unwrap();
    let err = BackupSession::start(&other, BackupParams::new(&store, "host", "conc", T0 + 10))
        .await
        .err()
        .expect("second concurrent backup of one group was accepted");
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.body().unwrap_or("").contains("lock"), "{err}");
    // same snapshot time from a second connection: refused as well
    let err = BackupSession::start(&other, BackupParams::new(&store, "host", "conc", T0))
        .await
        .err()
        .expect("second backup of the same snapshot was accepted");
    assert_eq!(err.status(), Some(400), "{err}");

    first
        .upload_fixed_image("disk.img", &image, &UploadOptions::default())
        .await
        .unwrap();
    first.finish().await.unwrap();
    let snaps = snapshots(&client, &store, None, "conc").await;
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["backup-time"], T0);
    let r = reader(&client, &store, None, "conc", T0, None)
        .await
        .unwrap();
    assert_eq!(r.restore_archive("disk.img").await.unwrap(), image);
    drop(r);

    // once the first is done the group is free again
    let mut second = start(&other, &store, "conc", T0 + 10).await;
    second.upload_blob("app.conf", b"second\n").await.unwrap();
    second.finish().await.unwrap();
    assert_eq!(snapshots(&client, &store, None, "conc").await.len(), 2);
    assert_good_snapshot_intact(&client, &store, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_the_previous_snapshot_coexist_with_a_backup_that_protects_it() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;
    let opts = UploadOptions::default();

    let image = random_bytes(800, 2 * 4 * MIB + 5);
    let mut s = start(&client, &store, "prev", T0).await;
    s.upload_fixed_image("disk.img", &image, &opts)
        .await
        .unwrap();
    s.finish().await.unwrap();

    // a reader on the previous snapshot is open when the next backup starts
    let r1 = reader(&client, &store, None, "prev", T0, None)
        .await
        .unwrap();
    let mut next = start(&client, &store, "prev", T0 + 60).await;
    assert!(
        next.previous_manifest().is_some(),
        "previous snapshot not offered"
    );
    // …and another reader opens while the backup runs (metadata change detection does this)
    let r2 = reader(&client, &store, None, "prev", T0, None)
        .await
        .unwrap();
    assert_eq!(r1.restore_archive("disk.img").await.unwrap(), image);
    let stats = next
        .upload_fixed_image("disk.img", &image, &opts)
        .await
        .unwrap();
    assert!(stats.used_previous, "{stats:?}");
    assert_eq!(r2.restore_archive("disk.img").await.unwrap(), image);
    drop(r1);
    drop(r2);
    // give the server time to notice that both reader connections are gone
    tokio::time::sleep(Duration::from_secs(1)).await;

    // the running backup share-locks its base snapshot: forget is refused
    let (status, text) = forget(&client, &store, "prev", T0).await;
    assert_eq!(status, 400, "forget of the base snapshot: {text}");
    assert!(text.contains("in use"), "{text}");
    assert_eq!(snapshots(&client, &store, None, "prev").await.len(), 2);

    next.finish().await.unwrap();
    // after finish the hold is released and forget works
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = forget(&client, &store, "prev", T0).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forget still refused after finish: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let snaps = snapshots(&client, &store, None, "prev").await;
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["backup-time"], T0 + 60);
    let r = reader(&client, &store, None, "prev", T0 + 60, None)
        .await
        .unwrap();
    assert_eq!(r.restore_archive("disk.img").await.unwrap(), image);
    drop(r);
    assert_good_snapshot_intact(&client, &store, &good).await;
}
