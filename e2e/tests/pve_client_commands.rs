//! The client commands Proxmox VE runs besides backup and restore (PVE::PBSClient), with the
//! requests the stock client sends for them: `snapshot files` (sizes), `status`, `snapshot
//! notes show|update`, `prune … --output-format=json`, `snapshot forget`, `upload-log` with
//! and without encryption, and `server-identity`.

mod common;
mod pve_common;

use common::*;
use pbs_cloud_e2e::pve_ct::{backup_ct, CtBackup};
use pbs_cloud_e2e::qemu_backup::{qemu_backup, Drive, QemuBackupJob};
use pbs_cloud_e2e::{wire, Crypt, CryptConfig, PxarMode};
use pve_common::*;
use serde_json::{json, Value};

fn snap(ty: &str, id: &str, time: i64) -> Value {
    json!({"backup-type": ty, "backup-id": id, "backup-time": time})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_files_command_reports_archive_sizes() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let disk = random_bytes(9, 2 * 4 * 1024 * 1024 + 100);
    let conf = qemu_server_conf("110");
    qemu_backup(
        &client,
        QemuBackupJob {
            store: &store,
            ns: None,
            vmid: "110",
            time: T0,
            key: None,
            master_key: None,
            configs: vec![("qemu-server.conf", &conf)],
            drives: vec![Drive {
                name: "drive-scsi0",
                data: &disk,
                incremental: None,
            }],
        },
    )
    .await
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    ct_rootfs(root.path(), 111);
    backup_ct(
        &client,
        CtBackup {
            store: &store,
            ns: None,
            vmid: "111",
            time: T0,
            pct_conf: &pct_conf("111"),
            fw_conf: Some(&fw_conf()),
            rootdir: root.path(),
            mode: PxarMode::Metadata,
            crypt: Crypt::None,
            master_key: None,
        },
        || async {},
    )
    .await
    .unwrap();

    for (ty, id) in [("vm", "110"), ("ct", "111")] {
        let files = files_of(&client, &store, ty, id, T0).await;
        let reader = open_reader(&client, &store, None, ty, id, T0, None).await;
        let manifest = reader.manifest().await.unwrap();
        for f in &files {
            let name = f["filename"].as_str().unwrap();
            let size = f["size"].as_u64().unwrap_or_else(|| panic!("{f}"));
            if name == "index.json.blob" {
                // the stored manifest's length
                let raw = reader.download(name).await.unwrap();
                assert_eq!(size, raw.len() as u64);
                assert_eq!(f["crypt-mode"], "none");
            } else {
                let entry = manifest.file(name).unwrap_or_else(|| panic!("{name}"));
                assert_eq!(size, entry.size, "{name}");
                assert_eq!(f["crypt-mode"], entry.crypt_mode.as_str(), "{name}");
            }
        }
        // what PVE adds up as the backup's size
        let total: u64 = files.iter().map(|f| f["size"].as_u64().unwrap()).sum();
        let listed = client
            .get(
                &format!("admin/datastore/{store}/snapshots"),
                Some(&json!({"backup-type": ty, "backup-id": id})),
            )
            .await
            .unwrap();
        assert_eq!(listed[0]["size"].as_u64(), Some(total), "{listed}");
    }
    let vm_files = names(&files_of(&client, &store, "vm", "110", T0).await);
    assert!(vm_files.contains(&"drive-scsi0.img.fidx".to_string()));
    let vm_disk = files_of(&client, &store, "vm", "110", T0)
        .await
        .into_iter()
        .find(|f| f["filename"] == "drive-scsi0.img.fidx")
        .unwrap();
    assert_eq!(vm_disk["size"].as_u64(), Some(disk.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_status_command_local_datastore() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    // `status --output-format=json` (no --ns): total, used and avail, every 10 s
    let status = client
        .get(&format!("admin/datastore/{store}/status"), None)
        .await
        .unwrap();
    let (total, used, avail) = (
        status["total"].as_u64().unwrap(),
        status["used"].as_u64().unwrap(),
        status["avail"].as_u64().unwrap(),
    );
    // no limit configured: the filesystem's figures, like PBS
    assert!(
        total > 0 && avail > 0 && used <= total && avail <= total,
        "{status}"
    );
    let fs = rustix::fs::statvfs(pve.server.data_dir()).unwrap();
    assert_eq!(total, fs.f_blocks * fs.f_frsize, "{status}");
    assert_eq!(status["backend-type"], "filesystem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_snapshot_notes_show_and_update() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    diskless_vm_backup(&client, &store, None, "120", T0, Crypt::None, None)
        .await
        .unwrap();
    let path = format!("admin/datastore/{store}/notes");
    assert_eq!(
        client
            .get(&path, Some(&snap("vm", "120", T0)))
            .await
            .unwrap(),
        ""
    );
    // `snapshot notes update <snap> <notes>`: every parameter in the query string, empty body
    let notes = "vzdump backup of vm120 — nächtlich\nkeep until 2027";
    let mut params = snap("vm", "120", T0);
    params["notes"] = notes.into();
    let query = pbs_cloud_e2e::http::encode_params(&params);
    let resp = client
        .raw(
            http::Method::PUT,
            &format!("/api2/json/{path}?{query}"),
            Some("application/x-www-form-urlencoded"),
            Vec::new(),
            &[],
            true,
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    // `snapshot notes show <snap> --output-format=json` prints {"notes": data}
    let shown = client
        .get(&path, Some(&snap("vm", "120", T0)))
        .await
        .unwrap();
    assert_eq!(shown, notes);
    let listed = client
        .get(
            &format!("admin/datastore/{store}/snapshots"),
            Some(&json!({"backup-id": "120"})),
        )
        .await
        .unwrap();
    assert_eq!(listed[0]["comment"], "vzdump backup of vm120 — nächtlich");
    // the rewritten manifest still restores
    let reader = open_reader(&client, &store, None, "vm", "120", T0, None).await;
    assert_eq!(
        reader.restore_archive("qemu-server.conf").await.unwrap(),
        qemu_server_conf("120")
    );
    // cleared notes
    let mut params = snap("vm", "120", T0);
    params["notes"] = "".into();
    client.put(&path, Some(&params)).await.unwrap();
    assert_eq!(
        client
            .get(&path, Some(&snap("vm", "120", T0)))
            .await
            .unwrap(),
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_prune_json_output_and_forget() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let day = 86_400;
    for i in 0..5 {
        diskless_vm_backup(
            &client,
            &store,
            None,
            "130",
            T0 + i * day,
            Crypt::None,
            None,
        )
        .await
        .unwrap();
    }
    let mut protect = snap("vm", "130", T0 + day);
    protect["protected"] = true.into();
    client
        .put(
            &format!("admin/datastore/{store}/protected"),
            Some(&protect),
        )
        .await
        .unwrap();
    // `prune vm/130 --keep-last 2 --dry-run --output-format=json`: POST with a JSON body
    let prune = format!("admin/datastore/{store}/prune");
    let dry = client
        .post(
            &prune,
            Some(
                &json!({"backup-type": "vm", "backup-id": "130", "keep-last": 2, "dry-run": true}),
            ),
        )
        .await
        .unwrap();
    let dry = dry.as_array().unwrap();
    assert_eq!(dry.len(), 5);
    for item in dry {
        // PVE dies when one of these is missing
        assert_eq!(item["backup-type"], "vm", "{item}");
        assert_eq!(item["backup-id"], "130", "{item}");
        assert!(item["backup-time"].is_i64(), "{item}");
        assert!(item["keep"].is_boolean(), "{item}");
        assert!(item["protected"].is_boolean(), "{item}");
    }
    let decided: Vec<(i64, bool, bool)> = dry
        .iter()
        .map(|i| {
            (
                i["backup-time"].as_i64().unwrap(),
                i["keep"].as_bool().unwrap(),
                i["protected"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decided,
        [
            (T0, false, false),
            (T0 + day, true, true),
            (T0 + 2 * day, false, false),
            (T0 + 3 * day, true, false),
            (T0 + 4 * day, true, false),
        ]
    );
    let times = |v: Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["backup-time"].as_i64().unwrap())
            .collect()
    };
    let list = format!("admin/datastore/{store}/snapshots");
    let group = json!({"backup-type": "vm", "backup-id": "130"});
    assert_eq!(
        times(client.get(&list, Some(&group)).await.unwrap()).len(),
        5
    );
    let done = client
        .post(
            &prune,
            Some(&json!({"backup-type": "vm", "backup-id": "130", "keep-last": 2})),
        )
        .await
        .unwrap();
    assert_eq!(done.as_array().unwrap().len(), 5);
    assert_eq!(
        times(client.get(&list, Some(&group)).await.unwrap()),
        [T0 + day, T0 + 3 * day, T0 + 4 * day]
    );
    // `forget <snap>`: DELETE with the snapshot in the query; protected ones are refused
    let err = client
        .delete(&list, Some(&snap("vm", "130", T0 + day)))
        .await
        .unwrap_err();
    assert!(
        err.body().unwrap_or_default().contains("protected"),
        "{err}"
    );
    client
        .delete(&list, Some(&snap("vm", "130", T0 + 3 * day)))
        .await
        .unwrap();
    assert_eq!(
        times(client.get(&list, Some(&group)).await.unwrap()),
        [T0 + day, T0 + 4 * day]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_upload_log_plain_and_encrypted() {
    let pve = PveServer::start(None).await;
    let store = pve.store();
    let client = pve.client().await;
    let key = CryptConfig::random();
    diskless_vm_backup(&client, &store, None, "140", T0, Crypt::None, None)
        .await
        .unwrap();
    diskless_vm_backup(
        &client,
        &store,
        None,
        "141",
        T0,
        Crypt::Encrypt(key.clone()),
        None,
    )
    .await
    .unwrap();
    let upload = format!("admin/datastore/{store}/upload-backup-log");
    let log = |vmid: &str| {
        format!("INFO: starting new backup job: vzdump {vmid}\nINFO: Backup finished\n")
            .into_bytes()
    };
    // `upload-log <snap> <log> --crypt-mode=none`: a compressed blob
    let plain = wire::encode_plain_blob(&log("140"), true);
    client
        .upload(&upload, Some(&snap("vm", "140", T0)), plain.clone())
        .await
        .unwrap();
    // `--crypt-mode=encrypt --keyfd=N`: the log encrypted with the backup's key
    let sealed = key.encrypt_blob(&log("141"), true).unwrap();
    client
        .upload(&upload, Some(&snap("vm", "141", T0)), sealed)
        .await
        .unwrap();
    // a second log is refused and the first one stays
    let err = client
        .upload(&upload, Some(&snap("vm", "140", T0)), plain)
        .await
        .unwrap_err();
    assert!(
        err.body()
            .unwrap_or_default()
            .contains("already contains a log"),
        "{err}"
    );
    let download = format!("admin/datastore/{store}/download");
    for (id, k) in [("140", None), ("141", Some(&key))] {
        let mut params = snap("vm", id, T0);
        params["file-name"] = "client.log.blob".into();
        let raw = client.download(&download, Some(&params)).await.unwrap();
        let text = match k {
            Some(k) => k.decode_blob(&raw, 1 << 20).unwrap(),
            None => wire::decode_plain_blob(&raw, 1 << 20).unwrap(),
        };
        assert_eq!(text, log(id));
        // stored as client.log.blob, not part of the manifest
        let files = files_of(&client, &store, "vm", id, T0).await;
        let entry = files
            .iter()
            .find(|f| f["filename"] == "client.log.blob")
            .unwrap_or_else(|| panic!("{files:?}"));
        assert!(entry.get("crypt-mode").is_none(), "{entry}");
        let reader = open_reader(&client, &store, None, "vm", id, T0, k.cloned()).await;
        assert!(reader
            .manifest()
            .await
            .unwrap()
            .file("client.log.blob")
            .is_none());
    }
    // PVE still sees the encrypted backup as encrypted
    let listed = client
        .get(
            &format!("admin/datastore/{store}/snapshots"),
            Some(&json!({"backup-id": "141"})),
        )
        .await
        .unwrap();
    let encrypted = listed[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["filename"] != "index.json.blob" && f["filename"] != "client.log.blob")
        .all(|f| f["crypt-mode"] == "encrypt");
    assert!(encrypted, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_server_identity_is_stable_across_restarts() {
    let mut pve = PveServer::start(None).await;
    // `server-identity --output-format=json` (client 4.x) → pbs-instance-id
    let id = pve
        .client()
        .await
        .get("/api2/json/nodes/localhost/identity", None)
        .await
        .unwrap();
    let id = id["pbs-instance-id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    pve.server.restart().await.unwrap();
    let again = pve
        .client()
        .await
        .get("/api2/json/nodes/localhost/identity", None)
        .await
        .unwrap();
    assert_eq!(again["pbs-instance-id"], id.as_str());
    // the token PVE may use reads it too
    let via_token = pve.plugin_with_token().await;
    let data = via_token
        .get("nodes/localhost/identity", &[])
        .await
        .unwrap();
    assert_eq!(data["pbs-instance-id"], id.as_str());
}
