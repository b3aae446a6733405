//! The usage poller: its own loop, apart from reconciles. Every usage interval it reads the
//! usage of each ready Tenant from its server and writes `status.usage`, `status.usedBytes`
//! and the conditions `UsageAvailable` and `QuotaWarning`, but only when something moved past
//! the rounding: byte figures by at least [`BYTES_ROUNDING`], S3 request counts by at least
//! [`REQUESTS_ROUNDING`], anything else at all (counts of snapshots, groups and chunks, the
//! quota, the warning, the set of datastores, whether the read worked). `usage.readAt` is the
//! time of the read that produced the written figures. Status writes do not trigger
//! reconciles (see `triggers`).
//!
//! For a tenant with SyncJobs the same round also lists the server's sync jobs
//! (`GET /api2/json/admin/sync`) and writes each SyncJob's run fields (`lastRun`,
//! `lastRunState`, `lastRunUpid`, `nextRun`, `lastSuccess`, `lagSeconds`) when they changed,
//! the lag only past its rounding (see [`crate::usage::sync`]). Those fields are the poller's
//! alone: the Tenant reconcile patches only a SyncJob's conditions, so the merge patches
//! never overwrite each other.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::stores::{get, in_namespace};
use super::Context;
use crate::crd::{
    condition, set_condition, Condition, SyncJob, SyncRunStatus, Tenant, TenantStatus, UsageStatus,
};
use crate::render::{self, Credentials, Names, SERVER_PORT};
use crate::usage::sync::{sync_run_changed, sync_run_status};
use crate::usage::{self, UsageTarget};

/// Byte figures are rewritten only when they moved by at least this much (1 MiB).
pub const BYTES_ROUNDING: u64 = 1 << 20;
/// S3 request counts are rewritten only when they moved by at least this many.
pub const REQUESTS_ROUNDING: u64 = 1000;
/// Tenant servers read at once.
const PARALLEL_READS: usize = 8;

/// `host:port` of the tenant's Service inside the cluster (what the operator dials).
pub fn usage_addr(tenant: &Tenant) -> String {
    let ns = tenant.namespace().unwrap_or_else(|| "default".into());
    format!("{}.{ns}.svc:{SERVER_PORT}", Names::of(tenant).workload)
}

/// True when `new` differs from `old` by more than the rounding (see the module doc).
pub fn usage_changed(old: &UsageStatus, new: &UsageStatus) -> bool {
    let bytes = |a: u64, b: u64| a.abs_diff(b) >= BYTES_ROUNDING;
    let requests = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => a.abs_diff(b) >= REQUESTS_ROUNDING,
        (a, b) => a != b,
    };
    if bytes(old.logical_bytes, new.logical_bytes)
        || bytes(old.physical_bytes, new.physical_bytes)
        || (old.chunks, old.snapshots, old.groups) != (new.chunks, new.snapshots, new.groups)
        || old.quota_bytes != new.quota_bytes
        || old.quota_warning != new.quota_warning
        || old.datastores.len() != new.datastores.len()
    {
        return true;
    }
    old.datastores.iter().zip(&new.datastores).any(|(a, b)| {
        a.store != b.store
            || bytes(a.logical_bytes, b.logical_bytes)
            || bytes(a.physical_bytes, b.physical_bytes)
            || (a.chunks, a.snapshots, a.groups) != (b.chunks, b.snapshots, b.groups)
            || requests(a.s3_requests, b.s3_requests)
    })
}

/// True for Tenants whose server is ready and whose certificate is known.
fn pollable(t: &Tenant) -> bool {
    t.metadata.deletion_timestamp.is_none()
        && t.status.as_ref().is_some_and(|s| {
            s.certificate_fingerprint.is_some()
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Reads usage every interval, forever (the caller stops it).
pub(super) async fn poll_forever(ctx: Arc<Context>) {
    if ctx.stores.ready().await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(ctx.settings.usage_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due: Vec<Arc<Tenant>> = ctx
            .stores
            .tenants
            .state()
            .into_iter()
            .filter(|t| pollable(t))
            .collect();
        futures::stream::iter(due)
            .for_each_concurrent(PARALLEL_READS, |t| poll_one(&ctx, t))
            .await;
    }
}

fn strip(c: &[Condition]) -> Vec<Condition> {
    let mut c = c.to_vec();
    c.iter_mut().for_each(|c| c.last_transition_time.clear());
    c
}

/// Reads one tenant's usage and writes what moved.
async fn poll_one(ctx: &Context, tenant: Arc<Tenant>) {
    let ns = tenant.namespace().unwrap_or_default();
    let names = Names::of(&tenant);
    let Some(creds) = get(&ctx.stores.secrets, &ns, &names.credentials)
        .and_then(|s| Credentials::from_secret(&s))
    else {
        return;
    };
    let Some(old) = tenant.status.clone() else {
        return;
    };
    let fingerprint = old.certificate_fingerprint.clone().unwrap_or_default();
    let target = UsageTarget {
        addr: usage_addr(&tenant),
        fingerprint,
        tokenid: creds.tokenid(&render::admin_user(&tenant)),
        secret: creds.token_secret.clone(),
        tenant_id: render::tenant_id(&tenant),
    };
    poll_sync_jobs(ctx, &tenant, &target).await;
    ctx.metrics.usage_reads.fetch_add(1, Ordering::Relaxed);
    let now = crate::crd::now();
    let gen = tenant.metadata.generation;
    let mut status: TenantStatus = old.clone();
    let mut event = None;
    match usage::fetch(&target).await {
        Ok(report) => {
            let c = condition(
                "UsageAvailable",
                true,
                "UsageRead",
                "usage read from the server",
                gen,
                &now,
            );
            set_condition(&mut status.conditions, c);
            let new = report.to_status(&now);
            if old.usage.as_ref().is_none_or(|u| usage_changed(u, &new)) {
                event = usage::apply_usage(&mut status, new, gen, &now);
            }
        }
        Err(e) => {
            ctx.metrics
                .usage_read_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("{e}");
            let c = condition(
                "UsageAvailable",
                false,
                "UsageUnavailable",
                e.to_string(),
                gen,
                &now,
            );
            set_condition(&mut status.conditions, c);
        }
    }
    if strip(&status.conditions) == strip(&old.conditions)
        && status.usage == old.usage
        && status.used_bytes == old.used_bytes
    {
        return;
    }
    let patch = json!({
        "metadata": {"resourceVersion": tenant.resource_version()},
        "status": {
            "conditions": status.conditions,
            "usage": status.usage,
            "usedBytes": status.used_bytes,
        }
    });
    let api: Api<Tenant> = ctx.api(&ns);
    match api
        .patch_status(
            &tenant.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => {
            ctx.metrics
                .usage_status_writes
                .fetch_add(1, Ordering::Relaxed);
            if let Some(ev) = event {
                let t = if ev.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                ctx.publish(&tenant, t, ev.reason, ev.note).await;
            }
        }
        // Someone wrote the Tenant since it was cached; the next round reads it again.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => tracing::warn!("usage status of Tenant {ns}/{}: {e}", tenant.name_any()),
    }
}

/// The cached SyncJobs that pull into a Datastore of `tenant`.
fn sync_jobs_of(ctx: &Context, tenant: &Tenant) -> Vec<Arc<SyncJob>> {
    let ns = tenant.namespace().unwrap_or_default();
    in_namespace(&ctx.stores.sync_jobs, &ns)
        .into_iter()
        .filter(|j| {
            get(&ctx.stores.datastores, &ns, &j.spec.datastore)
                .is_some_and(|d| d.spec.tenant == tenant.name_any())
        })
        .collect()
}

/// Lists the tenant's sync jobs on its server and writes each SyncJob's run fields that
/// changed. Nothing is read for a tenant without SyncJobs; a failed read changes nothing (the
/// next round tries again).
async fn poll_sync_jobs(ctx: &Context, tenant: &Tenant, target: &UsageTarget) {
    let jobs = sync_jobs_of(ctx, tenant);
    if jobs.is_empty() {
        return;
    }
    let list = match usage::fetch_sync_jobs(target).await {
        Ok(list) => list,
        Err(e) => {
            tracing::debug!("{e}");
            return;
        }
    };
    let now = chrono::Utc::now().timestamp();
    for job in jobs {
        let name = job.name_any();
        let old = job
            .status
            .as_ref()
            .map(|s| s.run.clone())
            .unwrap_or_default();
        let entry = list.iter().find(|e| e.id == name);
        let new = sync_run_status(&old, entry, now);
        if !sync_run_changed(&old, &new) {
            continue;
        }
        let api: Api<SyncJob> = ctx.api(&tenant.namespace().unwrap_or_default());
        let patch = json!({ "status": run_patch(&new) });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!("sync status of SyncJob {name}: {e}"),
        }
    }
}

/// The merge patch of the run fields: every field, `null` for the absent ones (so a field
/// that went away is removed).
fn run_patch(s: &SyncRunStatus) -> serde_json::Value {
    json!({
        "lastRun": s.last_run,
        "lastRunState": s.last_run_state,
        "lastRunUpid": s.last_run_upid,
        "nextRun": s.next_run,
        "lastSuccess": s.last_success,
        "lagSeconds": s.lag_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DatastoreUsage;

    fn usage(physical: u64, requests: u64) -> UsageStatus {
        UsageStatus {
            logical_bytes: 10 << 30,
            physical_bytes: physical,
            chunks: 100,
            snapshots: 3,
            groups: 1,
            datastores: vec![DatastoreUsage {
                store: "s".into(),
                physical_bytes: physical,
                s3_requests: Some(requests),
                ..DatastoreUsage::default()
            }],
            read_at: "2026-01-01T00:00:00Z".into(),
            ..UsageStatus::default()
        }
    }

    #[test]
    fn small_moves_are_not_written() {
        let old = usage(5 << 30, 10_000);
        let mut new = usage((5 << 30) + BYTES_ROUNDING - 1, 10_999);
        new.read_at = "2026-01-01T01:00:00Z".into();
        assert!(
            !usage_changed(&old, &new),
            "below the rounding, readAt ignored"
        );
        assert!(usage_changed(
            &old,
            &usage((5 << 30) + BYTES_ROUNDING, 10_000)
        ));
        assert!(usage_changed(&old, &usage(5 << 30, 11_000)));
        let mut snap = usage(5 << 30, 10_000);
        snap.snapshots = 4;
        assert!(usage_changed(&old, &snap), "counts compare exactly");
        let mut warn = old.clone();
        warn.quota_warning = true;
        assert!(usage_changed(&old, &warn));
    }

    #[test]
    fn run_patch_sets_or_removes_every_run_field() {
        let some = |s: &str| Some(s.to_string());
        let full = SyncRunStatus {
            last_run: some("2026-01-01T00:00:00Z"),
            last_run_state: some("OK"),
            last_run_upid: some("UPID:x"),
            next_run: some("2026-01-01T01:00:00Z"),
            last_success: some("2026-01-01T00:00:00Z"),
            lag_seconds: Some(60),
        };
        assert_eq!(run_patch(&full), serde_json::to_value(&full).expect("json"));
        let empty = run_patch(&SyncRunStatus::default());
        let fields = empty.as_object().expect("object");
        assert_eq!(fields.len(), 6);
        assert!(fields.values().all(|v| v.is_null()), "{empty}");
    }

    #[test]
    fn sync_job_status_keeps_binding_and_run_apart() {
        let json = serde_json::json!({
            "observedGeneration": 2,
            "conditions": [],
            "tenant": "acme",
            "lastRunState": "OK",
            "lagSeconds": 5
        });
        let s: crate::crd::SyncJobStatus = serde_json::from_value(json.clone()).expect("parse");
        assert_eq!(s.child.tenant.as_deref(), Some("acme"));
        assert_eq!(s.run.lag_seconds, Some(5));
        assert_eq!(serde_json::to_value(&s).expect("json"), json);
        // The reconcile's patch of a SyncJob carries the binding part only.
        let c = condition("Ready", true, "Bound", "", Some(2), "t");
        let patch = crate::controller::child_status_patch(Some(&s.child), c, Some(2), Some("acme"))
            .expect("changed");
        assert!(patch["status"].get("lastRunState").is_none(), "{patch}");
    }
}
