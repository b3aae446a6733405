//! Encrypted Proxmox VE backups: the client with `--crypt-mode=encrypt --keyfd=N
//! --master-pubkey-fd=M` (containers, diskless VMs) and QEMU's backup library with a key file
//! and a master key (VM disks). Chunks and config blobs are encrypted, the manifest is signed,
//! and `rsa-encrypted.key.blob` is uploaded plain and uncompressed before the manifest; the
//! master key's owner recovers the key from it and restores.

mod common;
mod pve_common;

use common::*;
use pbs_cloud_e2e::master_key::{MasterKeyPair, MasterPublicKey, ENCRYPTED_KEY_BLOB_NAME};
use pbs_cloud_e2e::pve_ct::{backup_ct, CtBackup};
use pbs_cloud_e2e::qemu_backup::{pbs_restore, qemu_backup, Drive, QemuBackupJob};
use pbs_cloud_e2e::{wire, Crypt, CryptConfig, PbsClient, PxarMode, ReaderParams};
use pve_common::*;
use serde_json::json;

const MIB4: usize = 4 * 1024 * 1024;

fn master() -> (MasterKeyPair, MasterPublicKey) {
    let pair = MasterKeyPair::generate(2048).unwrap();
    let public = MasterPublicKey::from_pem(&pair.public_pem().unwrap()).unwrap();
    (pair, public)
}

/// `files` of an encrypted snapshot: everything `encrypt` but the signed manifest.
async fn assert_encrypted_files(client: &PbsClient, store: &str, ty: &str, id: &str, time: i64) {
    let files = files_of(client, store, ty, id, time).await;
    assert!(
        names(&files).contains(&ENCRYPTED_KEY_BLOB_NAME.to_string()),
        "{files:?}"
    );
    for f in &files {
        let want = match f["filename"].as_str().unwrap() {
            "index.json.blob" => "sign-only",
            _ => "encrypt",
        };
        assert_eq!(f["crypt-mode"], want, "{f}");
    }
}

/// The stored `rsa-encrypted.key.blob` (REST download) gives the key back to the master
/// key's owner.
async fn recover_key(
    client: &PbsClient,
    store: &str,
    ty: &str,
    id: &str,
    time: i64,
    pair: &MasterKeyPair,
) -> CryptConfig {
    let blob = client
        .download(
            &format!("admin/datastore/{store}/download"),
            Some(
                &json!({"backup-type": ty, "backup-id": id, "backup-time": time,
                         "file-name": ENCRYPTED_KEY_BLOB_NAME}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(wire::BlobKind::of(&blob).unwrap(), wire::BlobKind::Plain);
    pair.recover_key(&blob).unwrap()
}

async fn verify_ok(pve: &PveServer, ty: &str, id: &str, time: i64) {
    let upid = pve
        .admin
        .post(
            &format!("admin/datastore/{}/verify", pve.store()),
            Some(&json!({"backup-type": ty, "backup-id": id, "backup-time": time})),
        )
        .await
        .unwrap();
    let (status, log) = wait_task(&pve.admin, upid.as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "OK", "{status} {log:?}");
    let listed = pve
        .admin
        .get(
            &format!("admin/datastore/{}/snapshots", pve.store()),
            Some(&json!({"backup-type": ty, "backup-id": id})),
        )
        .await
        .unwrap();
    let item = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["backup-time"] == time)
        .unwrap()
        .clone();
    assert_eq!(item["verification"]["state"], "ok", "{item}");
}

/// Every stored chunk has an encrypted magic and no plain data shows through.
fn assert_chunks_encrypted(pve: &PveServer, probe: &[u8]) {
    let chunks = pve
        .server
        .data_dir()
        .join("datastores")
        .join(pve.store())
        .join(".chunks");
    let mut seen = 0;
    for dir in std::fs::read_dir(&chunks).unwrap() {
        for chunk in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let bytes = std::fs::read(chunk.unwrap().path()).unwrap();
            let kind = wire::BlobKind::of(&bytes).unwrap();
            assert!(kind.is_encrypted(), "a stored chunk is not encrypted");
            assert!(!bytes.windows(probe.len()).any(|w| w == probe));
            seen += 1;
        }
    }
    assert!(seen > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_ct_backup_encrypted_with_keyfd_and_master_key() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let key = CryptConfig::random();
    let (pair, public) = master();
    let root = tempfile::tempdir().unwrap();
    ct_rootfs(root.path(), 500);
    let (pct, fw) = (pct_conf("500"), fw_conf());
    let spec = |time, mode| CtBackup {
        store: &store,
        ns: None,
        vmid: "500",
        time,
        pct_conf: &pct,
        fw_conf: Some(&fw),
        rootdir: root.path(),
        mode,
        crypt: Crypt::Encrypt(key.clone()),
        master_key: Some(public.clone()),
    };
    let first = backup_ct(&client, spec(T0, PxarMode::Data), || async {})
        .await
        .unwrap();
    let names_in_order: Vec<&str> = first
        .summary
        .manifest
        .files
        .iter()
        .map(|f| f.filename.as_str())
        .collect();
    assert_eq!(names_in_order.last(), Some(&ENCRYPTED_KEY_BLOB_NAME));
    assert!(first.summary.manifest.signature.is_some());
    assert_encrypted_files(&client, &store, "ct", "500", T0).await;

    // metadata mode on top: the reference is read with the key through a reader session
    std::fs::write(root.path().join("etc/hostname"), b"renamed\n").unwrap();
    let second = backup_ct(&client, spec(T0 + 3600, PxarMode::Metadata), || async {})
        .await
        .unwrap();
    let reuse = second
        .root
        .reuse
        .as_ref()
        .expect("metadata mode read the previous snapshot");
    assert_eq!(reuse.reference_time, T0);
    assert!(reuse.reused_chunks > 0, "{reuse:?}");
    assert_encrypted_files(&client, &store, "ct", "500", T0 + 3600).await;

    // the key holder restores; without the key the signed manifest is refused
    let reader = open_reader(
        &client,
        &store,
        None,
        "ct",
        "500",
        T0 + 3600,
        Some(key.clone()),
    )
    .await;
    let target = tempfile::tempdir().unwrap();
    reader
        .restore_pxar_dir("root.pxar", target.path())
        .await
        .unwrap();
    assert_same_tree(root.path(), target.path());
    assert_eq!(reader.restore_archive("pct.conf").await.unwrap(), pct);
    let keyless = open_reader(&client, &store, None, "ct", "500", T0 + 3600, None).await;
    assert!(keyless.manifest().await.is_err());

    // the master key's owner gets the key back from either snapshot and restores with it
    for time in [T0, T0 + 3600] {
        let recovered = recover_key(&client, &store, "ct", "500", time, &pair).await;
        assert_eq!(recovered.enc_key(), key.enc_key());
    }
    let recovered = recover_key(&client, &store, "ct", "500", T0, &pair).await;
    let reader = open_reader(&client, &store, None, "ct", "500", T0, Some(recovered)).await;
    assert_eq!(reader.restore_archive("fw.conf").await.unwrap(), fw);

    let lib = std::fs::read(root.path().join("usr/lib/app/lib1.so")).unwrap();
    assert_chunks_encrypted(&pve, &lib[5000..5064]);
    verify_ok(&pve, "ct", "500", T0 + 3600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_vm_backups_encrypted_with_key_file_and_master_key() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let key = CryptConfig::random();
    let (pair, public) = master();

    // VM disk through QEMU's library
    let mut disk = vec![0u8; 6 * MIB4 + 4096];
    disk[..MIB4].copy_from_slice(&random_bytes(600, MIB4));
    disk[3 * MIB4..4 * MIB4].copy_from_slice(&random_bytes(601, MIB4));
    let conf = qemu_server_conf("600");
    let fw = fw_conf();
    let report = qemu_backup(
        &client,
        QemuBackupJob {
            store: &store,
            ns: None,
            vmid: "600",
            time: T0,
            key: Some(key.clone()),
            master_key: Some(public.clone()),
            configs: vec![("qemu-server.conf", &conf), ("fw.conf", &fw)],
            drives: vec![Drive {
                name: "drive-virtio0",
                data: &disk,
                incremental: None,
            }],
        },
    )
    .await
    .unwrap();
    let n = report.calls.len();
    assert_eq!(
        report.calls[n - 3..],
        [
            format!("POST blob?file-name={ENCRYPTED_KEY_BLOB_NAME}"),
            "POST blob?file-name=index.json.blob".to_string(),
            "POST finish".to_string()
        ]
    );
    assert_encrypted_files(&client, &store, "vm", "600", T0).await;
    let restore = pbs_restore(
        &client,
        ReaderParams::new(&store, "vm", "600", T0),
        Some(key.clone()),
        "drive-virtio0.img.fidx",
        16,
    )
    .await
    .unwrap();
    assert!(restore.image == disk, "encrypted disk restored differently");
    assert_eq!(restore.zero_chunks, 4);
    let recovered = recover_key(&client, &store, "vm", "600", T0, &pair).await;
    let reader = open_reader(&client, &store, None, "vm", "600", T0, Some(recovered)).await;
    assert_eq!(
        reader.restore_archive("qemu-server.conf").await.unwrap(),
        conf
    );
    drop(reader);

    // diskless VM through the client (`--keyfile k --master-pubkey-file m`)
    let summary = diskless_vm_backup(
        &client,
        &store,
        None,
        "601",
        T0,
        Crypt::Encrypt(key.clone()),
        Some(&public),
    )
    .await
    .unwrap();
    assert!(summary.manifest.signature.is_some());
    assert_encrypted_files(&client, &store, "vm", "601", T0).await;
    let reader = open_reader(&client, &store, None, "vm", "601", T0, Some(key.clone())).await;
    assert_eq!(
        reader.restore_archive("qemu-server.conf").await.unwrap(),
        qemu_server_conf("601")
    );
    assert_eq!(
        recover_key(&client, &store, "vm", "601", T0, &pair)
            .await
            .enc_key(),
        key.enc_key()
    );
    assert_chunks_encrypted(&pve, &disk[100..164]);
    verify_ok(&pve, "vm", "600", T0).await;
}
