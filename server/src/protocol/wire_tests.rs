//! In-process wire tests: a plain-TCP HTTP/1.1 server with upgrades that calls the session
//! entry points, and a hyper client doing the upgrade and speaking HTTP/2 on the upgraded
//! stream like the stock client (docs/protocol.md#session-upgrade, #client-call-sequences A,
//! #reader-session). TLS and authentication are the api layer's job and are left out here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use crate::auth::{AuthSeed, AuthService, Identity};
use crate::backend::LocalBackend;
use crate::datastore::Datastore;
use crate::format::blob::encode_blob;
use crate::format::manifest::{CryptMode, FileInfo, Manifest};
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::format::{digest_to_hex, sha256};
use crate::state::{AppState, DatastoreEntry, NodeIdentity};
use crate::tasks::TaskRegistry;

use super::{backup, reader, BACKUP_PROTOCOL_ID, READER_PROTOCOL_ID};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Datastore>,
    addr: std::net::SocketAddr,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let backend = Arc::new(LocalBackend::open(&data).unwrap());
    let store = Datastore::open("store1", backend).await.unwrap();
    let auth = AuthService::open(&dir.path().join("auth"), AuthSeed::default()).unwrap();
    let state = Arc::new(AppState::new(
        auth,
        TaskRegistry::new("test"),
        NodeIdentity {
            name: "test".into(),
            instance_id: "x".into(),
        },
    ));
    state.insert_datastore(DatastoreEntry {
        name: "store1".into(),
        tenant: "t1".into(),
        comment: None,
        store: store.clone(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let identity = Identity {
                                authid: "root@pam".parse().unwrap(),
                                tenant: "t1".into(),
                                superuser: true,
                            };
                            let result = match req.uri().path() {
                                "/api2/json/backup" => backup::upgrade(state, identity, req).await,
                                _ => reader::upgrade(state, identity, req).await,
                            };
                            Ok::<_, std::convert::Infallible>(
                                result.unwrap_or_else(|e| e.into_response()),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Fixture {
        _dir: dir,
        store,
        addr,
    }
}

/// Upgrade request; returns the H2 sender, or the error status and body.
async fn connect(
    addr: std::net::SocketAddr,
    path: &str,
    protocol: &str,
    query: &str,
) -> Result<SendRequest<Full<Bytes>>, (StatusCode, String)> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::builder()
        .uri(format!("{path}?{query}"))
        .header("Host", "localhost")
        .header("UPGRADE", protocol)
        .header("Connection", "upgrade")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        return Err((status, String::from_utf8_lossy(&body).into_owned()));
    }
    assert_eq!(resp.headers()["upgrade"], protocol);
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let (h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), upgraded)
        .await
        .unwrap();
    tokio::spawn(conn);
    Ok(h2)
}

async fn call(
    h2: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    content_type: &str,
    body: Bytes,
) -> (StatusCode, Bytes) {
    h2.ready().await.unwrap();
    let req = Request::builder()
        .method(method)
        .uri(format!("https://localhost:8007{path}"))
        .header("content-type", content_type)
        .body(Full::new(body))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

async fn json_call(
    h2: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, (StatusCode, String)> {
    let (ct, bytes) = match body {
        Some(v) => ("application/json", Bytes::from(v.to_string())),
        None => ("application/x-www-form-urlencoded", Bytes::new()),
    };
    let (status, bytes) = call(h2, method, path, ct, bytes).await;
    if !status.is_success() {
        return Err((status, String::from_utf8_lossy(&bytes).into_owned()));
    }
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    Ok(v["data"].clone())
}

fn query(time: i64) -> String {
    format!(
        "store=store1&backup-type=host&backup-id=h1&backup-time={time}&debug=true&benchmark=false"
    )
}

fn didx_csum(entries: &[(u64, [u8; 32])]) -> [u8; 32] {
    let mut buf = Vec::new();
    for (end, d) in entries {
        buf.extend_from_slice(&end.to_le_bytes());
        buf.extend_from_slice(d);
    }
    sha256(&buf)
}

fn snapshot(time: i64) -> BackupDir {
    BackupDir::new(BackupGroup::new(BackupType::Host, "h1").unwrap(), time).unwrap()
}

/// One dynamic archive `root.pxar.didx` holding `data` as a single chunk (uploaded unless
/// `reuse`), a manifest, finish.
async fn run_backup(addr: std::net::SocketAddr, time: i64, data: &[u8], reuse: bool) {
    let mut h2 = connect(addr, "/api2/json/backup", BACKUP_PROTOCOL_ID, &query(time))
        .await
        .unwrap();
    let previous = json_call(&mut h2, Method::GET, "/previous_backup_time", None)
        .await
        .unwrap();
    let digest = sha256(data);
    let hex = digest_to_hex(&digest);
    if reuse {
        assert!(previous.as_i64().is_some());
        let (status, _) = call(
            &mut h2,
            Method::GET,
            "/previous?archive-name=root.pxar.didx",
            "application/x-www-form-urlencoded",
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    } else {
        assert_eq!(previous, Value::Null);
    }
    let wid = json_call(
        &mut h2,
        Method::POST,
        "/dynamic_index?archive-name=root.pxar.didx",
        None,
    )
    .await
    .unwrap();
    assert_eq!(wid, json!(1));
    if !reuse {
        let blob = encode_blob(data, true);
        let path = format!(
            "/dynamic_chunk?wid=1&digest={hex}&size={}&encoded-size={}",
            data.len(),
            blob.len()
        );
        let (status, body) = call(
            &mut h2,
            Method::POST,
            &path,
            "application/octet-stream",
            Bytes::from(blob),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"], json!(hex));
    }
    let append = json!({"wid": 1, "digest-list": [hex], "offset-list": [0]});
    json_call(&mut h2, Method::PUT, "/dynamic_index", Some(append))
        .await
        .unwrap();
    let size = data.len() as u64;
    let csum = digest_to_hex(&didx_csum(&[(size, digest)]));
    let close = format!("/dynamic_close?wid=1&chunk-count=1&size={size}&csum={csum}");
    json_call(&mut h2, Method::POST, &close, None)
        .await
        .unwrap();

    let mut manifest = Manifest::new("host", "h1", time);
    manifest.files.push(FileInfo {
        filename: "root.pxar.didx".into(),
        crypt_mode: CryptMode::None,
        size,
        csum,
    });
    let blob = manifest.to_blob();
    let path = format!(
        "/blob?file-name=index.json.blob&encoded-size={}",
        blob.len()
    );
    let (status, _) = call(
        &mut h2,
        Method::POST,
        &path,
        "application/octet-stream",
        Bytes::from(blob),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let done = json_call(&mut h2, Method::POST, "/finish", None)
        .await
        .unwrap();
    assert_eq!(done, Value::Null);
}

#[tokio::test]
async fn backup_then_restore_over_the_wire() {
    let fx = fixture().await;
    let data = b"hello pbs cloud".repeat(100);
    run_backup(fx.addr, 1_700_000_000, &data, false).await;
    let root = BackupNamespace::root();
    assert!(fx
        .store
        .tree()
        .snapshot_finished(&root, &snapshot(1_700_000_000))
        .await
        .unwrap());
    let (manifest, _) = fx
        .store
        .tree()
        .load_manifest(&root, &snapshot(1_700_000_000))
        .await
        .unwrap();
    assert_eq!(
        manifest.unprotected["chunk_upload_stats"]["count"],
        json!(1)
    );

    // Incremental: the chunk becomes known through `previous`, no upload needed.
    run_backup(fx.addr, 1_700_000_100, &data, true).await;
    // Not newer than the previous snapshot.
    let err = connect(
        fx.addr,
        "/api2/json/backup",
        BACKUP_PROTOCOL_ID,
        &query(1_700_000_050),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        err,
        (
            StatusCode::BAD_REQUEST,
            "backup timestamp is older than last backup.".into()
        )
    );

    // Reader session.
    let mut h2 = connect(
        fx.addr,
        "/api2/json/reader",
        READER_PROTOCOL_ID,
        &query(1_700_000_100),
    )
    .await
    .unwrap();
    let hex = digest_to_hex(&sha256(&data));
    let form = "application/x-www-form-urlencoded";
    let (status, body) = call(
        &mut h2,
        Method::GET,
        &format!("/chunk?digest={hex}"),
        form,
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        &body[..],
        format!("download chunk {hex} not allowed").as_bytes()
    );
    let (status, _) = call(
        &mut h2,
        Method::GET,
        "/download?file-name=index.json.blob",
        form,
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &mut h2,
        Method::GET,
        "/download?file-name=root.pxar.didx",
        form,
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, chunk) = call(
        &mut h2,
        Method::GET,
        &format!("/chunk?digest={hex}"),
        form,
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let view = crate::format::blob::BlobView::parse(&chunk).unwrap();
    view.verify_crc().unwrap();
    assert_eq!(view.decode(1 << 20).unwrap(), data);
    let (status, _) = call(
        &mut h2,
        Method::GET,
        "/download?file-name=owner",
        form,
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &mut h2,
        Method::GET,
        "/download?file-name=missing.blob",
        form,
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(&mut h2, Method::GET, "/speedtest", form, Bytes::new()).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 1024 * 1024));
}

#[tokio::test]
async fn dropped_connection_removes_snapshot_and_bad_uploads_fail() {
    let fx = fixture().await;
    let time = 1_700_000_000;
    {
        let mut h2 = connect(
            fx.addr,
            "/api2/json/backup",
            BACKUP_PROTOCOL_ID,
            &query(time),
        )
        .await
        .unwrap();
        // A second writer for the same group is refused while this one runs.
        let busy = connect(
            fx.addr,
            "/api2/json/backup",
            BACKUP_PROTOCOL_ID,
            &query(time + 1),
        )
        .await
        .err()
        .unwrap();
        assert_eq!(busy.0, StatusCode::BAD_REQUEST);

        let blob = encode_blob(b"conf", false);
        let path = format!("/blob?file-name=x.conf.blob&encoded-size={}", blob.len());
        let (status, _) = call(
            &mut h2,
            Method::POST,
            &path,
            "application/octet-stream",
            Bytes::from(blob.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        // Body longer than announced.
        let path = format!(
            "/blob?file-name=y.conf.blob&encoded-size={}",
            blob.len() - 1
        );
        let (status, body) = call(
            &mut h2,
            Method::POST,
            &path,
            "application/octet-stream",
            Bytes::from(blob),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).starts_with("got blob with unexpected length"));
        // Chunk with a wrong digest.
        let wid = json_call(
            &mut h2,
            Method::POST,
            "/dynamic_index?archive-name=a.didx",
            None,
        )
        .await
        .unwrap();
        assert_eq!(wid, json!(1));
        let chunk = encode_blob(b"abc", false);
        let path = format!(
            "/dynamic_chunk?wid=1&digest={}&size=3&encoded-size={}",
            digest_to_hex(&sha256(b"abd")),
            chunk.len()
        );
        let (status, body) = call(
            &mut h2,
            Method::POST,
            &path,
            "application/octet-stream",
            Bytes::from(chunk.clone()),
        )
        .await;
        assert_eq!(
            (status, &body[..]),
            (
                StatusCode::BAD_REQUEST,
                &b"detected chunk with wrong digest."[..]
            )
        );
        let path = format!(
            "/dynamic_chunk?wid=1&digest={}&size=3&encoded-size={}",
            digest_to_hex(&sha256(b"abc")),
            chunk.len() + 1
        );
        let (status, body) = call(
            &mut h2,
            Method::POST,
            &path,
            "application/octet-stream",
            Bytes::from(chunk),
        )
        .await;
        assert_eq!(
            (status, &body[..]),
            (
                StatusCode::BAD_REQUEST,
                &b"uploaded chunk has unexpected size."[..]
            )
        );
        let err = json_call(&mut h2, Method::POST, "/finish", None)
            .await
            .unwrap_err();
        assert_eq!(err.1, "found open index writer - unable to finish backup");
        let (status, _) = call(
            &mut h2,
            Method::GET,
            "/nope",
            "application/x-www-form-urlencoded",
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // h2 dropped here: the connection ends without finish.
    }
    // The group lock is released once the aborted session is cleaned up.
    let mut reconnected = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(h2) = connect(
            fx.addr,
            "/api2/json/backup",
            BACKUP_PROTOCOL_ID,
            &query(time),
        )
        .await
        {
            reconnected = Some(h2);
            break;
        }
    }
    assert!(reconnected.is_some(), "aborted session was not cleaned up");
    let root = BackupNamespace::root();
    assert!(!fx
        .store
        .tree()
        .snapshot_finished(&root, &snapshot(time))
        .await
        .unwrap());

    // Wrong upgrade protocol and a missing store.
    let err = connect(
        fx.addr,
        "/api2/json/backup",
        READER_PROTOCOL_ID,
        &query(time + 5),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        err,
        (StatusCode::BAD_REQUEST, "invalid protocol name".into())
    );
    let q = "store=nope&backup-type=host&backup-id=h1&backup-time=5";
    let err = connect(fx.addr, "/api2/json/backup", BACKUP_PROTOCOL_ID, q)
        .await
        .err()
        .unwrap();
    assert_eq!(err.0, StatusCode::NOT_FOUND);
}

#[path = "wire_tests_fixed.rs"]
mod fixed;
