//! Comparing our answer with the recorded one: status, the headers a client reads, JSON
//! envelopes (keys and value types recursively, values after substitution), listings
//! restricted to what the scenario itself created, and plain-text errors.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::load::{Body, Exchange, Headers};
use super::subst::{SnapRef, Vars};

/// One difference between the recording and our answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Pattern key the allowlist matches on: `status`, `header:content-type`,
    /// `body:data[].size`, `binary:index.uuid`, `settings:MAX_CONCURRENT_STREAMS`, ...
    pub what: String,
    /// Exact place (listing items named by their key).
    pub at: String,
    pub expected: String,
    pub got: String,
}

/// Listings whose items are compared by identity, and only for what the scenario created:
/// the recording server was shared with other sessions, whose groups, namespaces and tasks
/// show up in its listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Groups,
    Snapshots,
    Namespaces,
    Tasks,
    Prune,
    Files,
    Datastores,
    /// Task log lines: count and text depend on timing; only their shape is compared.
    TaskLog,
}

/// The listing kind of the top-level `data` array of a REST answer.
pub fn listing_kind(method: &str, target: &str) -> Option<ListKind> {
    let path = target.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let kind = match segs.as_slice() {
        ["api2", "json", "admin", "datastore", _, "groups"] if method == "GET" => ListKind::Groups,
        ["api2", "json", "admin", "datastore", _, "snapshots"] if method == "GET" => {
            ListKind::Snapshots
        }
        ["api2", "json", "admin", "datastore", _, "namespace"] if method == "GET" => {
            ListKind::Namespaces
        }
        ["api2", "json", "admin", "datastore", _, "prune"] => ListKind::Prune,
        ["api2", "json", "admin", "datastore", _, "files"] => ListKind::Files,
        ["api2", "json", "admin", "datastore"] => ListKind::Datastores,
        ["api2", "json", "status", "datastore-usage"] => ListKind::Datastores,
        ["api2", "json", "nodes", _, "tasks"] => ListKind::Tasks,
        ["api2", "json", "nodes", _, "tasks", _, "log"] => ListKind::TaskLog,
        _ => return None,
    };
    Some(kind)
}

/// Collects differences.
pub struct Cmp<'a> {
    pub vars: &'a Vars,
    pub diffs: Vec<Diff>,
    /// Namespace of the request (snapshot listings), and its snapshot (file listings): to
    /// expect our sizes of the blobs the replay stored.
    pub ns: String,
    pub snap: Option<SnapRef>,
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 160 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(157).map(|(i, _)| i).unwrap_or(157)]
        )
    } else {
        s
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_b64(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Whether `got` has the shape the placeholder stands for (the corpus redacts these values).
/// A ticket is `PBS:<userid>:<8 hex digits>::<base64 signature>`; clients read only the
/// time field, so the signature's length (PBS: 86 characters, 64 bytes) is not compared.
pub fn placeholder_fits(placeholder: &str, got: &str) -> Option<bool> {
    let fits = match placeholder {
        "<TICKET>" => got
            .strip_prefix("PBS:")
            .and_then(|r| r.split_once("::"))
            .is_some_and(|(head, sig)| {
                head.rsplit_once(':')
                    .is_some_and(|(user, time)| user.contains('@') && is_hex(time, 8))
                    && is_b64(sig)
            }),
        "<TICKET_INFO>" => got
            .strip_prefix("PBS:")
            .and_then(|r| r.strip_suffix("::ticketinfo"))
            .and_then(|r| r.rsplit_once(':'))
            .is_some_and(|(user, time)| user.contains('@') && is_hex(time, 8)),
        "<CSRF>" => got
            .split_once(':')
            .is_some_and(|(time, sig)| is_hex(time, 8) && sig.len() == 43 && is_b64(sig)),
        "<TOKEN_SECRET>" => {
            let parts: Vec<&str> = got.split('-').collect();
            parts.len() == 5
                && [8, 4, 4, 4, 12]
                    .iter()
                    .zip(&parts)
                    .all(|(n, p)| is_hex(p, *n) && p.bytes().all(|b| !b.is_ascii_uppercase()))
        }
        "<FINGERPRINT>" => {
            let parts: Vec<&str> = got.split(':').collect();
            parts.len() == 32 && parts.iter().all(|p| is_hex(p, 2))
        }
        _ => return None,
    };
    Some(fits)
}

/// Matches text containing `<DATASTORE_DIR>` (any path) and credential placeholders.
pub fn text_fits(expected: &str, got: &str) -> bool {
    let parts: Vec<&str> = expected.split("<DATASTORE_DIR>").collect();
    if parts.len() == 1 {
        return expected == got;
    }
    let mut rest = got;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part) && rest.len() > part.len();
        } else {
            match rest.find(part) {
                Some(pos) if pos > 0 => rest = &rest[pos + part.len()..],
                _ => return false,
            }
        }
    }
    true
}

/// A plausible HTTP date (`Sat, 05 Dec 2026 22:23:23 GMT`).
pub fn is_http_date(s: &str) -> bool {
    let p: Vec<&str> = s.split(' ').collect();
    p.len() == 6
        && p[0].len() == 4
        && p[0].ends_with(',')
        && p[1].len() == 2
        && p[3].len() == 4
        && p[4].len() == 8
        && p[5] == "GMT"
}

impl<'a> Cmp<'a> {
    pub fn new(vars: &'a Vars) -> Cmp<'a> {
        Cmp {
            vars,
            diffs: Vec::new(),
            ns: String::new(),
            snap: None,
        }
    }

    pub fn push(
        &mut self,
        what: impl Into<String>,
        at: impl Into<String>,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) {
        self.diffs.push(Diff {
            what: what.into(),
            at: at.into(),
            expected: expected.into(),
            got: got.into(),
        });
    }

    pub fn status(&mut self, expected: u16, got: u16) {
        if expected != got {
            self.push("status", "status", expected.to_string(), got.to_string());
        }
    }

    /// Response headers: `got` are our (lowercase) names and values; `framing` says whether
    /// our body was delimited by content-length (`Some(true)`), chunked (`Some(false)`), or
    /// neither. The value of `content-length` is not compared (bodies differ), its presence
    /// is; `date` must be an HTTP date; `set-cookie` is compared with the ticket redacted.
    pub fn headers(&mut self, recorded: &Headers, got: &[(String, String)], ticket: Option<&str>) {
        let rec: BTreeMap<String, String> = recorded
            .0
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.join(", ")))
            .collect();
        let ours: BTreeMap<String, String> = got
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let names: BTreeSet<&String> = rec.keys().chain(ours.keys()).collect();
        for name in names {
            let what = format!("header:{name}");
            match (rec.get(name), ours.get(name)) {
                (Some(e), None) => self.push(what, name.as_str(), e.as_str(), "(absent)"),
                (None, Some(g)) => self.push(what, name.as_str(), "(absent)", g.as_str()),
                (Some(e), Some(g)) => {
                    let same = match name.as_str() {
                        "content-length" => true,
                        "date" => is_http_date(g),
                        "set-cookie" => {
                            let redacted = match ticket {
                                Some(t) if !t.is_empty() => g.replace(t, "<TICKET>"),
                                _ => g.clone(),
                            };
                            &redacted == e
                        }
                        _ => e == g,
                    };
                    if !same {
                        self.push(what, name.as_str(), e.as_str(), g.as_str());
                    }
                }
                (None, None) => {}
            }
        }
    }

    /// Plain-text bodies (error messages).
    pub fn text(&mut self, expected: &str, got: &str) {
        if !text_fits(expected, got) {
            self.push("body:text", "body", expected, got);
        }
    }

    /// A JSON answer; `list` names the listing kind of its top-level `data` array.
    pub fn json(&mut self, expected: &Value, got: &Value, list: Option<ListKind>) {
        let expected = self.vars.translate(expected);
        self.value(&expected, got, "body:", "", list);
    }

    /// Compares two JSON values below `what`/`at`.
    pub fn value(&mut self, e: &Value, g: &Value, what: &str, at: &str, list: Option<ListKind>) {
        match (e, g) {
            (Value::Object(eo), Value::Object(go)) => {
                let keys: BTreeSet<&String> = eo.keys().chain(go.keys()).collect();
                for k in keys {
                    let w = if what.ends_with(':') {
                        format!("{what}{k}")
                    } else {
                        format!("{what}.{k}")
                    };
                    let a = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    match (eo.get(k), go.get(k)) {
                        (Some(ev), Some(gv)) => {
                            let sub = if k == "data" && at.is_empty() {
                                list
                            } else {
                                None
                            };
                            self.value(ev, gv, &w, &a, sub)
                        }
                        // a missing or extra key is its own kind of difference: allowing a
                        // value to differ does not allow the key to be missing
                        (Some(ev), None) => {
                            self.push(format!("{w}(key)"), a, short(ev), "(key absent)")
                        }
                        (None, Some(gv)) => {
                            self.push(format!("{w}(key)"), a, "(key absent)", short(gv))
                        }
                        (None, None) => {}
                    }
                }
            }
            (Value::Array(ea), Value::Array(ga)) => match list {
                Some(kind) => self.listing(kind, ea, ga, what, at),
                None => self.array(ea, ga, what, at),
            },
            (Value::String(es), Value::String(gs)) => match placeholder_fits(es, gs) {
                Some(true) => {}
                Some(false) => self.push(format!("{what}(shape)"), at, es.as_str(), gs.as_str()),
                None if es != gs => self.push(what, at, es.as_str(), gs.as_str()),
                None => {}
            },
            (Value::Number(en), Value::Number(gn)) => {
                let same_type = en.is_f64() == gn.is_f64();
                if !same_type {
                    self.push(format!("{what}(type)"), at, type_name(e), type_name(g));
                } else if en != gn {
                    self.push(what, at, en.to_string(), gn.to_string());
                }
            }
            (Value::Bool(eb), Value::Bool(gb)) => {
                if eb != gb {
                    self.push(what, at, eb.to_string(), gb.to_string());
                }
            }
            (Value::Null, Value::Null) => {}
            _ => self.push(
                format!("{what}(type)"),
                at,
                format!("{} {}", type_name(e), short(e)),
                format!("{} {}", type_name(g), short(g)),
            ),
        }
    }

    /// Plain arrays: file lists (sets), objects keyed by `filename`, else position by position.
    fn array(&mut self, ea: &[Value], ga: &[Value], what: &str, at: &str) {
        let w = format!("{what}[]");
        let all_strings = ea.iter().chain(ga).all(Value::is_string);
        let by_filename =
            !ea.is_empty() && ea.iter().chain(ga).all(|v| v.get("filename").is_some());
        if all_strings && what.ends_with("files") {
            let es: BTreeSet<&str> = ea.iter().filter_map(Value::as_str).collect();
            let gs: BTreeSet<&str> = ga.iter().filter_map(Value::as_str).collect();
            for missing in es.difference(&gs) {
                self.push(
                    format!("{w}:missing"),
                    format!("{at}[{missing}]"),
                    *missing,
                    "(absent)",
                );
            }
            for extra in gs.difference(&es) {
                self.push(
                    format!("{w}:extra"),
                    format!("{at}[{extra}]"),
                    "(absent)",
                    *extra,
                );
            }
            return;
        }
        if by_filename {
            self.keyed(ea, ga, &w, at, &|v| {
                v["filename"].as_str().map(str::to_string)
            });
            return;
        }
        if ea.len() != ga.len() {
            self.push(
                format!("{w}:length"),
                at,
                ea.len().to_string(),
                ga.len().to_string(),
            );
        }
        for (i, (e, g)) in ea.iter().zip(ga).enumerate() {
            self.value(e, g, &w, &format!("{at}[{i}]"), None);
        }
    }

    /// Items matched by `key`; duplicates pair up in order.
    fn keyed(
        &mut self,
        ea: &[Value],
        ga: &[Value],
        w: &str,
        at: &str,
        key: &dyn Fn(&Value) -> Option<String>,
    ) {
        let mut theirs: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for e in ea {
            theirs
                .entry(key(e).unwrap_or_default())
                .or_default()
                .push(e);
        }
        let mut ours: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for g in ga {
            ours.entry(key(g).unwrap_or_default()).or_default().push(g);
        }
        let keys: BTreeSet<&String> = theirs.keys().chain(ours.keys()).collect();
        for k in keys {
            let es = theirs.get(k).map(Vec::as_slice).unwrap_or(&[]);
            let gs = ours.get(k).map(Vec::as_slice).unwrap_or(&[]);
            for i in 0..es.len().max(gs.len()) {
                let a = if es.len().max(gs.len()) > 1 {
                    format!("{at}[{k}#{i}]")
                } else {
                    format!("{at}[{k}]")
                };
                match (es.get(i), gs.get(i)) {
                    (Some(e), Some(g)) => self.value(e, g, w, &a, None),
                    (Some(e), None) => self.push(format!("{w}:missing"), a, short(e), "(absent)"),
                    (None, Some(g)) => self.push(format!("{w}:extra"), a, "(absent)", short(g)),
                    (None, None) => {}
                }
            }
        }
    }

    /// A listing: items the scenario created are matched by identity and compared fully;
    /// other items of ours are compared with the schema of the recorded items.
    fn listing(&mut self, kind: ListKind, ea: &[Value], ga: &[Value], what: &str, at: &str) {
        let w = format!("{what}[]");
        let vars = self.vars;
        let own = |v: &Value| -> bool {
            let id = v["backup-id"].as_str();
            match kind {
                ListKind::Groups | ListKind::Snapshots | ListKind::Prune => {
                    id.is_some_and(|id| vars.own_ids.contains(id))
                }
                ListKind::Namespaces => v["ns"].as_str().is_some_and(|ns| vars.own_ns.contains(ns)),
                ListKind::Tasks => {
                    let wid = v["worker_id"].as_str().unwrap_or("");
                    vars.own_ids
                        .iter()
                        .any(|id| wid.ends_with(&format!("/{id}")))
                        || v["upid"]
                            .as_str()
                            .is_some_and(|u| vars.map.values().any(|o| o == u))
                }
                ListKind::Files | ListKind::Datastores => true,
                ListKind::TaskLog => false,
            }
        };
        let key = |v: &Value| -> Option<String> {
            let s = |k: &str| {
                v[k].as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v[k].to_string())
            };
            Some(match kind {
                ListKind::Groups => format!("{}/{}", s("backup-type"), s("backup-id")),
                ListKind::Snapshots | ListKind::Prune => {
                    format!(
                        "{}/{}/{}",
                        s("backup-type"),
                        s("backup-id"),
                        s("backup-time")
                    )
                }
                ListKind::Namespaces => s("ns"),
                ListKind::Tasks => format!("{}:{}", s("worker_type"), s("worker_id")),
                ListKind::Files => s("filename"),
                ListKind::Datastores => s("store"),
                ListKind::TaskLog => s("n"),
            })
        };
        let e_own: Vec<Value> = ea
            .iter()
            .filter(|v| own(v))
            .map(|v| self.with_our_blob_sizes(kind, v))
            .collect();
        let g_own: Vec<Value> = ga.iter().filter(|v| own(v)).cloned().collect();
        self.keyed(&e_own, &g_own, &w, at, &key);
        // everything else of ours must look like the recorded items
        let schema = Schema::of(ea);
        for g in ga.iter().filter(|v| !own(v)) {
            if let Some(schema) = &schema {
                let a = format!("{at}[{}]", key(g).unwrap_or_default());
                schema.check(self, g, &w, &a);
            }
        }
    }
}

impl Cmp<'_> {
    /// A recorded listing item with the sizes of blobs the replay stored replaced by ours
    /// (stand-in blobs have other sizes than the recorded ones).
    fn with_our_blob_sizes(&self, kind: ListKind, item: &Value) -> Value {
        let mut item = item.clone();
        let ours = |snap: &SnapRef, name: &str| {
            self.vars
                .blob_sizes
                .get(&(snap.clone(), name.to_string()))
                .copied()
        };
        match kind {
            ListKind::Snapshots => {
                let snap = SnapRef {
                    ns: self.ns.clone(),
                    backup_type: item["backup-type"].as_str().unwrap_or("").to_string(),
                    backup_id: item["backup-id"].as_str().unwrap_or("").to_string(),
                    backup_time: item["backup-time"].as_i64().unwrap_or(0),
                };
                if let Some(files) = item.get_mut("files").and_then(Value::as_array_mut) {
                    for f in files {
                        let name = f["filename"].as_str().unwrap_or("").to_string();
                        if let (Some(size), true) = (ours(&snap, &name), f.get("size").is_some()) {
                            f["size"] = size.into();
                        }
                    }
                }
            }
            ListKind::Files => {
                let name = item["filename"].as_str().unwrap_or("").to_string();
                if let Some(size) = self.snap.as_ref().and_then(|s| ours(s, &name)) {
                    item["size"] = size.into();
                }
            }
            _ => {}
        }
        item
    }
}

/// Keys and value types of a set of recorded list items.
struct Schema {
    /// Key → type names seen.
    types: BTreeMap<String, BTreeSet<&'static str>>,
    /// Keys every item has.
    required: BTreeSet<String>,
}

impl Schema {
    fn of(items: &[Value]) -> Option<Schema> {
        let objs: Vec<&serde_json::Map<String, Value>> =
            items.iter().filter_map(Value::as_object).collect();
        if objs.is_empty() {
            return None;
        }
        let mut types: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
        for o in &objs {
            for (k, v) in o.iter() {
                types.entry(k.clone()).or_default().insert(type_name(v));
            }
        }
        let required = types
            .keys()
            .filter(|k| objs.iter().all(|o| o.contains_key(*k)))
            .cloned()
            .collect();
        Some(Schema { types, required })
    }

    fn check(&self, cmp: &mut Cmp, item: &Value, what: &str, at: &str) {
        let Some(o) = item.as_object() else {
            cmp.push(format!("{what}(type)"), at, "object", type_name(item));
            return;
        };
        for k in &self.required {
            if !o.contains_key(k) {
                cmp.push(
                    format!("{what}.{k}(key)"),
                    format!("{at}.{k}"),
                    "(key present in every recorded item)",
                    "(key absent)",
                );
            }
        }
        for (k, v) in o {
            match self.types.get(k) {
                None => cmp.push(
                    format!("{what}.{k}(key)"),
                    format!("{at}.{k}"),
                    "(key absent in every recorded item)",
                    short(v),
                ),
                Some(t) if !t.contains(type_name(v)) => cmp.push(
                    format!("{what}.{k}(type)"),
                    format!("{at}.{k}"),
                    t.iter().copied().collect::<Vec<_>>().join("|"),
                    type_name(v),
                ),
                _ => {}
            }
        }
    }
}

/// Compares a response body with the recorded one (JSON, text or nothing).
pub(super) fn compare_body(cmp: &mut Cmp, ex: &Exchange, got: &[u8]) {
    match &ex.response.body {
        Body::Empty => {
            if !got.is_empty() {
                cmp.push(
                    "body:empty",
                    "body",
                    "(no body)",
                    String::from_utf8_lossy(got),
                );
            }
        }
        Body::Json(j) => match serde_json::from_slice::<Value>(got) {
            Ok(v) => {
                let list = listing_kind(&ex.request.method, &ex.request.target);
                cmp.json(&j.to_value(), &v, list)
            }
            Err(_) => cmp.push(
                "body:json",
                "body",
                j.to_value().to_string(),
                String::from_utf8_lossy(got),
            ),
        },
        Body::Text(t) => {
            // a text body labelled JSON may come back as a JSON string from us, or vice versa
            cmp.text(t, &String::from_utf8_lossy(got))
        }
        Body::Binary(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_and_texts() {
        assert_eq!(
            placeholder_fits("<TICKET>", "PBS:bench@pbs:6B148EE4::YWJj"),
            Some(true)
        );
        assert_eq!(placeholder_fits("<TICKET>", "bench@pbs"), Some(false));
        assert_eq!(
            placeholder_fits(
                "<CSRF>",
                "6B148EE4:abcdefghijabcdefghijabcdefghijabcdefghij+/A"
            ),
            Some(true)
        );
        assert_eq!(
            placeholder_fits("<TOKEN_SECRET>", "0d3c0e4e-2b5f-4c1a-9e0f-1234567890ab"),
            Some(true)
        );
        assert_eq!(placeholder_fits("x", "x"), None);
        assert!(text_fits(
            "open file \"<DATASTORE_DIR>/ns/a/x.blob\" failed - not found",
            "open file \"/tmp/d/store1/ns/a/x.blob\" failed - not found"
        ));
        assert!(!text_fits("a <DATASTORE_DIR>/b", "a /b"));
        assert!(is_http_date("Sat, 05 Dec 2026 22:23:23 GMT"));
    }

    #[test]
    fn listings_compare_only_own_items() {
        let mut vars = Vars::default();
        vars.own_ids.insert("mine".into());
        let rec = json!({"data": [
            {"backup-type": "host", "backup-id": "other", "backup-time": 1, "owner": "x", "protected": false},
            {"backup-type": "host", "backup-id": "mine", "backup-time": 5, "owner": "bench@pbs", "protected": false}
        ]});
        let ours = json!({"data": [
            {"backup-type": "host", "backup-id": "mine", "backup-time": 5, "owner": "bench@pbs", "protected": true},
            {"backup-type": "host", "backup-id": "setup", "backup-time": 9, "owner": "y", "protected": false, "extra": 1}
        ]});
        let mut c = Cmp::new(&vars);
        c.json(&rec, &ours, Some(ListKind::Snapshots));
        let whats: Vec<&str> = c.diffs.iter().map(|d| d.what.as_str()).collect();
        assert_eq!(
            whats,
            vec!["body:data[].protected", "body:data[].extra(key)"],
            "{:?}",
            c.diffs
        );
        let mut c = Cmp::new(&vars);
        c.json(
            &json!({"data": {"a": 1, "b": 2}}),
            &json!({"data": {"a": 2, "c": 3}}),
            None,
        );
        let whats: Vec<&str> = c.diffs.iter().map(|d| d.what.as_str()).collect();
        assert_eq!(
            whats,
            vec!["body:data.a", "body:data.b(key)", "body:data.c(key)"]
        );
    }
}
