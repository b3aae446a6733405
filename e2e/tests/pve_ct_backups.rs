//! Proxmox VE container backups (vzdump → `proxmox-backup-client backup pct.conf:<f>
//! fw.conf:<f> root.pxar:<dir> --backup-type ct --backup-id <vmid> --backup-time <epoch>
//! [--change-detection-mode legacy|data|metadata]`), then `files` for the size, the task log
//! upload, and the restores PVE does (`restore <snap> root.pxar <dir>`, `fw.conf`,
//! `pct.conf -`).

mod common;
mod pve_common;

use std::path::Path;

use common::*;
use pbs_cloud_e2e::pve_ct::{
    backup_ct, CtBackup, CtBackupReport, METADATA_ARCHIVE, PAYLOAD_ARCHIVE,
};
use pbs_cloud_e2e::{wire, BackupParams, BackupSession, Crypt, PbsClient, PxarMode};
use pve_common::*;
use serde_json::json;

fn spec<'a>(
    store: &'a str,
    vmid: &'a str,
    time: i64,
    pct: &'a [u8],
    fw: &'a [u8],
    root: &'a Path,
    mode: PxarMode,
) -> CtBackup<'a> {
    CtBackup {
        store,
        ns: None,
        vmid,
        time,
        pct_conf: pct,
        fw_conf: Some(fw),
        rootdir: root,
        mode,
        crypt: Crypt::None,
        master_key: None,
    }
}

async fn run(client: &PbsClient, spec: CtBackup<'_>) -> CtBackupReport {
    backup_ct(client, spec, || async {})
        .await
        .expect("container backup")
}

/// What vzdump does after the backup: `files` (sums the sizes) and `upload-log`.
async fn after_backup(client: &PbsClient, store: &str, vmid: &str, time: i64) -> u64 {
    let files = files_of(client, store, "ct", vmid, time).await;
    let total: u64 = files.iter().map(|f| f["size"].as_u64().unwrap_or(0)).sum();
    assert!(total > 0, "{files:?}");
    let log = format!("INFO: starting new backup job: vzdump {vmid} --storage pbs\nINFO: Finished Backup of VM {vmid}\n");
    client
        .upload(
            &format!("admin/datastore/{store}/upload-backup-log"),
            Some(&json!({"backup-type": "ct", "backup-id": vmid, "backup-time": time})),
            wire::encode_plain_blob(log.as_bytes(), true),
        )
        .await
        .unwrap();
    total
}

/// PVE's restore of a container: `files` must list `fw.conf.blob`, then the root file
/// system, `fw.conf` and the config (to stdout).
async fn assert_ct_restores(
    client: &PbsClient,
    store: &str,
    vmid: &str,
    time: i64,
    expected_root: &Path,
) {
    let files = files_of(client, store, "ct", vmid, time).await;
    assert!(
        names(&files).contains(&"fw.conf.blob".to_string()),
        "{files:?}"
    );
    let reader = open_reader(client, store, None, "ct", vmid, time, None).await;
    let target = tempfile::tempdir().unwrap();
    reader
        .restore_pxar_dir("root.pxar", target.path())
        .await
        .unwrap();
    assert_same_tree(expected_root, target.path());
    assert_eq!(reader.restore_archive("fw.conf").await.unwrap(), fw_conf());
    assert_eq!(
        reader.restore_archive("pct.conf").await.unwrap(),
        pct_conf(vmid)
    );
}

/// Adds a config file, removes another and appends to the log (their mtimes change). The
/// libraries stay as they are: with a changed file between them, reusing their chunks in
/// metadata mode would drag along more than 10 % padding, so they would be encoded anew.
fn change_rootfs(root: &Path) {
    let log = root.join("var/log/syslog");
    let mut data = std::fs::read(&log).unwrap();
    data.extend_from_slice(b"backup done\n");
    std::fs::write(&log, data).unwrap();
    std::fs::write(root.join("etc/new.conf"), b"added = true\n").unwrap();
    std::fs::remove_file(root.join("home/user/notes.txt")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_ct_backup_legacy_change_detection() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let (pct, fw) = (pct_conf("200"), fw_conf());
    let root = tempfile::tempdir().unwrap();
    ct_rootfs(root.path(), 200);
    let first = run(
        &client,
        spec(&store, "200", T0, &pct, &fw, root.path(), PxarMode::Legacy),
    )
    .await;
    assert!(first.root.reuse.is_none());
    let listed: Vec<&str> = first
        .summary
        .manifest
        .files
        .iter()
        .map(|f| f.filename.as_str())
        .collect();
    assert_eq!(
        listed,
        [
            "pct.conf.blob",
            "fw.conf.blob",
            "root.pxar.didx",
            "catalog.pcat1.didx"
        ]
    );
    after_backup(&client, &store, "200", T0).await;
    let files = names(&files_of(&client, &store, "ct", "200", T0).await);
    for name in [
        "root.pxar.didx",
        "catalog.pcat1.didx",
        "index.json.blob",
        "client.log.blob",
    ] {
        assert!(files.contains(&name.to_string()), "{files:?}");
    }
    assert!(!files
        .iter()
        .any(|f| f.contains("mpxar") || f.contains("ppxar")));
    assert_ct_restores(&client, &store, "200", T0, root.path()).await;

    // the next run reuses the chunks of the previous index
    let original = copy_tree(root.path());
    change_rootfs(root.path());
    let second = run(
        &client,
        spec(
            &store,
            "200",
            T0 + 3600,
            &pct,
            &fw,
            root.path(),
            PxarMode::Legacy,
        ),
    )
    .await;
    let pxar = second
        .summary
        .archives
        .iter()
        .find(|a| a.name == "root.pxar.didx")
        .unwrap();
    assert!(pxar.used_previous, "{pxar:?}");
    assert!(pxar.chunks.chunks_reused > 0, "{pxar:?}");
    after_backup(&client, &store, "200", T0 + 3600).await;
    assert_ct_restores(&client, &store, "200", T0 + 3600, root.path()).await;
    assert_ct_restores(&client, &store, "200", T0, original.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_ct_backup_data_change_detection() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let (pct, fw) = (pct_conf("201"), fw_conf());
    let root = tempfile::tempdir().unwrap();
    ct_rootfs(root.path(), 201);
    let first = run(
        &client,
        spec(&store, "201", T0, &pct, &fw, root.path(), PxarMode::Data),
    )
    .await;
    let listed: Vec<&str> = first
        .summary
        .manifest
        .files
        .iter()
        .map(|f| f.filename.as_str())
        .collect();
    assert_eq!(
        listed,
        [
            "pct.conf.blob",
            "fw.conf.blob",
            METADATA_ARCHIVE,
            PAYLOAD_ARCHIVE
        ]
    );
    after_backup(&client, &store, "201", T0).await;
    let files = names(&files_of(&client, &store, "ct", "201", T0).await);
    assert!(
        !files.contains(&"catalog.pcat1.didx".to_string()),
        "{files:?}"
    );
    assert!(!files.contains(&"root.pxar.didx".to_string()), "{files:?}");
    assert_ct_restores(&client, &store, "201", T0, root.path()).await;

    // data mode re-reads everything: no reader session, but known chunks are not re-sent
    let original = copy_tree(root.path());
    change_rootfs(root.path());
    let second = run(
        &client,
        spec(
            &store,
            "201",
            T0 + 3600,
            &pct,
            &fw,
            root.path(),
            PxarMode::Data,
        ),
    )
    .await;
    assert_eq!(second.previous_time_calls, 1);
    assert!(second.root.reuse.is_none());
    let payload = second.root.payload.as_ref().unwrap();
    assert!(payload.used_previous, "{payload:?}");
    assert!(payload.chunks.chunks_reused > 0, "{payload:?}");
    assert_eq!(payload.chunks.chunks_injected, 0);
    after_backup(&client, &store, "201", T0 + 3600).await;
    assert_ct_restores(&client, &store, "201", T0 + 3600, root.path()).await;
    assert_ct_restores(&client, &store, "201", T0, original.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_ct_backup_metadata_change_detection_reads_previous_while_writing() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let (pct, fw) = (pct_conf("202"), fw_conf());
    let root = tempfile::tempdir().unwrap();
    ct_rootfs(root.path(), 202);

    // no previous snapshot: like data mode
    let first = run(
        &client,
        spec(
            &store,
            "202",
            T0,
            &pct,
            &fw,
            root.path(),
            PxarMode::Metadata,
        ),
    )
    .await;
    assert_eq!(first.previous_time_calls, 1);
    assert!(first.root.reuse.is_none());
    after_backup(&client, &store, "202", T0).await;

    // with a previous snapshot: second previous_backup_time, a reader session on it while the
    // backup session holds the group, payload chunks of unchanged files referenced only
    let original = copy_tree(root.path());
    change_rootfs(root.path());
    let group_locked = std::sync::Arc::new(std::sync::Mutex::new(None));
    let probe = group_locked.clone();
    let probe_client = pve.client().await;
    let store2 = store.clone();
    let second = backup_ct(
        &client,
        spec(
            &store,
            "202",
            T0 + 3600,
            &pct,
            &fw,
            root.path(),
            PxarMode::Metadata,
        ),
        || async move {
            // while the reader runs, the group is write-locked by the backup session
            let params = BackupParams::new(&store2, "ct", "202", T0 + 7200);
            let refused = BackupSession::start_raw(&probe_client, params).await.err();
            *probe.lock().unwrap() = Some(refused.map(|e| e.to_string()));
        },
    )
    .await
    .expect("metadata-mode backup with a reference");
    let refused = group_locked.lock().unwrap().take().expect("probe ran");
    let refused = refused.expect("a second backup of the group must be refused meanwhile");
    assert!(
        refused.contains("another backup is already running"),
        "{refused}"
    );
    assert_eq!(second.previous_time_calls, 2);
    let plan = second
        .root
        .reuse
        .clone()
        .expect("metadata mode read the previous snapshot");
    assert_eq!(plan.reference_time, T0);
    // reused: the four libraries; encoded anew: new.conf and the grown log, and also the
    // unchanged sources.list, empty file and hostname: their payloads lie in the previous
    // stream's first chunk together with megabytes of lib0, and new.conf right after them ends
    // their run of reusable files, so reusing that chunk for them would be mostly padding
    assert_eq!(plan.reused_files, 4, "{plan:?}");
    assert_eq!(plan.encoded_files, 5, "{plan:?}");
    assert!(plan.reused_chunks > 0, "{plan:?}");
    let payload = second.root.payload.as_ref().unwrap();
    assert_eq!(
        payload.chunks.chunks_injected, plan.reused_chunks,
        "{payload:?}"
    );
    // unchanged data was never uploaded: only the files encoded anew (the log is the largest,
    // 400 kB before compression) and the stream markers
    let uploaded: u64 = payload.chunks.bytes_sent;
    assert!(
        uploaded < 500_000,
        "payload upload {uploaded} bytes, reused {} bytes",
        plan.reused_bytes
    );
    after_backup(&client, &store, "202", T0 + 3600).await;

    // the server stored the new payload index with the previous chunks in it
    let old = open_reader(&client, &store, None, "ct", "202", T0, None).await;
    let new = open_reader(&client, &store, None, "ct", "202", T0 + 3600, None).await;
    let old_idx = wire::parse_index(
        PAYLOAD_ARCHIVE,
        &old.download(PAYLOAD_ARCHIVE).await.unwrap(),
    )
    .unwrap();
    let new_idx = wire::parse_index(
        PAYLOAD_ARCHIVE,
        &new.download(PAYLOAD_ARCHIVE).await.unwrap(),
    )
    .unwrap();
    let old_set: std::collections::HashSet<_> = old_idx.chunks.iter().map(|c| c.0).collect();
    let shared = new_idx
        .chunks
        .iter()
        .filter(|c| old_set.contains(&c.0))
        .count();
    assert!(
        shared >= plan.reused_chunks,
        "{shared} < {}",
        plan.reused_chunks
    );
    drop((old, new));
    assert_ct_restores(&client, &store, "202", T0 + 3600, root.path()).await;
    assert_ct_restores(&client, &store, "202", T0, original.path()).await;

    // nothing changed: every payload is reused, no file content is uploaded
    let third = run(
        &client,
        spec(
            &store,
            "202",
            T0 + 7200,
            &pct,
            &fw,
            root.path(),
            PxarMode::Metadata,
        ),
    )
    .await;
    let plan = third.root.reuse.as_ref().unwrap();
    assert_eq!((plan.reused_files, plan.encoded_files), (9, 0), "{plan:?}");
    let payload = third.root.payload.as_ref().unwrap();
    assert_eq!(
        payload.chunks.chunks_injected, plan.reused_chunks,
        "{payload:?}"
    );
    // the new stream's own start and tail markers (16 bytes each, 12-byte blob header) are
    // the only chunks the previous payload index does not have
    assert_eq!(payload.chunks.chunks_uploaded, 2, "{payload:?}");
    assert_eq!(payload.chunks.bytes_sent, 2 * (12 + 16), "{payload:?}");
    assert_ct_restores(&client, &store, "202", T0 + 7200, root.path()).await;
}
