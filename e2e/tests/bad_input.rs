//! Bad input gets a clear error and loses nothing: every test first makes a good snapshot,
//! then sends malformed requests (status and message asserted), and finally proves that the
//! good snapshot still restores byte-identical and that the bad session left no snapshot,
//! neither in the listing nor on disk.

mod common;

use std::time::Duration;

use common::*;
use http::Method;
use pbs_cloud_e2e::{wire, BackupParams, BackupSession};
use serde_json::json;

const BAD_ID: &str = "bad";
const OCTET: &str = "application/octet-stream";
const FORM: &str = "application/x-www-form-urlencoded";
const JSON_CT: &str = "application/json";
const MIB: usize = 1024 * 1024;
/// 16 MiB + the encrypted blob header: the largest `encoded-size`.
const MAX_ENCODED: usize = 16 * MIB + 44;
const CLEANUP: Duration = Duration::from_secs(3);

fn chunk_q(kind: &str, wid: u64, digest: &str, size: usize, encoded: usize) -> String {
    format!("{kind}_chunk?wid={wid}&digest={digest}&size={size}&encoded-size={encoded}")
}

/// Uploads `data` as a correct chunk (uncompressed blob) for writer `wid`.
async fn good_chunk(s: &BackupSession, kind: &str, wid: u64, data: &[u8]) -> (u16, String) {
    let blob = wire::encode_plain_blob(data, false);
    let d = wire::hex(&wire::sha256(data));
    let q = chunk_q(kind, wid, &d, data.len(), blob.len());
    req(s, Method::POST, &q, OCTET, blob).await
}

/// `POST {dynamic,fixed}_index` → wid.
async fn open_writer(s: &BackupSession, kind: &str, q: &str) -> u64 {
    let (status, body) = req(s, Method::POST, &format!("{kind}_index?{q}"), FORM, vec![]).await;
    assert_eq!(status, 200, "open {kind} writer: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_with_bad_content_are_refused() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;
    let s = raw_session(&client, &store, BAD_ID, T0).await;
    let wid = open_writer(&s, "dynamic", "archive-name=data.didx").await;

    let data = random_bytes(100, 10_000);
    let digest = wire::hex(&wire::sha256(&data));
    let blob = wire::encode_plain_blob(&data, false);
    let other = wire::hex(&wire::sha256(b"something else"));
    let post = |q: String, body: Vec<u8>| {
        let s = &s;
        async move { req(s, Method::POST, &q, OCTET, body).await }
    };

    let q = chunk_q("dynamic", wid, &other, data.len(), blob.len());
    assert_400("wrong digest", post(q, blob.clone()).await, "wrong digest");
    let q = chunk_q("dynamic", wid, &digest, data.len() + 1, blob.len());
    assert_400("wrong size", post(q, blob.clone()).await, "wrong length");
    let q = chunk_q("dynamic", wid, &digest, data.len() - 1, blob.len());
    assert_400("smaller size", post(q, blob.clone()).await, "wrong length");
    let q = chunk_q("dynamic", wid, &digest, data.len(), blob.len() - 10);
    assert_400(
        "body longer than encoded-size",
        post(q, blob.clone()).await,
        "larger than announced",
    );
    let q = chunk_q("dynamic", wid, &digest, data.len(), blob.len() + 10);
    assert_400(
        "body shorter than encoded-size",
        post(q, blob.clone()).await,
        "unexpected size",
    );
    let q = chunk_q("dynamic", wid, &digest, data.len(), MAX_ENCODED + 1);
    assert_400(
        "encoded-size too big",
        post(q, blob.clone()).await,
        "encoded-size",
    );
    let q = chunk_q("dynamic", wid, &digest, 0, blob.len());
    assert_400("size 0", post(q, blob.clone()).await, "'size'");
    let q = chunk_q("dynamic", wid, &digest, 16 * MIB + 1, blob.len());
    assert_400("size above 16 MiB", post(q, blob.clone()).await, "'size'");

    let mut bad_magic = blob.clone();
    bad_magic[..8].copy_from_slice(b"NOTABLOB");
    let q = chunk_q("dynamic", wid, &digest, data.len(), bad_magic.len());
    assert_400("bad magic", post(q, bad_magic).await, "magic");
    // server/docs/formats.md#legacy-signed-blobs: removed "authenticated" blobs (magic, crc,
    // 32-byte hmac, data)
    let mut signed = vec![31, 135, 238, 226, 145, 206, 5, 2];
    let crc = crc32fast::hash(&data);
    signed.extend_from_slice(&crc.to_le_bytes());
    signed.extend_from_slice(&[0u8; 32]);
    signed.extend_from_slice(&data);
    let q = chunk_q("dynamic", wid, &digest, data.len(), signed.len());
    assert_400("legacy signed blob", post(q, signed).await, "magic");

    // writer ids outside 1..=256 or never opened
    for (w, needle) in [(0, "minimum"), (257, "maximum"), (7, "not registered")] {
        let q = chunk_q("dynamic", w, &digest, data.len(), blob.len());
        assert_400(&format!("wid {w}"), post(q, blob.clone()).await, needle);
    }
    // the session still works: the correct chunk is accepted
    assert_eq!(good_chunk(&s, "dynamic", wid, &data).await.0, 200);

    // fixed writers: 4 MiB chunk size, at most one short chunk
    let fwid = open_writer(
        &s,
        "fixed",
        &format!("archive-name=disk.img.fidx&size={}", 12 * MIB),
    )
    .await;
    let big = random_bytes(101, 4 * MIB + 1);
    assert_400(
        "fixed chunk above 4 MiB",
        good_chunk(&s, "fixed", fwid, &big).await,
        "large chunk",
    );
    assert_eq!(
        good_chunk(&s, "fixed", fwid, &random_bytes(102, 1000))
            .await
            .0,
        200
    );
    assert_400(
        "second short fixed chunk",
        good_chunk(&s, "fixed", fwid, &random_bytes(103, 1001)).await,
        "multiple end chunks",
    );
    // a dynamic chunk on a fixed writer is refused too
    assert_400(
        "dynamic chunk for fixed wid",
        good_chunk(&s, "dynamic", fwid, &random_bytes(104, 50)).await,
        "not registered",
    );
    drop(s);
    assert_nothing_lost(&server, &client, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_chunk_is_refused_before_its_body_arrives() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;
    let q = BackupParams::new(&store, "host", BAD_ID, T0).upgrade_query();
    let (send, task) = raw_h2_upgrade(
        &server,
        &client,
        "/api2/json/backup",
        &q,
        pbs_cloud_e2e::backup::BACKUP_PROTOCOL,
    )
    .await;
    let mut send = send.ready().await.unwrap();
    let create = http::Request::builder()
        .method(Method::POST)
        .uri("https://localhost:8007/dynamic_index?archive-name=x.didx")
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(create, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);

    let digest = wire::hex(&wire::sha256(b"x"));
    let path = chunk_q("dynamic", 1, &digest, 16 * MIB, MAX_ENCODED + 1);
    let upload = http::Request::builder()
        .method(Method::POST)
        .uri(format!("https://localhost:8007/{path}"))
        .header("content-type", OCTET)
        .body(())
        .unwrap();
    let mut send = send.ready().await.unwrap();
    let (resp, mut body) = send.send_request(upload, false).unwrap();
    // 1 MiB of a body that never ends: a server that buffered before checking would hang.
    // A server that answers at once may already have reset the stream: then sending fails,
    // which is just as good; the answer below is what this test checks.
    let _ = body.send_data(bytes::Bytes::from(vec![0u8; MIB]), false);
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("no answer while the body is still open: the server waits for the body")
        .unwrap();
    assert_eq!(resp.status(), 400);
    let mut recv = resp.into_body();
    let mut text = Vec::new();
    while let Some(Ok(d)) = recv.data().await {
        text.extend_from_slice(&d);
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("encoded-size"), "{text}");
    drop(body);
    drop(send);
    task.abort();
    assert_nothing_lost(&server, &client, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_with_bad_content_or_names_are_refused() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;
    let s = raw_session(&client, &store, BAD_ID, T0).await;
    let blob = wire::encode_plain_blob(b"some config\n", false);
    let post = |name: &str, body: Vec<u8>| {
        let q = format!(
            "blob?{}",
            query(&[
                ("file-name", name),
                ("encoded-size", &body.len().to_string())
            ])
        );
        let s = &s;
        async move { req(s, Method::POST, &q, OCTET, body).await }
    };
    let mut bad_crc = blob.clone();
    bad_crc[8] ^= 0x55;
    assert_400("blob bad crc", post("a.conf.blob", bad_crc).await, "crc");
    assert_400(
        "blob without .blob",
        post("a.conf", blob.clone()).await,
        "wrong blob file extension",
    );
    assert_400(
        "blob escaping the snapshot",
        post("../evil.blob", blob.clone()).await,
        "file-name",
    );
    assert_400(
        "blob in a sub dir",
        post("x/evil.blob", blob.clone()).await,
        "file-name",
    );
    let q = format!("blob?file-name=a.conf.blob&encoded-size={}", blob.len() + 1);
    assert_400(
        "blob shorter than announced",
        req(&s, Method::POST, &q, OCTET, blob.clone()).await,
        "unexpected length",
    );
    let q = format!(
        "blob?file-name=a.conf.blob&encoded-size={}",
        MAX_ENCODED + 1
    );
    assert_400(
        "blob above 16 MiB + 44",
        req(&s, Method::POST, &q, OCTET, blob.clone()).await,
        "encoded-size",
    );
    let group = group_dir(&server, BAD_ID);
    assert!(!server
        .data_dir()
        .join("datastores/store1/host/evil.blob")
        .exists());
    assert!(
        std::fs::read_dir(&group).map(|d| d.count()).unwrap_or(0) <= 2,
        "unexpected files in {}",
        group.display()
    );
    drop(s);
    assert_nothing_lost(&server, &client, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_appends_and_closes_with_wrong_data_are_refused() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;
    let s = raw_session(&client, &store, BAD_ID, T0).await;
    let wid = open_writer(&s, "dynamic", "archive-name=data.didx").await;
    let data = random_bytes(200, 5000);
    let d = wire::sha256(&data);
    let dh = wire::hex(&d);
    assert_eq!(good_chunk(&s, "dynamic", wid, &data).await.0, 200);
    let put = |body: Vec<u8>| {
        let s = &s;
        async move { req(s, Method::PUT, "dynamic_index", JSON_CT, body).await }
    };
    let js = |v: serde_json::Value| v.to_string().into_bytes();

    let unknown = wire::hex(&wire::sha256(b"never uploaded"));
    assert_400(
        "unknown digest",
        put(js(
            json!({"wid": wid, "digest-list": [unknown], "offset-list": [0]}),
        ))
        .await,
        "no such chunk",
    );
    assert_400(
        "wrong offset",
        put(js(
            json!({"wid": wid, "digest-list": [dh], "offset-list": [5]}),
        ))
        .await,
        "strange chunk offset",
    );
    assert_400(
        "offset list too short",
        put(js(
            json!({"wid": wid, "digest-list": [dh, dh], "offset-list": [0]}),
        ))
        .await,
        "offset list has wrong length",
    );
    assert_400(
        "malformed JSON",
        put(br#"{"wid": 1, "digest-list": ["#.to_vec()).await,
        "json",
    );
    assert_400(
        "wid 0 in append",
        put(js(
            json!({"wid": 0, "digest-list": [dh], "offset-list": [0]}),
        ))
        .await,
        "wid",
    );
    assert_eq!(
        put(js(
            json!({"wid": wid, "digest-list": [dh], "offset-list": [0]})
        ))
        .await
        .0,
        200
    );

    let csum = wire::hex(&wire::dynamic_csum(&[(data.len() as u64, d)]));
    let close = |count: usize, size: usize, csum: &str| {
        let q = format!("dynamic_close?wid={wid}&chunk-count={count}&size={size}&csum={csum}");
        let s = &s;
        async move { req(s, Method::POST, &q, FORM, vec![]).await }
    };
    assert_400(
        "close wrong csum",
        close(1, data.len(), &unknown).await,
        "unexpected checksum",
    );
    assert_400(
        "close wrong chunk count",
        close(2, data.len(), &csum).await,
        "chunk count",
    );
    assert_400(
        "close wrong size",
        close(1, data.len() + 1, &csum).await,
        "file size",
    );
    assert_400(
        "finish with open writer",
        req(&s, Method::POST, "finish", FORM, vec![]).await,
        "found open index writer",
    );

    // archive names that try to leave the snapshot directory
    for name in ["../../x.didx", "x/../y.didx", "/abs.didx", ".hidden.didx"] {
        let q = format!("dynamic_index?{}", query(&[("archive-name", name)]));
        assert_400(
            &format!("archive-name {name}"),
            req(&s, Method::POST, &q, FORM, vec![]).await,
            "archive-name",
        );
    }
    assert_400(
        "dynamic archive with fixed extension",
        req(
            &s,
            Method::POST,
            "dynamic_index?archive-name=x.fidx",
            FORM,
            vec![],
        )
        .await,
        "wrong archive extension",
    );
    assert!(!server.data_dir().join("datastores/store1/x.didx").exists());
    assert!(!server.data_dir().join("datastores/x.didx").exists());

    // the writer is still usable after all refusals
    assert_eq!(close(1, data.len(), &csum).await.0, 200);
    assert_400(
        "append to a closed writer",
        put(js(
            json!({"wid": wid, "digest-list": [dh], "offset-list": [data.len()]}),
        ))
        .await,
        "closed",
    );
    drop(s);
    assert_nothing_lost(&server, &client, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_without_files_or_with_a_corrupt_manifest_fails() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;

    let s = raw_session(&client, &store, BAD_ID, T0).await;
    assert_400(
        "finish without any file",
        req(&s, Method::POST, "finish", FORM, vec![]).await,
        "file count == 0",
    );
    drop(s);
    assert_no_snapshot_left(&server, &client, BAD_ID, CLEANUP).await;

    let mut s = raw_session_when_free(&client, &store, BAD_ID, T0 + 1, CLEANUP).await;
    s.upload_blob("app.conf", b"x = 1\n").await.unwrap();
    let corrupt = wire::encode_plain_blob(b"{\"backup-type\": \"host\", not json", true);
    let q = format!(
        "blob?file-name=index.json.blob&encoded-size={}",
        corrupt.len()
    );
    assert_eq!(req(&s, Method::POST, &q, OCTET, corrupt).await.0, 200);
    assert_400(
        "finish with corrupt manifest",
        req(&s, Method::POST, "finish", FORM, vec![]).await,
        "unable to update manifest blob",
    );
    // a manifest that is JSON but not a manifest object
    let not_manifest = wire::encode_plain_blob(b"[1, 2, 3]", false);
    let q = format!(
        "blob?file-name=index.json.blob&encoded-size={}",
        not_manifest.len()
    );
    assert_eq!(req(&s, Method::POST, &q, OCTET, not_manifest).await.0, 200);
    assert_400(
        "finish with non-manifest JSON",
        req(&s, Method::POST, "finish", FORM, vec![]).await,
        "unable to update manifest blob",
    );
    drop(s);
    assert_nothing_lost(&server, &client, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_path_tricks_create_nothing() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;
    let before = tree_paths(server.data_dir());

    let long = "a".repeat(300);
    for id in [
        "../../etc",
        "a/b",
        ".hidden",
        "",
        long.as_str(),
        "..",
        "x\0y",
    ] {
        let err = BackupSession::start_raw(&client, BackupParams::new(&store, "host", id, T0))
            .await
            .err()
            .unwrap_or_else(|| panic!("backup-id {id:?} was accepted"));
        assert_eq!(err.status(), Some(400), "backup-id {id:?}: {err}");
        assert!(err.body().unwrap_or("").contains("backup-id"), "{err}");
    }
    for ns in ["../x", "a//b", "/abs", "a/../b"] {
        let mut p = BackupParams::new(&store, "host", BAD_ID, T0);
        p.ns = Some(ns.to_string());
        let err = BackupSession::start_raw(&client, p)
            .await
            .err()
            .unwrap_or_else(|| panic!("ns {ns:?} was accepted"));
        assert_eq!(err.status(), Some(400), "ns {ns:?}: {err}");
        assert!(err.body().unwrap_or("").contains("'ns'"), "{err}");
    }
    let mut p = BackupParams::new(&store, "../host", BAD_ID, T0);
    p.backup_type = "../host".into();
    let err = BackupSession::start_raw(&client, p).await.err().unwrap();
    assert_eq!(err.status(), Some(400), "{err}");

    let after = tree_paths(server.data_dir());
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.is_empty(), "bad upgrades created {new:?}");
    for p in ["datastores/etc", "datastores/store1/host/a", "etc"] {
        assert!(!server.data_dir().join(p).exists(), "{p} exists");
    }
    assert_nothing_lost(&server, &client, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_reader_path_tricks_are_refused() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;
    let before = tree_paths(server.data_dir());

    let get = |path: String| {
        let client = &client;
        async move {
            let r = client
                .raw(Method::GET, &path, Some(FORM), vec![], &[], true)
                .await
                .unwrap();
            (r.status, r.text())
        }
    };
    assert_400(
        "snapshots backup-id=..",
        get(format!(
            "/api2/json/admin/datastore/{store}/snapshots?backup-type=host&backup-id=.."
        ))
        .await,
        "backup-id",
    );
    assert_400(
        "snapshots ns=../x",
        get(format!(
            "/api2/json/admin/datastore/{store}/snapshots?ns=..%2Fx"
        ))
        .await,
        "'ns'",
    );
    for path in [
        "/api2/json/admin/datastore/..%2F..%2Fetc/snapshots",
        "/api2/json/admin/datastore/../../etc/snapshots",
        "/api2/json/admin/datastore/%2Fetc/snapshots",
    ] {
        let (status, text) = get(path.to_string()).await;
        assert!(status == 400 || status == 404, "{path}: {status} {text}");
        assert!(!text.contains("root:"), "{path}: {text}");
    }
    let (status, text) = get(format!(
        "/api2/json/admin/datastore/{store}/download?backup-type=host&backup-id={GOOD_ID}&backup-time={T0}&file-name=..%2F..%2F..%2Fauth%2Fusers.json"
    ))
    .await;
    assert_eq!(status, 400, "REST download escaping the snapshot: {text}");

    let session = reader(&client, &store, None, GOOD_ID, T0, None)
        .await
        .unwrap();
    let rq = |pq: String| {
        let session = &session;
        async move {
            let (status, body) = session.raw_request(Method::GET, &pq).await.unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    for name in [
        "../../auth/users.json",
        "../../../server.toml",
        "/etc/passwd",
    ] {
        let q = format!("download?{}", query(&[("file-name", name)]));
        let got = rq(q).await;
        assert!(!got.1.contains("password"), "{name}: {got:?}");
        assert_400(&format!("download {name}"), got, "file-name");
    }
    let manifest = session.manifest().await.unwrap();
    let idx = manifest.file("disk.img.fidx").unwrap();
    let raw = session.download("disk.img.fidx").await.unwrap();
    let entries = wire::parse_index("disk.img.fidx", &raw).unwrap();
    assert_eq!(wire::hex(&entries.csum), idx.csum);
    let real = wire::hex(&entries.chunks[0].0);
    assert_eq!(rq(format!("chunk?digest={real}")).await.0, 200);
    assert_400(
        "uppercase digest",
        rq(format!("chunk?digest={}", real.to_uppercase())).await,
        "digest",
    );
    assert_400(
        "63-char digest",
        rq(format!("chunk?digest={}", &real[..63])).await,
        "digest",
    );
    assert_400(
        "digest with path",
        rq(format!("chunk?digest=..%2F{}", &real[..61])).await,
        "digest",
    );
    drop(session);

    let after = tree_paths(server.data_dir());
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.is_empty(), "path tricks created {new:?}");
    assert_nothing_lost(&server, &client, &good).await;
}
