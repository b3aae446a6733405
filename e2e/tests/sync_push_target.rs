//! Our server as the target of a PBS 4.2.3 push sync job: the test sends exactly what
//! `proxmox-backup-proxy` 4.2.3 sent to its remote in the corpus recording
//! `/work/shared/pbs/corpus/s4-push-sync.jsonl` (README "What a PBS 4.2.3 push sends" and "The push
//! lock race") and proves the target answers what the pusher relies on:
//!
//! * login, `GET /api2/json/version` (≥ 3.2.11, so the pusher sends `error-on-protected=false`),
//!   `GET …/namespace` without query, `POST …/namespace` without `parent` for a top-level
//!   namespace and with `parent` below (seqs 1–4, 110);
//! * `GET …/groups?ns` with `owner` = the pushing auth-id, `GET …/snapshots?…` (5, 6, 81, 82);
//! * backup sessions opened with `benchmark=false&debug=false&ns`, no `previous_backup_time`,
//!   blob + fixed index + dynamic index, `finish`, and the next session opened on a new
//!   connection while the finished one is still open (7–24; the lock race of
//!   s4-push-sync-lock-race 24 must not happen);
//! * the second snapshot reuses: `GET previous` of the manifest and of each index, `PUT
//!   fixed_index` listing a digest it never uploads in this session (25–35), `client.log.blob`
//!   double-wrapped (42), manifest with `signature` and `unprotected.notes` (43), shown as
//!   `comment` (82);
//! * the owner rule: a group of another user is listed with that owner and a backup session of the
//!   pusher into it is refused;
//! * remove-vanished: `DELETE …/snapshots` (103), `DELETE …/groups` (104) and `DELETE
//!   …/namespace?delete-groups=true` (117): protected and retention-locked snapshots are refused
//!   by default and, with the `error-on-protected=false` the 4.2 pusher sends, kept and counted
//!   in the stats object `{"removed-groups","protected-snapshots","removed-snapshots"}`;
//! * every snapshot not deliberately deleted restores byte-identically.
//!
//! The pushing user has `DatastoreAdmin` on the datastore: creating and removing namespaces needs
//! `Datastore.Modify` on the parent (protocol.md §6.1), and seeing other users' groups with their
//! owner (what the pusher's owner rule reads) needs `Datastore.Audit`; `DatastoreBackup` alone
//! would list only the pusher's own groups.

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use pbs_cloud_e2e::wire::{self, BlobKind, Manifest};
use pbs_cloud_e2e::{
    BackupParams, BackupSession, ClientError, CryptConfig, PbsClient, ReaderParams, ReaderSession,
    TestServer, UploadOptions,
};
use serde_json::{json, Value};

const NS: &str = "push-target";
const CHILD: &str = "push-target/child";
const PUSHER: &str = "pusher@pbs";
const OTHER: &str = "other@pbs";
const HOUR: i64 = 3600;
const CHUNK: usize = 4 * 1024 * 1024;

/// The server's config: datastore `store1` (local) with a retention lock on `host/worm` in
/// [`NS`] that outlives the test.
const CONFIG: &str = r#"
[[datastore]]
name = "store1"

[[retention_lock]]
id = "push-worm"
store = "store1"
ns = "push-target"
groups = ["host/worm"]
mode = "compliance"
days = 3650
"#;

/// One source snapshot the pusher copies: the stored bytes of its files.
struct Source {
    ns: &'static str,
    id: &'static str,
    time: i64,
    /// `guest.conf.blob` as stored on the source (compressed blob).
    conf_blob: Vec<u8>,
    /// `disk.img.fidx` content (whole 4 MiB chunks), if the snapshot has one.
    image: Option<Vec<u8>>,
    /// `root.pxar.didx` content: the pusher copies chunks without looking inside, so any byte
    /// stream stands in for the archive.
    stream: Option<Vec<u8>>,
    /// The text of the source's `client.log.blob`.
    log: Option<Vec<u8>>,
    notes: Option<&'static str>,
}

impl Source {
    fn new(ns: &'static str, id: &'static str, time: i64) -> Source {
        Source {
            ns,
            id,
            time,
            conf_blob: wire::encode_plain_blob(
                format!("name: {id}\ntime: {time}\n").as_bytes(),
                true,
            ),
            image: None,
            stream: None,
            log: None,
            notes: None,
        }
    }

    /// `client.log.blob` as the pusher uploads it: an uncompressed blob whose payload is the
    /// source's stored compressed blob (corpus seq 42).
    fn log_upload(&self) -> Option<Vec<u8>> {
        let inner = wire::encode_plain_blob(self.log.as_deref()?, true);
        assert_eq!(
            BlobKind::of(&inner).unwrap(),
            BlobKind::Zstd,
            "inner log blob is compressed"
        );
        let outer = wire::encode_plain_blob(&inner, false);
        assert_eq!(
            BlobKind::of(&outer).unwrap(),
            BlobKind::Plain,
            "outer log blob is uncompressed"
        );
        Some(outer)
    }
}

/// What one pushed snapshot left behind on the pusher's side.
struct Pushed {
    manifest: Manifest,
    /// Fixed chunks uploaded in this session (the rest were reused).
    uploaded_fixed: usize,
    /// The finished session's connection, still open.
    connection: std::sync::Arc<pbs_cloud_e2e::h2session::H2Session>,
}

fn backup_params(store: &str, src: &Source) -> BackupParams {
    let mut p = BackupParams::new(store, "host", src.id, src.time);
    p.ns = Some(src.ns.to_string());
    p.debug = false;
    p
}

/// One backup session exactly as the 4.2.3 pusher runs it (corpus seqs 7–23 and 24–44):
/// no `previous_backup_time`; with a previous snapshot `GET previous` of the manifest and of
/// every index before it is written; the blob, then per index `POST *_index` → chunks → `PUT
/// *_index` → `POST *_close`; the double-wrapped log; the rebuilt manifest; `finish`.
async fn push(client: &PbsClient, store: &str, src: &Source, prev: Option<&Source>) -> Pushed {
    let params = backup_params(store, src);
    let query = params.upgrade_query();
    assert!(
        query.contains("benchmark=false&debug=false&ns="),
        "upgrade query as the pusher sends it: {query}"
    );
    let mut s = BackupSession::start_raw(client, params)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "backup upgrade of {}/{} by the pusher: {e}",
                src.id, src.time
            )
        });
    if let Some(prev) = prev {
        let m =
            Manifest::from_blob(&s.download_previous("index.json.blob").await.unwrap()).unwrap();
        assert_eq!(
            m.backup_time, prev.time,
            "GET previous?archive-name=index.json.blob is the newest snapshot"
        );
    }
    s.upload_blob_raw("guest.conf.blob", src.conf_blob.clone(), "none")
        .await
        .unwrap();

    let mut uploaded_fixed = 0;
    if let Some(image) = &src.image {
        let reusable: Vec<wire::Digest> = match prev {
            Some(_) => {
                let raw = s.download_previous("disk.img.fidx").await.unwrap();
                let idx = wire::parse_index("disk.img.fidx", &raw).unwrap();
                idx.chunks.iter().map(|(d, _, _)| *d).collect()
            }
            None => Vec::new(),
        };
        let h2 = s.h2();
        let wid = h2
            .call(
                Method::POST,
                "fixed_index",
                Some(&json!({"archive-name": "disk.img.fidx", "size": image.len()})),
            )
            .await
            .unwrap()
            .as_u64()
            .expect("fixed_index answers the wid");
        let mut digests = Vec::new();
        for chunk in image.chunks(CHUNK) {
            let (digest, encoded) = s.encode_chunk(chunk).unwrap();
            if !reusable.contains(&digest) {
                let q = json!({"digest": wire::hex(&digest), "encoded-size": encoded.len(), "size": chunk.len(), "wid": wid});
                h2.upload("fixed_chunk", Some(&q), Bytes::from(encoded))
                    .await
                    .unwrap();
                uploaded_fixed += 1;
            }
            digests.push(digest);
        }
        // `PUT fixed_index` lists reused digests too (seq 35).
        let offsets: Vec<usize> = (0..digests.len()).map(|i| i * CHUNK).collect();
        let hexes: Vec<String> = digests.iter().map(|d| wire::hex(d)).collect();
        h2.call_json_body(
            Method::PUT,
            "fixed_index",
            &json!({"digest-list": hexes, "offset-list": offsets, "wid": wid}),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PUT fixed_index with reused digests of {}/{}: {e}",
                src.id, src.time
            )
        });
        let csum = wire::hex(&wire::fixed_csum(&digests));
        let close =
            json!({"chunk-count": digests.len(), "csum": csum, "size": image.len(), "wid": wid});
        h2.call(Method::POST, "fixed_close", Some(&close))
            .await
            .unwrap();
        s.record_archive(
            pbs_cloud_e2e::ArchiveStats {
                name: "disk.img.fidx".into(),
                wid: Some(wid),
                size: image.len() as u64,
                csum,
                used_previous: prev.is_some(),
                chunks: Default::default(),
            },
            "none",
        );
    }
    if let Some(stream) = &src.stream {
        if prev.is_some() {
            s.download_previous("root.pxar.didx").await.unwrap();
        }
        s.upload_dynamic_archive("root.pxar", stream, &UploadOptions::default())
            .await
            .unwrap();
    }
    if let Some(log) = src.log_upload() {
        let q = json!({"encoded-size": log.len(), "file-name": "client.log.blob"});
        s.h2()
            .upload("blob", Some(&q), Bytes::from(log))
            .await
            .unwrap();
    }

    // The manifest the pusher rebuilds: new file list, the source's signature and its whole
    // `unprotected` section (seq 43).
    let mut manifest = s.build_manifest().unwrap();
    manifest.signature =
        Some(CryptConfig::new([7; 32]).hmac_hex(&manifest.canonical_signed_part().unwrap()));
    manifest.unprotected = json!({"chunk_upload_stats": {"compressed_size": 1, "count": 1, "duplicates": 0, "size": 1}});
    if let Some(notes) = src.notes {
        manifest.unprotected["notes"] = notes.into();
    }
    let blob = manifest.to_blob().unwrap();
    let q = json!({"encoded-size": blob.len(), "file-name": "index.json.blob"});
    s.h2()
        .upload("blob", Some(&q), Bytes::from(blob))
        .await
        .unwrap();
    s.h2().call(Method::POST, "finish", None).await.unwrap();
    Pushed {
        manifest,
        uploaded_fixed,
        connection: s.h2_shared(),
    }
}

/// Restores every file of a pushed snapshot and compares it with the source bytes.
async fn assert_restores(client: &PbsClient, store: &str, src: &Source, manifest: &Manifest) {
    let mut params = ReaderParams::new(store, "host", src.id, src.time);
    params.ns = Some(src.ns.to_string());
    let r = ReaderSession::open(client, params, None).await.unwrap();
    let what = format!("{}/host/{}/{}", src.ns, src.id, src.time);
    let stored = r.manifest().await.unwrap();
    assert_eq!(
        stored.files, manifest.files,
        "{what}: manifest file list as pushed"
    );
    assert_eq!(
        stored.signature, manifest.signature,
        "{what}: the source's signature is kept"
    );
    assert_eq!(
        stored.unprotected.get("notes"),
        manifest.unprotected.get("notes"),
        "{what}: notes kept"
    );
    assert_eq!(
        r.download("guest.conf.blob").await.unwrap(),
        src.conf_blob,
        "{what}: guest.conf.blob bytes"
    );
    if let Some(image) = &src.image {
        assert!(
            r.restore_archive("disk.img").await.unwrap() == *image,
            "{what}: disk.img differs"
        );
    }
    if let Some(stream) = &src.stream {
        assert!(
            r.restore_archive("root.pxar").await.unwrap() == *stream,
            "{what}: root.pxar differs"
        );
    }
    if let Some(log) = src.log_upload() {
        let got = r.download("client.log.blob").await.unwrap();
        assert_eq!(
            got, log,
            "{what}: client.log.blob is stored as uploaded (double-wrapped)"
        );
        let inner = wire::decode_plain_blob(&got, wire::MAX_BLOB).unwrap();
        assert_eq!(
            wire::decode_plain_blob(&inner, wire::MAX_BLOB).unwrap(),
            src.log.clone().unwrap()
        );
    }
}

fn snap(src: &Source) -> Value {
    json!({"backup-id": src.id, "backup-time": src.time, "backup-type": "host", "ns": src.ns})
}

async fn times(client: &PbsClient, store: &str, ns: &str, id: &str) -> Vec<i64> {
    let mut t: Vec<i64> = snapshots(client, store, Some(ns), id)
        .await
        .iter()
        .map(|s| s["backup-time"].as_i64().unwrap())
        .collect();
    t.sort();
    t
}

async fn namespaces(client: &PbsClient, store: &str) -> Vec<String> {
    let listed = client
        .get(&format!("admin/datastore/{store}/namespace"), None)
        .await
        .unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["ns"].as_str().unwrap().to_string())
        .collect()
}

#[track_caller]
fn assert_refused(what: &str, err: ClientError, needle: &str) {
    assert_eq!(
        err.status(),
        Some(400),
        "{what}: expected a 400 refusal, got {err}"
    );
    assert!(
        err.body().unwrap_or_default().contains(needle),
        "{what}: message lacks '{needle}': {err}"
    );
}

async fn start() -> TestServer {
    let mut server = TestServer::prepare().unwrap();
    server.set_config(CONFIG).unwrap();
    server.launch().await.unwrap();
    server.stop().await;
    for (user, role) in [(PUSHER, "DatastoreAdmin"), (OTHER, "DatastoreBackup")] {
        server
            .manage(&["user", "add", user], "push-pass\n")
            .unwrap();
        server
            .manage(&["acl", "add", "/datastore/store1", user, role], "")
            .unwrap();
    }
    server.launch().await.unwrap();
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbs_push_sync_job_against_our_server() {
    let server = start().await;
    let store = server.store().to_string();
    let admin = server.admin_client().await.unwrap();
    let ds = format!("admin/datastore/{store}");

    // 1. login (`POST //api2/json/access/ticket`, JSON body) and version (seqs 1, 2)
    let pusher = server.client().await.unwrap();
    let ticket = pusher.login(PUSHER, "push-pass").await.unwrap();
    assert_eq!(
        ticket.username, PUSHER,
        "ticket login of the remote's auth-id"
    );
    let version = pusher.get("version", None).await.unwrap();
    let v: Vec<u64> = format!(
        "{}.{}",
        version["version"].as_str().unwrap(),
        version["release"].as_str().unwrap()
    )
    .split('.')
    .map(|p| p.parse().unwrap())
    .collect();
    assert!(
        v >= vec![3, 2, 11],
        "version {version}: the pusher sends error-on-protected from 3.2.11 on"
    );

    // 2. namespaces: list without query, create top-level without `parent`, child with it (3, 4, 110)
    assert_eq!(
        namespaces(&pusher, &store).await,
        vec![""],
        "fresh datastore: only the root namespace"
    );
    let created = pusher
        .post(&format!("{ds}/namespace"), Some(&json!({"name": NS})))
        .await
        .unwrap();
    assert_eq!(
        created, NS,
        "POST namespace without parent creates a top-level namespace"
    );
    let created = pusher
        .post(
            &format!("{ds}/namespace"),
            Some(&json!({"name": "child", "parent": NS})),
        )
        .await
        .unwrap();
    assert_eq!(created, CHILD, "POST namespace with parent");
    assert_eq!(
        namespaces(&pusher, &store).await,
        vec!["", NS, CHILD],
        "GET namespace lists all"
    );

    // 3. listings of the empty target (5, 6)
    let groups = pusher
        .get(&format!("{ds}/groups"), Some(&json!({"ns": NS})))
        .await
        .unwrap();
    assert_eq!(groups, json!([]), "no groups in the new namespace");
    assert!(
        snapshots(&pusher, &store, Some(NS), "push")
            .await
            .is_empty(),
        "no snapshots yet"
    );

    // 4. two snapshots back to back; the second opens while the first's connection is still up
    let mut s0 = Source::new(NS, "push", T0);
    let head = random_bytes(4101, CHUNK);
    s0.image = Some([head.clone(), random_bytes(4102, CHUNK)].concat());
    s0.stream = Some(random_bytes(4103, 300_000));
    let p0 = push(&pusher, &store, &s0, None).await;
    assert_eq!(
        p0.uploaded_fixed, 2,
        "first snapshot uploads both image chunks"
    );
    let mut s1 = Source::new(NS, "push", T0 + HOUR);
    s1.image = Some([head.clone(), random_bytes(4104, CHUNK)].concat());
    s1.stream = Some(random_bytes(4105, 310_000));
    s1.log = Some(b"upload log of the source snapshot\n".repeat(20));
    s1.notes = Some("pushed note: a&b");
    // Opening this session fails with "unable to acquire lock" unless finish released the group
    // lock (corpus s4-push-sync-lock-race 24).
    let p1 = push(&pusher, &store, &s1, Some(&s0)).await;
    assert_eq!(
        p1.uploaded_fixed, 1,
        "the unchanged image chunk is reused, not uploaded again"
    );
    drop((p0.connection, p1.connection));

    let groups = pusher
        .get(&format!("{ds}/groups"), Some(&json!({"ns": NS})))
        .await
        .unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups}");
    assert_eq!(
        groups[0]["owner"], PUSHER,
        "group list carries the pushing auth-id as owner: {groups}"
    );
    assert_eq!(groups[0]["backup-count"], 2, "{groups}");
    let listed = snapshots(&pusher, &store, Some(NS), "push").await;
    let second = listed
        .iter()
        .find(|s| s["backup-time"] == T0 + HOUR)
        .expect("T0+1h listed");
    assert_eq!(
        second["comment"], "pushed note: a&b",
        "manifest notes shown as comment: {second}"
    );
    let files = second["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|f| *f == json!({"filename": "client.log.blob"})),
        "client.log.blob listed by name only: {files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f["filename"] == "index.json.blob" && f["crypt-mode"] == "sign-only"),
        "a signed manifest is listed as sign-only: {files:?}"
    );
    assert_restores(&pusher, &store, &s0, &p0.manifest).await;
    assert_restores(&pusher, &store, &s1, &p1.manifest).await;

    // 5. owner rule: a group of another user in the target
    let other = server.client().await.unwrap();
    other.login(OTHER, "push-pass").await.unwrap();
    let foreign = Source::new(NS, "foreign", T0);
    let foreign_pushed = push(&other, &store, &foreign, None).await;
    drop(foreign_pushed.connection);
    let groups = pusher
        .get(&format!("{ds}/groups"), Some(&json!({"ns": NS})))
        .await
        .unwrap();
    let entry = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["backup-id"] == "foreign")
        .expect("foreign group listed");
    assert_eq!(
        entry["owner"], OTHER,
        "the group list names the other owner: {entry}"
    );
    let intruder = Source::new(NS, "foreign", T0 + HOUR);
    let err = BackupSession::start_raw(&pusher, backup_params(&store, &intruder))
        .await
        .err()
        .expect("backup into a foreign group must be refused");
    assert_refused(
        "backup session into another user's group",
        err,
        &format!("backup owner check failed ({PUSHER} != {OTHER})"),
    );
    assert_eq!(
        times(&admin, &store, NS, "foreign").await,
        vec![T0],
        "the refused session left nothing"
    );

    // 6a. remove-vanished of an unprotected snapshot (seq 103)
    let removed = pusher
        .delete(&format!("{ds}/snapshots"), Some(&snap(&s0)))
        .await
        .unwrap();
    assert_eq!(removed, Value::Null, "DELETE snapshots answers null");
    assert_eq!(
        times(&pusher, &store, NS, "push").await,
        vec![T0 + HOUR],
        "T0 removed"
    );

    // 6b. a protected snapshot (set by the target's admin, as in the corpus driver) is refused
    let mut prot = snap(&s1);
    prot["protected"] = "1".into();
    admin
        .call_form_body(Method::PUT, &format!("{ds}/protected"), &prot)
        .await
        .unwrap();
    let err = pusher
        .delete(&format!("{ds}/snapshots"), Some(&snap(&s1)))
        .await
        .unwrap_err();
    assert_refused(
        "DELETE of a protected snapshot",
        err,
        "cannot remove protected snapshot",
    );
    assert_eq!(
        times(&pusher, &store, NS, "push").await,
        vec![T0 + HOUR],
        "protected snapshot survives"
    );

    // 6c. group removal (seq 104): default error-on-protected refuses after removing the
    // unprotected snapshots (PBS's delete_group does the same); `false` answers the stats
    let mut s2 = Source::new(NS, "push", T0 + 2 * HOUR);
    s2.image = Some([head.clone(), random_bytes(4106, CHUNK)].concat());
    drop(push(&pusher, &store, &s2, Some(&s1)).await.connection);
    let group = json!({"backup-id": "push", "backup-type": "host", "ns": NS});
    let err = pusher
        .delete(&format!("{ds}/groups"), Some(&group))
        .await
        .unwrap_err();
    assert_refused("DELETE groups with a protected snapshot", err, "protected");
    assert_eq!(
        times(&pusher, &store, NS, "push").await,
        vec![T0 + HOUR],
        "only the protected snapshot is left"
    );
    let s3 = Source::new(NS, "push", T0 + 3 * HOUR);
    drop(push(&pusher, &store, &s3, Some(&s1)).await.connection);
    let mut lenient = group.clone();
    lenient["error-on-protected"] = false.into();
    let stats = pusher
        .delete(&format!("{ds}/groups"), Some(&lenient))
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({"removed-groups": 0, "protected-snapshots": 1, "removed-snapshots": 1}),
        "DELETE groups error-on-protected=false answers the 4.2 stats object"
    );
    assert_eq!(
        times(&pusher, &store, NS, "push").await,
        vec![T0 + HOUR],
        "protected snapshot kept"
    );

    // 6d. namespace removal (seq 117) with a protected snapshot inside
    let kept = Source::new(CHILD, "child", T0);
    let kept_pushed = push(&pusher, &store, &kept, None).await;
    let gone = Source::new(CHILD, "child-b", T0);
    drop(push(&pusher, &store, &gone, None).await.connection);
    let mut prot = snap(&kept);
    prot["protected"] = "1".into();
    admin
        .call_form_body(Method::PUT, &format!("{ds}/protected"), &prot)
        .await
        .unwrap();
    let ns_del = json!({"delete-groups": true, "ns": CHILD});
    let err = pusher
        .delete(&format!("{ds}/namespace"), Some(&ns_del))
        .await
        .unwrap_err();
    assert_refused(
        "DELETE namespace (default error-on-protected)",
        err,
        "protected",
    );
    assert_eq!(
        times(&pusher, &store, CHILD, "child").await,
        vec![T0],
        "protected snapshot survives"
    );
    assert!(
        times(&pusher, &store, CHILD, "child-b").await.is_empty(),
        "unprotected group removed"
    );
    let mut ns_lenient = ns_del.clone();
    ns_lenient["error-on-protected"] = false.into();
    let stats = pusher
        .delete(&format!("{ds}/namespace"), Some(&ns_lenient))
        .await
        .unwrap();
    assert_eq!(stats["protected-snapshots"], 1, "{stats}");
    assert_eq!(stats["removed-groups"], 0, "{stats}");
    assert_eq!(stats["removed-snapshots"], 0, "{stats}");
    assert!(
        namespaces(&pusher, &store)
            .await
            .contains(&CHILD.to_string()),
        "namespace with a protected snapshot stays"
    );
    assert_eq!(
        times(&pusher, &store, CHILD, "child").await,
        vec![T0],
        "protected snapshot survives"
    );

    // 6e. a retention-locked snapshot (`[[retention_lock]]` on the local backend, enforced by
    // the server) cannot be removed by snapshot or group removal
    let worm = Source::new(NS, "worm", T0);
    let worm_pushed = push(&pusher, &store, &worm, None).await;
    let err = pusher
        .delete(&format!("{ds}/snapshots"), Some(&snap(&worm)))
        .await
        .unwrap_err();
    assert_refused(
        "DELETE of a retention-locked snapshot",
        err,
        "retention-locked",
    );
    let worm_group = json!({"backup-id": "worm", "backup-type": "host", "ns": NS});
    let err = pusher
        .delete(&format!("{ds}/groups"), Some(&worm_group))
        .await
        .unwrap_err();
    assert_refused(
        "DELETE groups of a retention-locked snapshot",
        err,
        "1 of group 'host/worm' kept",
    );
    // what the 4.2 pusher sends: the locked snapshot is kept and counted like a protected one
    let mut worm_lenient = worm_group.clone();
    worm_lenient["error-on-protected"] = false.into();
    let stats = pusher
        .delete(&format!("{ds}/groups"), Some(&worm_lenient))
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({"removed-groups": 0, "protected-snapshots": 1, "removed-snapshots": 0}),
        "a retention-locked snapshot is kept and reported"
    );
    assert_eq!(
        times(&pusher, &store, NS, "worm").await,
        vec![T0],
        "locked snapshot survives"
    );

    // The group lock that step 4 relied on being released at finish does exist while a session
    // is open: a second session on the same group is refused until then.
    let open = Source::new(NS, "push", T0 + 5 * HOUR);
    let running = BackupSession::start_raw(&pusher, backup_params(&store, &open))
        .await
        .unwrap();
    let queued = Source::new(NS, "push", T0 + 6 * HOUR);
    let err = BackupSession::start_raw(&pusher, backup_params(&store, &queued))
        .await
        .err()
        .expect("a second session while one is open must be refused");
    assert_refused(
        "concurrent session on one group",
        err,
        "unable to acquire backup group lock",
    );
    running.abort();

    // 7. everything not deliberately deleted restores byte-identically
    assert_restores(&pusher, &store, &s1, &p1.manifest).await;
    assert_restores(&admin, &store, &foreign, &foreign_pushed.manifest).await;
    assert_restores(&pusher, &store, &kept, &kept_pushed.manifest).await;
    assert_restores(&pusher, &store, &worm, &worm_pushed.manifest).await;
}
