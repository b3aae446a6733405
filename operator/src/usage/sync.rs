//! Sync job runs as the server lists them (`GET /api2/json/admin/sync`, PBS's job list) and
//! their mapping into a SyncJob's status: pure functions, so the poller's rules are unit-tested.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::crd::SyncRunStatus;

/// `lagSeconds` is rewritten only when it moved by at least this much (5 minutes) ...
pub const LAG_ROUNDING: u64 = 300;
/// ... or by at least this fraction of itself (1/10), whichever is more, so a job that stopped
/// succeeding costs a few status writes a day, not one per poll.
pub const LAG_FRACTION: u64 = 10;

/// One element of the job list (field names as the server sends them).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SyncListEntry {
    pub id: String,
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub remote: Option<String>,
    /// Epoch seconds of the next scheduled run.
    #[serde(default)]
    pub next_run: Option<i64>,
    #[serde(default)]
    pub last_run_upid: Option<String>,
    /// `OK`, `WARNINGS: n`, `ERROR: ...` or `running`.
    #[serde(default)]
    pub last_run_state: Option<String>,
    /// Epoch seconds the last finished run ended (absent while one runs).
    #[serde(default)]
    pub last_run_endtime: Option<i64>,
}

#[derive(Deserialize)]
struct Envelope {
    data: Vec<SyncListEntry>,
}

/// Parses the body of `GET /api2/json/admin/sync` (PBS's `{"data": [...]}` envelope).
pub fn parse_sync_list(body: &[u8]) -> Result<Vec<SyncListEntry>, String> {
    serde_json::from_slice::<Envelope>(body)
        .map(|e| e.data)
        .map_err(|e| format!("malformed answer: {e}"))
}

/// RFC 3339, UTC, whole seconds (as condition timestamps).
pub fn rfc3339(epoch: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp(epoch, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn epoch(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
}

/// True for the results of runs that completed (PBS counts warnings as completed).
pub fn succeeded(state: &str) -> bool {
    state == "OK" || state.starts_with("WARNINGS")
}

/// The run part of a SyncJob's status after reading `entry` (the job's element of the list,
/// `None` when the server does not list it) at `now` (epoch seconds), on top of `old`.
///
/// `lastRun` is the end of the last finished run (kept while one runs); `lastSuccess` moves
/// only with a run that completed, so after failures it still tells when the job last
/// succeeded; `lagSeconds` counts from it to `now` and is absent before the first success. A
/// job the server does not list (not rendered yet, or refused) keeps its history and has no
/// next run.
pub fn sync_run_status(
    old: &SyncRunStatus,
    entry: Option<&SyncListEntry>,
    now: i64,
) -> SyncRunStatus {
    let mut new = match entry {
        None => SyncRunStatus {
            next_run: None,
            ..old.clone()
        },
        Some(e) => {
            let ended = e.last_run_endtime.and_then(rfc3339);
            let ok = e.last_run_state.as_deref().is_some_and(succeeded);
            SyncRunStatus {
                last_run: ended.clone().or_else(|| old.last_run.clone()),
                last_run_state: e.last_run_state.clone(),
                last_run_upid: e.last_run_upid.clone(),
                next_run: e.next_run.and_then(rfc3339),
                last_success: match (ok, ended) {
                    (true, Some(t)) => Some(t),
                    _ => old.last_success.clone(),
                },
                lag_seconds: None,
            }
        }
    };
    new.lag_seconds = new
        .last_success
        .as_deref()
        .and_then(epoch)
        .map(|t| now.saturating_sub(t).max(0) as u64);
    new
}

/// True when `new` should be written over `old`: any field but `lagSeconds` differs, or the
/// lag moved by at least [`LAG_ROUNDING`] seconds or a [`LAG_FRACTION`]th of the old lag.
pub fn sync_run_changed(old: &SyncRunStatus, new: &SyncRunStatus) -> bool {
    let without_lag = |s: &SyncRunStatus| SyncRunStatus {
        lag_seconds: None,
        ..s.clone()
    };
    if without_lag(old) != without_lag(new) {
        return true;
    }
    match (old.lag_seconds, new.lag_seconds) {
        (Some(a), Some(b)) => a.abs_diff(b) >= LAG_ROUNDING.max(a / LAG_FRACTION),
        (a, b) => a != b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server answers (`server/src/api/jobs.rs`): a job that last failed, one that
    /// succeeded, one running, one that never ran.
    const LIST: &str = r#"{"data":[
      {"id":"mirror-a","store":"store1","schedule":"hourly","disable":false,"remote":"mirror-a-remote",
       "remote-store":"store1","owner":"root@pam","remove-vanished":false,"sync-direction":"pull",
       "next-run":1767229200,"last-run-upid":"UPID:pbs:00000001:00000002:00000000:6955B6E0:syncjob:mirror-a:root@pam:",
       "last-run-endtime":1767225700,"last-run-state":"ERROR: remote refused login"},
      {"id":"mirror-b","store":"store1","schedule":"daily","disable":false,"remote":"mirror-b-remote",
       "next-run":1767312000,"last-run-upid":"UPID:b","last-run-endtime":1767225600,"last-run-state":"OK"},
      {"id":"mirror-c","store":"store1","remote":"mirror-c-remote","next-run":1767229200,
       "last-run-upid":"UPID:c","last-run-state":"running"},
      {"id":"mirror-d","store":"store1","remote":"mirror-d-remote","disable":true}
    ]}"#;

    // 2026-01-01T00:00:00Z
    const T0: i64 = 1767225600;

    fn entry(id: &str) -> SyncListEntry {
        parse_sync_list(LIST.as_bytes())
            .expect("parse")
            .into_iter()
            .find(|e| e.id == id)
            .expect("listed")
    }

    #[test]
    fn parses_the_job_list() {
        let list = parse_sync_list(LIST.as_bytes()).expect("parse");
        assert_eq!(list.len(), 4);
        assert_eq!(list[0].last_run_endtime, Some(T0 + 100));
        assert_eq!(list[2].last_run_endtime, None);
        assert_eq!(list[3].next_run, None);
        assert!(parse_sync_list(b"{\"data\":{}}")
            .unwrap_err()
            .starts_with("malformed answer"));
    }

    #[test]
    fn success_sets_last_success_and_lag() {
        let s = sync_run_status(&SyncRunStatus::default(), Some(&entry("mirror-b")), T0 + 90);
        assert_eq!(
            s,
            SyncRunStatus {
                last_run: Some("2026-01-01T00:00:00Z".into()),
                last_run_state: Some("OK".into()),
                last_run_upid: Some("UPID:b".into()),
                next_run: Some("2026-01-02T00:00:00Z".into()),
                last_success: Some("2026-01-01T00:00:00Z".into()),
                lag_seconds: Some(90),
            }
        );
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["lastRunState"], "OK");
        assert_eq!(json["lagSeconds"], 90);
        assert_eq!(json["nextRun"], "2026-01-02T00:00:00Z");
    }

    #[test]
    fn failure_keeps_the_last_success_and_the_lag_grows() {
        let ok = sync_run_status(&SyncRunStatus::default(), Some(&entry("mirror-b")), T0);
        // The same job, its next run failed 100 s after the success.
        let mut failed = entry("mirror-a");
        failed.id = "mirror-b".into();
        let s = sync_run_status(&ok, Some(&failed), T0 + 3600);
        assert_eq!(s.last_run.as_deref(), Some("2026-01-01T00:01:40Z"));
        assert_eq!(
            s.last_run_state.as_deref(),
            Some("ERROR: remote refused login")
        );
        assert_eq!(s.last_success.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(s.lag_seconds, Some(3600));
        assert!(sync_run_changed(&ok, &s));
    }

    #[test]
    fn never_succeeded_has_no_lag() {
        let s = sync_run_status(
            &SyncRunStatus::default(),
            Some(&entry("mirror-a")),
            T0 + 500,
        );
        assert_eq!(s.last_success, None);
        assert_eq!(s.lag_seconds, None);
        assert_eq!(s.last_run.as_deref(), Some("2026-01-01T00:01:40Z"));
        let never = sync_run_status(&SyncRunStatus::default(), Some(&entry("mirror-d")), T0);
        assert_eq!(never, SyncRunStatus::default());
    }

    #[test]
    fn running_keeps_the_last_finished_run() {
        let ok = sync_run_status(&SyncRunStatus::default(), Some(&entry("mirror-b")), T0);
        let mut running = entry("mirror-c");
        running.id = "mirror-b".into();
        let s = sync_run_status(&ok, Some(&running), T0 + 60);
        assert_eq!(s.last_run_state.as_deref(), Some("running"));
        assert_eq!(s.last_run, ok.last_run);
        assert_eq!(s.last_success, ok.last_success);
        assert_eq!(s.last_run_upid.as_deref(), Some("UPID:c"));
    }

    #[test]
    fn unlisted_job_keeps_history_without_next_run() {
        let ok = sync_run_status(&SyncRunStatus::default(), Some(&entry("mirror-b")), T0);
        let s = sync_run_status(&ok, None, T0 + 7200);
        assert_eq!(s.next_run, None);
        assert_eq!(s.last_run_state.as_deref(), Some("OK"));
        assert_eq!(s.lag_seconds, Some(7200));
    }

    #[test]
    fn warnings_count_as_success() {
        assert!(succeeded("OK"));
        assert!(succeeded("WARNINGS: 2"));
        assert!(!succeeded("ERROR: x"));
        assert!(!succeeded("running"));
    }

    #[test]
    fn lag_alone_is_rewritten_only_past_the_rounding() {
        let ok = sync_run_status(&SyncRunStatus::default(), Some(&entry("mirror-b")), T0);
        let at = |t: i64| sync_run_status(&ok, Some(&entry("mirror-b")), t);
        assert!(!sync_run_changed(&ok, &ok));
        assert!(!sync_run_changed(&ok, &at(T0 + 299)));
        assert!(sync_run_changed(&ok, &at(T0 + 300)));
        // At a lag of 10 000 s, a tenth (1000 s) is the step.
        let old = at(T0 + 10_000);
        assert!(!sync_run_changed(&old, &at(T0 + 10_999)));
        assert!(sync_run_changed(&old, &at(T0 + 11_000)));
        // A new state is always written.
        let mut state = old.clone();
        state.last_run_state = Some("running".into());
        assert!(sync_run_changed(&old, &state));
    }
}
