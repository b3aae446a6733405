//! Shared helpers of the end-to-end tests: deterministic test data, directory comparison and
//! one-call backups and restores through the protocol test client.
#![allow(dead_code)] // each test binary uses a different subset

pub mod bed;
pub mod moves;
pub mod s3;
pub mod sync;

#[allow(unused_imports)] // only the S3 tests use it
pub use s3::*;

use std::path::Path;

use pbs_cloud_e2e::{
    BackupParams, BackupSession, BackupSummary, Crypt, PbsClient, ReaderParams, ReaderSession,
    TestServer, UploadOptions,
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

/// What [`assert_same_tree`] compares of one entry: path, type and permission bits,
/// owner, size, mtime (files and directories), symlink target.
fn describe(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for path in walk(root) {
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let m = std::fs::symlink_metadata(&path).unwrap();
        let mut line = format!("{rel} mode={:o} owner={}:{}", m.mode(), m.uid(), m.gid());
        if m.file_type().is_symlink() {
            line += &format!(" -> {}", std::fs::read_link(&path).unwrap().display());
        } else if m.is_file() || m.is_dir() {
            line += &format!(" mtime={}.{:09}", m.mtime(), m.mtime_nsec());
            if m.is_file() {
                line += &format!(" size={} nlink={}", m.len(), m.nlink());
            }
        } else {
            line += &format!(" rdev={}", m.rdev());
        }
        out.push(line);
    }
    out.sort();
    out
}

/// Fails unless both directories hold the same entries (type, mode, owner, mtime, size,
/// link targets) and the same file bytes.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    assert_eq!(
        describe(expected),
        describe(actual),
        "restored tree differs in entries"
    );
    for entry in walk(expected) {
        let rel = entry.strip_prefix(expected).unwrap();
        let other = actual.join(rel);
        if entry.symlink_metadata().unwrap().is_file() {
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
        if path.symlink_metadata().unwrap().is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// A copy of `root` with its metadata (`cp -a`: modes, owners, mtimes), to compare the
/// restore of an older snapshot with once `root` has changed.
pub fn copy_tree(root: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(root.join("."))
        .arg(copy.path())
        .status()
        .expect("run cp -a");
    assert!(status.success(), "cp -a {} failed", root.display());
    copy
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
    let target = tempfile::tempdir().unwrap();
    let restored = target.path().join("restored");
    session
        .restore_pxar_dir("root.pxar", &restored)
        .await
        .expect("restore root.pxar");
    assert_same_tree(expected, &restored);
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

// ---------------------------------------------------------------------------------------------
// Bad-input and disconnect tests: a known good snapshot, leftovers checks, raw requests.

/// Backup id of the known good snapshot every bad-input test makes first.
pub const GOOD_ID: &str = "good";

/// A finished snapshot `host/good/T0` (tree + image + conf) and its source data.
pub struct GoodSnapshot {
    pub tree: tempfile::TempDir,
    pub image: Vec<u8>,
    pub conf: Vec<u8>,
}

/// Backs up the good snapshot (`host/good` at [`T0`]).
pub async fn make_good_snapshot(client: &PbsClient, store: &str) -> GoodSnapshot {
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path(), 77);
    // one full 4 MiB chunk plus a short tail chunk
    let image = random_bytes(78, 4 * 1024 * 1024 + 333);
    let conf = b"good = true\n".to_vec();
    backup(
        client,
        store,
        None,
        GOOD_ID,
        T0,
        Crypt::None,
        &Content {
            tree: Some(tree.path()),
            image: Some(&image),
            conf: Some(&conf),
        },
    )
    .await
    .expect("good snapshot backup");
    GoodSnapshot { tree, image, conf }
}

/// The good snapshot is still listed as the only one of its group and restores byte-identical.
pub async fn assert_good_snapshot_intact(client: &PbsClient, store: &str, good: &GoodSnapshot) {
    let snaps = snapshots(client, store, None, GOOD_ID).await;
    assert_eq!(snaps.len(), 1, "good group: {snaps:?}");
    assert_eq!(snaps[0]["backup-time"], T0);
    let session = reader(client, store, None, GOOD_ID, T0, None)
        .await
        .expect("reader on good snapshot");
    assert_eq!(
        session.restore_archive("disk.img").await.expect("image"),
        good.image
    );
    assert_eq!(
        session.restore_archive("app.conf").await.expect("conf"),
        good.conf
    );
    assert_tree_restores(&session, good.tree.path()).await;
}

/// `<data>/datastores/<store>/host/<id>`.
pub fn group_dir(server: &TestServer, id: &str) -> std::path::PathBuf {
    server
        .data_dir()
        .join("datastores")
        .join(server.store())
        .join("host")
        .join(id)
}

/// Sub-directories (snapshot directories) of `host/<id>` on disk.
pub fn snapshot_dirs_on_disk(server: &TestServer, id: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(group_dir(server, id)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits up to `within` until group `host/<id>` lists no snapshot and has no snapshot
/// directory on disk; fails with what is left otherwise.
pub async fn assert_no_snapshot_left(
    server: &TestServer,
    client: &PbsClient,
    id: &str,
    within: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let listed = snapshots(client, server.store(), None, id).await;
        let dirs = snapshot_dirs_on_disk(server, id);
        if listed.is_empty() && dirs.is_empty() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!("group host/{id} still has snapshots after {within:?}: listed {listed:?}, on disk {dirs:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every path below `root` (relative, `/`-separated), files and directories.
pub fn tree_paths(root: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for path in walk(root) {
        if let Ok(rel) = path.strip_prefix(root) {
            out.insert(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    out
}

/// A backup session of `host/<id>` at `time` with only the upgrade done.
pub async fn raw_session(client: &PbsClient, store: &str, id: &str, time: i64) -> BackupSession {
    BackupSession::start_raw(client, BackupParams::new(store, "host", id, time))
        .await
        .expect("backup upgrade")
}

/// Like [`raw_session`], but while the group lock of an aborted session on the same group is
/// still held (its cleanup releases the lock right after deleting the snapshot directory)
/// retries for up to `within`.
pub async fn raw_session_when_free(
    client: &PbsClient,
    store: &str,
    id: &str,
    time: i64,
    within: std::time::Duration,
) -> BackupSession {
    let deadline = std::time::Instant::now() + within;
    loop {
        match BackupSession::start_raw(client, BackupParams::new(store, "host", id, time)).await {
            Ok(s) => return s,
            Err(e)
                if std::time::Instant::now() < deadline
                    && e.body().is_some_and(|b| b.contains("lock")) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("backup upgrade of host/{id} failed: {e}"),
        }
    }
}

/// One in-session request; returns status and body text.
pub async fn req(
    s: &BackupSession,
    method: http::Method,
    path_and_query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let (status, body) = s
        .raw_request(method, path_and_query, content_type, body)
        .await
        .unwrap_or_else(|e| panic!("{path_and_query}: transport error {e}"));
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Asserts a 400 whose message contains `needle` (case-insensitive).
#[track_caller]
pub fn assert_400(what: &str, got: (u16, String), needle: &str) {
    assert_eq!(got.0, 400, "{what}: expected 400 '{needle}', got {got:?}");
    assert!(
        got.1.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: message lacks '{needle}': {:?}",
        got.1
    );
}

/// `a=b&c=d` from pairs (form-urlencoded).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// An HTTP/2 connection after a hand-made backup/reader upgrade, exposing the raw `h2`
/// sender so a test can send headers and keep a request body open.
pub async fn raw_h2_upgrade(
    server: &TestServer,
    client: &PbsClient,
    path: &str,
    query: &str,
    protocol: &str,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<()>,
) {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let cfg = pbs_cloud_e2e::tls::client_config(&server.fingerprint).unwrap();
    let tcp = tokio::net::TcpStream::connect((server.host(), server.port()))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(pbs_cloud_e2e::tls::server_name(server.host()).unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut b = http::Request::builder()
        .method(http::Method::GET)
        .uri(format!("{path}?{query}"))
        .header("host", format!("{}:{}", server.host(), server.port()))
        .header("upgrade", protocol)
        .header("connection", "upgrade");
    for (k, v) in client.auth_headers() {
        b = b.header(k, v);
    }
    let resp = sender
        .send_request(b.body(Full::new(bytes::Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let (send, conn) = h2::client::handshake(TokioIo::new(upgraded)).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

/// Common epilogue of the bad-input tests: the `bad` session is gone and the good snapshot is untouched.
pub async fn assert_nothing_lost(server: &TestServer, client: &PbsClient, good: &GoodSnapshot) {
    assert_no_snapshot_left(server, client, "bad", std::time::Duration::from_secs(3)).await;
    assert_good_snapshot_intact(client, server.store(), good).await;
}

/// The whole log of a task.
pub async fn task_log(client: &PbsClient, upid: &str) -> Vec<String> {
    let encoded =
        percent_encoding::utf8_percent_encode(upid, percent_encoding::NON_ALPHANUMERIC).to_string();
    let log = client
        .get(
            &format!("nodes/localhost/tasks/{encoded}/log"),
            Some(&serde_json::json!({"start": 1, "limit": 500})),
        )
        .await
        .unwrap();
    log.as_array()
        .unwrap()
        .iter()
        .map(|l| l["t"].as_str().unwrap().to_string())
        .collect()
}

/// Follows a task like the stock client: status until stopped (30 s at most), then the log.
pub async fn wait_task(client: &PbsClient, upid: &str) -> (serde_json::Value, Vec<String>) {
    wait_task_polls(client, upid, 300).await
}

/// [`wait_task`] for long tasks (2 minutes at most).
pub async fn wait_task_long(client: &PbsClient, upid: &str) -> (serde_json::Value, Vec<String>) {
    wait_task_polls(client, upid, 1200).await
}

async fn wait_task_polls(
    client: &PbsClient,
    upid: &str,
    polls: usize,
) -> (serde_json::Value, Vec<String>) {
    let encoded =
        percent_encoding::utf8_percent_encode(upid, percent_encoding::NON_ALPHANUMERIC).to_string();
    for _ in 0..polls {
        let status = client
            .get(&format!("nodes/localhost/tasks/{encoded}/status"), None)
            .await
            .unwrap();
        if status["status"] == "stopped" {
            return (status, task_log(client, upid).await);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("task {upid} did not finish");
}

/// The tenant's usage once no datastore awaits a recount (after an unclean stop the server
/// answers with the last persisted counters and recounts in the background).
pub async fn counted_usage(client: &PbsClient, tenant: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let u = client
            .get(&format!("tenants/{tenant}/usage"), None)
            .await
            .expect("usage");
        let pending = u["datastores"]
            .as_array()
            .is_some_and(|d| d.iter().any(|s| s["recount-pending"] == true));
        if !pending {
            return u;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage recount of tenant '{tenant}' did not finish within 120 s: {u:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
