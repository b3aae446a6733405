//! Helpers of the Proxmox VE flow tests: a server with the user and API token a PVE storage
//! entry is configured with, guest configs and a container root file system, and the stock
//! client's diskless VM backup (`backup qemu-server.conf:<f> [fw.conf:<f>] --backup-type vm`).
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

use pbs_cloud_e2e::master_key::{MasterPublicKey, ENCRYPTED_KEY_BLOB_NAME};
use pbs_cloud_e2e::pve_api::PveApiClient;
use pbs_cloud_e2e::{
    BackupParams, BackupSession, BackupSummary, Crypt, PbsClient, ReaderParams, ReaderSession,
    TestServer,
};

/// The PBS user a PVE storage entry logs in as.
pub const PVE_USER: &str = "pve@pbs";
pub const PVE_PASSWORD: &str = "pve-storage-secret";
/// The API token a PVE storage entry can use instead.
pub const PVE_TOKEN: &str = "pve@pbs!storage";

/// A server (zero-config datastore `store1`, or `config`) with [`PVE_USER`] and
/// [`PVE_TOKEN`] holding DatastoreAdmin on it, plus the admin client.
pub struct PveServer {
    pub server: TestServer,
    pub admin: PbsClient,
    pub token_secret: String,
}

impl PveServer {
    pub async fn start(config: Option<&str>) -> PveServer {
        let mut server = TestServer::prepare().unwrap();
        if let Some(c) = config {
            server.set_config(c).unwrap();
        }
        server
            .launch()
            .await
            .expect("start pbs-cloud-server (build it with `cargo build -p pbs-cloud-server`)");
        let store = server.store().to_string();
        server.stop().await;
        server
            .manage(&["user", "add", PVE_USER], &format!("{PVE_PASSWORD}\n"))
            .unwrap();
        let out = server.manage(&["token", "add", PVE_TOKEN], "").unwrap();
        let token_secret = out
            .lines()
            .find_map(|l| l.strip_prefix("secret: "))
            .expect("token secret printed")
            .to_string();
        let path = format!("/datastore/{store}");
        for who in [PVE_USER, PVE_TOKEN] {
            server
                .manage(&["acl", "add", &path, who, "DatastoreAdmin"], "")
                .unwrap();
        }
        server.launch().await.unwrap();
        let admin = server.admin_client().await.unwrap();
        PveServer {
            server,
            admin,
            token_secret,
        }
    }

    pub fn store(&self) -> String {
        self.server.store().to_string()
    }

    /// The Rust client as vzdump runs it (`PBS_PASSWORD` = the storage password).
    pub async fn client(&self) -> PbsClient {
        let c = self.server.client().await.unwrap();
        c.login(PVE_USER, PVE_PASSWORD).await.unwrap();
        c
    }

    /// The storage plugin's own API client, logged in with a form-encoded ticket request.
    pub async fn plugin_with_ticket(&self) -> PveApiClient {
        let mut c = PveApiClient::connect(
            self.server.host(),
            self.server.port(),
            &self.server.fingerprint,
        )
        .await
        .unwrap();
        c.login(PVE_USER, PVE_PASSWORD).await.unwrap();
        c
    }

    /// The storage plugin's API client using the API token.
    pub async fn plugin_with_token(&self) -> PveApiClient {
        PveApiClient::connect(
            self.server.host(),
            self.server.port(),
            &self.server.fingerprint,
        )
        .await
        .unwrap()
        .with_token(PVE_TOKEN, &self.token_secret)
    }
}

pub fn qemu_server_conf(vmid: &str) -> Vec<u8> {
    format!(
        "boot: order=scsi0\ncores: 2\nmemory: 2048\nname: vm{vmid}\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\nscsi0: local-lvm:vm-{vmid}-disk-0,size=32M\nscsihw: virtio-scsi-single\n"
    )
    .into_bytes()
}

pub fn pct_conf(vmid: &str) -> Vec<u8> {
    format!(
        "arch: amd64\ncores: 1\nhostname: ct{vmid}\nmemory: 512\nostype: debian\nrootfs: local-lvm:vm-{vmid}-disk-0,size=8G\n"
    )
    .into_bytes()
}

pub fn fw_conf() -> Vec<u8> {
    b"[OPTIONS]\nenable: 1\n\n[RULES]\nIN ACCEPT -p tcp -dport 22\n".to_vec()
}

/// A small container root file system: several multi-MiB files (so payload chunks can be
/// reused), configs, an empty file and a symlink.
pub fn ct_rootfs(root: &Path, seed: u64) {
    for dir in ["etc/apt", "usr/lib/app", "var/log", "home/user"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("etc/hostname"), format!("ct{seed}\n")).unwrap();
    std::fs::write(
        root.join("etc/apt/sources.list"),
        b"deb http://deb.example bookworm main\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/empty"), b"").unwrap();
    for (i, size) in [3_500_000usize, 5_200_000, 2_300_000, 6_100_000]
        .into_iter()
        .enumerate()
    {
        std::fs::write(
            root.join(format!("usr/lib/app/lib{i}.so")),
            common_random(seed * 10 + i as u64, size),
        )
        .unwrap();
    }
    std::fs::write(root.join("var/log/syslog"), "boot ok\n".repeat(50_000)).unwrap();
    std::fs::write(root.join("home/user/notes.txt"), b"remember the milk\n").unwrap();
    std::os::unix::fs::symlink("../usr/lib/app/lib0.so", root.join("etc/lib0")).unwrap();
}

fn common_random(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    data
}

/// The stock client's diskless VM backup: `qemu-server.conf` and `fw.conf` blobs only;
/// with a master key, `rsa-encrypted.key.blob` before the manifest.
pub async fn diskless_vm_backup(
    client: &PbsClient,
    store: &str,
    ns: Option<&str>,
    vmid: &str,
    time: i64,
    crypt: Crypt,
    master: Option<&MasterPublicKey>,
) -> pbs_cloud_e2e::Result<BackupSummary> {
    let mut params = BackupParams::new(store, "vm", vmid, time);
    params.ns = ns.map(str::to_string);
    params.crypt = crypt.clone();
    let mut session = BackupSession::start(client, params).await?;
    session
        .upload_blob("qemu-server.conf", &qemu_server_conf(vmid))
        .await?;
    session.upload_blob("fw.conf", &fw_conf()).await?;
    if let (Some(master), Some(key)) = (master, crypt.key()) {
        session.close_catalog().await?;
        let blob = master.encrypted_key_blob(key, time)?;
        session
            .upload_blob_raw(ENCRYPTED_KEY_BLOB_NAME, blob, crypt.mode_str())
            .await?;
    }
    session.finish().await
}

/// A reader session on `<type>/<id>/<time>`.
pub async fn open_reader(
    client: &PbsClient,
    store: &str,
    ns: Option<&str>,
    ty: &str,
    id: &str,
    time: i64,
    key: Option<pbs_cloud_e2e::CryptConfig>,
) -> ReaderSession {
    let mut params = ReaderParams::new(store, ty, id, time);
    params.ns = ns.map(str::to_string);
    ReaderSession::open(client, params, key)
        .await
        .unwrap_or_else(|e| panic!("reader on {ty}/{id}/{time}: {e}"))
}

/// `--output-format=json` of `snapshot files <snap>`: the `files` endpoint's items.
pub async fn files_of(
    client: &PbsClient,
    store: &str,
    ty: &str,
    id: &str,
    time: i64,
) -> Vec<serde_json::Value> {
    let params = serde_json::json!({"backup-type": ty, "backup-id": id, "backup-time": time});
    client
        .get(&format!("admin/datastore/{store}/files"), Some(&params))
        .await
        .unwrap()
        .as_array()
        .cloned()
        .unwrap()
}

/// Names of `files`.
pub fn names(files: &[serde_json::Value]) -> Vec<String> {
    files
        .iter()
        .map(|f| f["filename"].as_str().unwrap().to_string())
        .collect()
}
