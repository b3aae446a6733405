//! Reading the API server's audit log (JSON lines, `audit.k8s.io/v1` events, one per request
//! with the policy `e2e/kube/start-kube.sh` installs) and counting the requests of one client,
//! told apart by its User-Agent.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The fields of an audit event that matter here.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub stage: String,
    pub verb: String,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
    /// RFC 3339 with microseconds.
    pub request_received_timestamp: String,
    #[serde(default)]
    pub request_uri: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub subresource: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResponseStatus {
    #[serde(default)]
    pub code: u16,
}

impl AuditEvent {
    /// When the API server received the request.
    pub fn received(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.request_received_timestamp)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// `resource[/subresource]`.
    pub fn resource(&self) -> String {
        match &self.object_ref {
            Some(o) if o.subresource.is_empty() => o.resource.clone(),
            Some(o) => format!("{}/{}", o.resource, o.subresource),
            None => "other".into(),
        }
    }

    /// True for verbs that change state.
    pub fn is_write(&self) -> bool {
        crate::apiclient::is_write(&self.verb)
    }
}

/// The audit log files in `dir`: `audit.log` and its rotated copies.
pub fn files(log: &Path) -> Vec<PathBuf> {
    let mut out = vec![log.to_path_buf()];
    let dir = log.parent().unwrap_or(Path::new("."));
    let stem = log
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("audit")
        .to_string();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&format!("{stem}-")) && name.ends_with(".log") {
                out.push(e.path());
            }
        }
    }
    out
}

/// Every event of the client whose User-Agent contains `agent`, received in `[from, to)`.
pub fn read(
    log: &Path,
    agent: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> std::io::Result<Vec<AuditEvent>> {
    let mut out = Vec::new();
    for f in files(log) {
        let file = match std::fs::File::open(&f) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && f != log => continue,
            Err(e) => return Err(e),
        };
        for line in std::io::BufReader::new(file).lines() {
            let line = line?;
            if !line.contains(agent) {
                continue;
            }
            let Ok(ev) = serde_json::from_str::<AuditEvent>(&line) else {
                continue;
            };
            let inside = ev.received().is_some_and(|t| t >= from && t < to);
            if ev.user_agent.contains(agent) && inside {
                out.push(ev);
            }
        }
    }
    out.sort_by_key(|e| e.received());
    Ok(out)
}

/// Requests counted by `(verb, resource)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<(String, String), u64>);

impl Counts {
    pub fn of(events: &[AuditEvent]) -> Self {
        let mut m = BTreeMap::new();
        for e in events {
            *m.entry((e.verb.clone(), e.resource())).or_default() += 1;
        }
        Counts(m)
    }

    /// Sum over entries matching `f(verb, resource)`.
    pub fn sum(&self, f: impl Fn(&str, &str) -> bool) -> u64 {
        self.0
            .iter()
            .filter(|((v, r), _)| f(v, r))
            .map(|(_, n)| *n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_audit_lines_and_counts_one_client() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("audit.log");
        let line = |agent: &str, verb: &str, res: &str, sub: &str, t: &str| {
            format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"x","stage":"ResponseComplete","requestURI":"/x","verb":"{verb}","user":{{"username":"admin"}},"sourceIPs":["127.0.0.1"],"userAgent":"{agent}","objectRef":{{"resource":"{res}","subresource":"{sub}","namespace":"n","name":"t","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#
            )
        };
        let text = [
            line(
                "pbs-cloud-operator/0.1.0 (op-a)",
                "patch",
                "tenants",
                "status",
                "2026-01-01T00:00:01.000001Z",
            ),
            line(
                "pbs-cloud-operator/0.1.0 (op-a)",
                "update",
                "leases",
                "",
                "2026-01-01T00:00:02.000000Z",
            ),
            line(
                "pbs-cloud-operator/0.1.0 (op-b)",
                "get",
                "secrets",
                "",
                "2026-01-01T00:00:03.000000Z",
            ),
            line(
                "pbs-cloud-operator/0.1.0 (op-a)",
                "watch",
                "secrets",
                "",
                "2026-01-01T00:00:09.000000Z",
            ),
            "not json".to_string(),
        ]
        .join("\n");
        std::fs::write(&log, text).expect("write");
        std::fs::write(
            dir.path().join("audit-2026-01-01T00-00-00.000.log"),
            line(
                "pbs-cloud-operator/0.1.0 (op-a)",
                "list",
                "tenants",
                "",
                "2026-01-01T00:00:00.500000Z",
            ),
        )
        .expect("write");
        let t = |s: &str| s.parse::<DateTime<Utc>>().expect("time");
        let evs = read(
            &log,
            "(op-a)",
            t("2026-01-01T00:00:00Z"),
            t("2026-01-01T00:00:05Z"),
        )
        .expect("read");
        assert_eq!(
            evs.len(),
            3,
            "op-b and the event after the window are left out"
        );
        assert_eq!(evs[0].verb, "list", "sorted by time, rotated file included");
        let c = Counts::of(&evs);
        assert_eq!(
            c.0.get(&("patch".into(), "tenants/status".into())),
            Some(&1)
        );
        assert_eq!(
            c.sum(|v, r| crate::apiclient::is_write(v) && r != "leases"),
            1
        );
    }
}
