//! vzdump passes `--backup-time <epoch>` explicitly. A time older than the group's newest
//! finished snapshot, or equal to it, is refused before the upgrade answers 101 (`backup
//! timestamp is older than last backup.`); a time equal to an existing snapshot that is not a
//! base for the next backup (its verification failed) is refused with `backup directory
//! already exists.`. Either way the group stays as it was.

mod common;
mod pve_common;

use common::*;
use pbs_cloud_e2e::qemu_backup::{pbs_restore, qemu_backup, Drive, QemuBackupJob};
use pbs_cloud_e2e::{wire, BackupParams, BackupSession, PbsClient, ReaderParams};
use pve_common::*;
use serde_json::json;

const MIB4: usize = 4 * 1024 * 1024;

fn disk(seed: u64) -> Vec<u8> {
    random_bytes(seed, 2 * MIB4 + 777)
}

async fn vm_backup(client: &PbsClient, store: &str, vmid: &str, time: i64, disk: &[u8]) {
    let conf = qemu_server_conf(vmid);
    qemu_backup(
        client,
        QemuBackupJob {
            store,
            ns: None,
            vmid,
            time,
            key: None,
            master_key: None,
            configs: vec![("qemu-server.conf", &conf)],
            drives: vec![Drive {
                name: "drive-scsi0",
                data: disk,
                incremental: None,
            }],
        },
    )
    .await
    .unwrap_or_else(|e| panic!("backup vm/{vmid} at {time}: {e}"));
}

/// The upgrade of a backup at `time` is refused with 400 and exactly `text`.
async fn assert_refused(client: &PbsClient, store: &str, vmid: &str, time: i64, text: &str) {
    let mut params = BackupParams::new(store, "vm", vmid, time);
    params.debug = false;
    let err = BackupSession::start_raw(client, params)
        .await
        .err()
        .unwrap_or_else(|| panic!("a backup at {time} must be refused"));
    assert_eq!(err.status(), Some(400), "{err}");
    assert_eq!(err.body().unwrap_or_default().trim(), text, "{err}");
}

async fn times(client: &PbsClient, store: &str, vmid: &str) -> Vec<i64> {
    let listed = client
        .get(
            &format!("admin/datastore/{store}/snapshots"),
            Some(&json!({"backup-type": "vm", "backup-id": vmid})),
        )
        .await
        .unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["backup-time"].as_i64().unwrap())
        .collect()
}

async fn assert_restores(client: &PbsClient, store: &str, vmid: &str, time: i64, disk: &[u8]) {
    let report = pbs_restore(
        client,
        ReaderParams::new(store, "vm", vmid, time),
        None,
        "drive-scsi0.img.fidx",
        8,
    )
    .await
    .unwrap_or_else(|e| panic!("restore vm/{vmid} at {time}: {e}"));
    assert!(
        report.image == disk,
        "vm/{vmid} at {time} restored differently"
    );
}

/// Snapshot directories of `vm/<vmid>` on disk.
fn dirs_on_disk(pve: &PveServer, vmid: &str) -> Vec<String> {
    let group = pve
        .server
        .data_dir()
        .join("datastores")
        .join(pve.store())
        .join("vm")
        .join(vmid);
    let mut out: Vec<String> = std::fs::read_dir(group)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_backup_time_older_than_or_equal_to_newest_is_refused() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let (a, b) = (disk(1), disk(2));
    vm_backup(&client, &store, "900", T0, &a).await;
    vm_backup(&client, &store, "900", T0 + 3600, &b).await;
    let before = dirs_on_disk(&pve, "900");

    const OLDER: &str = "backup timestamp is older than last backup.";
    // between the two, equal to the older one, equal to the newest
    for time in [T0 + 1800, T0 - 60, T0, T0 + 3600] {
        assert_refused(&client, &store, "900", time, OLDER).await;
    }
    assert_eq!(times(&client, &store, "900").await, [T0, T0 + 3600]);
    assert_eq!(dirs_on_disk(&pve, "900"), before);
    assert_restores(&client, &store, "900", T0, &a).await;
    assert_restores(&client, &store, "900", T0 + 3600, &b).await;
    // and a later time still works
    vm_backup(&client, &store, "900", T0 + 7200, &a).await;
    assert_eq!(
        times(&client, &store, "900").await,
        [T0, T0 + 3600, T0 + 7200]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_backup_time_equal_to_existing_snapshot_is_refused() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let (a, b) = (disk(3), disk(4));
    vm_backup(&client, &store, "901", T0, &a).await;
    vm_backup(&client, &store, "901", T0 + 3600, &b).await;

    // the newest snapshot fails verification: it is no base for the next backup, so the
    // time check does not apply, but its directory exists
    let reader = open_reader(&client, &store, None, "vm", "901", T0 + 3600, None).await;
    let idx = wire::parse_index(
        "drive-scsi0.img.fidx",
        &reader.download("drive-scsi0.img.fidx").await.unwrap(),
    )
    .unwrap();
    drop(reader);
    let digest = wire::hex(&idx.chunks[0].0);
    let chunk = pve
        .server
        .data_dir()
        .join("datastores")
        .join(&store)
        .join(".chunks")
        .join(&digest[..4])
        .join(&digest);
    let mut bytes = std::fs::read(&chunk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&chunk, bytes).unwrap();
    let upid = pve
        .admin
        .post(
            &format!("admin/datastore/{store}/verify"),
            Some(&json!({"backup-type": "vm", "backup-id": "901", "backup-time": T0 + 3600})),
        )
        .await
        .unwrap();
    let (status, log) = wait_task(&pve.admin, upid.as_str().unwrap()).await;
    assert_ne!(status["exitstatus"], "OK", "{status} {log:?}");
    let listed = client
        .get(
            &format!("admin/datastore/{store}/snapshots"),
            Some(&json!({"backup-type": "vm", "backup-id": "901"})),
        )
        .await
        .unwrap();
    assert_eq!(listed[1]["verification"]["state"], "failed", "{listed}");
    let manifest_before = std::fs::read(
        pve.server
            .data_dir()
            .join("datastores")
            .join(&store)
            .join("vm/901")
            .join(pbs_cloud_e2e::timefmt::epoch_to_rfc3339(T0 + 3600))
            .join("index.json.blob"),
    )
    .unwrap();

    // equal to the failed newest one, or to the older one
    for time in [T0 + 3600, T0] {
        assert_refused(
            &client,
            &store,
            "901",
            time,
            "backup directory already exists.",
        )
        .await;
    }
    assert_eq!(times(&client, &store, "901").await, [T0, T0 + 3600]);
    let manifest_after = std::fs::read(
        pve.server
            .data_dir()
            .join("datastores")
            .join(&store)
            .join("vm/901")
            .join(pbs_cloud_e2e::timefmt::epoch_to_rfc3339(T0 + 3600))
            .join("index.json.blob"),
    )
    .unwrap();
    assert_eq!(
        manifest_before, manifest_after,
        "the failed snapshot was touched"
    );
    assert_restores(&client, &store, "901", T0, &a).await;
}
