//! The protocol test client must send requests of exactly the shapes the stock client sends,
//! so every other end-to-end test exercises real request shapes. Each test here captures the
//! bytes our client writes (a small TLS server that records request heads) and compares the
//! request line, header names, header order and values, and the body with an exchange of
//! the recorded wire corpus.

use std::sync::{Arc, Mutex};

use pbs_cloud_e2e::corpus::load::{Body, Exchange};
use pbs_cloud_e2e::corpus::ojson::JsonStyle;
use pbs_cloud_e2e::corpus::{self};
use pbs_cloud_e2e::{BackupParams, BackupSession, PbsClient, ReaderParams, ReaderSession};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TICKET: &str = "PBS:bench@pbs:6B148EE4::c2lnbmF0dXJl";
const CSRF: &str = "6B148EE4:Y3NyZnRva2VuY3NyZnRva2VuY3NyZnRva2VuY3NyZnQ";
/// 16 characters, like the recorded password, so `content-length` matches.
const PASSWORD: &str = "0123456789abcdef";
const SECRET: &str = "0d3c0e4e-2b5f-4c1a-9e0f-1234567890ab";

/// One captured request.
#[derive(Debug, Clone)]
struct Captured {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A TLS server that records every request and answers logins with a ticket, upgrades with
/// 400, and everything else with `{"data":null}`.
struct Capture {
    host: String,
    fingerprint: String,
    seen: Arc<Mutex<Vec<Captured>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_conn(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    seen: Arc<Mutex<Vec<Captured>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut tmp = [0u8; 4096];
            match tls.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                l.split_once(": ")
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut tmp = [0u8; 4096];
            match tls.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let upgrade = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("upgrade"));
        seen.lock().unwrap().push(Captured {
            method,
            target: target.clone(),
            headers,
            body,
        });
        let (status, text) = if target.ends_with("/access/ticket") {
            (
                "200 OK",
                json!({"data": {"username": "bench@pbs", "ticket": TICKET, "CSRFPreventionToken": CSRF}})
                    .to_string(),
            )
        } else if upgrade {
            ("400 Bad Request", "no sessions here".to_string())
        } else {
            ("200 OK", "{\"data\":null}".to_string())
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if tls.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

impl Capture {
    async fn start() -> Capture {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert_der = ck.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let fingerprint = pbs_cloud_e2e::tls::fingerprint_of_der(cert_der.as_ref());
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve_conn(tls, seen).await;
                    }
                });
            }
        });
        Capture {
            host,
            fingerprint,
            seen,
            task,
        }
    }

    async fn client(&self) -> PbsClient {
        let (h, p) = self.host.rsplit_once(':').unwrap();
        PbsClient::connect(h, p.parse().unwrap(), &self.fingerprint)
            .await
            .unwrap()
    }

    async fn logged_in(&self) -> PbsClient {
        let c = self.client().await;
        c.login("bench@pbs", PASSWORD).await.unwrap();
        c
    }

    fn last(&self) -> Captured {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a captured request")
    }
}

fn recorded(scenario: &str, seq: u32) -> Exchange {
    let sc = corpus::load(&corpus::corpus_dir(), scenario).unwrap();
    sc.exchanges.into_iter().find(|e| e.seq == seq).unwrap()
}

/// Our request with credentials put back into placeholders, the host replaced.
fn redacted(c: &Captured, cap: &Capture) -> Captured {
    let fix = |v: &str| {
        v.replace(TICKET, "<TICKET>")
            .replace(CSRF, "<CSRF>")
            .replace(SECRET, "<TOKEN_SECRET>")
            .replace(PASSWORD, "<PASSWORD>")
            .replace(&cap.host, "127.0.0.1:8117")
    };
    Captured {
        method: c.method.clone(),
        target: c.target.clone(),
        headers: c.headers.iter().map(|(k, v)| (k.clone(), fix(v))).collect(),
        body: fix(&String::from_utf8_lossy(&c.body)).into_bytes(),
    }
}

/// Target, header names/order/values and (for text and JSON) the body must equal the
/// recording; binary bodies only their presence.
#[track_caller]
fn assert_shape(ours: &Captured, cap: &Capture, rec: &Exchange) {
    let ours = redacted(ours, cap);
    let what = format!("{} seq {}", rec.request_line(), rec.seq);
    assert_eq!(ours.method, rec.request.method, "{what}: method");
    assert_eq!(ours.target, rec.request.target, "{what}: request target");
    let rec_headers: Vec<(String, String)> = rec
        .request
        .headers
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.join(", ")))
        .collect();
    let names = |h: &[(String, String)]| h.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&ours.headers),
        names(&rec_headers),
        "{what}: header names and order"
    );
    for ((k, ov), (_, rv)) in ours.headers.iter().zip(&rec_headers) {
        if k == "content-length" && matches!(rec.request.body, Body::Binary(_)) {
            continue;
        }
        assert_eq!(ov, rv, "{what}: value of header {k}");
    }
    match &rec.request.body {
        Body::Empty => assert!(ours.body.is_empty(), "{what}: body must be empty"),
        Body::Json(j) => assert_eq!(
            String::from_utf8_lossy(&ours.body),
            j.to_text(JsonStyle::Compact),
            "{what}: JSON body"
        ),
        Body::Text(t) => assert_eq!(String::from_utf8_lossy(&ours.body), *t, "{what}: body"),
        Body::Binary(_) => assert!(!ours.body.is_empty(), "{what}: binary body"),
    }
}

#[tokio::test]
async fn login_is_the_stock_clients() {
    let cap = Capture::start().await;
    cap.logged_in().await;
    assert_shape(&cap.last(), &cap, &recorded("c4-basic-info", 1));
}

#[tokio::test]
async fn listings_and_status_are_the_stock_clients() {
    let cap = Capture::start().await;
    let c = cap.logged_in().await;
    c.get("admin/datastore/store1/groups", None).await.unwrap();
    assert_shape(&cap.last(), &cap, &recorded("c4-basic-info", 3));
    // root namespace: parameters given, none set -> an empty query
    c.get("admin/datastore/store1/snapshots", Some(&json!({})))
        .await
        .unwrap();
    assert_shape(&cap.last(), &cap, &recorded("c4-basic-info", 5));
    c.get("admin/datastore/store1/status", None).await.unwrap();
    assert_shape(&cap.last(), &cap, &recorded("c4-basic-info", 7));
    c.get("admin/datastore/store1/namespace", Some(&json!({})))
        .await
        .unwrap();
    assert_shape(&cap.last(), &cap, &recorded("c4-namespace", 6));
    c.get(
        "admin/datastore/store1/snapshots",
        Some(&json!({"ns": "corpus-c4/sub"})),
    )
    .await
    .unwrap();
    assert_shape(&cap.last(), &cap, &recorded("c4-namespace", 22));
}

#[tokio::test]
async fn changes_are_the_stock_clients() {
    let cap = Capture::start().await;
    let c = cap.logged_in().await;
    c.post(
        "admin/datastore/store1/namespace",
        Some(&json!({"name": "corpus-c4", "parent": ""})),
    )
    .await
    .unwrap();
    assert_shape(&cap.last(), &cap, &recorded("c4-namespace", 2));
    c.put(
        "admin/datastore/store1/notes",
        Some(&json!({
            "backup-id": "corpus-c4-s5",
            "backup-time": 1_735_696_800,
            "backup-type": "host",
            "notes": "Corpus note: a&b=c +d/e %41 äö\nsecond line",
        })),
    )
    .await
    .unwrap();
    assert_shape(
        &cap.last(),
        &cap,
        &recorded("c4-notes-protected-prune-forget", 2),
    );
    c.post(
        "admin/datastore/store1/prune",
        Some(&json!({"backup-id": "corpus-c4-s5", "backup-type": "host", "dry-run": true, "keep-last": 1})),
    )
    .await
    .unwrap();
    assert_shape(
        &cap.last(),
        &cap,
        &recorded("c4-notes-protected-prune-forget", 10),
    );
    c.delete(
        "admin/datastore/store1/snapshots",
        Some(&json!({"backup-id": "corpus-c4-s5", "backup-time": 1_735_689_600, "backup-type": "host"})),
    )
    .await
    .unwrap();
    assert_shape(
        &cap.last(),
        &cap,
        &recorded("c4-notes-protected-prune-forget", 16),
    );
    // a POST without parameters: form content type, no body, no content-length
    c.post("admin/datastore/store1/gc", None).await.unwrap();
    assert_shape(&cap.last(), &cap, &recorded("c4-uploadlog-gc-chown", 4));
    c.upload(
        "admin/datastore/store1/upload-backup-log",
        Some(&json!({"backup-id": "corpus-c4-s7", "backup-time": 1_735_689_600, "backup-type": "host"})),
        vec![1u8; 170],
    )
    .await
    .unwrap();
    assert_shape(&cap.last(), &cap, &recorded("c4-uploadlog-gc-chown", 2));
}

#[tokio::test]
async fn session_upgrades_are_the_stock_clients() {
    let cap = Capture::start().await;
    let c = cap.logged_in().await;
    let params = BackupParams::new("store1", "host", "corpus-c4-s2", 1_735_689_600);
    assert!(BackupSession::start_raw(&c, params).await.is_err());
    assert_shape(&cap.last(), &cap, &recorded("c4-backup-pxar-img", 2));
    let mut params = BackupParams::new("store1", "host", "corpus-c4-s6", 1_735_689_600);
    params.ns = Some("corpus-c4/sub".into());
    assert!(BackupSession::start_raw(&c, params).await.is_err());
    assert_shape(&cap.last(), &cap, &recorded("c4-namespace", 8));
    let params = ReaderParams::new("store1", "host", "corpus-c4-s2", 1_735_693_200);
    assert!(ReaderSession::open(&c, params, None).await.is_err());
    assert_shape(&cap.last(), &cap, &recorded("c4-restore-catalog-files", 2));
}

#[tokio::test]
async fn token_requests_are_the_stock_clients() {
    let cap = Capture::start().await;
    let c = cap.client().await.with_token("bench@pbs!corpus-c4", SECRET);
    c.get("admin/datastore/store1/groups", None).await.unwrap();
    assert_shape(&cap.last(), &cap, &recorded("c4-api-token", 3));
    let params = BackupParams::new("store1", "host", "corpus-c4-s9", 1_735_689_600);
    assert!(BackupSession::start_raw(&c, params).await.is_err());
    assert_shape(&cap.last(), &cap, &recorded("c4-api-token", 4));
}

/// Inside a session: pseudo-headers, `user-agent`, a `content-type` even without a body.
#[tokio::test]
async fn session_requests_are_the_stock_clients() {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let server = tokio::spawn(async move {
        let mut conn = h2::server::handshake(server_io).await.unwrap();
        while let Some(Ok((req, mut respond))) = conn.accept().await {
            let mut names = vec![
                (":method".to_string(), req.method().to_string()),
                (
                    ":scheme".to_string(),
                    req.uri().scheme_str().unwrap_or("").to_string(),
                ),
                (
                    ":authority".to_string(),
                    req.uri()
                        .authority()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                ),
                (
                    ":path".to_string(),
                    req.uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                ),
            ];
            names.extend(
                req.headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())),
            );
            seen2.lock().unwrap().push(names);
            let resp = http::Response::builder().status(200).body(()).unwrap();
            let mut send = respond.send_response(resp, false).unwrap();
            send.send_data(bytes::Bytes::from_static(b"{\"data\":null}"), true)
                .unwrap();
        }
    });
    let session = pbs_cloud_e2e::h2session::H2Session::handshake(client_io)
        .await
        .unwrap();
    session
        .call(http::Method::GET, "previous_backup_time", None)
        .await
        .unwrap();
    session
        .call(
            http::Method::POST,
            "dynamic_index",
            Some(&json!({"archive-name": "root.pxar.didx"})),
        )
        .await
        .unwrap();
    server.abort();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (ours, seq) in seen.iter().zip([3u32, 4]) {
        let rec = recorded("c4-backup-pxar-img", seq);
        let rec_headers: Vec<(String, String)> = rec
            .request
            .headers
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.join(", ")))
            .collect();
        assert_eq!(ours, &rec_headers, "in-session request seq {seq}");
    }
}
