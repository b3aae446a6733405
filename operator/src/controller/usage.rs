//! The usage poller: its own loop, apart from reconciles. Every usage interval it reads the
//! usage of each ready Tenant from its server and writes `status.usage`, `status.usedBytes`
//! and the conditions `UsageAvailable` and `QuotaWarning`, but only when something moved past
//! the rounding: byte figures by at least [`BYTES_ROUNDING`], S3 request counts by at least
//! [`REQUESTS_ROUNDING`], anything else at all (counts of snapshots, groups and chunks, the
//! quota, the warning, the set of datastores, whether the read worked). `usage.readAt` is the
//! time of the read that produced the written figures. Status writes do not trigger
//! reconciles (see `triggers`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::stores::get;
use super::Context;
use crate::crd::{condition, set_condition, Condition, Tenant, TenantStatus, UsageStatus};
use crate::render::{self, Credentials, Names, SERVER_PORT};
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
}
