//! Our pull client against a stock PBS's answers (issue 18: "our sync client against recorded
//! PBS answers where a second real server is not available"): corpus `s4-pull-sync`, run 1, is
//! what a PBS 4.2.3 pull job sent to a PBS 3.2.4 and what that server answered. A TLS server
//! here replays those answers in order, and our pull job (`pbs_cloud_server::sync::pull`, into
//! a local datastore) is its client.
//!
//! Every request our client makes must be the recorded request's shape (method, path, the set
//! of query parameters and their values; the login body's fields): login, the namespace,
//! group and snapshot listings, the reader upgrade, then inside the session the manifest, the
//! config blob and the first index. The answers are PBS's own bytes: the JSON listings, the
//! `101` upgrade, the manifest and blob (recorded whole), and the index (rebuilt from the
//! recorder's parse and checked against the recorded SHA-256). Our client parses them and
//! checks each file against the manifest before it asks for a chunk. The corpus keeps no
//! chunk data, so the replay ends at the first chunk request (answered 404) and the job reports
//! that group as failed; everything up to it is compared.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pbs_cloud_e2e::corpus::load::{Body, Exchange, IndexSummary, Layer};
use pbs_cloud_e2e::corpus::{corpus_dir, load};
use pbs_cloud_server::backend::LocalBackend;
use pbs_cloud_server::datastore::Datastore;
use pbs_cloud_server::format::names::BackupNamespace;
use pbs_cloud_server::sync::{pull, Direction, RemoteSpec, SyncParams};
use serde_json::Value;

/// The recorded exchanges our client is expected to make, in order, and what it sent.
struct Replay {
    expected: Vec<Exchange>,
    next: Mutex<usize>,
    seen: Mutex<Vec<Seen>>,
}

/// One request of ours next to the recorded one.
#[derive(Clone, Debug)]
struct Seen {
    recorded: String,
    ours: String,
    verdict: Result<(), String>,
}

/// Method, path without PBS's ignored empty segments, query parameters as a map.
fn shape(method: &str, target: &str) -> (String, String, BTreeMap<String, String>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = format!("/{}", path.trim_start_matches('/'));
    let query = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    (method.to_string(), path, query)
}

/// The fields of a JSON request body (the login's values differ: credentials).
fn body_fields(body: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

impl Replay {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().to_string();
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let index = {
            let mut next = self.next.lock().unwrap();
            *next += 1;
            *next - 1
        };
        let ours = format!("{method} {target}");
        let Some(exchange) = self.expected.get(index) else {
            self.record(
                String::new(),
                ours,
                Err("request beyond the recording".into()),
            );
            return text(StatusCode::NOT_FOUND, "not in the recording");
        };
        let recorded = &exchange.request;
        let mut verdict = Ok(());
        if shape(&method, &target) != shape(&recorded.method, &recorded.target) {
            verdict = Err("method, path or query differ".to_string());
        } else if let Body::Json(json) = &recorded.body {
            let mut theirs = body_fields(json.to_value().to_string().as_bytes());
            let mut mine = body_fields(&body);
            theirs.sort();
            mine.sort();
            if theirs != mine {
                verdict = Err(format!("body fields {mine:?}, recorded {theirs:?}"));
            }
        }
        self.record(exchange.request_line(), ours, verdict);
        respond(exchange)
    }

    fn record(&self, recorded: String, ours: String, verdict: Result<(), String>) {
        self.seen.lock().unwrap().push(Seen {
            recorded,
            ours,
            verdict,
        });
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// PBS's recorded answer: JSON and text as recorded, binary bodies when the corpus holds them
/// whole or (indexes) can rebuild them exactly; a chunk is not in the corpus (404).
fn respond(exchange: &Exchange) -> Response<Full<Bytes>> {
    let recorded = &exchange.response;
    let status = StatusCode::from_u16(recorded.status).unwrap();
    let content_type = recorded
        .headers
        .get("content-type")
        .unwrap_or("application/json");
    let body = match &recorded.body {
        Body::Empty => Bytes::new(),
        Body::Json(json) => Bytes::from(json.to_value().to_string()),
        Body::Text(t) => Bytes::from(t.clone()),
        Body::Binary(summary) => {
            let bytes = match (&summary.b64, &summary.index) {
                (Some(b64), _) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
                (None, Some(index)) => rebuild_index(index),
                (None, None) => {
                    return text(StatusCode::NOT_FOUND, "chunk data is not in the corpus")
                }
            };
            let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
            assert_eq!(
                sha,
                summary.sha256,
                "{}: rebuilt body differs",
                exchange.request_line()
            );
            Bytes::from(bytes)
        }
    };
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type);
    if status == StatusCode::SWITCHING_PROTOCOLS {
        builder = builder
            .header("upgrade", "proxmox-backup-reader-protocol-v1")
            .header("connection", "upgrade");
    }
    builder.body(Full::new(body)).unwrap()
}

/// An index file from the recorder's parse: the 4096-byte header (magic, uuid, ctime, index
/// checksum, and for fixed indexes size and chunk size) and the entries.
fn rebuild_index(index: &IndexSummary) -> Vec<u8> {
    let fixed = index.is_fixed();
    let mut out = Vec::with_capacity(4096 + index.entries * 40);
    out.extend_from_slice(&match fixed {
        true => pbs_cloud_server::format::fixed_index::FIXED_INDEX_MAGIC,
        false => pbs_cloud_server::format::dynamic_index::DYNAMIC_INDEX_MAGIC,
    });
    out.extend_from_slice(&hex::decode(&index.uuid).unwrap());
    out.extend_from_slice(&index.ctime.to_le_bytes());
    out.extend_from_slice(&hex::decode(&index.index_csum).unwrap());
    if fixed {
        out.extend_from_slice(&index.size.unwrap().to_le_bytes());
        out.extend_from_slice(&index.chunk_size.unwrap().to_le_bytes());
    }
    out.resize(4096, 0);
    for (end, digest) in index.entries() {
        if !fixed {
            out.extend_from_slice(&end.to_le_bytes());
        }
        out.extend_from_slice(&hex::decode(digest).unwrap());
    }
    out
}

/// A TLS server answering from `replay`; upgrades continue as HTTP/2 on the same replay.
async fn serve(replay: Arc<Replay>) -> (u16, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = cert.cert.der().to_vec();
    let fingerprint = pbs_cloud_e2e::tls::fingerprint_of_der(&der);
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![der.into()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, replay) = (acceptor.clone(), replay.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let replay = replay.clone();
                    async move {
                        let upgrade = hyper::upgrade::on(&mut req);
                        let response = replay.answer(req).await;
                        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                            let replay = replay.clone();
                            tokio::spawn(async move {
                                let Ok(upgraded) = upgrade.await else {
                                    return;
                                };
                                let h2 = service_fn(move |req| {
                                    let replay = replay.clone();
                                    async move { Ok::<_, Infallible>(replay.answer(req).await) }
                                });
                                let _ =
                                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                        .serve_connection(upgraded, h2)
                                        .await;
                            });
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_pull_asks_what_a_pbs_puller_asks_and_reads_pbs_answers() {
    let scenario = load(&corpus_dir(), "s4-pull-sync").expect("corpus s4-pull-sync");
    // Run 1 of the job, up to the first chunk request (the corpus holds no chunk data).
    let run1: Vec<Exchange> = scenario
        .in_order()
        .into_iter()
        .filter(|e| e.cmd.contains("run 1"))
        .cloned()
        .collect();
    let first_chunk = run1
        .iter()
        .position(|e| e.layer == Layer::H2 && e.request.target.starts_with("/chunk?"))
        .expect("run 1 fetches a chunk");
    let expected = run1[..=first_chunk].to_vec();
    let replay = Arc::new(Replay {
        expected: expected.clone(),
        next: Mutex::new(0),
        seen: Mutex::new(Vec::new()),
    });
    let (port, fingerprint) = serve(replay.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("remote.secret");
    std::fs::write(&secret, "corpus-password\n").unwrap();
    let backend = Arc::new(LocalBackend::open(&dir.path().join("store1")).unwrap());
    let store = Datastore::open("store1", backend).await.unwrap();
    let params = SyncParams {
        direction: Direction::Pull,
        remote: RemoteSpec {
            name: "corpus-s4-remote".into(),
            host: "127.0.0.1".into(),
            port,
            auth_id: "bench@pbs".into(),
            fingerprint,
            secret_file: secret,
        },
        remote_store: "store1".into(),
        remote_ns: BackupNamespace::parse("corpus-s4-pull-src").unwrap(),
        ns: BackupNamespace::parse("corpus-s4-pulled").unwrap(),
        max_depth: Some(0),
        filters: Vec::new(),
        remove_vanished: false,
        transfer_last: None,
        owner: "bench@pbs".into(),
        verified_only: false,
        encrypted_only: false,
        rate_in: None,
        rate_out: None,
        worker_threads: 1,
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let log = {
        let lines = lines.clone();
        Arc::new(move |line: String| lines.lock().unwrap().push(line))
    };
    let summary = pull::run(store.clone(), params, log, Arc::new(|| false))
        .await
        .expect("the job runs to its end");
    let log = lines.lock().unwrap().clone();

    let seen = replay.seen.lock().unwrap().clone();
    for s in &seen {
        assert!(s.verdict.is_ok(), "{s:#?}");
        println!("ours {:<70} recorded {}", s.ours, s.recorded);
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "our client stopped early or went on: {seen:#?}\n{log:#?}"
    );
    // It read PBS's listings, manifest, blob and index and checked them, then asked for the
    // first chunk, which the corpus cannot give.
    for needle in [
        "Syncing datastore 'store1', namespace 'corpus-s4-pull-src' into datastore 'store1', namespace 'corpus-s4-pulled'",
        "Found 1 groups to sync (out of 1 total)",
        "[host/corpus-s4-pull]: 2025-01-01T00:00:00Z/guest.conf.blob: sync archive",
        "[host/corpus-s4-pull]: 2025-01-01T00:00:00Z/root.pxar.didx: sync archive",
        "[host/corpus-s4-pull]: sync group failed - remote 'corpus-s4-remote'",
    ] {
        assert!(log.iter().any(|l| l.contains(needle)), "missing {needle:?} in {log:#?}");
    }
    assert_eq!(summary.errors, 1, "{summary:?}");
    assert_eq!(summary.snapshots_pulled, 0, "{summary:?}");
    store.close().await.unwrap();
}
