//! Compliance report of a tenant's datastores (docs/design.md#usage-and-compliance): every finished
//! snapshot with its encryption mode, verify state and time, protection and retention lock, plus
//! the prune and GC history. JSON for machines, CSV (one row per snapshot or job run) for auditors.
//! A report holds what its caller may see (see `auth::scope`), nothing more.

use serde::Serialize;

use crate::auth::{GroupAccess, StoreScope};
use crate::datastore::{Datastore, DatastoreError, JobKind, JobRecord};
use crate::format::manifest::CryptMode;
use crate::format::names::BackupNamespace;

/// One snapshot's compliance facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotEntry {
    /// Namespace path, empty for the root.
    pub ns: String,
    pub backup_type: String,
    pub backup_id: String,
    /// Unix seconds.
    pub backup_time: i64,
    /// `none`, `sign-only`, `encrypt`, or `mixed` when archives differ.
    pub encryption: String,
    /// `ok`, `failed`, or `none` when never verified.
    pub verify_state: String,
    /// Start of the verify task (from its UPID), unix seconds.
    pub verify_time: Option<i64>,
    pub protected: bool,
    /// `none`, `governance` or `compliance`.
    pub lock_mode: String,
    /// Unix seconds.
    pub retain_until: Option<i64>,
    pub legal_hold: bool,
    /// Who enforces the lock: `s3-object-lock` or `server`; absent when unlocked.
    pub lock_enforced_by: Option<String>,
}

/// The report of one datastore.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StoreReport {
    pub store: String,
    pub backend_type: String,
    pub snapshots: Vec<SnapshotEntry>,
    /// Prune and garbage collection runs, oldest first.
    pub jobs: Vec<JobRecord>,
}

/// The report of a tenant.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ComplianceReport {
    pub tenant: String,
    /// Unix seconds.
    pub generated: i64,
    pub datastores: Vec<StoreReport>,
}

fn encryption_of(modes: &[CryptMode]) -> String {
    let name = |m: &CryptMode| match m {
        CryptMode::None => "none",
        CryptMode::Encrypt => "encrypt",
        CryptMode::SignOnly => "sign-only",
    };
    match modes.split_first() {
        None => "none".to_string(),
        Some((first, rest)) if rest.iter().all(|m| m == first) => name(first).to_string(),
        Some(_) => "mixed".to_string(),
    }
}

/// Collect the report of one datastore as the caller of `scope` may see it: the snapshots of
/// the groups it sees in each namespace, and the job history only with store figures.
pub async fn store_report(
    store: &Datastore,
    scope: &StoreScope<'_>,
) -> Result<StoreReport, DatastoreError> {
    let mut snapshots = Vec::new();
    for ns in store
        .tree()
        .list_namespaces(&BackupNamespace::root(), None)
        .await?
    {
        let access = scope.groups(&ns);
        if access == GroupAccess::Nothing {
            continue;
        }
        for group in store.tree().list_groups(&ns).await? {
            if access.needs_owner() {
                let owner = store.tree().group_owner(&ns, &group).await?;
                if !access.admits(scope.caller(), owner.as_deref()) {
                    continue;
                }
            }
            for snap in store.tree().list_snapshots(&ns, &group).await? {
                if !snap.finished {
                    continue;
                }
                let manifest = match store.tree().load_manifest(&ns, &snap.dir).await {
                    Ok((m, _)) => m,
                    // Removed meanwhile.
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                };
                let modes: Vec<CryptMode> = manifest.files.iter().map(|f| f.crypt_mode).collect();
                let verify = manifest.verify_state();
                let lock = store.retention().snapshot_lock(&ns, &snap.dir).await?;
                snapshots.push(SnapshotEntry {
                    ns: ns.to_string(),
                    backup_type: snap.dir.group.ty.as_str().to_string(),
                    backup_id: snap.dir.group.id.clone(),
                    backup_time: snap.dir.time,
                    encryption: encryption_of(&modes),
                    verify_state: verify
                        .as_ref()
                        .map_or_else(|| "none".to_string(), |v| v.state.clone()),
                    verify_time: verify.as_ref().and_then(|v| {
                        v.upid
                            .parse::<crate::tasks::Upid>()
                            .ok()
                            .map(|u| u.starttime)
                    }),
                    protected: snap.protected,
                    lock_mode: lock
                        .as_ref()
                        .map_or_else(|| "none".to_string(), |l| l.mode.clone()),
                    retain_until: lock.as_ref().map(|l| l.retain_until),
                    legal_hold: lock.as_ref().is_some_and(|l| l.legal_hold),
                    lock_enforced_by: lock.as_ref().map(|l| l.enforced_by.clone()),
                });
            }
        }
    }
    let mut jobs = Vec::new();
    if scope.figures() {
        jobs = store.job_history(Some(JobKind::Prune)).await?;
        jobs.extend(store.job_history(Some(JobKind::GarbageCollection)).await?);
        jobs.sort_by_key(|j| (j.started, j.finished));
    }
    Ok(StoreReport {
        store: store.name().to_string(),
        backend_type: store.backend_kind().to_string(),
        snapshots,
        jobs,
    })
}

/// Header of the CSV form.
pub const CSV_HEADER: &str = "record,tenant,store,namespace,snapshot,encryption,verify-state,\
verify-time,protected,lock-mode,retain-until,legal-hold,job-kind,job-id,started,finished,outcome";

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

fn rfc3339(t: Option<i64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// CSV (RFC 4180): one `snapshot` row per snapshot, one `job` row per prune or GC run; times
/// in RFC 3339 UTC.
pub fn to_csv(report: &ComplianceReport) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push_str("\r\n");
    let mut row = |fields: Vec<String>| {
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    };
    for ds in &report.datastores {
        for s in &ds.snapshots {
            let snapshot = format!(
                "{}/{}/{}",
                s.backup_type,
                s.backup_id,
                rfc3339(Some(s.backup_time))
            );
            row(vec![
                "snapshot".into(),
                report.tenant.clone(),
                ds.store.clone(),
                s.ns.clone(),
                snapshot,
                s.encryption.clone(),
                s.verify_state.clone(),
                rfc3339(s.verify_time),
                s.protected.to_string(),
                s.lock_mode.clone(),
                rfc3339(s.retain_until),
                s.legal_hold.to_string(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for j in &ds.jobs {
            let mut fields = vec!["job".to_string(), report.tenant.clone(), ds.store.clone()];
            fields.extend(std::iter::repeat_n(String::new(), 9));
            fields.extend([
                j.kind.as_str().to_string(),
                j.job_id.clone(),
                rfc3339(Some(j.started)),
                rfc3339(Some(j.finished)),
                j.outcome.clone(),
            ]);
            row(fields);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_are_quoted_and_complete() {
        let report = ComplianceReport {
            tenant: "acme".into(),
            generated: 0,
            datastores: vec![StoreReport {
                store: "s1".into(),
                backend_type: "filesystem".into(),
                snapshots: vec![SnapshotEntry {
                    ns: "a/b".into(),
                    backup_type: "vm".into(),
                    backup_id: "100".into(),
                    backup_time: 1_700_000_000,
                    encryption: "encrypt".into(),
                    verify_state: "ok".into(),
                    verify_time: Some(1_700_000_060),
                    protected: true,
                    lock_mode: "none".into(),
                    retain_until: None,
                    legal_hold: false,
                    lock_enforced_by: None,
                }],
                jobs: vec![JobRecord {
                    kind: JobKind::Prune,
                    job_id: "daily".into(),
                    upid: None,
                    started: 1_700_000_100,
                    finished: 1_700_000_101,
                    outcome: "failed, twice".into(),
                    dry_run: false,
                    summary: serde_json::Value::Null,
                }],
            }],
        };
        let csv = to_csv(&report);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "snapshot,acme,s1,a/b,vm/100/2023-11-14T22:13:20Z,encrypt,ok,2023-11-14T22:14:20Z,\
             true,none,,false,,,,,"
        );
        assert_eq!(
            lines[2],
            "job,acme,s1,,,,,,,,,,prune,daily,2023-11-14T22:15:00Z,2023-11-14T22:15:01Z,\
             \"failed, twice\""
        );
        let cols = CSV_HEADER.split(',').count();
        assert_eq!(lines[1].split(',').count(), cols);
        assert_eq!(lines[2].split(',').count(), cols + 1, "quoted comma");
        assert_eq!(
            encryption_of(&[CryptMode::Encrypt, CryptMode::None]),
            "mixed"
        );
    }
}
