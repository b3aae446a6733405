//! The recorded wire corpus (`e2e/corpus/`): one JSON Lines file per scenario (one line per
//! exchange) plus a `.meta.json` sidecar. Loading checks the line schema strictly, so a file
//! that does not follow it fails instead of being replayed half.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::ojson::OJson;

/// Errors of loading or validating a corpus file.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {source}")]
    Json {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Schema { path: PathBuf, message: String },
}

/// Header list in recorded order and spelling; a repeated name holds several values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(pub Vec<(String, Vec<String>)>);

impl Headers {
    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first().map(String::as_str))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Names in order (pseudo-headers included).
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of header names to a value or a list of values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum One {
                    Single(String),
                    Many(Vec<String>),
                }
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, One>()? {
                    let values = match v {
                        One::Single(s) => vec![s],
                        One::Many(l) => l,
                    };
                    out.push((k, values));
                }
                Ok(Headers(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyKind {
    Empty,
    Json,
    Text,
    Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Layer {
    #[serde(rename = "http1")]
    Http1,
    #[serde(rename = "h2")]
    H2,
}

/// Summary of a binary body (the corpus does not store chunk data).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinarySummary {
    pub len: u64,
    pub sha256: String,
    pub head_b64: String,
    pub magic: Option<String>,
    /// All bytes (manifests and config blobs below 16 KiB).
    pub b64: Option<String>,
    pub blob_name: Option<String>,
    /// Recorder's decoding of such a blob (not wire data).
    pub decoded: Option<Value>,
    /// Recorder's parse of a downloaded index (not wire data).
    pub index: Option<IndexSummary>,
}

/// A parsed `.fidx`/`.didx` header and entries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSummary {
    pub magic: String,
    pub uuid: String,
    pub ctime: i64,
    pub index_csum: String,
    pub entries: usize,
    pub csum_recomputed: String,
    pub size: Option<u64>,
    pub chunk_size: Option<u64>,
    pub digests: Option<Vec<String>>,
    pub end_offset_and_digest: Option<Vec<(u64, String)>>,
}

impl IndexSummary {
    /// `(end offset, digest)` per entry; fixed indexes get ends from the chunk size.
    pub fn entries(&self) -> Vec<(u64, String)> {
        if let Some(e) = &self.end_offset_and_digest {
            return e.clone();
        }
        let (size, cs) = (self.size.unwrap_or(0), self.chunk_size.unwrap_or(1));
        self.digests
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, d)| (((i as u64 + 1) * cs).min(size), d.clone()))
            .collect()
    }

    pub fn is_fixed(&self) -> bool {
        self.magic == "fixed-index"
    }
}

/// A recorded body in its typed form.
#[derive(Debug, Clone)]
pub enum Body {
    Empty,
    Json(OJson),
    Text(String),
    Binary(Box<BinarySummary>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    method: Option<String>,
    target: Option<String>,
    status: Option<u16>,
    reason: Option<String>,
    version: Option<String>,
    headers: Headers,
    body_kind: BodyKind,
    body_len: u64,
    body: OJson,
    trailers: Option<Value>,
    incomplete: Option<bool>,
}

/// One request as recorded.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// HTTP/1.1: the raw request target; HTTP/2: the `:path` value.
    pub target: String,
    pub headers: Headers,
    pub body_len: u64,
    pub body: Body,
}

/// One response as recorded.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body_len: u64,
    pub body: Body,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExchange {
    seq: u32,
    conn: u32,
    layer: Layer,
    stream: Option<u32>,
    order: u32,
    cmd: String,
    request: RawMessage,
    response: Option<RawMessage>,
    interim_responses: Option<Value>,
    rst_stream: Option<Value>,
    note: Option<String>,
}

/// One request/response pair of a scenario file.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Order of completion within the file.
    pub seq: u32,
    /// Connection number (accept order).
    pub conn: u32,
    pub layer: Layer,
    pub stream: Option<u32>,
    /// Order in which the request head was seen.
    pub order: u32,
    /// The client command that opened the connection.
    pub cmd: String,
    pub request: Request,
    pub response: Response,
}

impl Exchange {
    /// `METHOD target`, for messages.
    pub fn request_line(&self) -> String {
        format!("{} {}", self.request.method, self.request.target)
    }

    /// True when the request was made by python's `http.client` (recorder setup and REST
    /// calls), not by a Proxmox client.
    pub fn by_python(&self) -> bool {
        self.cmd.contains("python http.client")
    }
}

/// Meta sidecar: the parts the replay reads (the rest is kept as JSON).
#[derive(Debug, Clone)]
pub struct Meta {
    pub raw: Value,
}

/// One connection as the meta file describes it.
#[derive(Debug, Clone)]
pub struct MetaConn {
    pub conn: u32,
    /// SETTINGS values the server sent first (HTTP/2 sessions only).
    pub server_settings: Option<Vec<(String, u64)>>,
    /// Connection-level WINDOW_UPDATE increments the server sent.
    pub server_conn_window_updates: Vec<u64>,
    /// Seq after which the client closed the connection.
    pub closed_after_seq: Option<u32>,
}

impl Meta {
    /// `server` field: the PBS version that answered.
    pub fn server(&self) -> &str {
        self.raw["server"].as_str().unwrap_or("")
    }

    pub fn connections(&self) -> Vec<MetaConn> {
        let mut out = Vec::new();
        for c in self.raw["connections"].as_array().into_iter().flatten() {
            let h2 = &c["h2"];
            let server_settings = h2["settings"].as_array().and_then(|list| {
                list.iter()
                    .find(|s| s["from"] == "server" && s["ack"] == false)
                    .map(|s| {
                        s["values"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                            .collect()
                    })
            });
            let server_conn_window_updates = h2["window_updates"]["s2c"]["conn"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .collect();
            let closed_after_seq = c["close"]["order"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["dir"] == "c2s")
                .and_then(|o| o["after_seq"].as_u64())
                .map(|s| s as u32);
            out.push(MetaConn {
                conn: c["conn"].as_u64().unwrap_or(0) as u32,
                server_settings,
                server_conn_window_updates,
                closed_after_seq,
            });
        }
        out
    }
}

/// A scenario file and its meta data.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// File stem, e.g. `c4-basic-info`.
    pub name: String,
    pub exchanges: Vec<Exchange>,
    pub meta: Meta,
}

impl Scenario {
    /// Exchanges in request-head order (the order of replay).
    pub fn in_order(&self) -> Vec<&Exchange> {
        let mut v: Vec<&Exchange> = self.exchanges.iter().collect();
        v.sort_by_key(|e| e.order);
        v
    }

    /// Which PBS release answered (3.2.4 or 4.2.3).
    pub fn server_is_pbs3(&self) -> bool {
        self.meta.server().contains("3.2")
    }
}

/// `e2e/corpus` of this checkout.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Stems of every `*.jsonl` in `dir`, sorted.
pub fn scenario_names(dir: &Path) -> Result<Vec<String>, CorpusError> {
    let io = |source| CorpusError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry
            .map_err(io)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(stem) = name.strip_suffix(".jsonl") {
            names.insert(stem.to_string());
        }
    }
    Ok(names.into_iter().collect())
}

fn convert(path: &Path, m: RawMessage, what: &str) -> Result<(Body, Headers, u64), CorpusError> {
    let bad = |message: String| CorpusError::Schema {
        path: path.to_path_buf(),
        message,
    };
    if m.trailers.is_some() || m.incomplete.is_some() {
        return Err(bad(format!(
            "{what}: trailers/incomplete bodies are not replayable"
        )));
    }
    let body = match (m.body_kind, m.body) {
        (BodyKind::Empty, OJson::Null) => Body::Empty,
        (BodyKind::Json, j) => Body::Json(j),
        (BodyKind::Text, OJson::String(s)) => Body::Text(s),
        (BodyKind::Binary, j) => {
            let summary: BinarySummary = serde_json::from_value(j.to_value())
                .map_err(|e| bad(format!("{what}: binary summary: {e}")))?;
            Body::Binary(Box::new(summary))
        }
        (kind, other) => {
            return Err(bad(format!(
                "{what}: body kind {kind:?} with body {:?}",
                other.to_value()
            )))
        }
    };
    Ok((body, m.headers, m.body_len))
}

/// Loads and validates one scenario (`<dir>/<name>.jsonl` and `.meta.json`).
pub fn load(dir: &Path, name: &str) -> Result<Scenario, CorpusError> {
    let path = dir.join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path).map_err(|source| CorpusError::Io {
        path: path.clone(),
        source,
    })?;
    let bad = |message: String| CorpusError::Schema {
        path: path.clone(),
        message,
    };
    let mut exchanges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let raw: RawExchange = serde_json::from_str(line).map_err(|source| CorpusError::Json {
            path: path.clone(),
            line: i + 1,
            source,
        })?;
        let what = format!("seq {}", raw.seq);
        if raw.interim_responses.is_some() || raw.rst_stream.is_some() || raw.note.is_some() {
            return Err(bad(format!(
                "{what}: interim responses/resets are not replayable"
            )));
        }
        let req = raw.request;
        let (method, target) = match (req.method.clone(), req.target.clone()) {
            (Some(m), Some(t)) => (m, t),
            _ => return Err(bad(format!("{what}: request lacks method or target"))),
        };
        match raw.layer {
            Layer::Http1 if req.version.as_deref() != Some("HTTP/1.1") || raw.stream.is_some() => {
                return Err(bad(format!(
                    "{what}: HTTP/1.1 request without version or with a stream"
                )))
            }
            Layer::H2 if raw.stream.is_none() || !req.headers.contains(":path") => {
                return Err(bad(format!(
                    "{what}: HTTP/2 request without stream or :path"
                )))
            }
            _ => {}
        }
        let (req_body, req_headers, req_len) = convert(&path, req, &format!("{what} request"))?;
        let resp = raw
            .response
            .ok_or_else(|| bad(format!("{what}: no response recorded")))?;
        let status = resp
            .status
            .ok_or_else(|| bad(format!("{what}: response without status")))?;
        if raw.layer == Layer::Http1 && (resp.reason.is_none() || resp.version.is_none()) {
            return Err(bad(format!(
                "{what}: HTTP/1.1 response without reason/version"
            )));
        }
        let (resp_body, resp_headers, resp_len) =
            convert(&path, resp, &format!("{what} response"))?;
        exchanges.push(Exchange {
            seq: raw.seq,
            conn: raw.conn,
            layer: raw.layer,
            stream: raw.stream,
            order: raw.order,
            cmd: raw.cmd,
            request: Request {
                method,
                target,
                headers: req_headers,
                body_len: req_len,
                body: req_body,
            },
            response: Response {
                status,
                headers: resp_headers,
                body_len: resp_len,
                body: resp_body,
            },
        });
    }
    let n = exchanges.len() as u32;
    let seqs: BTreeSet<u32> = exchanges.iter().map(|e| e.seq).collect();
    let orders: BTreeSet<u32> = exchanges.iter().map(|e| e.order).collect();
    if seqs != (1..=n).collect() || orders != (1..=n).collect() {
        return Err(bad("seq and order must each run 1..=n without gaps".into()));
    }
    let meta_path = dir.join(format!("{name}.meta.json"));
    let meta_text = std::fs::read_to_string(&meta_path).map_err(|source| CorpusError::Io {
        path: meta_path.clone(),
        source,
    })?;
    let raw: Value = serde_json::from_str(&meta_text).map_err(|source| CorpusError::Json {
        path: meta_path.clone(),
        line: 0,
        source,
    })?;
    let meta = Meta { raw };
    let meta_bad = |message: String| CorpusError::Schema {
        path: meta_path.clone(),
        message,
    };
    if meta.raw["file"] != format!("{name}.jsonl") {
        return Err(meta_bad(format!(
            "`file` is {}, not {name}.jsonl",
            meta.raw["file"]
        )));
    }
    if meta.raw["exchanges"].as_u64() != Some(n as u64) {
        return Err(meta_bad(format!(
            "`exchanges` is {}, the file has {n}",
            meta.raw["exchanges"]
        )));
    }
    let conns: BTreeSet<u32> = meta.connections().iter().map(|c| c.conn).collect();
    if let Some(e) = exchanges.iter().find(|e| !conns.contains(&e.conn)) {
        return Err(meta_bad(format!(
            "seq {} uses connection {} that the meta file does not describe",
            e.seq, e.conn
        )));
    }
    Ok(Scenario {
        name: name.to_string(),
        exchanges,
        meta,
    })
}
