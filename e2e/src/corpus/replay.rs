//! The replay driver: runs one scenario file against a fresh server, exchange by exchange in
//! request-head order, and collects the differences. HTTP/1.1 exchanges are handled here,
//! the HTTP/2 exchanges inside sessions in [`super::session`]; the replay's state (connections,
//! learned values, results) is [`super::state`].

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::allow::{judge, Allow, Judged, Verdict};
use super::compare::{compare_body, Cmp, Diff};
use super::http1::{request_head, Framing};
use super::load::{self, Body, Exchange, Layer, Scenario};
use super::ojson::JsonStyle;
use super::session::{not_sent, Session};
use super::setup::{self, Plan};
use super::state::{Conn, ExchangeResult, Replayer};
use super::subst::{query_pairs, SnapRef};
use super::synth::{base64_decode, kind_of_magic};
use super::ReplayError;
use crate::wire;

/// A judged exchange.
#[derive(Debug, Clone)]
pub struct ExchangeReport {
    pub result: ExchangeResult,
    pub verdict: Verdict,
    pub judged: Vec<Judged>,
}

/// Everything one scenario produced.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub name: String,
    pub exchanges: Vec<ExchangeReport>,
}

impl ScenarioReport {
    fn count(&self, v: Verdict) -> usize {
        self.exchanges.iter().filter(|e| e.verdict == v).count()
    }

    /// `name: N replayed, M matched, A allowlisted, X mismatched`.
    pub fn summary_line(&self) -> String {
        format!(
            "{}: {} replayed, {} matched, {} allowlisted, {} mismatched",
            self.name,
            self.exchanges.len(),
            self.count(Verdict::Matched),
            self.count(Verdict::Allowlisted),
            self.count(Verdict::Mismatched)
        )
    }

    pub fn mismatched(&self) -> usize {
        self.count(Verdict::Mismatched)
    }

    /// One line per difference that no entry allows.
    pub fn mismatch_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.exchanges {
            for j in e.judged.iter().filter(|j| j.allowed_by.is_none()) {
                out.push(format!(
                    "{} seq {} [{}]: {} — expected {} got {}",
                    self.name,
                    e.result.seq,
                    e.result.request_line,
                    j.diff.at,
                    j.diff.expected,
                    j.diff.got
                ));
            }
        }
        out
    }

    /// Every difference with how it was judged (for `CORPUS_REPLAY_VERBOSE=1`).
    pub fn all_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.exchanges {
            for j in &e.judged {
                let how = match j.allowed_by {
                    None => "MISMATCH".to_string(),
                    Some(a) => format!("{:?}", a.kind),
                };
                out.push(format!(
                    "{how}: {} seq {} [{}]: {} ({}) — expected {} got {}",
                    self.name,
                    e.result.seq,
                    e.result.request_line,
                    j.diff.at,
                    j.diff.what,
                    j.diff.expected,
                    j.diff.got
                ));
            }
        }
        out
    }

    /// One line per difference an intended allowlist entry covers.
    pub fn allowlisted_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.exchanges {
            for j in &e.judged {
                if let Some(a) = j
                    .allowed_by
                    .filter(|a| a.kind == super::AllowKind::Intended)
                {
                    out.push(format!(
                        "{} seq {} [{}]: {} (expected {} got {}) — {}",
                        self.name,
                        e.result.seq,
                        e.result.request_line,
                        j.diff.at,
                        j.diff.expected,
                        j.diff.got,
                        a.reason
                    ));
                }
            }
        }
        out
    }
}

impl Replayer<'_> {
    /// Replays one exchange and records the differences.
    pub async fn step(&mut self, ex: &Exchange) {
        let mut diffs = match ex.layer {
            Layer::Http1 => self.http1(ex).await,
            Layer::H2 => self.h2(ex).await,
        };
        diffs.retain(|d| !d.what.is_empty());
        self.results.push(ExchangeResult {
            seq: ex.seq,
            order: ex.order,
            conn: ex.conn,
            request_line: ex.request_line(),
            diffs,
        });
        self.after(ex).await;
    }

    /// The JSON layout the recorded client used.
    fn style(ex: &Exchange) -> JsonStyle {
        if ex.by_python() {
            JsonStyle::Python
        } else {
            JsonStyle::Compact
        }
    }

    /// Our request body for a recorded REST request.
    fn http1_body(&mut self, ex: &Exchange) -> Result<Vec<u8>, ReplayError> {
        let python = ex.by_python();
        Ok(match &ex.request.body {
            Body::Empty => Vec::new(),
            Body::Json(j) => {
                let vars = &self.vars;
                j.map_strings(&|s| vars.fill(s, python))
                    .to_text(Self::style(ex))
                    .into_bytes()
            }
            Body::Text(t) => self.vars.fill(t, python).into_bytes(),
            Body::Binary(b) => {
                // `upload-backup-log`: a stand-in log blob of the recorded kind
                let kind = b.magic.as_deref().and_then(kind_of_magic).ok_or_else(|| {
                    ReplayError::Synth(format!("seq {}: upload of unknown kind", ex.seq))
                })?;
                let blob = match &b.b64 {
                    Some(b64) => base64_decode(b64)?,
                    None => self.synth.blob(&b.sha256, kind, b.len)?,
                };
                self.vars.learn(&b.sha256, &wire::hex(&wire::sha256(&blob)));
                if let Some(snap) = SnapRef::from_query(&query_pairs(&ex.request.target)) {
                    self.vars
                        .blob_sizes
                        .insert((snap, "client.log.blob".into()), blob.len() as u64);
                }
                blob
            }
        })
    }

    /// Value for a query parameter the replay derives itself (task-log `start`).
    fn http1_param(&self, target: &str, key: &str, value: &str) -> Option<String> {
        if key != "start" || value == "1" {
            return None;
        }
        let path = target.split('?').next().unwrap_or("");
        let upid_seg = path.strip_suffix("/log")?.rsplit('/').next()?;
        let upid = percent_encoding::percent_decode_str(upid_seg).decode_utf8_lossy();
        self.vars
            .task_log_next
            .get(self.vars.ours(&upid))
            .map(|n| n.to_string())
    }

    async fn http1(&mut self, ex: &Exchange) -> Vec<Diff> {
        match self.http1_inner(ex).await {
            Ok(d) => d,
            Err(e) => {
                self.conns.remove(&ex.conn);
                vec![Diff {
                    what: "transport".into(),
                    at: "request".into(),
                    expected: format!("HTTP {}", ex.response.status),
                    got: e.to_string(),
                }]
            }
        }
    }

    async fn http1_inner(&mut self, ex: &Exchange) -> Result<Vec<Diff>, ReplayError> {
        let python = ex.by_python();
        let body = self.http1_body(ex)?;
        let target = {
            let t = &ex.request.target;
            self.vars.target(t, &|k, v| self.http1_param(t, k, v))
        };
        let mut headers = Vec::new();
        for (name, values) in &ex.request.headers.0 {
            for v in values {
                let value = match name.to_ascii_lowercase().as_str() {
                    "host" => self.vars.host.clone(),
                    "content-length" => body.len().to_string(),
                    _ => self.vars.fill(v, python),
                };
                headers.push((name.clone(), value));
            }
        }
        let mut diffs = Vec::new();
        let unfilled: Vec<&str> = ["<PASSWORD>", "<TICKET>", "<CSRF>", "<TOKEN_SECRET>"]
            .into_iter()
            .filter(|p| {
                headers.iter().any(|(_, v)| v.contains(p))
                    || String::from_utf8_lossy(&body).contains(p)
            })
            .collect();
        if !unfilled.is_empty() {
            diffs.push(Diff {
                what: "harness:unfilled".into(),
                at: "request".into(),
                expected: "credentials the replay knows".into(),
                got: format!("sent with {} still in place", unfilled.join(", ")),
            });
        }
        let mut conn = match self.conns.remove(&ex.conn) {
            Some(Conn::Http1(c)) => *c,
            Some(Conn::Session(_)) => {
                // our server upgraded where PBS refused: the client would go on on a fresh
                // connection (the difference is reported on the upgrade)
                self.connect().await?
            }
            None => self.connect().await?,
        };
        conn.send(&request_head(&ex.request.method, &target, &headers), &body)
            .await?;
        let mut resp = conn.read_response(ex.request.method == "HEAD").await?;
        let ticket_before = self.vars.ticket.clone();
        self.learn_http1(ex, &resp.body, &resp.headers);
        // The client polls a task's log until it says the task is no longer active; where
        // PBS's task had ended at this poll and ours is still running, poll on like the
        // client (with a deadline) and compare the answer that ends the polling.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        while still_active(ex, &resp.body) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let t = &ex.request.target;
            let target = self.vars.target(t, &|k, v| self.http1_param(t, k, v));
            conn.send(&request_head(&ex.request.method, &target, &headers), &body)
                .await?;
            resp = conn.read_response(false).await?;
            self.learn_http1(ex, &resp.body, &resp.headers);
        }
        let mut cmp = Cmp::new(&self.vars);
        let query = query_pairs(&ex.request.target);
        cmp.ns = query
            .iter()
            .find(|(k, _)| k == "ns")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        cmp.snap = SnapRef::from_query(&query);
        cmp.status(ex.response.status, resp.status);
        let mut got_headers = resp.headers.clone();
        if resp.framing == Framing::Chunked {
            got_headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
        }
        let ticket = self.vars.ticket.clone().or(ticket_before);
        cmp.headers(&ex.response.headers, &got_headers, ticket.as_deref());
        compare_body(&mut cmp, ex, &resp.body);
        diffs.extend(cmp.diffs);
        match (ex.response.status, resp.status) {
            (101, 101) => {
                let index = self.results.len();
                match Session::open(ex, conn.into_upgraded(), index).await {
                    Ok(s) => {
                        self.conns.insert(ex.conn, Conn::Session(Box::new(s)));
                    }
                    Err(e) => {
                        self.no_session
                            .insert(ex.conn, format!("HTTP/2 handshake failed: {e}"));
                    }
                }
            }
            (_, 101) => {
                // a session PBS refused: leave it (the server discards it)
                drop(conn);
            }
            (101, got) => {
                self.no_session.insert(
                    ex.conn,
                    format!("our server answered the upgrade with {got}"),
                );
                self.conns.insert(ex.conn, Conn::Http1(Box::new(conn)));
            }
            _ => {
                self.conns.insert(ex.conn, Conn::Http1(Box::new(conn)));
            }
        }
        Ok(diffs)
    }

    /// An exchange on the HTTP/2 session of its connection.
    async fn h2(&mut self, ex: &Exchange) -> Vec<Diff> {
        let session = match self.conns.remove(&ex.conn) {
            Some(Conn::Session(s)) => s,
            other => {
                if let Some(c) = other {
                    self.conns.insert(ex.conn, c);
                }
                let why = self
                    .no_session
                    .get(&ex.conn)
                    .cloned()
                    .unwrap_or_else(|| "the connection has no HTTP/2 session".into());
                return not_sent(&why);
            }
        };
        let mut session = session;
        let diffs = match session.exchange(ex, &mut self.vars, &mut self.synth).await {
            Ok(d) => d,
            Err(e) => vec![Diff {
                what: "transport".into(),
                at: "request".into(),
                expected: format!("HTTP {}", ex.response.status),
                got: e.to_string(),
            }],
        };
        if let Some((index, opening)) = session.opening_diffs(self.sc).await {
            self.add_diffs(index, opening);
        }
        self.conns.insert(ex.conn, Conn::Session(session));
        diffs
    }

    /// Remembers what later requests derive from this answer: tickets, the token secret,
    /// UPIDs, task-log positions.
    fn learn_http1(&mut self, ex: &Exchange, body: &[u8], headers: &[(String, String)]) {
        let ours: Option<Value> = serde_json::from_slice(body).ok();
        let theirs = match &ex.response.body {
            Body::Json(j) => Some(j.to_value()),
            _ => None,
        };
        let path = ex.request.target.split('?').next().unwrap_or("");
        if let Some(ours) = &ours {
            let data = &ours["data"];
            if path.ends_with("/access/ticket") && ex.request.method == "POST" {
                if let Some(t) = data["ticket"].as_str() {
                    self.vars.ticket = Some(t.to_string());
                }
                if let Some(c) = data["CSRFPreventionToken"].as_str() {
                    self.vars.csrf = Some(c.to_string());
                }
            }
            if path.contains("/token/") && ex.request.method == "POST" {
                if let Some(v) = data["value"].as_str() {
                    self.vars.token_secret = Some(v.to_string());
                }
            }
            if let (Some(theirs), Some(o)) = (
                theirs.as_ref().and_then(|t| t["data"].as_str()),
                data.as_str(),
            ) {
                if theirs.starts_with("UPID:") {
                    self.vars.learn(theirs, o);
                }
            }
            if path.ends_with("/log") {
                if let Some(upid_seg) = path.strip_suffix("/log").and_then(|p| p.rsplit('/').next())
                {
                    let upid = percent_encoding::percent_decode_str(upid_seg).decode_utf8_lossy();
                    let ours_upid = self.vars.ours(&upid).to_string();
                    let start: u64 = query_pairs(&ex.request.target)
                        .iter()
                        .find(|(k, _)| k == "start")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(1);
                    let next = data
                        .as_array()
                        .and_then(|a| a.last())
                        .and_then(|l| l["n"].as_u64())
                        .map(|n| n + 1)
                        .unwrap_or_else(|| {
                            self.vars
                                .task_log_next
                                .get(&ours_upid)
                                .copied()
                                .unwrap_or(start)
                        });
                    self.vars.task_log_next.insert(ours_upid, next);
                }
            }
        }
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("set-cookie") {
                if let Some(t) = v
                    .strip_prefix("__Host-PBSAuthCookie=")
                    .map(|r| r.split(';').next().unwrap_or(""))
                    .filter(|t| !t.is_empty())
                {
                    self.vars.ticket = Some(
                        percent_encoding::percent_decode_str(t)
                            .decode_utf8_lossy()
                            .into_owned(),
                    );
                }
            }
        }
    }
}

/// True for a task-log poll that PBS answered with `active: false` while ours is active.
fn still_active(ex: &Exchange, ours: &[u8]) -> bool {
    let Body::Json(j) = &ex.response.body else {
        return false;
    };
    let recorded_done = j.to_value().get("active") == Some(&Value::Bool(false));
    let ours_active = serde_json::from_slice::<Value>(ours)
        .ok()
        .and_then(|v| v.get("active").cloned())
        == Some(Value::Bool(true));
    recorded_done
        && ours_active
        && ex
            .request
            .target
            .split('?')
            .next()
            .is_some_and(|p| p.ends_with("/log"))
}

/// Backup ids and namespaces a scenario works on: its requests' `backup-id`/`ns` parameters
/// (query or JSON body), namespaces it creates, and the root namespace.
fn own_names(sc: &Scenario) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ids = BTreeSet::new();
    let mut ns = BTreeSet::from([String::new()]);
    for e in &sc.exchanges {
        let mut pairs = query_pairs(&e.request.target);
        if let Body::Json(j) = &e.request.body {
            if let Value::Object(o) = j.to_value() {
                for (k, v) in o {
                    if let Some(s) = v.as_str() {
                        pairs.push((k, s.to_string()));
                    }
                }
            }
        }
        if let Body::Text(t) = &e.request.body {
            pairs.extend(
                form_urlencoded::parse(t.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
        }
        for (k, v) in &pairs {
            match k.as_str() {
                "backup-id" => {
                    ids.insert(v.clone());
                }
                "ns" | "target-ns" => {
                    ns.insert(v.clone());
                }
                _ => {}
            }
        }
        if let (Some(name), Some(parent)) = (
            pairs.iter().find(|(k, _)| k == "name"),
            pairs.iter().find(|(k, _)| k == "parent"),
        ) {
            let full = if parent.1.is_empty() {
                name.1.clone()
            } else {
                format!("{}/{}", parent.1, name.1)
            };
            ns.insert(full);
        }
        if let Some((_, name)) = pairs.iter().find(|(k, _)| k == "name") {
            if e.request.target.ends_with("/namespace") && !pairs.iter().any(|(k, _)| k == "parent")
            {
                ns.insert(name.clone());
            }
        }
    }
    (ids, ns)
}

/// Replays scenario `name` from `dir` against a fresh server and judges every exchange.
pub async fn replay_scenario(
    dir: &Path,
    name: &str,
    allow: &[Allow],
) -> Result<ScenarioReport, ReplayError> {
    let sc = load::load(dir, name)?;
    let plan: Plan = setup::plan(&sc);
    let mut env = setup::Env::start(&plan).await?;
    let mut r = Replayer::new(&sc, env.addr(), &env.password);
    r.vars.token_secret = env.token_secret.clone();
    let (ids, ns) = own_names(&sc);
    r.vars.own_ids = ids;
    r.vars.own_ns = ns;
    for ex in sc.in_order() {
        for (_, step) in plan.steps.iter().filter(|(o, _)| *o == ex.order) {
            setup::run_step(&mut r, &mut env, step).await?;
        }
        r.step(ex).await;
    }
    r.finish().await;
    let results = std::mem::take(&mut r.results);
    drop(r);
    env.stop().await;
    let exchanges = results
        .into_iter()
        .map(|result| {
            let (verdict, judged) = judge(
                allow,
                name,
                result.seq,
                &result.request_line,
                result.diffs.clone(),
            );
            ExchangeReport {
                result,
                verdict,
                judged,
            }
        })
        .collect();
    Ok(ScenarioReport {
        name: name.to_string(),
        exchanges,
    })
}
