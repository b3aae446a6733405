//! Our sync client against a stock PBS's answers (issue 18: "our sync client against recorded
//! PBS answers where a second real server is not available"). A TLS server here replays a
//! recorded scenario's answers in order, and our job is its client. Every request our client
//! makes must be the recorded request's shape (method, path, the set of query parameters and
//! their values; a JSON body's fields, an index append's entries, an upload's length). Chunk
//! uploads may come in another order within a run of them (ours go several at once).
//!
//! * **Pull** (`s4-pull-sync`, run 1: a PBS 4.2.3 pull job against a PBS 3.2.4): login, the
//!   namespace, group and snapshot listings, the reader upgrade, then inside the session the
//!   manifest, the config blob and the first index. The answers are PBS's own bytes: the JSON
//!   listings, the `101` upgrade, the manifest and blob (recorded whole), and the index
//!   (rebuilt from the recorder's parse and checked against the recorded SHA-256). Our client
//!   checks each file against the manifest before it asks for a chunk. The corpus keeps no
//!   chunk data, so the replay ends at the first chunk request (answered 404) and the job
//!   reports that group as failed; everything up to it is compared.
//! * **Push** (`s4-push-sync`: a PBS 4.2.3 push job into a PBS 3.2.4), all 117 exchanges of
//!   its three runs: 4 snapshots of 2 groups (one client-encrypted) into a new namespace; then
//!   remove-vanished after the source forgot two snapshots (one protected on the target) and a
//!   group and gained a snapshot; then max-depth 1 with a new child namespace on the source and
//!   a stale one on the target. Our source datastore is rebuilt from what the pushing PBS sent
//!   (blobs and manifests whole, indexes from its appends, chunks of the recorded length and
//!   head: a push sends chunks as stored, so only digest and length reach the wire), and our
//!   push job must send what PBS sent: namespace creation, listings, one backup session per
//!   snapshot with each previous index fetched right before its archive is written, the same
//!   chunks, appends and checksums, and the same deletions (no `error-on-protected` for a
//!   3.2.4 target). One intended difference: [`CLIENT_LOG_WRAP`].

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
use std::str::FromStr;

use pbs_cloud_e2e::corpus::load::{BinarySummary, Body, Exchange, IndexSummary, Layer};
use pbs_cloud_e2e::corpus::{corpus_dir, load};
use pbs_cloud_server::backend::{Backend, LocalBackend, PutOptions};
use pbs_cloud_server::datastore::{layout, Datastore};
use pbs_cloud_server::format::dynamic_index::{DynamicEntry, DynamicIndex};
use pbs_cloud_server::format::fixed_index::FixedIndex;
use pbs_cloud_server::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use pbs_cloud_server::format::parse_digest_hex;
use pbs_cloud_server::sync::{pull, push, Direction, RemoteSpec, SyncParams};
use serde_json::Value;

/// The recorded exchanges our client is expected to make, in order, and what it sent.
struct Replay {
    expected: Mutex<Vec<Exchange>>,
    next: Mutex<usize>,
    seen: Mutex<Vec<Seen>>,
}

/// One request of ours next to the recorded one.
#[derive(Clone, Debug)]
struct Seen {
    recorded: String,
    ours: String,
    verdict: Result<(), String>,
    /// An intended difference, with its reason.
    allowed: Option<&'static str>,
}

/// The one intended difference of our push: PBS 4.2.3 uploads `client.log.blob` wrapped in a
/// second `blob-uncompressed` (12 bytes of header more; corpus README, seq 42), so the target
/// stores a blob whose payload is another blob. We send it as stored, like every other blob.
const CLIENT_LOG_WRAP: &str =
    "client.log.blob sent as stored; PBS 4.2.3 wraps it in a second 12-byte blob header";
const BLOB_HEADER: u64 = 12;

/// The recorded `client.log.blob` upload as we send it: 12 bytes shorter, `encoded-size` too.
fn unwrapped_client_log(method: &str, target: &str) -> Option<(String, String)> {
    let (method, path, mut query) = shape(method, target);
    if path != "/blob" || query.get("file-name").map(String::as_str) != Some("client.log.blob") {
        return None;
    }
    let size: u64 = query.get("encoded-size")?.parse().ok()?;
    query.insert("encoded-size".into(), (size - BLOB_HEADER).to_string());
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some((method, format!("{path}?{}", query.join("&"))))
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

/// A chunk upload (`POST {dynamic,fixed}_chunk`), which a client sends several at a time.
fn is_chunk_upload(method: &str, target: &str) -> bool {
    method == "POST"
        && ["/dynamic_chunk", "/fixed_chunk"]
            .iter()
            .any(|p| target.trim_start_matches('/').starts_with(&p[1..]))
}

/// The entries of an index append (`PUT *_index`): (offset, digest) pairs, sorted (a fixed
/// index's may come in any order).
fn appended(body: &Value) -> Vec<(u64, String)> {
    let digests = body["digest-list"].as_array().cloned().unwrap_or_default();
    let offsets = body["offset-list"].as_array().cloned().unwrap_or_default();
    let mut pairs: Vec<(u64, String)> = offsets
        .iter()
        .zip(&digests)
        .map(|(o, d)| {
            (
                o.as_u64().unwrap_or(u64::MAX),
                d.as_str().unwrap_or("").into(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

impl Replay {
    fn new(expected: &[Exchange]) -> Arc<Replay> {
        Arc::new(Replay {
            expected: Mutex::new(expected.to_vec()),
            next: Mutex::new(0),
            seen: Mutex::new(Vec::new()),
        })
    }

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
        let ours = format!("{method} {target}");
        let exchange = {
            let mut expected = self.expected.lock().unwrap();
            let mut next = self.next.lock().unwrap();
            let index = *next;
            *next += 1;
            // Chunk uploads travel several at once: ours may come in another order than the
            // recorded client's, within the same run of uploads.
            if is_chunk_upload(&method, &target) {
                let found = (index..expected.len())
                    .take_while(|&i| {
                        is_chunk_upload(&expected[i].request.method, &expected[i].request.target)
                    })
                    .find(|&i| {
                        let r = &expected[i].request;
                        shape(&method, &target) == shape(&r.method, &r.target)
                    });
                if let Some(i) = found {
                    expected.swap(index, i);
                }
            }
            expected.get(index).cloned()
        };
        let Some(exchange) = exchange else {
            self.record(
                String::new(),
                ours,
                Err("request beyond the recording".into()),
            );
            return text(StatusCode::NOT_FOUND, "not in the recording");
        };
        let recorded = &exchange.request;
        let mut verdict = Ok(());
        let mut allowed = None;
        let (recorded_method, recorded_target) =
            match unwrapped_client_log(&recorded.method, &recorded.target) {
                Some(unwrapped) => {
                    allowed = Some(CLIENT_LOG_WRAP);
                    unwrapped
                }
                None => (recorded.method.clone(), recorded.target.clone()),
            };
        if shape(&method, &target) != shape(&recorded_method, &recorded_target) {
            verdict = Err("method, path or query differ".to_string());
        } else if let Body::Json(json) = &recorded.body {
            let mut theirs = body_fields(json.to_value().to_string().as_bytes());
            let mut mine = body_fields(&body);
            theirs.sort();
            mine.sort();
            if theirs != mine {
                verdict = Err(format!("body fields {mine:?}, recorded {theirs:?}"));
            } else if method == "PUT" {
                // An index append: the same entries as the recorded client's.
                let ours: Value = serde_json::from_slice(&body).unwrap_or_default();
                if appended(&ours) != appended(&json.to_value()) {
                    verdict = Err(format!("appended {ours}, recorded {}", json.to_value()));
                }
            }
        } else if let Body::Binary(summary) = &recorded.body {
            // An upload: PBS's length (the bytes are ours; the corpus keeps a chunk's length and
            // head only).
            let len = match allowed {
                Some(_) => summary.len - BLOB_HEADER,
                None => summary.len,
            };
            if body.len() as u64 != len {
                verdict = Err(format!("{} bytes, recorded {}", body.len(), summary.len));
            }
        }
        self.seen.lock().unwrap().push(Seen {
            recorded: exchange.request_line(),
            ours,
            verdict,
            allowed,
        });
        respond(&exchange)
    }

    fn record(&self, recorded: String, ours: String, verdict: Result<(), String>) {
        self.seen.lock().unwrap().push(Seen {
            recorded,
            ours,
            verdict,
            allowed: None,
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
        let protocol = recorded
            .headers
            .get("upgrade")
            .unwrap_or("proxmox-backup-reader-protocol-v1");
        builder = builder
            .header("upgrade", protocol)
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

/// A job of `bench@pbs` (the recorded user) against the replay at (port, fingerprint, secret
/// file), mapping `remote_ns` and `ns` to `max_depth`, one group at a time, no filters.
fn corpus_job(
    direction: Direction,
    (port, fingerprint, secret_file): (u16, String, std::path::PathBuf),
    remote_ns: &str,
    ns: &str,
    max_depth: usize,
) -> SyncParams {
    SyncParams {
        direction,
        remote: RemoteSpec {
            name: "corpus-s4-remote".into(),
            host: "127.0.0.1".into(),
            port,
            auth_id: "bench@pbs".into(),
            fingerprint,
            secret_file,
        },
        remote_store: "store1".into(),
        remote_ns: BackupNamespace::parse(remote_ns).unwrap(),
        ns: BackupNamespace::parse(ns).unwrap(),
        max_depth: Some(max_depth),
        filters: Vec::new(),
        remove_vanished: false,
        transfer_last: None,
        owner: "bench@pbs".into(),
        verified_only: false,
        encrypted_only: false,
        rate_in: None,
        rate_out: None,
        worker_threads: 1,
    }
}

/// A job's log sink and the lines it collects.
#[allow(clippy::type_complexity)]
fn log_sink() -> (Arc<dyn Fn(String) + Send + Sync>, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    (
        Arc::new(move |line: String| sink.lock().unwrap().push(line)),
        lines,
    )
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
    let replay = Replay::new(&expected);
    let (port, fingerprint) = serve(replay.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("remote.secret");
    std::fs::write(&secret, "corpus-password\n").unwrap();
    let backend = Arc::new(LocalBackend::open(&dir.path().join("store1")).unwrap());
    let store = Datastore::open("store1", backend).await.unwrap();
    let params = corpus_job(
        Direction::Pull,
        (port, fingerprint, secret),
        "corpus-s4-pull-src",
        "corpus-s4-pulled",
        0,
    );
    let (log, lines) = log_sink();
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

/// Bytes of the recorded length that begin with the recorded head: what a chunk (or
/// `client.log.blob`) of the recorded push looked like on the wire, as far as the corpus
/// tells. A push sends stored chunks without decoding them, so length and digest are all
/// that reaches the remote.
fn fabricated(summary: &BinarySummary) -> Bytes {
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(&summary.head_b64)
        .unwrap();
    bytes.resize(summary.len as usize, 0);
    Bytes::from(bytes)
}

/// The query parameters of a recorded request.
fn query(target: &str) -> BTreeMap<String, String> {
    shape("", target).2
}

/// An index being rebuilt from a recorded backup session: name, fixed size, appended entries.
struct Rebuilt {
    name: String,
    fixed_size: Option<u64>,
    entries: Vec<(u64, String)>,
}

/// The source datastore of the recorded push, rebuilt from what the pushing PBS sent: per
/// backup session (group and time from its upgrade) its blobs (whole from the corpus, or of
/// the recorded length and head), its indexes from the appends and closes, and a chunk object
/// per uploaded chunk (see [`fabricated`]). The remote namespace `corpus-s4-push` is our
/// root namespace, its children ours.
async fn source_from_recording(store: &LocalBackend, run: &[Exchange]) -> usize {
    let mut ns = BackupNamespace::root();
    let mut dir: Option<BackupDir> = None;
    let mut writers: BTreeMap<u64, Rebuilt> = BTreeMap::new();
    let mut snapshots = 0;
    let put = |key: String, bytes: Bytes| async move {
        store.put(&key, bytes, PutOptions::default()).await.unwrap();
    };
    for e in run {
        let (method, target) = (e.request.method.as_str(), e.request.target.as_str());
        let q = query(target);
        let path = shape(method, target).1;
        if e.layer == Layer::Http1 && path == "/api2/json/backup" {
            let ty = BackupType::from_str(&q["backup-type"]).unwrap();
            let group = BackupGroup::new(ty, &q["backup-id"]).unwrap();
            let remote_ns = q.get("ns").map_or("", String::as_str);
            let local_ns = remote_ns
                .strip_prefix(PUSH_TARGET_NS)
                .unwrap()
                .trim_start_matches('/');
            ns = BackupNamespace::parse(local_ns).unwrap();
            if !ns.is_root() {
                put(layout::ns_marker_key(&ns), Bytes::new()).await;
            }
            let owner = layout::group_file_key(&ns, &group, "owner");
            put(owner, Bytes::from_static(b"bench@pbs\n")).await;
            dir = Some(BackupDir::new(group, q["backup-time"].parse().unwrap()).unwrap());
            writers.clear();
            snapshots += 1;
            continue;
        }
        let Some(dir) = &dir else { continue };
        let answered_wid = || match &e.response.body {
            Body::Json(json) => json.to_value()["data"].as_u64().unwrap(),
            other => panic!("{}: no wid in {other:?}", e.request_line()),
        };
        match (method, path.as_str()) {
            ("POST", "/blob") => {
                let Body::Binary(summary) = &e.request.body else {
                    panic!("{}: no blob body", e.request_line())
                };
                let bytes = match &summary.b64 {
                    Some(b64) => Bytes::from(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap(),
                    ),
                    // The source stored the blob PBS wrapped once more (`CLIENT_LOG_WRAP`).
                    None if q["file-name"] == "client.log.blob" => {
                        fabricated(summary).slice(BLOB_HEADER as usize..)
                    }
                    None => fabricated(summary),
                };
                let key = layout::snapshot_file_key(&ns, dir, &q["file-name"]).unwrap();
                put(key, bytes).await;
            }
            ("POST", "/dynamic_index") | ("POST", "/fixed_index") => {
                writers.insert(
                    answered_wid(),
                    Rebuilt {
                        name: q["archive-name"].clone(),
                        fixed_size: q.get("size").map(|s| s.parse().unwrap()),
                        entries: Vec::new(),
                    },
                );
            }
            ("POST", "/dynamic_chunk") | ("POST", "/fixed_chunk") => {
                let Body::Binary(summary) = &e.request.body else {
                    panic!("{}: no chunk body", e.request_line())
                };
                let digest = parse_digest_hex(&q["digest"]).unwrap();
                put(layout::chunk_key(&digest), fabricated(summary)).await;
            }
            ("PUT", "/dynamic_index") | ("PUT", "/fixed_index") => {
                let Body::Json(json) = &e.request.body else {
                    panic!("{}: no append body", e.request_line())
                };
                let body = json.to_value();
                let wid = body["wid"].as_u64().unwrap();
                writers
                    .get_mut(&wid)
                    .unwrap()
                    .entries
                    .extend(appended(&body));
            }
            ("POST", "/dynamic_close") | ("POST", "/fixed_close") => {
                let mut index = writers.remove(&q["wid"].parse().unwrap()).unwrap();
                index.entries.sort();
                let size: u64 = q["size"].parse().unwrap();
                let bytes = match index.fixed_size {
                    Some(fixed_size) => FixedIndex {
                        uuid: [0; 16],
                        ctime: dir.time,
                        size: fixed_size,
                        chunk_size: 4 << 20,
                        digests: index
                            .entries
                            .iter()
                            .map(|(_, d)| parse_digest_hex(d).unwrap())
                            .collect(),
                    }
                    .to_bytes(),
                    None => {
                        let ends = index
                            .entries
                            .iter()
                            .skip(1)
                            .map(|(offset, _)| *offset)
                            .chain([size]);
                        DynamicIndex {
                            uuid: [0; 16],
                            ctime: dir.time,
                            entries: index
                                .entries
                                .iter()
                                .zip(ends)
                                .map(|((_, d), end)| DynamicEntry {
                                    end,
                                    digest: parse_digest_hex(d).unwrap(),
                                })
                                .collect(),
                        }
                        .to_bytes()
                    }
                };
                let key = layout::snapshot_file_key(&ns, dir, &index.name).unwrap();
                put(key, Bytes::from(bytes)).await;
            }
            _ => {}
        }
    }
    snapshots
}

/// The remote namespace the recorded push wrote into.
const PUSH_TARGET_NS: &str = "corpus-s4-push";

/// One recorded push run replayed against our push job on `store`: (requests matched, the
/// job's summary). Panics at the first request that differs from the recorded one.
async fn replay_push(
    store: &Arc<Datastore>,
    expected: Vec<Exchange>,
    secret: &std::path::Path,
    remove_vanished: bool,
    max_depth: usize,
) -> (usize, push::PushSummary) {
    let replay = Replay::new(&expected);
    let (port, fingerprint) = serve(replay.clone()).await;
    let params = SyncParams {
        remove_vanished,
        ..corpus_job(
            Direction::Push,
            (port, fingerprint, secret.to_path_buf()),
            PUSH_TARGET_NS,
            "",
            max_depth,
        )
    };
    let (log, lines) = log_sink();
    let summary = push::run(store.clone(), params, log, Arc::new(|| false))
        .await
        .expect("the job runs to its end");
    let log = lines.lock().unwrap().clone();
    let seen = replay.seen.lock().unwrap().clone();
    for s in &seen {
        println!("ours {:<70} recorded {}", s.ours, s.recorded);
        if let Some(reason) = s.allowed {
            println!("  allowed: {reason}");
        }
    }
    for s in &seen {
        assert!(s.verdict.is_ok(), "{s:#?}\n{log:#?}");
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "our client stopped early or went on: {log:#?}"
    );
    assert_eq!(summary.errors, 0, "{summary:?} {log:#?}");
    (seen.len(), summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_push_sends_what_a_pbs_pusher_sends() {
    let scenario = load(&corpus_dir(), "s4-push-sync").expect("corpus s4-push-sync");
    let run = |n: &str| -> Vec<Exchange> {
        scenario
            .in_order()
            .into_iter()
            .filter(|e| e.cmd.contains(&format!("run {n} ")))
            .cloned()
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("remote.secret");
    std::fs::write(&secret, "corpus-password\n").unwrap();
    let root = dir.path().join("store1");
    let open = || async {
        let backend = Arc::new(LocalBackend::open(&root).unwrap());
        let store = Datastore::open("store1", backend.clone()).await.unwrap();
        (backend, store)
    };

    // Run 1: 4 snapshots of 2 groups (one client-encrypted) into a namespace new there.
    let (backend, store) = open().await;
    assert_eq!(source_from_recording(&backend, &run("1")).await, 4);
    let (matched, summary) = replay_push(&store, run("1"), &secret, false, 0).await;
    assert_eq!(summary.snapshots_pushed, 4, "{summary:?}");
    println!("run 1: {matched} exchanges matched");
    store.close().await.unwrap();

    // Run 2, remove-vanished: the source forgot T0 and T0+1h (protected on the target, so
    // kept there without a request) and the encrypted group, and has a new snapshot.
    let (backend, _) = (LocalBackend::open(&root).unwrap(), ());
    for key in [
        "host/corpus-s4-push/2025-01-01T00:00:00Z/",
        "host/corpus-s4-push/2025-01-01T01:00:00Z/",
        "host/corpus-s4-push-enc/",
    ] {
        assert!(backend.delete_prefix(key).await.unwrap() > 0, "{key}");
    }
    assert_eq!(source_from_recording(&backend, &run("2")).await, 1);
    let (_, store) = open().await;
    let (matched, summary) = replay_push(&store, run("2"), &secret, true, 0).await;
    assert_eq!(
        (
            summary.snapshots_pushed,
            summary.removed_snapshots,
            summary.kept_snapshots
        ),
        (1, 1, 1),
        "{summary:?}"
    );
    assert_eq!(summary.removed_groups, 1, "{summary:?}");
    println!("run 2: {matched} exchanges matched");
    store.close().await.unwrap();

    // Run 3, max-depth 1: a child namespace new on the source, a stale one on the target.
    let backend = LocalBackend::open(&root).unwrap();
    assert_eq!(source_from_recording(&backend, &run("3")).await, 1);
    let (_, store) = open().await;
    let (matched, summary) = replay_push(&store, run("3"), &secret, true, 1).await;
    assert_eq!(
        (summary.snapshots_pushed, summary.removed_namespaces),
        (1, 1),
        "{summary:?}"
    );
    println!("run 3: {matched} exchanges matched");
    store.close().await.unwrap();
}
