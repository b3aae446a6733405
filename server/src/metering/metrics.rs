//! Prometheus text exposition (format 0.0.4) of usage, quotas, S3 requests and events. Written
//! by hand: the figures are computed per scrape from the usage counters, which a
//! `prometheus-client` registry of pre-registered metrics does not fit without a custom
//! collector, and the format is a few lines.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::usage::TenantUsage;
use super::EventCounts;

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// The exposition for `tenants` and `events` (both already filtered to what the caller may
/// see: per-datastore series for the datastores in each usage document, tenant-wide series for
/// the documents that carry the tenant's quota block), and the number of undelivered webhook
/// events when it is given.
pub fn render(
    tenants: &[TenantUsage],
    events: &BTreeMap<(String, String), EventCounts>,
    outbox_pending: Option<usize>,
) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    type Get = fn(&crate::datastore::UsageCounters) -> u64;
    let store_gauges: [(&str, &str, Get); 5] = [
        (
            "pbs_cloud_logical_bytes",
            "Archive bytes of the finished snapshots (what clients sent).",
            |c| c.logical_bytes,
        ),
        (
            "pbs_cloud_physical_bytes",
            "Bytes of the unique stored chunks, as stored.",
            |c| c.physical_bytes,
        ),
        ("pbs_cloud_chunks", "Number of stored chunks.", |c| c.chunks),
        (
            "pbs_cloud_snapshots",
            "Number of finished snapshots.",
            |c| c.snapshots,
        ),
        (
            "pbs_cloud_groups",
            "Number of backup groups with a finished snapshot.",
            |c| c.groups,
        ),
    ];
    for (name, help, get) in store_gauges {
        f.header(name, "gauge", help);
        for t in tenants {
            for s in &t.datastores {
                f.sample(
                    name,
                    &[("tenant", &t.tenant), ("store", &s.store)],
                    get(&s.counters),
                );
            }
        }
    }
    f.header(
        "pbs_cloud_tenant_physical_bytes",
        "gauge",
        "Physical bytes over all datastores of the tenant (what the quota limits).",
    );
    let tenant_wide = || tenants.iter().filter_map(|t| t.quota.map(|q| (t, q)));
    for (t, _) in tenant_wide() {
        f.sample(
            "pbs_cloud_tenant_physical_bytes",
            &[("tenant", &t.tenant)],
            t.totals.physical_bytes,
        );
    }
    f.header(
        "pbs_cloud_tenant_quota_bytes",
        "gauge",
        "Quota on physical bytes (tenants with a quota only).",
    );
    for (t, quota) in tenant_wide() {
        if let Some(q) = quota.quota_bytes {
            f.sample("pbs_cloud_tenant_quota_bytes", &[("tenant", &t.tenant)], q);
        }
    }
    f.header(
        "pbs_cloud_tenant_quota_warning",
        "gauge",
        "1 when physical usage reached the quota's warning threshold (quota_warn_percent).",
    );
    for (t, quota) in tenant_wide() {
        f.sample(
            "pbs_cloud_tenant_quota_warning",
            &[("tenant", &t.tenant)],
            quota.quota_warning as u64,
        );
    }
    f.header(
        "pbs_cloud_s3_requests_total",
        "counter",
        "S3 requests by type over the datastore's life (persisted across restarts).",
    );
    for t in tenants {
        for s in &t.datastores {
            let r = &s.s3_requests;
            for (kind, n) in [
                ("get", r.get),
                ("put", r.put),
                ("post", r.post),
                ("head", r.head),
                ("delete", r.delete),
                ("list", r.list),
            ] {
                f.sample(
                    "pbs_cloud_s3_requests_total",
                    &[("tenant", &t.tenant), ("store", &s.store), ("type", kind)],
                    n,
                );
            }
        }
    }
    type GetEvent = fn(&EventCounts) -> u64;
    let event_counters: [(&str, &str, GetEvent); 3] = [
        (
            "pbs_cloud_backups_finished_total",
            "Backups finished since the server started.",
            |e| e.backups_finished,
        ),
        (
            "pbs_cloud_snapshots_removed_total",
            "Snapshots removed since the server started.",
            |e| e.snapshots_removed,
        ),
        (
            "pbs_cloud_quota_exceeded_total",
            "Times a tenant passed its quota (one per crossing).",
            |e| e.quota_refusals,
        ),
    ];
    for (name, help, get) in event_counters {
        f.header(name, "counter", help);
        for ((tenant, store), counts) in events {
            f.sample(name, &[("tenant", tenant), ("store", store)], get(counts));
        }
    }
    if let Some(n) = outbox_pending {
        f.header(
            "pbs_cloud_webhook_pending_events",
            "gauge",
            "Webhook events not yet delivered.",
        );
        let _ = writeln!(f.out, "pbs_cloud_webhook_pending_events {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::UsageCounters;
    use crate::metering::usage::{S3Requests, StoreUsage, TenantQuota};

    #[test]
    fn exposition_has_typed_families_and_escaped_labels() {
        let t = TenantUsage {
            tenant: "ac\"me".into(),
            totals: UsageCounters {
                physical_bytes: 7,
                ..Default::default()
            },
            quota: Some(TenantQuota {
                quota_bytes: Some(10),
                quota_warning: true,
                quota_warn_percent: 50,
            }),
            datastores: vec![StoreUsage {
                store: "s1".into(),
                counters: UsageCounters {
                    physical_bytes: 7,
                    chunks: 2,
                    ..Default::default()
                },
                s3_requests: S3Requests {
                    put: 3,
                    ..Default::default()
                },
                store_quota_bytes: None,
                recount_pending: false,
            }],
        };
        let text = render(std::slice::from_ref(&t), &BTreeMap::new(), Some(0));
        assert!(text.contains("# TYPE pbs_cloud_physical_bytes gauge\n"));
        assert!(text.contains("pbs_cloud_physical_bytes{tenant=\"ac\\\"me\",store=\"s1\"} 7\n"));
        assert!(text.contains("pbs_cloud_tenant_quota_bytes{tenant=\"ac\\\"me\"} 10\n"));
        assert!(text.contains("pbs_cloud_tenant_quota_warning{tenant=\"ac\\\"me\"} 1\n"));
        assert!(text.contains(
            "pbs_cloud_s3_requests_total{tenant=\"ac\\\"me\",store=\"s1\",type=\"put\"} 3\n"
        ));
        assert!(text.contains("pbs_cloud_webhook_pending_events 0\n"));

        // Without the quota block (no tenant figures for this reader): store series only.
        let t = TenantUsage { quota: None, ..t };
        let text = render(&[t], &BTreeMap::new(), None);
        assert!(text.contains("pbs_cloud_physical_bytes{tenant=\"ac\\\"me\",store=\"s1\"} 7\n"));
        assert!(!text.contains("pbs_cloud_tenant_physical_bytes{"), "{text}");
        assert!(!text.contains("pbs_cloud_tenant_quota_warning{"), "{text}");
        assert!(!text.contains("pbs_cloud_webhook_pending_events"), "{text}");
    }
}
