//! Shared helpers of the end-to-end tests: deterministic test data, directory comparison and
//! one-call backups and restores through the protocol test client.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

use pbs_cloud_e2e::{
    dirtree, BackupParams, BackupSession, BackupSummary, Crypt, PbsClient, ReaderParams,
    ReaderSession, TestServer, UploadOptions,
};
use rand::{RngCore, SeedableRng};

/// First backup time used by the tests (2026-01-01T00:00:00Z).
pub const T0: i64 = 1_767_225_600;

/// Deterministic pseudo-random bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    data
}

/// A directory with nested folders, small and large files (some compressible, one empty).
pub fn make_tree(root: &Path, seed: u64) {
    std::fs::create_dir_all(root.join("etc/app")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/data")).unwrap();
    std::fs::write(root.join("etc/hostname"), b"e2e-host\n").unwrap();
    std::fs::write(root.join("etc/app/config.toml"), format!("seed = {seed}\n")).unwrap();
    std::fs::write(root.join("etc/empty"), b"").unwrap();
    std::fs::write(
        root.join("var/lib/data/big.bin"),
        random_bytes(seed, 9 * 1024 * 1024 + 17),
    )
    .unwrap();
    std::fs::write(
        root.join("var/lib/data/text.log"),
        "log line\n".repeat(200_000),
    )
    .unwrap();
    std::fs::write(
        root.join("var/lib/data/small.bin"),
        random_bytes(seed + 1, 4097),
    )
    .unwrap();
}

/// Fails unless both directories hold the same files with the same bytes.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let (_, want) = dirtree::encode_dir(expected).unwrap();
    let (_, got) = dirtree::encode_dir(actual).unwrap();
    assert_eq!(want, got, "restored tree differs in entries");
    for entry in walk(expected) {
        let rel = entry.strip_prefix(expected).unwrap();
        let other = actual.join(rel);
        if entry.is_file() {
            assert_eq!(
                std::fs::read(&entry).unwrap(),
                std::fs::read(&other).unwrap(),
                "file {} differs",
                rel.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// A server on a fresh data dir, with a logged-in admin client.
pub async fn start_server() -> (TestServer, PbsClient) {
    let server = TestServer::start()
        .await
        .expect("start pbs-cloud-server (build it with `cargo build -p pbs-cloud-server`)");
    let client = server.admin_client().await.expect("admin login");
    (server, client)
}

/// What one test backup contains.
pub struct Content<'a> {
    pub tree: Option<&'a Path>,
    pub image: Option<&'a [u8]>,
    pub conf: Option<&'a [u8]>,
}

/// One backup run like `proxmox-backup-client backup root.pxar:DIR disk.img:FILE app.conf:FILE`.
pub async fn backup(
    client: &PbsClient,
    store: &str,
    ns: Option<&str>,
    id: &str,
    time: i64,
    crypt: Crypt,
    content: &Content<'_>,
) -> pbs_cloud_e2e::Result<BackupSummary> {
    let mut params = BackupParams::new(store, "host", id, time);
    params.ns = ns.map(str::to_string);
    params.crypt = crypt;
    let mut session = BackupSession::start(client, params).await?;
    let opts = UploadOptions::default();
    if let Some(conf) = content.conf {
        session.upload_blob("app.conf", conf).await?;
    }
    if let Some(tree) = content.tree {
        session.upload_pxar_dir("root", tree, &opts).await?;
    }
    if let Some(image) = content.image {
        session.upload_fixed_image("disk.img", image, &opts).await?;
    }
    session.finish().await
}

/// Opens a reader session on `host/<id>/<time>`.
pub async fn reader(
    client: &PbsClient,
    store: &str,
    ns: Option<&str>,
    id: &str,
    time: i64,
    key: Option<pbs_cloud_e2e::CryptConfig>,
) -> pbs_cloud_e2e::Result<ReaderSession> {
    let mut params = ReaderParams::new(store, "host", id, time);
    params.ns = ns.map(str::to_string);
    ReaderSession::open(client, params, key).await
}

/// Restores `root.pxar` into `target` and compares it with `expected`.
pub async fn assert_tree_restores(session: &ReaderSession, expected: &Path) {
    let stream = session
        .restore_archive("root.pxar")
        .await
        .expect("restore root.pxar");
    let target = tempfile::tempdir().unwrap();
    dirtree::restore_dir(&stream, target.path()).unwrap();
    assert_same_tree(expected, target.path());
}

/// Snapshot list of a group as JSON items.
pub async fn snapshots(
    client: &PbsClient,
    store: &str,
    ns: Option<&str>,
    id: &str,
) -> Vec<serde_json::Value> {
    let mut params = serde_json::json!({ "backup-type": "host", "backup-id": id });
    if let Some(ns) = ns {
        params["ns"] = ns.into();
    }
    let data = client
        .get(&format!("admin/datastore/{store}/snapshots"), Some(&params))
        .await
        .expect("snapshot list");
    data.as_array().cloned().unwrap_or_default()
}
