//! Push sync jobs between two instances of our server (issue 18): server A pushes to server B
//! like a pushing PBS 4.2: namespaces created on B, one backup session per snapshot that reuses
//! B's previous snapshot (only new chunks sent, counted on both sides), the owner rule, and
//! remove-vanished through B's REST API (protected snapshots left alone); a push cut
//! mid-snapshot resumes without sending B a chunk it already stored; `rate_out` holds.

mod common;

use common::sync::*;
use common::*;
use pbs_cloud_e2e::fault_proxy::{Fault, FaultProxy};
use pbs_cloud_e2e::sync_pair::{self, chunk_files, summary_chunks, with_remote, with_user};
use pbs_cloud_e2e::{Crypt, PbsClient, TestServer};
use serde_json::json;

const PUSH_USER: &str = "pusher@pbs";
const PUSH_PASSWORD: &str = "push-secret-1";

/// B: the push target, with a user that may back up and remove.
async fn push_target() -> (TestServer, PbsClient) {
    with_user(PUSH_USER, PUSH_PASSWORD, "DatastoreAdmin")
        .await
        .expect("start pbs-cloud-server (build it with `cargo build -p pbs-cloud-server`)")
}

/// A: a server whose remote `site-a` is B at `port` (B's own, or a proxy's in front of it),
/// configured with `jobs`; the directory holding the remote's secret goes with it.
async fn pushing_source(
    b: &TestServer,
    port: u16,
    jobs: &str,
) -> (TestServer, PbsClient, tempfile::TempDir) {
    let secrets = tempfile::tempdir().unwrap();
    let (a, a_admin) = with_remote(b, port, (PUSH_USER, PUSH_PASSWORD), secrets.path(), jobs)
        .await
        .unwrap();
    (a, a_admin, secrets)
}

/// B's backup tasks of the pushing user, oldest first, once stopped.
async fn backup_tasks(b_admin: &PbsClient) -> Vec<sync_pair::StoppedTask> {
    sync_pair::stopped_tasks(b_admin, "backup", PUSH_USER, &Default::default())
        .await
        .unwrap()
}

const PUSH_JOB: &str = r#"
[[sync_job]]
id = "offsite"
direction = "push"
store = "store1"
ns = "prod"
remote = "site-a"
remote_store = "store1"
remote_ns = "offsite"
schedule = "2099-01-01"
remove_vanished = true
worker_threads = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_creates_namespaces_sends_only_new_chunks_keeps_owners_and_removes_vanished() {
    // B is the push target with a user that may back up and remove; A pushes its prod/ to B's
    // offsite/.
    let (b, b_admin) = push_target().await;
    let (_a, a_admin, _secrets) = pushing_source(&b, b.port(), PUSH_JOB).await;

    let (tree_dir, mut image) = prod_web_fixture(&a_admin, 41).await;
    let first_image = image.clone();
    let small = random_bytes(43, IMAGE_CHUNK / 2);
    for (ns, id) in [("prod", "foreign"), ("prod/child", "db")] {
        let content = Content {
            tree: None,
            image: Some(&small),
            conf: Some(id.as_bytes()),
        };
        backup(&a_admin, "store1", Some(ns), id, T0, Crypt::None, &content)
            .await
            .unwrap();
    }
    // On B, offsite/host/foreign already belongs to B's admin: the owner rule keeps it.
    create_ns(&b_admin, "offsite", None).await;
    let theirs = random_bytes(44, IMAGE_CHUNK / 4);
    let content = Content {
        tree: None,
        image: Some(&theirs),
        conf: Some(b"theirs"),
    };
    backup(
        &b_admin,
        "store1",
        Some("offsite"),
        "foreign",
        T0 + 60,
        Crypt::None,
        &content,
    )
    .await
    .unwrap();
    let before = chunk_files(&b);

    // Run 1: everything but host/foreign reaches B; the run reports that group's refusal.
    let (status, log, _) = run_job(&a_admin, "offsite").await;
    assert_ne!(status, "OK", "the owner refusal fails the run: {log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("[host/foreign]: sync group failed - owner check failed")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.ends_with("created remote namespace 'offsite/child'")),
        "{log:#?}"
    );
    let web = snapshots(&b_admin, "store1", Some("offsite"), "web").await;
    assert_eq!(times(&web), [T0, T0 + 3600]);
    assert!(web.iter().all(|s| s["owner"] == PUSH_USER), "{web:?}");
    let foreign = snapshots(&b_admin, "store1", Some("offsite"), "foreign").await;
    assert_eq!(times(&foreign), [T0 + 60], "B's own group untouched");
    assert_restores(
        &b_admin,
        Some("offsite"),
        "web",
        T0 + 3600,
        Some(tree_dir.path()),
        &image,
    )
    .await;
    assert_restores(&b_admin, Some("offsite/child"), "db", T0, None, &small).await;
    let first = summary_chunks(&log).unwrap();
    let stored = chunk_files(&b);
    assert_eq!(
        first,
        stored - before,
        "run 1: chunks A sent vs new chunk files on B"
    );

    // Run 2 after one more snapshot with one changed image chunk: only that chunk is sent,
    // the rest is referenced from B's previous snapshot.
    image[2 * IMAGE_CHUNK + 5] ^= 0xff;
    backup_web(&a_admin, tree_dir.path(), &image, T0 + 7200).await;
    let (_, log, _) = run_job(&a_admin, "offsite").await;
    let second = summary_chunks(&log).unwrap();
    assert_eq!(
        second,
        chunk_files(&b) - stored,
        "run 2: sent vs stored on B"
    );
    assert_eq!(second, 1, "one changed image chunk: {log:#?}");
    assert_restores(
        &b_admin,
        Some("offsite"),
        "web",
        T0 + 7200,
        Some(tree_dir.path()),
        &image,
    )
    .await;
    println!("push: run 1 sent {first} chunks, run 2 (one chunk changed) {second}");

    // Run 3 with snapshots and a namespace gone on A: B's protected T0 stays (no request),
    // T0+1h and offsite/child go.
    let prot = json!({ "ns": "offsite", "backup-type": "host", "backup-id": "web",
        "backup-time": T0, "protected": "1" });
    b_admin
        .call_form_body(http::Method::PUT, "admin/datastore/store1/protected", &prot)
        .await
        .unwrap();
    forget(&a_admin, "prod", "web", T0).await;
    forget(&a_admin, "prod", "web", T0 + 3600).await;
    a_admin
        .delete(
            "admin/datastore/store1/namespace",
            Some(&json!({ "ns": "prod/child", "delete-groups": true })),
        )
        .await
        .unwrap();
    let (_, log, _) = run_job(&a_admin, "offsite").await;
    for needle in [
        "[host/web]: Kept protected snapshot host/web/2026-01-01T00:00:00Z",
        "[host/web]: delete vanished snapshot host/web/2026-01-01T01:00:00Z",
        "delete vanished namespace 'offsite/child'",
    ] {
        assert!(
            log.iter().any(|l| l.contains(needle)),
            "missing {needle:?} in {log:#?}"
        );
    }
    let web = snapshots(&b_admin, "store1", Some("offsite"), "web").await;
    assert_eq!(times(&web), [T0, T0 + 7200]);
    assert_restores(
        &b_admin,
        Some("offsite"),
        "web",
        T0,
        Some(tree_dir.path()),
        &first_image,
    )
    .await;
    let namespaces = b_admin
        .get("admin/datastore/store1/namespace", None)
        .await
        .unwrap();
    assert!(
        !namespaces.to_string().contains("offsite/child"),
        "{namespaces}"
    );
    assert_eq!(
        times(&snapshots(&b_admin, "store1", Some("offsite"), "foreign").await),
        [T0 + 60],
        "B's own group is never removed"
    );
}

const SLOW_PUSH: &str = r#"
[[sync_job]]
id = "slow"
direction = "push"
store = "store1"
remote = "site-a"
remote_store = "store1"
schedule = "2099-01-01"
rate_out = "16 MiB"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_push_resumes_without_sending_stored_chunks_again() {
    let (b, b_admin) = push_target().await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", b.port()).parse().unwrap())
        .await
        .unwrap();
    let (a, a_admin, _secrets) = pushing_source(&b, proxy.port(), SLOW_PUSH).await;
    // 16 random 4 MiB chunks, 8 in flight at once: a cut after two leaves some never sent.
    let image = random_bytes(47, 16 * IMAGE_CHUNK);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: Some(b"bulk"),
    };
    backup(&a_admin, "store1", None, "bulk", T0, Crypt::None, &content)
        .await
        .unwrap();
    let total = chunk_files(&a);
    assert_eq!(total, 16);

    // Run 1: cut every connection once B has stored two chunks.
    let upid = run_and_cut(&a_admin, "slow", &proxy, &b, 2).await;
    let (status, log) = wait_task_long(&a_admin, &upid).await;
    assert_ne!(status, "OK", "the cut run must fail: {log:#?}");
    // B's session ends (and writes its resume record) before its task stops.
    let b_tasks = backup_tasks(&b_admin).await;
    assert_eq!(b_tasks.len(), 1, "{b_tasks:#?}");
    assert_ne!(b_tasks[0].exitstatus, "OK", "{b_tasks:#?}");
    assert!(
        snapshots(&b_admin, "store1", None, "bulk").await.is_empty(),
        "no partial snapshot on B"
    );
    let stored = chunk_files(&b);
    assert!(
        (2..total).contains(&stored),
        "run 1 stored {stored} of {total} chunks before the cut"
    );

    // Run 2: B hands over what it stored; A sends only the rest.
    proxy.set(Fault::Pass);
    let (status, log, seconds) = run_job(&a_admin, "slow").await;
    assert_eq!(status, "OK", "{log:#?}");
    assert!(
        log.iter().any(|l| l.ends_with(&format!(
            "the remote kept {stored} chunks of an interrupted push"
        ))),
        "{log:#?}"
    );
    assert_eq!(summary_chunks(&log), Some(total - stored), "{log:#?}");
    assert_eq!(chunk_files(&b), total);
    assert_restores(&b_admin, None, "bulk", T0, None, &image).await;
    // Measured on B: its session took the record over, and no upload was of a chunk B had
    // (PBS's "Duplicates: <known to the client>+<found on the server>").
    let b_tasks = backup_tasks(&b_admin).await;
    let last = b_tasks.last().unwrap();
    let b_log = &last.log;
    assert_eq!(last.exitstatus, "OK", "{b_log:#?}");
    let resumed = format!(
        "resume: {stored} of {stored} chunks uploaded by an interrupted session are still stored"
    );
    assert!(b_log.iter().any(|l| l.ends_with(&resumed)), "{b_log:#?}");
    let duplicates: Vec<&String> = b_log
        .iter()
        .filter(|l| l.contains("Duplicates: "))
        .collect();
    assert!(
        duplicates
            .iter()
            .any(|l| l.contains(&format!("Duplicates: {stored}+0 "))),
        "{b_log:#?}"
    );
    assert!(
        duplicates.iter().all(|l| l.contains("+0 ")),
        "B received a chunk it had: {b_log:#?}"
    );
    println!(
        "push after cut: {stored} chunks stored by run 1, {} sent by run 2 in {seconds:.2} s",
        total - stored
    );
}

const LIMITED_PUSH: &str = r#"
[[sync_job]]
id = "limited"
direction = "push"
store = "store1"
remote = "site-a"
remote_store = "store1"
schedule = "2099-01-01"
rate_out = "2 MiB"
"#;

/// `rate_out` holds end to end: the push of 4 random 4 MiB chunks takes at least the time
/// the limit allows (the first write passes at once, the rest wait their share).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_keeps_its_rate_out() {
    let (b, b_admin) = push_target().await;
    let (_a, a_admin, _secrets) = pushing_source(&b, b.port(), LIMITED_PUSH).await;
    let image = random_bytes(53, 4 * IMAGE_CHUNK);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: Some(b"limited"),
    };
    backup(
        &a_admin,
        "store1",
        None,
        "limited",
        T0,
        Crypt::None,
        &content,
    )
    .await
    .unwrap();
    let (status, log, seconds) = run_job(&a_admin, "limited").await;
    assert_eq!(status, "OK", "{log:#?}");
    assert_eq!(summary_chunks(&log), Some(4), "{log:#?}");
    assert_restores(&b_admin, None, "limited", T0, None, &image).await;
    let floor = (3 * IMAGE_CHUNK) as f64 / (2 << 20) as f64;
    assert!(
        seconds >= floor * 0.9,
        "the push took {seconds:.2} s for 16 MiB; 2 MiB/s needs {floor:.2} s"
    );
    println!("push at rate_out 2 MiB/s: 16 MiB in {seconds:.2} s (floor {floor:.2} s)");
}
