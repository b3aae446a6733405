//! The writer lease end to end, on the local backend and on S3 (the Ceph RGW
//! `e2e/run-tests.sh` starts): while one server holds a datastore, a second server and an
//! `import` into it are refused and write nothing; a server that lost its lease to another
//! writer refuses every write and delete, keeps serving restores, and a later server takes the
//! datastore over with every finished snapshot intact.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::bed::*;
use common::*;
use pbs_cloud_server::backend::{PutOptions, PutOutcome};
use pbs_cloud_server::datastore::LEASE_PREFIX;
use serde_json::json;

/// A config for a second server that names the same datastore as `bed`'s server.
fn same_datastore_config(bed: &Bed) -> String {
    match &bed.store {
        Store::Local(root) => format!(
            "[[datastore]]\nname = \"store1\"\npath = \"{}\"\n",
            root.display()
        ),
        Store::S3 { config, .. } => std::fs::read_to_string(config).unwrap(),
    }
}

/// Runs `serve` for a second server on `bed`'s datastore; it must exit with an error saying
/// the datastore is in use.
async fn second_server_is_refused(bed: &Bed) {
    let second = pbs_cloud_e2e::TestServer::prepare().unwrap();
    let config = second.data_dir().join("server.toml");
    std::fs::write(&config, same_datastore_config(bed)).unwrap();
    let bin = pbs_cloud_e2e::server::server_binary().expect("server binary");
    let run = tokio::process::Command::new(bin)
        .arg("serve")
        .arg("--data-dir")
        .arg(second.data_dir())
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", second.port()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the second server must exit instead of serving")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second server started: {stderr}");
    assert!(
        stderr.contains("in use by another server"),
        "the refusal names the reason: {stderr}"
    );
}

async fn second_writer_refused(mut bed: Bed) {
    let before = bed.store.keys_outside_lease().await;
    second_server_is_refused(&bed).await;

    // `import` into the datastore while the server holds it: refused, nothing written.
    let (_source, from, _) = import_source().await;
    let out = import_command(&bed, &from, &[]).output().await.unwrap();
    assert!(!out.status.success(), "import ran beside the server");
    assert_eq!(bed.store.keys_outside_lease().await, before);

    // The holder is not disturbed.
    bed.assert_finished_restore().await;
    bed.assert_gc_and_backup("after-refusals", 20).await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_while_the_lease_is_held_local() {
    second_writer_refused(Bed::local().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_while_the_lease_is_held_s3() {
    second_writer_refused(Bed::s3("lease2").await).await;
}

/// Creates the next lease generation as `holder`, the way another server takes over: only if
/// absent, racing the running server's renewals. Returns the generation created.
async fn take_lease_as(store: &Store, holder: &str, released: bool) -> u64 {
    let backend = store.backend();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "could not create a lease generation"
        );
        let listed = backend.list(LEASE_PREFIX, None).await.unwrap();
        let top = listed
            .objects
            .iter()
            .filter_map(|o| o.key.strip_prefix(LEASE_PREFIX))
            .filter_map(|g| u64::from_str_radix(g, 16).ok())
            .max()
            .expect("the server holds a lease generation");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let record = json!({
            "holder": holder,
            "expires": if released { 0 } else { now + 3600 },
            "released": released,
            "nonce": format!("{holder}-{top}"),
        });
        let create = PutOptions {
            if_absent: true,
            sha256: None,
        };
        let key = format!("{LEASE_PREFIX}{:016x}", top + 1);
        let data = Bytes::from(serde_json::to_vec(&record).unwrap());
        if backend.put(&key, data, create).await.unwrap() == PutOutcome::Written {
            return top + 1;
        }
    }
}

async fn fenced_server_refuses_writes(mut bed: Bed) {
    // Renewal every second, so the takeover is noticed at the next one.
    bed.relaunch_with(&[("PBS_CLOUD_LEASE_TIMING", "20,1,5")])
        .await;
    bed.add_image("before", T0, 30, MIB + 3).await;
    bed.add_image("before", T0 + 1, 32, MIB + 5).await;
    take_lease_as(&bed.store, "intruder", false).await;

    // Wait (bounded) until the server noticed: a backup is refused naming the new holder.
    let client = bed.client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    let refusal = loop {
        attempt += 1;
        let image = random_bytes(31, 64 * 1024);
        match backup_image(&client, &bed.name(), "fenced", T0 + attempt, &image).await {
            Err(e) => break e.to_string(),
            // Landed before the next renewal: a finished snapshot like any other.
            Ok(_) => bed.images.push(("fenced".into(), T0 + attempt, image)),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never noticed it lost its lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        refusal.contains("lost its writer lease to 'intruder'"),
        "backup refusal names the reason: {refusal}"
    );
    let before = bed.store.keys_outside_lease().await;

    // Every other write and delete is refused too.
    let store = bed.name();
    let prune = client
        .post(
            &format!("admin/datastore/{store}/prune"),
            Some(&json!({"backup-type": "host", "backup-id": "before", "keep-last": 1})),
        )
        .await;
    // Like PBS, prune answers with its selection and only logs a snapshot it failed to remove;
    // the unchanged datastore below is what counts.
    let forget = client
        .delete(
            &format!("admin/datastore/{store}/snapshots"),
            Some(&json!({"backup-type": "host", "backup-id": "before", "backup-time": T0})),
        )
        .await;
    assert!(forget.is_err(), "forget on a fenced server: {forget:?}");
    let gc = client
        .post(&format!("admin/datastore/{store}/gc"), None)
        .await;
    if let Ok(upid) = &gc {
        let (status, log) = wait_task_long(&client, upid.as_str().unwrap()).await;
        assert_ne!(
            status["exitstatus"], "OK",
            "GC on a fenced server: {log:#?}"
        );
    }
    eprintln!("fenced: prune {prune:?}, forget {forget:?}, gc {gc:?}");
    assert_eq!(
        bed.store.keys_outside_lease().await,
        before,
        "a fenced server changed the datastore"
    );
    // Reading still works.
    bed.assert_finished_restore().await;

    // The other writer gives the datastore back; a restarted server takes it over and has
    // every finished snapshot.
    bed.server
        .shutdown()
        .await
        .expect("clean stop of the fenced server");
    take_lease_as(&bed.store, "intruder", true).await;
    bed.recover().await;
    bed.assert_finished_restore().await;
    bed.assert_gc_and_backup("after-fence", 21).await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_server_refuses_writes_local() {
    fenced_server_refuses_writes(Bed::local().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_server_refuses_writes_s3() {
    fenced_server_refuses_writes(Bed::s3("fence").await).await;
}
