//! Pull sync jobs between two instances of our server (issue 18), over the PBS protocol as
//! their `[[sync_job]]`s say: server B pulls from server A.
//!
//! * namespaces mapped (`prod` → `mirror`, `prod/child` → `mirror/child`), a group filter, the
//!   job's owner on the pulled groups, restores on B byte-identical to the data backed up on A;
//! * incremental: a second run downloads only the chunks B lacks, counted on A (its reader
//!   sessions log every chunk served, as PBS does with `debug`) and on B (chunk files);
//! * `remove_vanished`: vanished snapshots, groups and namespaces go; protected and
//!   retention-locked snapshots stay;
//! * a connection cut mid-job through a TCP proxy: the job fails, the next run completes and
//!   downloads exactly the chunks the first run did not store;
//! * the rate limit (applied to the socket reads): a limited run takes at least as long as its
//!   bytes at that rate;
//! * selection by `transfer_last`, `verified_only` and `encrypted_only`; a scheduled run.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::sync::*;
use common::*;
use pbs_cloud_e2e::fault_proxy::{Fault, FaultProxy};
use pbs_cloud_e2e::sync_pair::{chunk_files, with_remote};
use pbs_cloud_e2e::{Crypt, CryptConfig};
use serde_json::{json, Value};

const MIRROR_JOBS: &str = r#"
[[sync_job]]
id = "mirror"
store = "store1"
ns = "mirror"
remote = "site-a"
remote_store = "store1"
remote_ns = "prod"
schedule = "2099-01-01"
owner = "syncer@pbs"
group_filter = ["exclude:group:host/skip"]
worker_threads = 3

[[sync_job]]
id = "mirror-rv"
store = "store1"
ns = "mirror"
remote = "site-a"
remote_store = "store1"
remote_ns = "prod"
schedule = "2099-01-01"
owner = "syncer@pbs"
group_filter = ["exclude:group:host/skip"]
remove_vanished = true

[[retention_lock]]
id = "keep-locked"
store = "store1"
ns = "mirror"
groups = ["host/locked"]
mode = "compliance"
days = 3650
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_maps_namespaces_fetches_only_missing_chunks_and_removes_vanished() {
    let (a, a_admin) = source().await;
    let secrets = tempfile::tempdir().unwrap();
    let (b, b_admin) = with_remote(
        &a,
        a.port(),
        (SYNC_USER, SYNC_PASSWORD),
        secrets.path(),
        MIRROR_JOBS,
    )
    .await
    .unwrap();
    let mut seen = BTreeSet::new();

    // A: prod/host/web ×2, prod/host/skip (filtered out), prod/host/locked, prod/child/host/db.
    let (tree_dir, mut image) = prod_web_fixture(&a_admin, 18).await;
    let small = random_bytes(20, IMAGE_CHUNK / 2);
    for (ns, id) in [("prod", "skip"), ("prod", "locked"), ("prod/child", "db")] {
        let content = Content {
            tree: None,
            image: Some(&small),
            conf: Some(id.as_bytes()),
        };
        backup(&a_admin, "store1", Some(ns), id, T0, Crypt::None, &content)
            .await
            .unwrap();
    }

    // Run 1: everything but host/skip arrives under mirror/, owned by the job's owner.
    let (status, log, _) = run_job(&b_admin, "mirror").await;
    assert_eq!(status, "OK", "{log:#?}");
    for line in [
        "Syncing datastore 'store1', namespace 'prod' into datastore 'store1', namespace 'mirror'",
        "Syncing datastore 'store1', namespace 'prod/child' into datastore 'store1', namespace 'mirror/child'",
        "Found 2 groups to sync (out of 3 total)",
    ] {
        assert!(
            log.iter().any(|l| l.ends_with(line)),
            "missing {line:?} in {log:#?}"
        );
    }
    // worker_threads = 3: host/locked starts while host/web is still being pulled.
    let position = |needle: &str| {
        log.iter()
            .position(|l| l.ends_with(needle))
            .unwrap_or_else(|| panic!("missing {needle:?} in {log:#?}"))
    };
    assert!(
        position("[host/locked]: 2026-01-01T00:00:00Z: start sync")
            < position("[host/web]: 2026-01-01T01:00:00Z: sync done"),
        "groups pulled one after the other: {log:#?}"
    );
    let web = snapshots(&b_admin, "store1", Some("mirror"), "web").await;
    assert_eq!(times(&web), [T0, T0 + 3600]);
    assert!(web.iter().all(|s| s["owner"] == OWNER), "{web:?}");
    assert!(snapshots(&b_admin, "store1", Some("mirror"), "skip")
        .await
        .is_empty());
    assert_eq!(
        times(&snapshots(&b_admin, "store1", Some("mirror/child"), "db").await),
        [T0]
    );
    assert_restores(
        &b_admin,
        Some("mirror"),
        "web",
        T0 + 3600,
        Some(tree_dir.path()),
        &image,
    )
    .await;
    assert_restores(&b_admin, Some("mirror/child"), "db", T0, None, &small).await;
    let first = served_since(&a_admin, &mut seen).await;
    let stored = chunk_files(&b);
    assert_eq!(
        first, stored,
        "run 1: chunks A served vs chunk files B stored"
    );
    assert!(first >= 5, "run 1 served only {first} chunks");

    // Run 2 after one more snapshot on A that changes one image chunk: only it crosses.
    image[IMAGE_CHUNK + 7] ^= 0xff;
    backup_web(&a_admin, tree_dir.path(), &image, T0 + 7200).await;
    let (status, log, _) = run_job(&b_admin, "mirror").await;
    assert_eq!(status, "OK", "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.ends_with("T01:00:00Z: no data changes")),
        "the newest local snapshot is re-checked: {log:#?}"
    );
    let second = served_since(&a_admin, &mut seen).await;
    let added = chunk_files(&b) - stored;
    assert_eq!(
        second, added,
        "run 2: chunks A served vs new chunk files on B"
    );
    assert_eq!(second, 1, "one changed image chunk, everything else known");
    assert_restores(
        &b_admin,
        Some("mirror"),
        "web",
        T0 + 7200,
        Some(tree_dir.path()),
        &image,
    )
    .await;
    println!("pull: run 1 served {first} chunks, run 2 (one chunk changed) {second}");

    // Run 3 with remove_vanished after forgetting on A: web T0 (protected on B) and T0+1h,
    // the locked group, and the child namespace.
    let prot = json!({ "ns": "mirror", "backup-type": "host", "backup-id": "web",
        "backup-time": T0, "protected": "1" });
    b_admin
        .call_form_body(http::Method::PUT, "admin/datastore/store1/protected", &prot)
        .await
        .unwrap();
    forget(&a_admin, "prod", "web", T0).await;
    forget(&a_admin, "prod", "web", T0 + 3600).await;
    forget(&a_admin, "prod", "locked", T0).await;
    // A note added on A to the newest snapshot B already has follows with the re-check.
    a_admin
        .put(
            "admin/datastore/store1/notes",
            Some(
                &json!({ "ns": "prod", "backup-type": "host", "backup-id": "web",
                "backup-time": T0 + 7200, "notes": "pulled note: a&b" }),
            ),
        )
        .await
        .unwrap();
    a_admin
        .delete(
            "admin/datastore/store1/namespace",
            Some(&json!({ "ns": "prod/child", "delete-groups": true })),
        )
        .await
        .unwrap();
    let (status, log, _) = run_job(&b_admin, "mirror-rv").await;
    assert_eq!(status, "OK", "{log:#?}");
    let web = snapshots(&b_admin, "store1", Some("mirror"), "web").await;
    assert_eq!(
        times(&web),
        [T0, T0 + 7200],
        "protected T0 kept, T0+1h removed"
    );
    assert_eq!(web[1]["comment"], "pulled note: a&b", "{web:?}");
    assert!(
        log.iter()
            .any(|l| l.ends_with("T02:00:00Z: notes and verify state updated from the remote")),
        "{log:#?}"
    );
    assert_eq!(
        times(&snapshots(&b_admin, "store1", Some("mirror"), "locked").await),
        [T0],
        "the retention-locked snapshot stays: {log:#?}"
    );
    let namespaces = b_admin
        .get("admin/datastore/store1/namespace", None)
        .await
        .unwrap();
    assert!(
        !namespaces.to_string().contains("mirror/child"),
        "vanished namespace removed: {namespaces}"
    );
    for needle in [
        "kept vanished snapshot host/web/2026-01-01T00:00:00Z - it is protected",
        "delete vanished snapshot host/web/2026-01-01T01:00:00Z",
        "kept vanished group 'host/locked'",
        "delete vanished namespace 'mirror/child'",
        "Summary: removed vanished: snapshots: 2, groups: 0, namespaces: 1",
    ] {
        assert!(
            log.iter().any(|l| l.contains(needle)),
            "missing {needle:?} in {log:#?}"
        );
    }
    assert_restores(
        &b_admin,
        Some("mirror"),
        "web",
        T0,
        Some(tree_dir.path()),
        &random_bytes(19, 3 * IMAGE_CHUNK),
    )
    .await;
}

const SLOW_JOB: &str = r#"
[[sync_job]]
id = "slow"
store = "store1"
remote = "site-a"
remote_store = "store1"
schedule = "2099-01-01"
rate_in = "16 MiB"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_resumes_after_a_cut_without_fetching_stored_chunks_and_keeps_its_rate() {
    let (a, a_admin) = source().await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", a.port()).parse().unwrap())
        .await
        .unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let (b, b_admin) = with_remote(
        &a,
        proxy.port(),
        (SYNC_USER, SYNC_PASSWORD),
        secrets.path(),
        SLOW_JOB,
    )
    .await
    .unwrap();
    let mut seen = BTreeSet::new();

    // 24 random 4 MiB chunks: 96 MiB at 16 MiB/s is about 6 s of transfer. A pull downloads
    // 8 chunks at once, interleaved on one connection, so chunks complete in bursts; with 24
    // of them a cut after the first two leaves at least 14 never requested.
    let image = random_bytes(31, 24 * IMAGE_CHUNK);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: Some(b"bulk"),
    };
    backup(&a_admin, "store1", None, "bulk", T0, Crypt::None, &content)
        .await
        .unwrap();
    let total_chunks = 24;
    // The upload's chunks are A's only chunk files: the count B must end with.
    assert_eq!(chunk_files(&a), total_chunks);

    // Run 1: cut every connection once B has stored two chunks.
    let upid = run_and_cut(&b_admin, "slow", &proxy, &b, 2).await;
    let (status, log) = wait_task_long(&b_admin, &upid).await;
    assert_ne!(status, "OK", "the cut run must fail: {log:#?}");
    assert!(
        snapshots(&b_admin, "store1", None, "bulk").await.is_empty(),
        "no partial snapshot"
    );
    let stored_after_cut = chunk_files(&b);
    // Cut at 2 stored: what B had in flight (8 chunks) or buffered (a quarter second, as the
    // rate limit fixes B's receive buffer) may complete a few more, never all.
    assert!(
        (2..total_chunks).contains(&stored_after_cut),
        "run 1 stored {stored_after_cut} of {total_chunks} chunks before the cut"
    );
    served_since(&a_admin, &mut seen).await;

    // Run 2: completes, fetches exactly the chunks B does not have, at no more than 16 MiB/s.
    proxy.set(Fault::Pass);
    let (status, log, seconds) = run_job(&b_admin, "slow").await;
    assert_eq!(status, "OK", "{log:#?}");
    let fetched = served_since(&a_admin, &mut seen).await;
    assert_eq!(
        fetched,
        total_chunks - stored_after_cut,
        "run 2 fetched only the chunks run 1 had not stored"
    );
    assert_eq!(chunk_files(&b), total_chunks);
    assert_restores(&b_admin, None, "bulk", T0, None, &image).await;
    // The first chunk passes at once; each further one waits its 0.25 s at 16 MiB/s.
    let floor = (fetched.saturating_sub(1) * IMAGE_CHUNK) as f64 / (16 << 20) as f64;
    assert!(
        seconds >= floor * 0.9,
        "run 2 took {seconds:.2} s for {fetched} chunks; the rate limit needs {floor:.2} s"
    );
    println!(
        "pull after cut: {stored_after_cut} chunks stored by run 1, {fetched} fetched by run 2 \
         in {seconds:.2} s (limit floor {floor:.2} s)"
    );
}

const FILTER_JOBS: &str = r#"
[[sync_job]]
id = "last2"
store = "store1"
ns = "last2"
remote = "site-a"
remote_store = "store1"
schedule = "2099-01-01"
group_filter = ["group:host/plain"]
transfer_last = 2

[[sync_job]]
id = "verified"
store = "store1"
ns = "verified"
remote = "site-a"
remote_store = "store1"
schedule = "2099-01-01"
verified_only = true

[[sync_job]]
id = "encrypted"
store = "store1"
ns = "encrypted"
remote = "site-a"
remote_store = "store1"
schedule = "2099-01-01"
encrypted_only = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_selects_by_transfer_last_verification_and_encryption() {
    let (a, a_admin) = source().await;
    let secrets = tempfile::tempdir().unwrap();
    let (_b, b_admin) = with_remote(
        &a,
        a.port(),
        (SYNC_USER, SYNC_PASSWORD),
        secrets.path(),
        FILTER_JOBS,
    )
    .await
    .unwrap();
    for ns in ["last2", "verified", "encrypted"] {
        create_ns(&b_admin, ns, None).await;
    }
    // A: host/plain at T0, T0+1h, T0+2h (only T0+1h verified), host/secret encrypted at T0.
    let image = random_bytes(71, IMAGE_CHUNK);
    for time in [T0, T0 + 3600, T0 + 7200] {
        let content = Content {
            tree: None,
            image: Some(&image),
            conf: Some(b"plain"),
        };
        backup(
            &a_admin,
            "store1",
            None,
            "plain",
            time,
            Crypt::None,
            &content,
        )
        .await
        .unwrap();
    }
    let key = CryptConfig::random();
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: Some(b"secret"),
    };
    backup(
        &a_admin,
        "store1",
        None,
        "secret",
        T0,
        Crypt::Encrypt(key.clone()),
        &content,
    )
    .await
    .unwrap();
    let upid = a_admin
        .post(
            "admin/datastore/store1/verify",
            Some(&json!({ "backup-type": "host", "backup-id": "plain", "backup-time": T0 + 3600 })),
        )
        .await
        .unwrap();
    let (status, log) = wait_task(&a_admin, upid.as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "OK", "{log:#?}");

    let pulled = |ns: &'static str, id: &'static str| {
        let b_admin = &b_admin;
        async move { times(&snapshots(b_admin, "store1", Some(ns), id).await) }
    };
    let (status, log, _) = run_job(&b_admin, "last2").await;
    assert_eq!(status, "OK", "{log:#?}");
    assert_eq!(pulled("last2", "plain").await, [T0 + 3600, T0 + 7200]);
    assert!(pulled("last2", "secret").await.is_empty(), "filtered out");

    let (status, log, _) = run_job(&b_admin, "verified").await;
    assert_eq!(status, "OK", "{log:#?}");
    assert_eq!(pulled("verified", "plain").await, [T0 + 3600]);
    assert!(
        pulled("verified", "secret").await.is_empty(),
        "never verified"
    );

    let (status, log, _) = run_job(&b_admin, "encrypted").await;
    assert_eq!(status, "OK", "{log:#?}");
    assert!(
        pulled("encrypted", "plain").await.is_empty(),
        "not encrypted"
    );
    assert_eq!(pulled("encrypted", "secret").await, [T0]);
    // The encrypted copy restores with the owner's key only, byte for byte.
    let session = reader(
        &b_admin,
        "store1",
        Some("encrypted"),
        "secret",
        T0,
        Some(key),
    )
    .await
    .unwrap();
    assert!(session.restore_archive("disk.img").await.unwrap() == image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_pull_runs_on_its_own_and_lists_its_last_run() {
    let (a, a_admin) = source().await;
    let image = random_bytes(81, IMAGE_CHUNK / 2);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: Some(b"scheduled"),
    };
    backup(&a_admin, "store1", None, "sched", T0, Crypt::None, &content)
        .await
        .unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let job = "[[sync_job]]\nid = \"often\"\nstore = \"store1\"\nremote = \"site-a\"\n\
               remote_store = \"store1\"\nschedule = \"*:*:0/3\"\n";
    let (_b, b_admin) = with_remote(
        &a,
        a.port(),
        (SYNC_USER, SYNC_PASSWORD),
        secrets.path(),
        job,
    )
    .await
    .unwrap();
    // Nobody starts it: the scheduler does, within a few seconds. (A snapshot being written
    // is listed without a size.)
    let mut pulled = Vec::new();
    for _ in 0..300 {
        let list = snapshots(&b_admin, "store1", None, "sched").await;
        let finished: Vec<Value> = list.into_iter().filter(|s| s["size"].is_u64()).collect();
        pulled = times(&finished);
        if !pulled.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pulled, [T0], "the scheduled pull did not run");
    assert_restores(&b_admin, None, "sched", T0, None, &image).await;
    let jobs = b_admin.get("admin/sync", None).await.unwrap();
    let listed = &jobs[0];
    assert_eq!(listed["id"], "often", "{jobs}");
    assert_eq!(listed["remote"], "site-a", "{jobs}");
    assert_eq!(listed["sync-direction"], "pull", "{jobs}");
    assert!(listed["next-run"].as_i64().is_some(), "{jobs}");
    assert!(
        listed["last-run-upid"]
            .as_str()
            .is_some_and(|u| u.contains(":syncjob:")),
        "{jobs}"
    );
}
