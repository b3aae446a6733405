//! Proxmox VE virtual machine backups: the diskless VM (stock client, config blobs only) with
//! the restores PVE does (`index.json` to a file, `qemu-server.conf -`, `fw.conf`), and VM
//! disks through QEMU's backup library (full and dirty-bitmap incremental) restored by
//! `pbs-restore` reading chunks in parallel.

mod common;
mod pve_common;

use common::*;
use pbs_cloud_e2e::qemu_backup::{
    pbs_restore, qemu_backup, zero_chunk, Drive, Incremental, QemuBackupJob, QemuBackupReport,
    APPEND_BATCH,
};
use pbs_cloud_e2e::{wire, BackupParams, BackupSession, Crypt, PbsClient, ReaderParams};
use pve_common::*;
use serde_json::{json, Value};

const MIB4: usize = 4 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_diskless_vm_backup_and_config_restores() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let summary = diskless_vm_backup(&client, &store, None, "300", T0, Crypt::None, None)
        .await
        .unwrap();
    let listed: Vec<&str> = summary
        .manifest
        .files
        .iter()
        .map(|f| f.filename.as_str())
        .collect();
    assert_eq!(listed, ["qemu-server.conf.blob", "fw.conf.blob"]);
    let files = files_of(&client, &store, "vm", "300", T0).await;
    assert_eq!(
        names(&files),
        ["qemu-server.conf.blob", "fw.conf.blob", "index.json.blob"]
    );

    let reader = open_reader(&client, &store, None, "vm", "300", T0, None).await;
    // `restore <snap> index.json <file>`: the manifest JSON as stored
    let raw = reader.download("index.json.blob").await.unwrap();
    let index_json = wire::decode_plain_blob(&raw, wire::MAX_BLOB).unwrap();
    let manifest: Value = serde_json::from_slice(&index_json).unwrap();
    assert_eq!(manifest["backup-type"], "vm");
    assert_eq!(manifest["backup-id"], "300");
    assert_eq!(manifest["backup-time"], T0);
    let entries = manifest["files"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{manifest}");
    for e in entries {
        assert!(
            e["filename"].is_string() && e["size"].is_u64(),
            "{manifest}"
        );
    }
    assert!(
        manifest["unprotected"]["chunk_upload_stats"].is_object(),
        "{manifest}"
    );
    // `restore <snap> qemu-server.conf -` and `fw.conf`
    assert_eq!(
        reader.restore_archive("qemu-server.conf").await.unwrap(),
        qemu_server_conf("300")
    );
    assert_eq!(reader.restore_archive("fw.conf").await.unwrap(), fw_conf());
    drop(reader);

    // the next diskless backup of the same VM
    diskless_vm_backup(&client, &store, None, "300", T0 + 60, Crypt::None, None)
        .await
        .unwrap();
    let listed = client
        .get(
            &format!("admin/datastore/{store}/snapshots"),
            Some(&json!({"backup-type": "vm", "backup-id": "300"})),
        )
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}

/// A 130-block disk (plus a short tail): zero blocks, two identical data blocks, random
/// blocks; more than one batch of appends.
fn scsi_disk(seed: u64) -> Vec<u8> {
    let blocks = APPEND_BATCH + 2;
    let mut disk = vec![0u8; blocks * MIB4 + 1234];
    for (i, block) in [0usize, 1, 2, 7, 64, 127, 128].into_iter().enumerate() {
        let data = random_bytes(seed + i as u64, MIB4);
        disk[block * MIB4..(block + 1) * MIB4].copy_from_slice(&data);
    }
    // identical content in blocks 2 and 3: uploaded while the first is in flight
    let (a, b) = disk.split_at_mut(3 * MIB4);
    b[..MIB4].copy_from_slice(&a[2 * MIB4..]);
    let tail = disk.len() - 1234;
    disk[tail..].copy_from_slice(&random_bytes(seed + 99, 1234));
    disk
}

fn efi_disk() -> Vec<u8> {
    let mut d = vec![0u8; 128 * 1024];
    d[..16].copy_from_slice(b"EFI PART vars...");
    d
}

async fn vm_backup(
    client: &PbsClient,
    store: &str,
    time: i64,
    scsi: &[u8],
    efi: &[u8],
    incremental: Option<(Vec<usize>, [u8; 32], [u8; 32])>,
) -> QemuBackupReport {
    let conf = qemu_server_conf("400");
    let fw = fw_conf();
    let (scsi_inc, efi_inc) = match incremental {
        Some((dirty, scsi_csum, efi_csum)) => (
            Some(Incremental {
                dirty_blocks: dirty,
                previous_csum: scsi_csum,
            }),
            Some(Incremental {
                dirty_blocks: Vec::new(),
                previous_csum: efi_csum,
            }),
        ),
        None => (None, None),
    };
    qemu_backup(
        client,
        QemuBackupJob {
            store,
            ns: None,
            vmid: "400",
            time,
            key: None,
            master_key: None,
            configs: vec![("qemu-server.conf", &conf), ("fw.conf", &fw)],
            drives: vec![
                Drive {
                    name: "drive-scsi0",
                    data: scsi,
                    incremental: scsi_inc,
                },
                Drive {
                    name: "drive-efidisk0",
                    data: efi,
                    incremental: efi_inc,
                },
            ],
        },
    )
    .await
    .expect("VM backup through the QEMU library sequence")
}

fn position(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no call '{prefix}' in {calls:#?}"))
}

async fn restore_vm(client: &PbsClient, store: &str, time: i64, drive: &str) -> (Vec<u8>, usize) {
    let report = pbs_restore(
        client,
        ReaderParams::new(store, "vm", "400", time),
        None,
        &format!("{drive}.img.fidx"),
        16,
    )
    .await
    .unwrap_or_else(|e| panic!("pbs-restore {drive}: {e}"));
    (report.image, report.max_in_flight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_vm_disk_backup_qemu_library_sequence_and_parallel_restore() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let scsi = scsi_disk(40);
    let efi = efi_disk();
    let blocks = scsi.len().div_ceil(MIB4);
    let report = vm_backup(&client, &store, T0, &scsi, &efi, None).await;
    let calls = &report.calls;
    assert_eq!(calls[0], "GET previous?archive-name=index.json.blob");
    assert!(!calls.iter().any(|c| c.contains("previous_backup_time")));
    assert!(!report.had_previous_manifest);
    // both images registered (each followed by the zero chunk) before the config blobs
    let (zero, _) = zero_chunk(None, MIB4).unwrap();
    let zero_upload = format!("POST fixed_chunk digest={} (zero)", wire::hex(&zero));
    let scsi_index = position(calls, "POST fixed_index?archive-name=drive-scsi0.img.fidx");
    assert_eq!(
        calls[scsi_index],
        format!(
            "POST fixed_index?archive-name=drive-scsi0.img.fidx&size={}",
            scsi.len()
        )
    );
    assert_eq!(calls[scsi_index + 1], zero_upload);
    let efi_index = position(
        calls,
        "POST fixed_index?archive-name=drive-efidisk0.img.fidx",
    );
    assert_eq!(calls[efi_index + 1], zero_upload);
    let conf = position(calls, "POST blob?file-name=qemu-server.conf.blob");
    assert!(efi_index < conf && conf < position(calls, "POST blob?file-name=fw.conf.blob"));
    assert!(conf < position(calls, "PUT fixed_index"));
    let n = calls.len();
    assert_eq!(
        calls[n - 2..],
        ["POST blob?file-name=index.json.blob", "POST finish"]
    );

    let scsi_report = &report.drives[0];
    assert_eq!(scsi_report.chunk_count, blocks as u64);
    assert_eq!(scsi_report.bytes_written, scsi.len() as u64);
    assert_eq!(
        scsi_report.append_batches[0], APPEND_BATCH,
        "{scsi_report:?}"
    );
    assert!(scsi_report
        .append_batches
        .iter()
        .all(|b| *b <= APPEND_BATCH));
    assert_eq!(scsi_report.zero_writes, blocks - 8 - 1);
    assert_eq!(report.drives[1].chunk_count, 1);
    assert_eq!(report.drives[1].bytes_written, efi.len() as u64);

    let files = files_of(&client, &store, "vm", "400", T0).await;
    let size_of = |name: &str| {
        files
            .iter()
            .find(|f| f["filename"] == name)
            .and_then(|f| f["size"].as_u64())
            .unwrap_or_else(|| panic!("{name} in {files:?}"))
    };
    assert_eq!(size_of("drive-scsi0.img.fidx"), scsi.len() as u64);
    assert_eq!(size_of("drive-efidisk0.img.fidx"), efi.len() as u64);
    for name in ["qemu-server.conf.blob", "fw.conf.blob", "index.json.blob"] {
        size_of(name);
    }

    // pbs-restore: many chunk requests in flight on one reader session, zeros not fetched
    let (image, in_flight) = restore_vm(&client, &store, T0, "drive-scsi0").await;
    assert!(image == scsi, "drive-scsi0 restored differently");
    assert!(in_flight > 1, "chunks were fetched one at a time");
    let (image, _) = restore_vm(&client, &store, T0, "drive-efidisk0").await;
    assert!(image == efi, "drive-efidisk0 restored differently");

    // a second full backup (no dirty bitmap, e.g. after a VM restart): the previous indexes
    // make every block known, only the zero chunk is uploaded again (and accepted)
    let again = vm_backup(&client, &store, T0 + 3600, &scsi, &efi, None).await;
    assert!(again.had_previous_manifest);
    position(
        &again.calls,
        "GET previous?archive-name=drive-scsi0.img.fidx",
    );
    assert!(again.calls.contains(&zero_upload));
    assert_eq!(again.drives[0].uploaded, 0, "{:?}", again.drives[0]);
    let (image, _) = restore_vm(&client, &store, T0 + 3600, "drive-scsi0").await;
    assert!(image == scsi);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_vm_disk_dirty_bitmap_incremental_restores_identical() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let scsi = scsi_disk(50);
    let efi = efi_disk();
    let full = vm_backup(&client, &store, T0, &scsi, &efi, None).await;

    // the guest writes: one block changed, a data block zeroed, a zero block filled, a block
    // now equal to another existing one, and the short tail
    let mut next = scsi.clone();
    next[7 * MIB4 + 5] ^= 0x5a;
    next[64 * MIB4..65 * MIB4].fill(0);
    next[90 * MIB4..91 * MIB4].copy_from_slice(&random_bytes(77, MIB4));
    let copy = next[0..MIB4].to_vec();
    next[100 * MIB4..101 * MIB4].copy_from_slice(&copy);
    let tail = next.len() - 1;
    next[tail] ^= 1;
    let last = next.len().div_ceil(MIB4) - 1;
    let dirty = vec![7usize, 64, 90, 100, last];
    let inc = vm_backup(
        &client,
        &store,
        T0 + 3600,
        &next,
        &efi,
        Some((dirty.clone(), full.drives[0].csum, full.drives[1].csum)),
    )
    .await;
    let calls = &inc.calls;
    assert_eq!(calls[0], "GET previous?archive-name=index.json.blob");
    assert!(!calls.iter().any(|c| c.contains("previous_backup_time")));
    let prev = position(calls, "GET previous?archive-name=drive-scsi0.img.fidx");
    let create = position(calls, "POST fixed_index?archive-name=drive-scsi0.img.fidx");
    assert!(prev < create);
    assert_eq!(
        calls[create],
        format!(
            "POST fixed_index?archive-name=drive-scsi0.img.fidx&reuse-csum={}&size={}",
            wire::hex(&full.drives[0].csum),
            next.len()
        )
    );
    let scsi_report = &inc.drives[0];
    // chunk-count: entries appended in this session; size: bytes written in this session
    assert_eq!(scsi_report.chunk_count, dirty.len() as u64);
    assert_eq!(scsi_report.bytes_written, (4 * MIB4 + 1234) as u64);
    // uploaded: blocks 7 and 90 and the tail; block 100 equals block 0 (known), 64 is zero
    assert_eq!(scsi_report.uploaded, 3, "{scsi_report:?}");
    assert_eq!(scsi_report.zero_writes, 1, "{scsi_report:?}");
    // efidisk: nothing dirty, an empty incremental close
    assert_eq!(
        (inc.drives[1].chunk_count, inc.drives[1].bytes_written),
        (0, 0)
    );

    let (image, _) = restore_vm(&client, &store, T0 + 3600, "drive-scsi0").await;
    assert!(image == next, "incremental snapshot restored differently");
    let (image, _) = restore_vm(&client, &store, T0 + 3600, "drive-efidisk0").await;
    assert!(image == efi);
    let (image, _) = restore_vm(&client, &store, T0, "drive-scsi0").await;
    assert!(image == scsi, "the full snapshot changed");

    // the server checks reuse-csum against the last backup
    let mut params = BackupParams::new(&store, "vm", "400", T0 + 7200);
    params.debug = false;
    let session = BackupSession::start_raw(&client, params).await.unwrap();
    let (status, body) = session
        .raw_request(
            http::Method::POST,
            &format!(
                "fixed_index?archive-name=drive-scsi0.img.fidx&size={}&reuse-csum={}",
                next.len(),
                "00".repeat(32)
            ),
            "application/x-www-form-urlencoded",
            Vec::new(),
        )
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("doesn't match last backup's"), "{body}");
    let (status, body) = session
        .raw_request(
            http::Method::POST,
            &format!(
                "fixed_index?archive-name=drive-scsi0.img.fidx&size={}&reuse-csum={}",
                next.len() + MIB4,
                wire::hex(&inc.drives[0].csum)
            ),
            "application/x-www-form-urlencoded",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    session.abort();
}
