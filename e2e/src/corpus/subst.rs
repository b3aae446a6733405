//! Values that differ between the recording and the replay: credentials (the corpus has
//! placeholders), and everything the server or the data decides (UPIDs, chunk digests, index
//! checksums, key fingerprints, manifest signatures, blob sizes). The replay learns each
//! pair when it first appears and rewrites later requests and expected answers with it.

use std::collections::{BTreeSet, HashMap};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// Characters python's `urllib.parse.quote(s, safe="")` leaves alone: `A-Za-z0-9_.-~`.
const PY_QUOTE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// A snapshot: namespace (empty = root), type, id, time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapRef {
    pub ns: String,
    pub backup_type: String,
    pub backup_id: String,
    pub backup_time: i64,
}

impl SnapRef {
    /// From query parameters of an upgrade or a REST call.
    pub fn from_query(q: &[(String, String)]) -> Option<SnapRef> {
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        Some(SnapRef {
            ns: get("ns").unwrap_or_default(),
            backup_type: get("backup-type")?,
            backup_id: get("backup-id")?,
            backup_time: get("backup-time")?.parse().ok()?,
        })
    }
}

impl std::fmt::Display for SnapRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.ns.is_empty() {
            write!(f, "ns {} ", self.ns)?;
        }
        write!(
            f,
            "{}/{}/{}",
            self.backup_type, self.backup_id, self.backup_time
        )
    }
}

/// Decoded query pairs of a request target (`+` is a space, as in forms).
pub fn query_pairs(target: &str) -> Vec<(String, String)> {
    match target.split_once('?') {
        Some((_, q)) => form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        None => Vec::new(),
    }
}

/// The replay's substitution state.
#[derive(Debug, Default)]
pub struct Vars {
    /// Password of `bench@pbs` on our server (same length as the recorded one).
    pub password: String,
    /// `host:port` of our server.
    pub host: String,
    pub ticket: Option<String>,
    pub csrf: Option<String>,
    pub token_secret: Option<String>,
    /// Recorded value → ours, for whole strings (UPIDs, digests, checksums, fingerprints,
    /// signatures).
    pub map: HashMap<String, String>,
    /// Our size of a blob the replay stored, per snapshot and file name.
    pub blob_sizes: HashMap<(SnapRef, String), u64>,
    /// Next `start` of a task-log poll, per our UPID.
    pub task_log_next: HashMap<String, u64>,
    /// Backup ids the scenario (or its setup) created: listings are compared on these.
    pub own_ids: BTreeSet<String>,
    /// Namespaces the scenario (or its setup) uses.
    pub own_ns: BTreeSet<String>,
}

impl Vars {
    /// Records that the recording's `theirs` is `ours` here.
    pub fn learn(&mut self, theirs: &str, ours: &str) {
        self.map.insert(theirs.to_string(), ours.to_string());
    }

    /// Our value for a recorded one (unchanged if unknown).
    pub fn ours<'a>(&'a self, theirs: &'a str) -> &'a str {
        self.map.get(theirs).map(String::as_str).unwrap_or(theirs)
    }

    /// Expected answer: every string the replay knows a counterpart for is replaced.
    pub fn translate(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.ours(s).to_string()),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.translate(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), self.translate(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Fills the credential placeholders of a header value or body text.
    /// `python`: the recording was made by python's http.client, which percent-encodes the
    /// ticket in `PBSAuthCookie` (but sends `__Host-PBSAuthCookie` raw, as it got it).
    pub fn fill(&self, text: &str, python: bool) -> String {
        let mut out = text.replace("<PASSWORD>", &self.password);
        if let Some(t) = &self.ticket {
            let quoted = utf8_percent_encode(t, PY_QUOTE).to_string();
            if python {
                out = out.replace(
                    "__Host-PBSAuthCookie=<TICKET>",
                    &format!("__Host-PBSAuthCookie={t}"),
                );
                out = out.replace("<TICKET>", &quoted);
            } else {
                out = out.replace("<TICKET>", t);
            }
        }
        if let Some(c) = &self.csrf {
            out = out.replace("<CSRF>", c);
        }
        if let Some(s) = &self.token_secret {
            out = out.replace("<TOKEN_SECRET>", s);
        }
        out
    }

    /// Rewrites a request target: recorded UPIDs in path segments (percent-encoded the way
    /// the client does it) and query values the replay knows a counterpart for, keeping
    /// everything else byte for byte. `override_param` may replace a query value (already
    /// decoded) by returning `Some`.
    pub fn target(
        &self,
        target: &str,
        override_param: &dyn Fn(&str, &str) -> Option<String>,
    ) -> String {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let path = path
            .split('/')
            .map(|seg| {
                let decoded = percent_decode_str(seg).decode_utf8_lossy();
                match self.map.get(decoded.as_ref()) {
                    Some(ours) => utf8_percent_encode(ours, NON_ALPHANUMERIC).to_string(),
                    None => seg.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let Some(query) = query else {
            return path;
        };
        let query = query
            .split('&')
            .map(|pair| {
                let Some((k, v)) = pair.split_once('=') else {
                    return pair.to_string();
                };
                let key = form_decode(k);
                let value = form_decode(v);
                let replaced =
                    override_param(&key, &value).or_else(|| self.map.get(&value).cloned());
                match replaced {
                    Some(ours) if ours != value => {
                        format!(
                            "{k}={}",
                            form_urlencoded::byte_serialize(ours.as_bytes()).collect::<String>()
                        )
                    }
                    _ => pair.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        format!("{path}?{query}")
    }
}

fn form_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_keep_their_shape() {
        let mut v = Vars::default();
        v.learn(
            "UPID:vm:1:garbage_collection:store1:bench@pbs:",
            "UPID:ours:2:gc:x@pbs:",
        );
        v.learn("aa", "bb");
        let none = |_: &str, _: &str| None;
        assert_eq!(
            v.target("/api2/json/admin/datastore/store1/snapshots?", &none),
            "/api2/json/admin/datastore/store1/snapshots?"
        );
        assert_eq!(
            v.target(
                "/api2/json/nodes/localhost/tasks/UPID%3Avm%3A1%3Agarbage%5Fcollection%3Astore1%3Abench%40pbs%3A/log?limit=500&start=3",
                &|k: &str, _: &str| (k == "start").then(|| "7".to_string())
            ),
            "/api2/json/nodes/localhost/tasks/UPID%3Aours%3A2%3Agc%3Ax%40pbs%3A/log?limit=500&start=7"
        );
        assert_eq!(
            v.target("/chunk?digest=aa&x=a%2Fb", &none),
            "/chunk?digest=bb&x=a%2Fb"
        );
        v.ticket = Some("PBS:bench@pbs:0000000A::ab+/c".into());
        assert_eq!(
            v.fill("PBSAuthCookie=<TICKET>; path=/", true),
            "PBSAuthCookie=PBS%3Abench%40pbs%3A0000000A%3A%3Aab%2B%2Fc; path=/"
        );
        assert_eq!(
            v.fill("__Host-PBSAuthCookie=<TICKET>", true),
            "__Host-PBSAuthCookie=PBS:bench@pbs:0000000A::ab+/c"
        );
        assert_eq!(
            v.fill("PBSAuthCookie=<TICKET>", false),
            "PBSAuthCookie=PBS:bench@pbs:0000000A::ab+/c"
        );
    }
}
