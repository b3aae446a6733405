//! Job history of a datastore: one small JSON object per finished maintenance run (GC, prune,
//! verify, abandoned-backup cleanup), kept in the datastore itself so that it survives restarts
//! and moves with the data, and so that compliance reports can list what ran and what it did.
//!
//! One object per entry (no append-to-object: object stores cannot append). Keys sort by time:
//! `.jobs/history/<kind>/<unix-seconds, 12 digits>-<random>.json`.

use serde::{Deserialize, Serialize};

use super::DatastoreError;
use crate::backend::{Backend, PutOptions};

/// Prefix of all history objects.
pub const HISTORY_PREFIX: &str = ".jobs/history/";

/// Kinds of maintenance runs that are recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    GarbageCollection,
    Prune,
    Verify,
    AbandonedCleanup,
    Sync,
}

impl JobKind {
    /// Directory name of this kind under [`HISTORY_PREFIX`].
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::GarbageCollection => "garbage-collection",
            JobKind::Prune => "prune",
            JobKind::Verify => "verify",
            JobKind::AbandonedCleanup => "abandoned-cleanup",
            JobKind::Sync => "sync",
        }
    }

    /// Every kind, in a stable order.
    pub const ALL: [JobKind; 5] = [
        JobKind::GarbageCollection,
        JobKind::Prune,
        JobKind::Verify,
        JobKind::AbandonedCleanup,
        JobKind::Sync,
    ];
}

/// One finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobRecord {
    pub kind: JobKind,
    /// Configured job id, or `"manual"` for a run asked for through the API.
    pub job_id: String,
    /// UPID of the task that ran it, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upid: Option<String>,
    /// Unix seconds.
    pub started: i64,
    /// Unix seconds.
    pub finished: i64,
    /// `"OK"`, or the error message.
    pub outcome: String,
    /// True when nothing was changed on purpose (prune dry-run).
    #[serde(default)]
    pub dry_run: bool,
    /// Kind-specific figures (GC statistics, removed snapshots, verify failures, ...).
    #[serde(default)]
    pub summary: serde_json::Value,
}

/// Store `record` as a new history entry.
pub async fn record(backend: &dyn Backend, record: &JobRecord) -> Result<(), DatastoreError> {
    let nonce: [u8; 4] = rand::random();
    let key = format!(
        "{HISTORY_PREFIX}{}/{:012}-{}.json",
        record.kind.as_str(),
        record.finished.max(0),
        hex::encode(nonce)
    );
    let body = serde_json::to_vec(record)
        .map_err(|e| DatastoreError::Internal(format!("encoding job history {key}: {e}")))?;
    backend
        .put(&key, body.into(), PutOptions::default())
        .await?;
    Ok(())
}

/// Entries of one kind (or all kinds), oldest first. An entry that does not parse is skipped
/// with a warning rather than hiding the rest of the history.
pub async fn list(
    backend: &dyn Backend,
    kind: Option<JobKind>,
) -> Result<Vec<JobRecord>, DatastoreError> {
    let kinds: Vec<JobKind> = match kind {
        Some(k) => vec![k],
        None => JobKind::ALL.to_vec(),
    };
    let mut out = Vec::new();
    for kind in kinds {
        let prefix = format!("{HISTORY_PREFIX}{}/", kind.as_str());
        let listing = backend.list(&prefix, None).await?;
        for obj in listing.objects {
            let data = match backend.get(&obj.key).await {
                Ok(d) => d,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            match serde_json::from_slice::<JobRecord>(&data) {
                Ok(rec) => out.push(rec),
                Err(e) => {
                    tracing::warn!(key = %obj.key, "skipping unreadable job history entry: {e}")
                }
            }
        }
    }
    out.sort_by_key(|r| (r.finished, r.started));
    Ok(out)
}

impl super::Datastore {
    /// Record a finished maintenance run in this datastore's history.
    pub async fn record_job(&self, rec: &JobRecord) -> Result<(), DatastoreError> {
        record(self.backend.as_ref(), rec).await
    }

    /// Job history, oldest first, optionally of one kind.
    pub async fn job_history(
        &self,
        kind: Option<JobKind>,
    ) -> Result<Vec<JobRecord>, DatastoreError> {
        list(self.backend.as_ref(), kind).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use std::sync::Arc;

    #[tokio::test]
    async fn records_come_back_in_time_order_and_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
        let mk = |kind, t| JobRecord {
            kind,
            job_id: "manual".into(),
            upid: None,
            started: t - 1,
            finished: t,
            outcome: "OK".into(),
            dry_run: false,
            summary: serde_json::json!({ "t": t }),
        };
        record(backend.as_ref(), &mk(JobKind::Prune, 200))
            .await
            .unwrap();
        record(backend.as_ref(), &mk(JobKind::GarbageCollection, 100))
            .await
            .unwrap();
        record(backend.as_ref(), &mk(JobKind::Prune, 50))
            .await
            .unwrap();
        backend
            .put(
                &format!("{HISTORY_PREFIX}prune/000000000300-bad.json"),
                bytes::Bytes::from_static(b"{not json"),
                PutOptions::default(),
            )
            .await
            .unwrap();

        let all = list(backend.as_ref(), None).await.unwrap();
        let times: Vec<i64> = all.iter().map(|r| r.finished).collect();
        assert_eq!(times, vec![50, 100, 200]);
        let prunes = list(backend.as_ref(), Some(JobKind::Prune)).await.unwrap();
        assert_eq!(prunes.len(), 2);
        assert!(prunes.iter().all(|r| r.kind == JobKind::Prune));
    }
}
