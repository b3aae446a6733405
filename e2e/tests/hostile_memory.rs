//! A hostile backup client against the server's memory: what it can make the server hold is a
//! budget, never a consequence of numbers it sends. Each test drives the protocol by hand,
//! measures the server process's resident memory (VmRSS, and the peak VmHWM reset right
//! before the hostile phase) and checks a bound far below what the same requests cost a server
//! without the protections (a dense fixed index sized by the offset is 2 GiB per writer;
//! unbudgeted chunk bodies are 16 MiB each). Normal requests keep working throughout.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use http::Method;
use pbs_cloud_e2e::{wire, BackupParams, BackupSession, PbsClient, TestServer};
use serde_json::json;

const MIB: u64 = 1024 * 1024;
/// Offset of the last chunk of the largest fixed index: (2^26 - 1) * 4 MiB.
const FAR: u64 = ((1 << 26) - 1) * 4 * MIB;
/// Index writers one backup session may open.
const MAX_WID: u64 = 256;
/// The largest chunk (`size`) and encoded chunk (`encoded-size`) a client may announce.
const MAX_SIZE: u64 = 16 * MIB;
const MAX_ENCODED: u64 = 16 * MIB + 44;
const OCTET: &str = "application/octet-stream";
const FORM: &str = "application/x-www-form-urlencoded";

/// Resident and peak resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
}

fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"));
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib * 1024
    };
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
    }
}

/// Resets the process's peak resident memory to its current value (`clear_refs` 5), so the
/// peak read later is the peak of what came after.
fn reset_peak(pid: u32) -> Memory {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .expect("resetting VmHWM needs write access to /proc/PID/clear_refs");
    memory(pid)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// Checks and reports the server's memory growth over `before` (current and peak).
fn assert_growth_below(pid: u32, before: Memory, bound: u64, what: &str) {
    let now = memory(pid);
    let peak = now.hwm.saturating_sub(before.rss);
    let held = now.rss.saturating_sub(before.rss);
    eprintln!(
        "{what}: server RSS {:.1} MiB before, {:.1} MiB after, peak {:.1} MiB (+{:.1} MiB peak, \
         +{:.1} MiB held; bound {:.0} MiB)",
        mib(before.rss),
        mib(now.rss),
        mib(now.hwm),
        mib(peak),
        mib(held),
        mib(bound)
    );
    assert!(
        peak < bound,
        "{what}: server memory grew by {:.1} MiB (bound {:.0} MiB)",
        mib(peak),
        mib(bound)
    );
}

async fn req(
    s: &BackupSession,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let (status, body) = s
        .raw_request(method, path, content_type, body)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `POST {fixed,dynamic}_index?QUERY`: status and body.
async fn open_writer(s: &BackupSession, kind: &str, query: &str) -> (u16, String) {
    req(
        s,
        Method::POST,
        &format!("{kind}_index?{query}"),
        FORM,
        vec![],
    )
    .await
}

fn wid_of(body: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["data"].as_u64().unwrap()
}

/// A server started on `config` (the zero-config server when empty).
async fn server_with(config: &str) -> (TestServer, PbsClient) {
    let mut server = TestServer::prepare().unwrap();
    if !config.is_empty() {
        server.set_config(config).unwrap();
    }
    server.launch().await.expect("start pbs-cloud-server");
    let client = server.admin_client().await.unwrap();
    (server, client)
}

/// One gauge of `/metrics` (as the superuser sees it).
async fn gauge(client: &PbsClient, name: &str) -> u64 {
    let resp = client
        .raw(Method::GET, "/metrics", None, Vec::new(), &[], true)
        .await
        .unwrap();
    let text = resp.text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls a gauge until `ok` holds (bounded).
async fn wait_gauge(client: &PbsClient, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let value = gauge(client, name).await;
        if ok(value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Probe: a fixed index writer gets one 64-byte chunk appended at offset (2^26 - 1) * 4 MiB,
/// in every one of the 256 writers a session may open (half of them without a declared size,
/// half with the largest one). Each append costs one entry; the 257th writer and a close with
/// missing chunks are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_fixed_index_appends_cost_one_entry_each() {
    let (server, client) = server_with("").await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;
    let pid = server.pid().unwrap();
    let before = reset_peak(pid);

    let s = BackupSession::start_raw(&client, BackupParams::new(&store, "host", "far", T0))
        .await
        .unwrap();
    let data = [7u8; 64];
    let digest = wire::hex(&wire::sha256(&data));
    let blob = wire::encode_plain_blob(&data, false);
    for w in 0..MAX_WID {
        let query = match w % 2 {
            0 => format!("archive-name=d{w}.img.fidx"),
            _ => format!("archive-name=d{w}.img.fidx&size={}", FAR + 64),
        };
        let (status, body) = open_writer(&s, "fixed", &query).await;
        assert_eq!(status, 200, "writer {w}: {body}");
        let wid = wid_of(&body);
        let chunk = format!(
            "fixed_chunk?wid={wid}&digest={digest}&size=64&encoded-size={}",
            blob.len()
        );
        let (status, body) = req(&s, Method::POST, &chunk, OCTET, blob.clone()).await;
        assert_eq!(status, 200, "chunk for writer {wid}: {body}");
        s.h2()
            .call_json_body(
                Method::PUT,
                "fixed_index",
                &json!({"wid": wid, "digest-list": [digest], "offset-list": [FAR]}),
            )
            .await
            .unwrap_or_else(|e| panic!("far append to writer {wid}: {e}"));
    }
    let (status, body) = open_writer(&s, "fixed", "archive-name=more.img.fidx").await;
    assert_eq!(status, 400, "a 257th writer: {body}");
    assert!(body.contains("too many index writers"), "{body}");
    // Closing with the totals of a full image: refused for the missing chunks, before any
    // list as long as the image is built.
    let close = format!(
        "fixed_close?wid=1&chunk-count={}&size={}&csum={digest}",
        1u64 << 26,
        FAR + 64
    );
    let (status, body) = req(&s, Method::POST, &close, FORM, vec![]).await;
    assert_eq!(status, 400, "close of a hollow index: {body}");

    // The server serves everyone else meanwhile.
    assert_good_snapshot_intact(&client, &store, &good).await;
    // 256 far appends: a few MiB at most (a dense index would be 2 GiB each).
    assert_growth_below(pid, before, 64 * MIB, "256 writers with a far append");
    drop(s);
    assert_no_snapshot_left(&server, &client, "far", Duration::from_secs(3)).await;
    assert_good_snapshot_intact(&client, &store, &good).await;
}

/// Probe: a session opens index writers until the tenant's budget of open writers is spent;
/// the next writer, in that session and in another one of the same tenant, is refused with a
/// message naming the budget; after the session ended, the tenant backs up normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_writer_budget_refuses_clearly() {
    let (server, client) = server_with("[upload_limits]\nopen_writers_per_tenant = 8\n").await;
    let store = server.store().to_string();
    let good = make_good_snapshot(&client, &store).await;

    let hog = BackupSession::start_raw(&client, BackupParams::new(&store, "host", "hog", T0))
        .await
        .unwrap();
    for w in 0..8 {
        let (status, body) = open_writer(&hog, "dynamic", &format!("archive-name=a{w}.didx")).await;
        assert_eq!(status, 200, "writer {w}: {body}");
    }
    let (status, body) = open_writer(&hog, "dynamic", "archive-name=nine.didx").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("open index writer budget of tenant") && body.contains("8 of 8"),
        "{body}"
    );
    let other = BackupSession::start_raw(&client, BackupParams::new(&store, "host", "other", T0))
        .await
        .unwrap();
    let (status, body) = open_writer(&other, "fixed", "archive-name=x.img.fidx&size=4096").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("open index writer budget of tenant"),
        "{body}"
    );
    assert_eq!(gauge(&client, "pbs_cloud_upload_open_writers").await, 8);

    // The session ends (connection closed): its writers are given back.
    drop(hog);
    drop(other);
    wait_gauge(&client, "pbs_cloud_upload_open_writers", |n| n == 0).await;
    let image = random_bytes(3, 3 * MIB as usize);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: Some(b"conf"),
    };
    backup(
        &client,
        &store,
        None,
        "after",
        T0,
        pbs_cloud_e2e::Crypt::None,
        &content,
    )
    .await
    .expect("backup after the hog left");
    assert_no_snapshot_left(&server, &client, "hog", Duration::from_secs(3)).await;
    assert_good_snapshot_intact(&client, &store, &good).await;
}

const TWO_TENANTS: &str = r#"
[[tenant]]
id = "acme"

[[tenant]]
id = "globex"

[[datastore]]
name = "acme-store"
tenant = "acme"

[[datastore]]
name = "globex-store"
tenant = "globex"
"#;

/// Probe: one tenant sends many large chunk bodies at once in one session (each announcing
/// 16 MiB and sending all but its last byte). Without a budget each body is read into memory;
/// with `buffer_mib_per_tenant = 40` one is read, the others wait unread (HTTP/2 flow control
/// holds the client back) and are refused after `buffer_wait_seconds` with a message naming
/// the tenant's budget. Another tenant backs up normally meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_buffer_budget_refuses_clearly_and_bounds_memory() {
    const UPLOADS: usize = 16;
    let config = format!(
        "{TWO_TENANTS}\n[upload_limits]\nbuffer_mib_per_tenant = 40\nbuffer_wait_seconds = 3\n"
    );
    let (mut server, _) = server_with(&config).await;
    server.stop().await;
    for (user, tenant, store) in [
        ("alice@pbs", "acme", "acme-store"),
        ("bob@pbs", "globex", "globex-store"),
    ] {
        server
            .manage(&["user", "add", user, "--tenant", tenant], "pass-word-1\n")
            .unwrap();
        server
            .manage(
                &[
                    "acl",
                    "add",
                    &format!("/datastore/{store}"),
                    user,
                    "DatastoreAdmin",
                ],
                "",
            )
            .unwrap();
    }
    server.launch().await.unwrap();
    let admin = server.admin_client().await.unwrap();
    let alice = server.client().await.unwrap();
    alice.login("alice@pbs", "pass-word-1").await.unwrap();
    let bob = server.client().await.unwrap();
    bob.login("bob@pbs", "pass-word-1").await.unwrap();
    let bob_good = make_good_snapshot(&bob, "globex-store").await;
    let pid = server.pid().unwrap();
    let before = reset_peak(pid);

    // Alice's session: one writer, then UPLOADS chunk bodies of 16 MiB - 1 byte at once.
    let q = BackupParams::new("acme-store", "host", "flood", T0).upgrade_query();
    let (send, task) = raw_h2_upgrade(
        &server,
        &alice,
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
    let body = Bytes::from(vec![0x5a; MAX_ENCODED as usize - 1]);
    let mut answers = Vec::new();
    let mut streams = Vec::new();
    for i in 0..UPLOADS {
        let digest = wire::hex(&wire::sha256(&i.to_le_bytes()));
        let upload = http::Request::builder()
            .method(Method::POST)
            .uri(format!(
                "https://localhost:8007/dynamic_chunk?wid=1&digest={digest}&size={MAX_SIZE}\
                 &encoded-size={MAX_ENCODED}"
            ))
            .header("content-type", OCTET)
            .body(())
            .unwrap();
        send = send.ready().await.unwrap();
        let (resp, mut stream) = send.send_request(upload, false).unwrap();
        // Queued in the client; the server takes it as its flow-control window allows.
        stream.send_data(body.clone(), false).unwrap();
        streams.push(stream);
        answers.push(resp);
    }
    // One body fits the tenant's 40 MiB (it reserves 32 MiB); that one is read and waits for
    // its last byte forever.
    wait_gauge(&admin, "pbs_cloud_upload_buffer_bytes", |b| b >= 32 * MIB).await;

    // Another tenant backs up meanwhile.
    let image = random_bytes(5, 6 * MIB as usize);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: Some(b"conf"),
    };
    backup(
        &bob,
        "globex-store",
        None,
        "during",
        T0,
        pbs_cloud_e2e::Crypt::None,
        &content,
    )
    .await
    .expect("another tenant backs up during the flood");

    // All but one are refused once they waited their 3 s; the admitted one waits for its last
    // byte and never answers.
    let mut answers: futures::stream::FuturesUnordered<_> = answers.into_iter().collect();
    for n in 0..UPLOADS - 1 {
        let resp = tokio::time::timeout(Duration::from_secs(120), answers.next())
            .await
            .unwrap_or_else(|_| panic!("only {n} uploads were answered"))
            .unwrap()
            .expect("an answer, not a reset");
        let status = resp.status();
        let mut recv = resp.into_body();
        let mut text = Vec::new();
        while let Some(Ok(d)) = recv.data().await {
            text.extend_from_slice(&d);
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        assert_eq!(status, 503, "{text}");
        assert!(
            text.contains("upload buffer budget of tenant 'acme' spent"),
            "{text}"
        );
    }

    // 16 bodies of 16 MiB: 256 MiB unbudgeted. Budgeted: one body, plus at most the
    // connection's 32 MiB flow-control window of unread data.
    assert_growth_below(pid, before, 128 * MIB, "16 parallel 16 MiB chunk bodies");
    drop(streams);
    drop(send);
    task.abort();
    wait_gauge(&admin, "pbs_cloud_upload_buffer_bytes", |b| b == 0).await;
    assert_good_snapshot_intact(&bob, "globex-store", &bob_good).await;
    backup(
        &alice,
        "acme-store",
        None,
        "after",
        T0,
        pbs_cloud_e2e::Crypt::None,
        &content,
    )
    .await
    .expect("the tenant backs up after its flood ended");
}
