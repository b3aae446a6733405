//! The usage document of a tenant: the JSON contract of `GET /tenants/{id}/usage`, of the
//! webhook's usage reports and of the operator's Tenant status. Field names are fixed:
//! `tenant`, `logical-bytes`, `physical-bytes`, `chunks`, `snapshots`, `groups`, `quota-bytes`,
//! `quota-warning`, `datastores[]` (`store`, the same five counters, `s3-requests`).

use std::sync::{Arc, Weak};

use serde::Serialize;
use serde_json::json;

use super::{MeteredServer, Metering};
use crate::datastore::{DatastoreEntry, DatastoreError, UsageCounters};

/// S3 requests by type over the datastore's life, kept across restarts (see
/// `datastore/usage/`; zero on the local backend).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct S3Requests {
    pub get: u64,
    pub put: u64,
    pub post: u64,
    pub head: u64,
    pub delete: u64,
    pub list: u64,
}

/// Usage of one datastore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StoreUsage {
    pub store: String,
    #[serde(flatten)]
    pub counters: UsageCounters,
    pub s3_requests: S3Requests,
    /// This datastore's own quota, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_quota_bytes: Option<u64>,
    /// The counters are the last persisted ones and a recount is on its way (after an
    /// unclean stop): exact once this is false.
    pub recount_pending: bool,
}

/// The tenant-wide part of the usage document: the quota and whether usage reached its
/// warning threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TenantQuota {
    /// `null` when the tenant has no quota.
    pub quota_bytes: Option<u64>,
    pub quota_warning: bool,
    pub quota_warn_percent: u8,
}

/// Usage of one tenant over its datastores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TenantUsage {
    pub tenant: String,
    /// Sums over `datastores`.
    #[serde(flatten)]
    pub totals: UsageCounters,
    /// Present for readers allowed to see tenant-wide figures (absent from the document
    /// otherwise).
    #[serde(flatten)]
    pub quota: Option<TenantQuota>,
    pub datastores: Vec<StoreUsage>,
}

/// Usage of one datastore as last counted. Counters not trusted yet (after an unclean stop)
/// start a background recount; the answer never waits for it.
pub async fn store_usage(entry: &DatastoreEntry) -> Result<StoreUsage, DatastoreError> {
    let store = &entry.store;
    if store.usage().needs_rescan() {
        store.request_usage_recount();
    }
    let s3 = store
        .usage()
        .s3_request_totals()
        .map(|c| S3Requests {
            get: c.get,
            put: c.put,
            post: c.post,
            head: c.head,
            delete: c.delete,
            list: c.list,
        })
        .unwrap_or_default();
    Ok(StoreUsage {
        store: entry.name.clone(),
        counters: store.usage().counters(),
        s3_requests: s3,
        store_quota_bytes: store.usage().store_quota(),
        recount_pending: store.usage().needs_rescan() || store.usage().recount_pending(),
    })
}

/// Usage of `tenant` over the given datastores, with the tenant-wide quota block when
/// `with_quota` (the caller decides what may be seen).
pub async fn tenant_usage(
    metering: &Metering,
    tenant: &str,
    entries: &[Arc<DatastoreEntry>],
    with_quota: bool,
) -> Result<TenantUsage, DatastoreError> {
    let meter = metering.tenant(tenant);
    let mut totals = UsageCounters::default();
    let mut datastores = Vec::new();
    for entry in entries.iter().filter(|e| e.tenant == tenant) {
        let usage = store_usage(entry).await?;
        totals.add(&usage.counters);
        datastores.push(usage);
    }
    let quota = with_quota.then(|| TenantQuota {
        quota_bytes: meter.quota(),
        quota_warning: meter.warning(),
        quota_warn_percent: meter.warn_percent(),
    });
    Ok(TenantUsage {
        tenant: tenant.to_string(),
        totals,
        quota,
        datastores,
    })
}

/// Every tenant that owns a datastore or is known to the auth store, with its usage.
pub async fn all_tenants(metering: &Metering, server: &dyn MeteredServer) -> Vec<TenantUsage> {
    let entries = server.datastores();
    let mut ids: std::collections::BTreeSet<String> = server.tenant_ids().into_iter().collect();
    ids.extend(entries.iter().map(|e| e.tenant.clone()));
    let mut out = Vec::new();
    for id in ids {
        match tenant_usage(metering, &id, &entries, true).await {
            Ok(u) => out.push(u),
            Err(e) => tracing::warn!("usage of tenant '{id}' unavailable: {e}"),
        }
    }
    out
}

/// Posts a `usage-report` event per tenant at every time `schedule` names.
pub async fn report_loop(
    server: Weak<dyn MeteredServer>,
    metering: Arc<Metering>,
    schedule: String,
) {
    loop {
        let now = chrono::Utc::now();
        let next = match super::schedule::next_report_time(&schedule, now) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("webhook report_schedule: {e}; usage reports are not sent");
                return;
            }
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        let Some(server) = server.upgrade() else {
            return;
        };
        for usage in all_tenants(&metering, server.as_ref()).await {
            let value = serde_json::to_value(&usage).unwrap_or_default();
            metering.emit(
                "usage-report",
                json!({ "tenant": usage.tenant, "period-end": next.timestamp(), "usage": value }),
            );
        }
    }
}
