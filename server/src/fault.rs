//! Fault injection for crash tests, compiled into debug builds only (release builds get empty
//! functions). A test starts the server with `PBS_CLOUD_FAULT_PAUSE=<point>` (optionally
//! `PBS_CLOUD_FAULT_KEY=<key prefix>` and `PBS_CLOUD_FAULT_HIT=<n>`, default 1): the n-th time
//! the server reaches that point (for a key with that prefix) it prints
//! `FAULT-PAUSE <point> <key>` on stdout and stops there for good, so the test can kill the
//! process at a known place in the middle of an operation instead of guessing with a timer.
//!
//! Points: `local-temp-written` (local put: temp file written and synced, not yet linked),
//! `chunk-stored` (chunk upload: chunk stored, backup not finished), `finish-commit` (finish:
//! indexes and blobs stored, manifest not yet), `gc-delete-batch` (GC sweep: before a group of
//! deletes), `snapshot-remove` (prune/forget: manifest removed, other files not yet),
//! `verify-move-bad` (verify: corrupt chunk copied to its `.bad` name, original not yet removed),
//! `import-snapshot` (import: a snapshot's files copied, its manifest not yet).
//!
//! `PBS_CLOUD_LEASE_TIMING=<ttl>,<renew>,<margin>` (seconds) shortens the writer lease so a
//! test can watch a server lose or outlive its lease without waiting minutes.

#[cfg(debug_assertions)]
mod active {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    struct Plan {
        point: String,
        key_prefix: String,
        hit: u64,
        seen: AtomicU64,
    }

    fn plan() -> Option<&'static Plan> {
        static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
        PLAN.get_or_init(|| {
            let point = std::env::var("PBS_CLOUD_FAULT_PAUSE").ok()?;
            Some(Plan {
                point,
                key_prefix: std::env::var("PBS_CLOUD_FAULT_KEY").unwrap_or_default(),
                hit: std::env::var("PBS_CLOUD_FAULT_HIT")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
                seen: AtomicU64::new(0),
            })
        })
        .as_ref()
    }

    /// Whether this call is the planned pause (announces it when it is).
    pub fn due(point: &str, key: &str) -> bool {
        let Some(plan) = plan() else { return false };
        if plan.point != point || !key.starts_with(&plan.key_prefix) {
            return false;
        }
        if plan.seen.fetch_add(1, Ordering::SeqCst) + 1 != plan.hit {
            return false;
        }
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "FAULT-PAUSE {point} {key}");
        let _ = out.flush();
        true
    }
}

/// Lease timing `(ttl, renew, margin)` from `PBS_CLOUD_LEASE_TIMING` (debug builds only).
pub fn lease_timing() -> Option<(
    std::time::Duration,
    std::time::Duration,
    std::time::Duration,
)> {
    #[cfg(debug_assertions)]
    {
        let value = std::env::var("PBS_CLOUD_LEASE_TIMING").ok()?;
        let secs: Vec<u64> = value
            .split(',')
            .map(|s| s.trim().parse().ok())
            .collect::<Option<_>>()?;
        match secs[..] {
            [ttl, renew, margin] if renew > 0 && margin < ttl => Some((
                std::time::Duration::from_secs(ttl),
                std::time::Duration::from_secs(renew),
                std::time::Duration::from_secs(margin),
            )),
            _ => None,
        }
    }
    #[cfg(not(debug_assertions))]
    None
}

/// Blocking contexts (backend threads): stops this thread for good at the planned point.
#[inline]
pub fn pause_at(point: &str, key: &str) {
    #[cfg(debug_assertions)]
    if active::due(point, key) {
        loop {
            std::thread::park();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = (point, key);
}

/// Async contexts: never returns at the planned point (the task stays parked).
#[inline]
pub async fn pause_at_async(point: &str, key: &str) {
    #[cfg(debug_assertions)]
    if active::due(point, key) {
        std::future::pending::<()>().await;
    }
    #[cfg(not(debug_assertions))]
    let _ = (point, key);
}
