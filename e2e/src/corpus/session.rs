//! HTTP/2 exchanges inside backup and reader sessions: writer ids as our server assigns
//! them, stand-in chunks and blobs for the recorded uploads, index checksums recomputed from
//! the appended entries, manifests rewritten with our checksums, and the binary answers
//! (indexes, blobs, chunks, manifests) compared with what the recording and our uploads say.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde_json::{json, Value};

use super::compare::{compare_body, Cmp, Diff};
use super::h2replay::{H2Conn, ServerOpening};
use super::http1::{Prefixed, Tls};
use super::load::{BinarySummary, Body, Exchange, MetaConn, Scenario};
use super::manifest::{manifest_payload, rewrite_manifest};
use super::subst::{query_pairs, SnapRef, Vars};
use super::synth::{base64_decode, kind_of_magic, magic_name, ChunkSpec, Synth};
use super::ReplayError;
use crate::wire::{self, BlobKind, Digest};

/// An open writer (`*_index` POST) of a backup session.
#[derive(Debug, Default)]
struct Writer {
    fixed: bool,
    /// Appended entries by start offset: (plain size, our digest).
    entries: BTreeMap<u64, (u64, Digest)>,
}

impl Writer {
    /// The index checksum the client sends with `*_close`: SHA-256 over the digests (fixed)
    /// or over `end offset (LE u64) || digest` per entry (dynamic), in offset order.
    fn csum(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for (start, (size, digest)) in &self.entries {
            if !self.fixed {
                ctx.update(&(start + size).to_le_bytes());
            }
            ctx.update(digest);
        }
        wire::hex(ctx.finish().as_ref())
    }
}

/// One upgraded connection.
pub struct Session {
    h2: H2Conn,
    snap: Option<SnapRef>,
    /// Recorded wid → ours.
    wids: HashMap<u64, u64>,
    writers: HashMap<u64, Writer>,
    /// Upgrade result index and connection whose opening SETTINGS are still to be compared.
    opening_for: Option<(usize, u32)>,
}

impl Session {
    /// HTTP/2 handshake on the upgraded stream. The server's opening SETTINGS are compared
    /// after the first answer on the session (then all opening frames have arrived); the
    /// differences go to the upgrade exchange `index`.
    pub(super) async fn open(
        ex: &Exchange,
        io: Prefixed<Tls>,
        index: usize,
    ) -> Result<Session, ReplayError> {
        let h2 = H2Conn::handshake(io).await?;
        let target = &ex.request.target;
        Ok(Session {
            h2,
            snap: SnapRef::from_query(&query_pairs(target)),
            wids: HashMap::new(),
            writers: HashMap::new(),
            opening_for: Some((index, ex.conn)),
        })
    }
}

/// The server's opening SETTINGS and connection WINDOW_UPDATE against the meta file.
fn opening_diffs(meta: Option<MetaConn>, opening: &ServerOpening) -> Vec<Diff> {
    let mut diffs = Vec::new();
    let Some(meta) = meta else {
        return diffs;
    };
    if let Some(expected) = meta.server_settings {
        let exp: BTreeMap<&str, u64> = expected.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let got: BTreeMap<&str, u64> = opening
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        let names: std::collections::BTreeSet<&str> =
            exp.keys().chain(got.keys()).copied().collect();
        for name in names {
            let (e, g) = (exp.get(name), got.get(name));
            if e != g {
                diffs.push(Diff {
                    what: format!("settings:{name}"),
                    at: format!("SETTINGS {name}"),
                    expected: e.map(u64::to_string).unwrap_or_else(|| "(not sent)".into()),
                    got: g.map(u64::to_string).unwrap_or_else(|| "(not sent)".into()),
                });
            }
        }
    }
    let expected_wu = meta.server_conn_window_updates.first().copied();
    if expected_wu != opening.conn_window_update {
        diffs.push(Diff {
            what: "settings:WINDOW_UPDATE".into(),
            at: "connection WINDOW_UPDATE".into(),
            expected: format!("{expected_wu:?}"),
            got: format!("{:?}", opening.conn_window_update),
        });
    }
    diffs
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub(super) fn not_sent(why: &str) -> Vec<Diff> {
    vec![Diff {
        what: "not-sent".into(),
        at: "request".into(),
        expected: "a session request".into(),
        got: format!("not sent: {why}"),
    }]
}

impl Session {
    /// Sends one recorded exchange on this session, with our writer ids, stand-in uploads
    /// and checksums, and compares the answer.
    pub(super) async fn exchange(
        &mut self,
        ex: &Exchange,
        vars: &mut Vars,
        synth: &mut Synth,
    ) -> Result<Vec<Diff>, ReplayError> {
        let hdr = &ex.request.headers;
        let rec_path = hdr.get(":path").unwrap_or(&ex.request.target).to_string();
        let endpoint = rec_path
            .split('?')
            .next()
            .unwrap_or("")
            .trim_matches('/')
            .to_string();
        let pairs = query_pairs(&rec_path);
        let method = ex.request.method.clone();
        let snap = self.snap.clone().unwrap_or(SnapRef {
            ns: String::new(),
            backup_type: String::new(),
            backup_id: String::new(),
            backup_time: 0,
        });
        let mut body = Bytes::new();
        let mut overrides: HashMap<&str, String> = HashMap::new();
        if let Some(w) = param(&pairs, "wid").and_then(|w| w.parse::<u64>().ok()) {
            match self.wids.get(&w) {
                Some(ours) => {
                    overrides.insert("wid", ours.to_string());
                }
                None => {
                    return Ok(not_sent(&format!(
                        "writer {w} was never opened on our side"
                    )))
                }
            }
        }
        let our_wid = overrides.get("wid").and_then(|w| w.parse::<u64>().ok());
        match (method.as_str(), endpoint.as_str()) {
            ("POST", "dynamic_chunk" | "fixed_chunk") => {
                body = chunk_upload(vars, synth, ex, &pairs)?;
                let recorded = param(&pairs, "digest").unwrap_or("");
                overrides.insert("digest", vars.ours(recorded).to_string());
                overrides.insert("encoded-size", body.len().to_string());
            }
            ("POST", "blob") => {
                let name = param(&pairs, "file-name").unwrap_or("").to_string();
                let bytes = blob_upload(vars, synth, ex, &snap, &name)?;
                overrides.insert("encoded-size", bytes.len().to_string());
                body = Bytes::from(bytes);
            }
            ("PUT", "dynamic_index" | "fixed_index") => {
                let Body::Json(j) = &ex.request.body else {
                    return Err(ReplayError::Synth(format!(
                        "seq {}: append without JSON body",
                        ex.seq
                    )));
                };
                let v = j.to_value();
                let rec_wid = v["wid"].as_u64().unwrap_or(0);
                let Some(wid) = self.wids.get(&rec_wid).copied() else {
                    return Ok(not_sent(&format!(
                        "writer {rec_wid} was never opened on our side"
                    )));
                };
                let digests: Vec<String> = v["digest-list"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                let offsets: Vec<u64> = v["offset-list"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64)
                    .collect();
                let mut ours = Vec::new();
                let writer = self.writers.entry(wid).or_default();
                for (d, off) in digests.iter().zip(&offsets) {
                    let Some(chunk) = synth.known(d) else {
                        return Ok(vec![Diff {
                            what: "harness:unknown-digest".into(),
                            at: "digest-list".into(),
                            expected: "a chunk the replay uploaded or read before".into(),
                            got: d.clone(),
                        }]);
                    };
                    writer.entries.insert(*off, (chunk.size, chunk.digest));
                    ours.push(chunk.hex.clone());
                }
                // same key order as the client (serde_json: sorted)
                let out = json!({"digest-list": ours, "offset-list": offsets, "wid": wid});
                body = Bytes::from(out.to_string());
            }
            ("POST", "dynamic_close" | "fixed_close") => {
                if let Some(w) = our_wid.and_then(|w| self.writers.get(&w)) {
                    let ours = w.csum();
                    if let Some(rec) = param(&pairs, "csum") {
                        vars.learn(rec, &ours);
                    }
                    overrides.insert("csum", ours);
                }
            }
            ("GET", "chunk") => {
                if let Some(d) = param(&pairs, "digest") {
                    overrides.insert("digest", vars.ours(d).to_string());
                }
            }
            _ => {}
        }
        let path = vars.target(&rec_path, &|k, _| overrides.get(k).cloned());
        let scheme = hdr.get(":scheme").unwrap_or("https");
        let authority = hdr.get(":authority").unwrap_or("localhost:8007");
        let uri = format!("{scheme}://{authority}{path}");
        let headers: Vec<(String, String)> = hdr
            .0
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
            .collect();
        let answer = self.h2.request(&method, &uri, &headers, body).await?;

        // learn from the answer
        let our_json: Option<Value> = serde_json::from_slice(&answer.body).ok();
        if method == "POST" && (endpoint == "dynamic_index" || endpoint == "fixed_index") {
            if let (Body::Json(j), Some(o)) = (&ex.response.body, our_json.as_ref()) {
                if let (Some(theirs), Some(ours)) =
                    (j.to_value()["data"].as_u64(), o["data"].as_u64())
                {
                    self.wids.insert(theirs, ours);
                    self.writers.insert(
                        ours,
                        Writer {
                            fixed: endpoint == "fixed_index",
                            ..Writer::default()
                        },
                    );
                }
            }
        }

        let mut cmp = Cmp::new(vars);
        cmp.status(ex.response.status, answer.status);
        let got_headers: Vec<(String, String)> = answer
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        cmp.headers(&ex.response.headers, &got_headers, None);
        match &ex.response.body {
            Body::Binary(b) if (200..300).contains(&answer.status) => {
                let recorded_digest = (endpoint == "chunk")
                    .then(|| param(&pairs, "digest"))
                    .flatten();
                compare_binary(&mut cmp, synth, b, &answer.body, recorded_digest, &snap.ns);
            }
            Body::Binary(_) => {}
            Body::Json(j) if endpoint.ends_with("_index") && method == "POST" => {
                // the writer id is ours by construction; compare its type only
                let expected = j.to_value();
                let mut exp = expected.clone();
                if let (Some(o), true) = (our_json.as_ref(), expected["data"].is_u64()) {
                    if o["data"].is_u64() {
                        exp["data"] = o["data"].clone();
                    }
                }
                match our_json.as_ref() {
                    Some(o) => cmp.value(&exp, o, "body:", "", None),
                    None => cmp.push(
                        "body:json",
                        "body",
                        exp.to_string(),
                        String::from_utf8_lossy(&answer.body),
                    ),
                }
            }
            _ => compare_body(&mut cmp, ex, &answer.body),
        }
        Ok(cmp.diffs)
    }

    /// The differences of the server's opening SETTINGS, once per session after its first
    /// answer: the index of the upgrade exchange they belong to, and the differences.
    pub(super) async fn opening_diffs(&mut self, sc: &Scenario) -> Option<(usize, Vec<Diff>)> {
        let (index, conn) = self.opening_for.take()?;
        let meta = sc.meta.connections().into_iter().find(|c| c.conn == conn);
        let opening = match self.h2.opening().await {
            Ok(o) => opening_diffs(meta, &o),
            Err(e) => vec![Diff {
                what: "settings:missing".into(),
                at: "SETTINGS".into(),
                expected: "a SETTINGS frame".into(),
                got: e.to_string(),
            }],
        };
        Some((index, opening))
    }
}

/// Our stand-in for an uploaded chunk, and the overrides for its query.
fn chunk_upload(
    vars: &mut Vars,
    synth: &mut Synth,
    ex: &Exchange,
    pairs: &[(String, String)],
) -> Result<Bytes, ReplayError> {
    let recorded = param(pairs, "digest").unwrap_or("").to_string();
    let size: u64 = param(pairs, "size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let Body::Binary(b) = &ex.request.body else {
        return Err(ReplayError::Synth(format!(
            "seq {}: chunk upload without binary body",
            ex.seq
        )));
    };
    let kind = b
        .magic
        .as_deref()
        .and_then(kind_of_magic)
        .unwrap_or(BlobKind::Zstd);
    let ours = synth.chunk(
        &recorded,
        ChunkSpec {
            size,
            kind,
            encoded_hint: b.len,
        },
    )?;
    vars.learn(&recorded, &ours.hex);
    Ok(ours.encoded.clone())
}

/// Our bytes for an uploaded blob.
fn blob_upload(
    vars: &mut Vars,
    synth: &Synth,
    ex: &Exchange,
    snap: &SnapRef,
    name: &str,
) -> Result<Vec<u8>, ReplayError> {
    let Body::Binary(b) = &ex.request.body else {
        return Err(ReplayError::Synth(format!(
            "seq {}: blob upload without binary body",
            ex.seq
        )));
    };
    let kind = b
        .magic
        .as_deref()
        .and_then(kind_of_magic)
        .unwrap_or(BlobKind::Zstd);
    let bytes = if name == "index.json.blob" {
        let payload = manifest_payload(b).ok_or_else(|| {
            ReplayError::Synth(format!("seq {}: manifest upload without payload", ex.seq))
        })?;
        let m = rewrite_manifest(vars, synth, snap, payload, false)?;
        synth.manifest_blob(&m, kind)?
    } else if let Some(b64) = &b.b64 {
        base64_decode(b64)?
    } else {
        synth.blob(&b.sha256, kind, b.len)?
    };
    vars.learn(&b.sha256, &wire::hex(&wire::sha256(&bytes)));
    vars.blob_sizes
        .insert((snap.clone(), name.to_string()), bytes.len() as u64);
    Ok(bytes)
}

/// Compares a binary answer: its kind, and by content what the replay can know: indexes
/// entry by entry (our digests), manifests by their JSON, blobs and chunks by the bytes we
/// uploaded for them.
fn compare_binary(
    cmp: &mut Cmp,
    synth: &Synth,
    rec: &BinarySummary,
    got: &[u8],
    chunk_digest: Option<&str>,
    ns: &str,
) {
    let got_magic = magic_name(got).unwrap_or("(unknown)");
    if rec.magic.as_deref() != Some(got_magic) {
        cmp.push(
            "binary:magic",
            "magic",
            rec.magic.clone().unwrap_or_default(),
            got_magic,
        );
        return;
    }
    let sha = wire::hex(&wire::sha256(got));
    if let Some(idx) = &rec.index {
        compare_index(cmp, idx, got);
        return;
    }
    if let Some(payload) = manifest_payload(rec) {
        match wire::decode_plain_blob(got, wire::MAX_BLOB)
            .ok()
            .and_then(|j| serde_json::from_slice::<Value>(&j).ok())
        {
            Some(ours) => {
                let mut expected = cmp.vars.translate(payload);
                let snap = SnapRef {
                    ns: ns.to_string(),
                    backup_type: payload["backup-type"].as_str().unwrap_or("").to_string(),
                    backup_id: payload["backup-id"].as_str().unwrap_or("").to_string(),
                    backup_time: payload["backup-time"].as_i64().unwrap_or(0),
                };
                for f in expected["files"].as_array_mut().into_iter().flatten() {
                    let name = f["filename"].as_str().unwrap_or("").to_string();
                    if let Some(size) = cmp.vars.blob_sizes.get(&(snap.clone(), name)) {
                        f["size"] = json!(size);
                    }
                }
                cmp.value(&expected, &ours, "binary:manifest:", "manifest", None);
            }
            None => cmp.push(
                "binary:manifest",
                "manifest",
                "a JSON manifest blob",
                "undecodable",
            ),
        }
        return;
    }
    if let Some(d) = chunk_digest {
        match synth.known(d) {
            Some(c) if wire::hex(&wire::sha256(&c.encoded)) == sha => {}
            Some(c) => cmp.push(
                "binary:sha256",
                "chunk",
                format!("the {} bytes uploaded", c.encoded.len()),
                format!("{} other bytes", got.len()),
            ),
            None => cmp.push(
                "harness:unknown-digest",
                "chunk",
                "a chunk the replay created",
                d,
            ),
        }
        return;
    }
    let expected = cmp.vars.ours(&rec.sha256).to_string();
    if expected != sha {
        cmp.push(
            "binary:sha256",
            "blob",
            format!("{expected} ({} bytes recorded)", rec.len),
            format!("{sha} ({} bytes)", got.len()),
        );
    }
}

fn compare_index(cmp: &mut Cmp, rec: &super::load::IndexSummary, got: &[u8]) {
    let fixed = rec.is_fixed();
    let parsed = match wire::parse_index(if fixed { "x.fidx" } else { "x.didx" }, got) {
        Ok(p) => p,
        Err(e) => {
            cmp.push("binary:index", "index", "a valid index", e.to_string());
            return;
        }
    };
    let uuid = wire::hex(&got[8..24]);
    let ctime = i64::from_le_bytes(got[24..32].try_into().unwrap_or_default());
    let header_csum = wire::hex(&got[32..64]);
    if uuid != rec.uuid {
        cmp.push("binary:index.uuid", "index uuid", rec.uuid.clone(), uuid);
    }
    if ctime != rec.ctime {
        cmp.push(
            "binary:index.ctime",
            "index ctime",
            rec.ctime.to_string(),
            ctime.to_string(),
        );
    }
    let exp_csum = cmp.vars.ours(&rec.index_csum).to_string();
    if header_csum != exp_csum {
        cmp.push(
            "binary:index.csum",
            "index csum",
            exp_csum,
            header_csum.clone(),
        );
    }
    if wire::hex(&parsed.csum) != header_csum {
        cmp.push(
            "binary:index.csum",
            "index csum vs entries",
            header_csum,
            wire::hex(&parsed.csum),
        );
    }
    if fixed {
        if rec.size != Some(parsed.size) {
            cmp.push(
                "binary:index.size",
                "index size",
                format!("{:?}", rec.size),
                parsed.size.to_string(),
            );
        }
        let cs = u64::from_le_bytes(got[72..80].try_into().unwrap_or_default());
        if rec.chunk_size != Some(cs) {
            cmp.push(
                "binary:index.chunk_size",
                "index chunk size",
                format!("{:?}", rec.chunk_size),
                cs.to_string(),
            );
        }
    }
    let entries = rec.entries();
    if entries.len() != parsed.chunks.len() {
        cmp.push(
            "binary:index.entries",
            "index entries",
            entries.len().to_string(),
            parsed.chunks.len().to_string(),
        );
        return;
    }
    for (i, ((end, digest), (ours, start, len))) in entries.iter().zip(&parsed.chunks).enumerate() {
        if *end != start + len {
            cmp.push(
                "binary:index.offset",
                format!("index entry {i}"),
                end.to_string(),
                (start + len).to_string(),
            );
        }
        let expected = cmp.vars.ours(digest).to_string();
        if expected == *digest && !cmp.vars.map.contains_key(digest) {
            cmp.push(
                "harness:unknown-digest",
                format!("index entry {i}"),
                "a chunk the replay created",
                digest.clone(),
            );
        } else if expected != wire::hex(ours) {
            cmp.push(
                "binary:index.digest",
                format!("index entry {i}"),
                expected,
                wire::hex(ours),
            );
        }
    }
}
