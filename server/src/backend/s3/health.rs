//! Whether the bucket answers, as seen while the server runs (not only at start).
//!
//! Every request updates the state: a success marks the store healthy; a failure that concerns
//! the whole store (bad or expired credentials, missing bucket, wrong region, unreachable or
//! failing endpoint after retries) marks it unhealthy with a message naming bucket, endpoint and
//! the S3 error code. Failures about one object (missing key, precondition, checksum) do not
//! count. A background probe (one `ListObjectsV2` of at most one key under the datastore
//! prefix) runs every interval unless a request succeeded within it, so an idle server notices
//! revoked credentials and, later, their repair.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use super::ops::Failure;
use crate::backend::BackendHealth;

/// Default interval of the background probe.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// S3 error codes that mean "this store cannot be used with these settings".
const STORE_LEVEL_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "NoSuchBucket",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "AccountProblem",
    "AllAccessDisabled",
];

#[derive(Debug, Default)]
struct Inner {
    /// Why the store is unhealthy, and since when.
    problem: Option<(String, SystemTime)>,
    last_check: Option<SystemTime>,
}

/// Shared between the backend and its probe task.
#[derive(Debug, Default)]
pub(super) struct HealthState {
    inner: Mutex<Inner>,
    /// Seconds since the epoch of the last successful request (0 = none yet).
    last_ok_secs: AtomicU64,
    /// Probe requests sent (counted as LIST in the request statistics).
    pub(super) probes: AtomicU64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn epoch(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl HealthState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request succeeded: the store answers with these credentials.
    pub(super) fn ok(&self) {
        self.last_ok_secs.store(now_secs(), Ordering::Relaxed);
        let needs_clear = {
            let inner = self.lock();
            inner.problem.is_some()
        };
        if needs_clear {
            let mut inner = self.lock();
            if let Some((why, _)) = inner.problem.take() {
                tracing::info!("S3 store healthy again (was: {why})");
            }
            inner.last_check = Some(SystemTime::now());
        }
    }

    /// A request failed; `store` names bucket and endpoint for the message.
    pub(super) fn failed(&self, f: &Failure, store: &str) {
        if !is_store_level(f) {
            return;
        }
        let message = format!("S3 bucket {store}: {}", f.summary());
        let mut inner = self.lock();
        inner.last_check = Some(SystemTime::now());
        match &mut inner.problem {
            Some((old, _)) if *old == message => {}
            Some((old, _)) => *old = message,
            None => {
                tracing::warn!("{message}");
                inner.problem = Some((message, SystemTime::now()));
            }
        }
    }

    fn checked(&self) {
        self.lock().last_check = Some(SystemTime::now());
    }

    fn recently_ok(&self, within: Duration) -> bool {
        let last = self.last_ok_secs.load(Ordering::Relaxed);
        last != 0 && now_secs().saturating_sub(last) < within.as_secs().max(1)
    }

    fn is_unhealthy(&self) -> bool {
        self.lock().problem.is_some()
    }

    /// The report for status and readiness.
    pub(super) fn report(&self) -> BackendHealth {
        let inner = self.lock();
        BackendHealth {
            healthy: inner.problem.is_none(),
            message: inner.problem.as_ref().map(|(m, _)| m.clone()),
            since: inner.problem.as_ref().map(|(_, t)| epoch(*t)),
            last_check: inner.last_check.map(epoch),
        }
    }
}

/// Whether a failure concerns the whole store rather than one object.
fn is_store_level(f: &Failure) -> bool {
    if let Some(code) = f.code.as_deref() {
        if STORE_LEVEL_CODES.contains(&code) {
            return true;
        }
    }
    match f.status {
        // No answer at all: connection refused, TLS failure, timeout (after retries).
        None => true,
        Some(401 | 403) => true,
        Some(404) => f.code.as_deref() == Some("NoSuchBucket"),
        Some(s) => s >= 500,
    }
}

/// Starts the background probe; it ends when the backend (owner of `state`) is dropped.
pub(super) fn spawn_probe(
    state: &Arc<HealthState>,
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    store: String,
    interval: Duration,
) {
    if interval.is_zero() {
        return;
    }
    let weak: Weak<HealthState> = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; connect just checked the bucket
        loop {
            ticker.tick().await;
            let Some(state) = weak.upgrade() else { return };
            if !state.is_unhealthy() && state.recently_ok(interval) {
                state.checked();
                continue;
            }
            state.probes.fetch_add(1, Ordering::Relaxed);
            let result = client
                .list_objects_v2()
                .bucket(&bucket)
                .prefix(&prefix)
                .max_keys(1)
                .send()
                .await;
            match result {
                Ok(_) => {
                    state.ok();
                    state.checked();
                }
                Err(e) => state.failed(&Failure::from_sdk(&e), &store),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: Option<u16>, code: Option<&str>) -> Failure {
        Failure {
            status,
            code: code.map(str::to_string),
            message: Some("explained".into()),
            text: "sdk text".into(),
        }
    }

    #[test]
    fn store_level_failures_change_the_state_object_failures_do_not() {
        let state = HealthState::default();
        for (status, code) in [
            (Some(404), Some("NoSuchKey")),
            (Some(412), Some("PreconditionFailed")),
            (Some(400), Some("BadDigest")),
            (Some(409), Some("ConditionalRequestConflict")),
        ] {
            state.failed(&failure(status, code), "'b' at e");
            assert!(state.report().healthy, "{code:?}");
        }
        state.failed(&failure(Some(403), Some("InvalidAccessKeyId")), "'b' at e");
        let report = state.report();
        assert!(!report.healthy);
        assert_eq!(
            report.message.as_deref(),
            Some("S3 bucket 'b' at e: InvalidAccessKeyId (HTTP 403): explained")
        );
        let since = report.since;
        // A different store-level failure updates the message, not the start time.
        state.failed(&failure(None, None), "'b' at e");
        assert_eq!(
            state.report().message.as_deref(),
            Some("S3 bucket 'b' at e: sdk text")
        );
        assert_eq!(state.report().since, since);
        state.ok();
        assert!(state.report().healthy);
        assert!(state.recently_ok(Duration::from_secs(30)));
        state.failed(&failure(Some(404), Some("NoSuchBucket")), "'b' at e");
        assert!(!state.report().healthy);
        state.failed(&failure(Some(503), None), "'b' at e");
        assert!(state
            .report()
            .message
            .unwrap()
            .contains("HTTP 503: sdk text"));
    }
}
