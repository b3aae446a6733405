//! The kill -9 matrix: the server (or `import`) is killed with SIGKILL in the middle of a chunk
//! upload, `finish`, prune, verify's move of a bad chunk and `import`, on the local backend
//! and on S3 (the Ceph RGW `e2e/run-tests.sh` starts). Afterwards every finished snapshot
//! restores byte-identical, and the next GC and backup succeed. (GC's sweep is killed the same
//! way in `gc_kill.rs`.)
//!
//! "In the middle" is an event, not a timer: the debug build's fault injection
//! (`PBS_CLOUD_FAULT_PAUSE=<point>`) stops the process at a named place and prints
//! `FAULT-PAUSE <point> <key>`; the test kills it once it has seen that line.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::bed::*;
use common::*;
use pbs_cloud_server::datastore::layout::chunk_key;
use pbs_cloud_server::format::sha256;
use serde_json::json;

// --- chunk upload ----------------------------------------------------------------------------

async fn killed_during_chunk_upload(mut bed: Bed, point: &str, key: &str) {
    bed.relaunch_with(&[
        ("PBS_CLOUD_FAULT_PAUSE", point),
        ("PBS_CLOUD_FAULT_KEY", key),
    ])
    .await;
    let op = in_background(&bed.server, |client, store| async move {
        let image = random_bytes(500, 5 * MIB);
        let _ = backup_image(&client, &store, "cut", T0 + 50, &image).await;
    });
    bed.kill_at(point).await;
    op.abort();
    bed.recover().await;
    bed.assert_finished_restore().await;
    let client = bed.client().await;
    let cut = snapshots(&client, &bed.name(), None, "cut").await;
    assert!(
        cut.iter()
            .all(|s| s["backup-time"] != T0 + 50 || s["size"].is_null()),
        "the cut backup is not a finished snapshot: {cut:?}"
    );
    if let Store::Local(root) = &bed.store {
        // The temp file the kill left behind is removed after the start.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !temp_files(root).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "temp files left: {:?}",
                temp_files(root)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    bed.assert_gc_and_backup("after-upload", 7).await;
    // The cut backup's data can be backed up again completely.
    let image = random_bytes(500, 5 * MIB);
    backup_image(&bed.client().await, &bed.name(), "cut", T0 + 51, &image)
        .await
        .unwrap();
    bed.images.push(("cut".into(), T0 + 51, image));
    bed.assert_finished_restore().await;
    bed.cleanup().await;
}

fn temp_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".pbs-cloud-tmp.")
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_chunk_upload_local() {
    // Killed with the chunk's temp file written and synced, not yet linked into place.
    killed_during_chunk_upload(Bed::local().await, "local-temp-written", ".chunks/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_chunk_stored_local() {
    killed_during_chunk_upload(Bed::local().await, "chunk-stored", ".chunks/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_chunk_upload_s3() {
    killed_during_chunk_upload(Bed::s3("upload").await, "chunk-stored", ".chunks/").await;
}

// --- finish ----------------------------------------------------------------------------------

async fn killed_during_finish(mut bed: Bed) {
    bed.relaunch_with(&[("PBS_CLOUD_FAULT_PAUSE", "finish-commit")])
        .await;
    let op = in_background(&bed.server, |client, store| async move {
        let image = random_bytes(600, 3 * MIB);
        let _ = backup_image(&client, &store, "fin", T0 + 60, &image).await;
    });
    bed.kill_at("finish-commit").await;
    op.abort();
    bed.recover().await;
    bed.assert_finished_restore().await;
    // The cut snapshot never got its manifest: it cannot be opened for restore.
    let client = bed.client().await;
    assert!(reader(&client, &bed.name(), None, "fin", T0 + 60, None)
        .await
        .is_err());
    bed.assert_gc_and_backup("after-finish", 8).await;
    // The group takes a new backup of the same data.
    let image = random_bytes(600, 3 * MIB);
    backup_image(&client, &bed.name(), "fin", T0 + 61, &image)
        .await
        .unwrap();
    bed.images.push(("fin".into(), T0 + 61, image));
    bed.assert_finished_restore().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_finish_local() {
    killed_during_finish(Bed::local().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_finish_s3() {
    killed_during_finish(Bed::s3("finish").await).await;
}

// --- prune -----------------------------------------------------------------------------------

async fn killed_during_prune(mut bed: Bed) {
    for i in 0..3 {
        bed.add_image("pr", T0 + i, 700 + i as u64, MIB + 11).await;
    }
    bed.relaunch_with(&[("PBS_CLOUD_FAULT_PAUSE", "snapshot-remove")])
        .await;
    let op = in_background(&bed.server, |client, store| async move {
        let _ = client
            .post(
                &format!("admin/datastore/{store}/prune"),
                Some(&json!({"backup-type": "host", "backup-id": "pr", "keep-last": 1})),
            )
            .await;
    });
    bed.kill_at("snapshot-remove").await;
    op.abort();
    bed.recover().await;
    // The snapshot being removed lost its manifest first: it is no finished snapshot any
    // more. The others of the group are untouched.
    let client = bed.client().await;
    let listed = snapshots(&client, &bed.name(), None, "pr").await;
    let finished: Vec<i64> = listed
        .iter()
        .filter(|s| !s["size"].is_null())
        .filter_map(|s| s["backup-time"].as_i64())
        .collect();
    assert_eq!(finished, [T0 + 1, T0 + 2], "{listed:#?}");
    bed.images.retain(|(id, t, _)| !(id == "pr" && *t == T0));
    bed.assert_finished_restore().await;
    // The prune runs to the end now.
    client
        .post(
            &format!("admin/datastore/{}/prune", bed.name()),
            Some(&json!({"backup-type": "host", "backup-id": "pr", "keep-last": 1})),
        )
        .await
        .unwrap();
    bed.images
        .retain(|(id, t, _)| !(id == "pr" && *t != T0 + 2));
    bed.assert_gc_and_backup("after-prune", 9).await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_prune_local() {
    killed_during_prune(Bed::local().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_prune_s3() {
    killed_during_prune(Bed::s3("prune").await).await;
}

// --- verify's move of a bad chunk ------------------------------------------------------------

async fn killed_while_verify_moves_a_bad_chunk(mut bed: Bed) {
    // A snapshot with a chunk nobody else has, then that chunk damaged at rest.
    let victim = random_bytes(800, 4 * MIB);
    backup_image(&bed.client().await, &bed.name(), "vic", T0, &victim)
        .await
        .unwrap();
    let key = chunk_key(&sha256(&victim));
    let mut damaged = bed
        .store
        .get(&key)
        .await
        .expect("the victim's chunk is stored");
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    bed.store.put(&key, damaged.clone()).await;

    bed.relaunch_with(&[("PBS_CLOUD_FAULT_PAUSE", "verify-move-bad")])
        .await;
    let client = bed.client().await;
    client
        .post(
            &format!("admin/datastore/{}/verify", bed.name()),
            Some(&json!({
                "backup-type": "host", "backup-id": "vic", "backup-time": T0,
                "ignore-verified": false,
            })),
        )
        .await
        .unwrap();
    bed.kill_at("verify-move-bad").await;
    bed.recover().await;
    // Killed between the copy to the `.bad` name and the removal: both exist.
    assert!(bed.store.get(&format!("{key}.0.bad")).await.is_some());
    assert_eq!(bed.store.get(&key).await.as_deref(), Some(&damaged[..]));
    bed.assert_finished_restore().await;
    bed.assert_gc_and_backup("after-verify", 10).await;
    // A backup of the victim's data (no previous snapshot to reuse) uploads the chunk, and the
    // server replaces the damaged copy the cut move left in place.
    backup_image(&bed.client().await, &bed.name(), "vic2", T0, &victim)
        .await
        .unwrap();
    bed.images.push(("vic2".into(), T0, victim));
    bed.assert_finished_restore().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_verify_move_local() {
    killed_while_verify_moves_a_bad_chunk(Bed::local().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_verify_move_s3() {
    killed_while_verify_moves_a_bad_chunk(Bed::s3("verify").await).await;
}

// --- import ----------------------------------------------------------------------------------

async fn killed_during_import(mut bed: Bed) {
    use tokio::io::AsyncBufReadExt;
    let (_source, from, imported) = import_source().await;
    bed.server
        .shutdown()
        .await
        .expect("clean stop before the import");

    // Killed after the first snapshot was imported, with the second one's files copied but
    // not its manifest.
    let mut child = import_command(
        &bed,
        &from,
        &[
            ("PBS_CLOUD_FAULT_PAUSE", "import-snapshot"),
            ("PBS_CLOUD_FAULT_HIT", "2"),
        ],
    )
    .spawn()
    .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let paused = tokio::time::timeout(REACH, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("FAULT-PAUSE import-snapshot") {
                return line;
            }
        }
        panic!("import ended without reaching its second snapshot");
    })
    .await
    .expect("import reaches its second snapshot");
    eprintln!("killing the import at: {paused}");
    child.kill().await.unwrap();

    // The server starts at once (the killed import's lease names a process that is gone).
    bed.server.launch().await.unwrap();
    let client = bed.client().await;
    // The second snapshot's files are there without its manifest: listed as unfinished (no
    // size), like a backup that never finished.
    let mut finished = Vec::new();
    for item in &imported {
        let listed = snapshots(&client, &bed.name(), None, &item.0).await;
        match &listed[..] {
            [] => {}
            [one] if !one["size"].is_null() => finished.push(item),
            [one] => assert_eq!(item.0, "imp-b", "unfinished: {one}"),
            more => panic!("{} listed {more:?}", item.0),
        }
    }
    assert_eq!(
        finished.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(),
        ["imp-a"],
        "one snapshot imported before the kill"
    );
    bed.images.push(finished[0].clone());
    bed.assert_finished_restore().await;
    bed.assert_gc_and_backup("after-import", 11).await;

    // The import runs to the end on a second try.
    bed.server.shutdown().await.unwrap();
    let out = import_command(&bed, &from, &[]).output().await.unwrap();
    assert!(
        out.status.success(),
        "import again: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    bed.server.launch().await.unwrap();
    bed.images = bed
        .images
        .drain(..)
        .filter(|(id, _, _)| !id.starts_with("imp-"))
        .chain(imported)
        .collect();
    bed.assert_finished_restore().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_import_local() {
    killed_during_import(Bed::local().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_import_s3() {
    killed_during_import(Bed::s3("import").await).await;
}
