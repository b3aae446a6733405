//! Usage metering, quotas, Prometheus metrics, the billing webhook and compliance reports
//! (docs/design.md#tenants, #usage-and-compliance). The datastore layer counts (see
//! `datastore/usage/`); this module holds one [`TenantMeter`] per tenant (quota, event sink),
//! turns datastore events into webhook events and metric counters, and runs the background loops
//! (counter persistence, webhook delivery, usage reports).

pub mod compliance;
pub mod metrics;
pub mod outbox;
pub mod schedule;
pub mod usage;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde_json::json;

use crate::config::Config;
use crate::datastore::{lock_std, DatastoreEntry, TenantMeter, UsageObserver};

use outbox::Outbox;

/// Event counters per tenant and datastore, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventCounts {
    pub backups_finished: u64,
    pub snapshots_removed: u64,
    pub quota_refusals: u64,
}

/// How often changed usage counters are persisted.
const FLUSH_INTERVAL: Duration = Duration::from_secs(30);

/// What the background loops of metering read from the server: the datastores it serves and
/// the tenants it knows. The server state implements it; metering sees only this, so that it
/// does not depend on the state that holds it.
pub trait MeteredServer: Send + Sync {
    fn datastores(&self) -> Vec<Arc<DatastoreEntry>>;
    /// Tenants known to the auth store (those without a datastore included).
    fn tenant_ids(&self) -> Vec<String>;
}

/// Metering state of the server (one per process, in the server state).
#[derive(Default)]
pub struct Metering {
    meters: Mutex<BTreeMap<String, Arc<TenantMeter>>>,
    /// Per-datastore quotas from the configuration.
    store_quotas: Mutex<BTreeMap<String, u64>>,
    /// Per-datastore nominal capacities (`capacity_bytes`) for the status figures.
    store_capacities: Mutex<BTreeMap<String, u64>>,
    events: Mutex<BTreeMap<(String, String), EventCounts>>,
    outbox: OnceLock<Arc<Outbox>>,
    me: OnceLock<Weak<Metering>>,
}

impl Metering {
    pub fn new() -> Arc<Self> {
        let m = Arc::new(Self::default());
        let _ = m.me.set(Arc::downgrade(&m));
        m
    }

    /// The meter of `tenant`, created (unlimited) on first use.
    pub fn tenant(&self, tenant: &str) -> Arc<TenantMeter> {
        let mut meters = lock_std(&self.meters);
        if let Some(m) = meters.get(tenant) {
            return m.clone();
        }
        let m = TenantMeter::new(tenant);
        if let Some(me) = self.me.get().and_then(Weak::upgrade) {
            m.set_observer(me);
        }
        meters.insert(tenant.to_string(), m.clone());
        m
    }

    /// Connect a datastore the server starts serving to its tenant's meter and quota.
    pub fn attach(&self, entry: &DatastoreEntry) {
        entry.store.usage().attach_meter(self.tenant(&entry.tenant));
        let quota = lock_std(&self.store_quotas).get(&entry.name).copied();
        entry.store.usage().set_store_quota(quota);
        let capacity = lock_std(&self.store_capacities).get(&entry.name).copied();
        entry.store.usage().set_capacity_limit(capacity);
    }

    /// Apply the quotas and capacities of the configuration (at start and on reload).
    pub fn apply_quotas(&self, config: &Config) {
        for t in &config.tenants {
            self.tenant(t.id.get_ref())
                .set_quota(t.quota_bytes, t.quota_warn_percent);
        }
        let mut quotas = lock_std(&self.store_quotas);
        let mut capacities = lock_std(&self.store_capacities);
        quotas.clear();
        capacities.clear();
        for ds in &config.datastores {
            if let Some(q) = ds.quota_bytes {
                quotas.insert(ds.name.get_ref().clone(), q);
            }
            if let Some(c) = ds.capacity_bytes {
                capacities.insert(ds.name.get_ref().clone(), c);
            }
        }
    }

    /// Apply a (re)loaded configuration's quotas to the tenants and to `entries`.
    pub fn reconfigure(&self, config: &Config, entries: &[Arc<DatastoreEntry>]) {
        self.apply_quotas(config);
        for entry in entries {
            self.attach(entry);
        }
    }

    /// Start the background work: counter persistence and first scans for `server`'s stores,
    /// and, when configured, the webhook outbox in `<data_dir>/webhook-outbox`, its delivery
    /// and the usage report loop. The loops end once `server` is gone.
    pub fn start(
        self: &Arc<Self>,
        config: &Config,
        data_dir: &Path,
        server: Weak<dyn MeteredServer>,
    ) -> anyhow::Result<()> {
        spawn_maintenance(server.clone());
        let Some(hook) = &config.webhook else {
            return Ok(());
        };
        let sender = webhook::WebhookSender::new(hook.url.get_ref(), hook.secret_file.as_deref())?;
        let outbox = Outbox::open(&data_dir.join(outbox::OUTBOX_DIR))?;
        let _ = self.outbox.set(outbox.clone());
        tokio::spawn(outbox::deliver_loop(outbox, sender));
        let schedule = hook
            .report_schedule
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_else(|| "hourly".to_string());
        tokio::spawn(usage::report_loop(server, self.clone(), schedule));
        Ok(())
    }

    /// Queue a webhook event (no-op without a webhook); failures are logged, never fatal.
    pub fn emit(&self, event_type: &str, mut payload: serde_json::Value) {
        let Some(outbox) = self.outbox.get() else {
            return;
        };
        payload["type"] = json!(event_type);
        payload["time"] = json!(chrono::Utc::now().timestamp());
        if let Err(e) = outbox.enqueue(&payload) {
            tracing::error!("webhook event '{event_type}' could not be queued: {e}");
        }
    }

    /// Undelivered webhook events, when a webhook is configured.
    pub fn outbox_pending(&self) -> Option<usize> {
        self.outbox
            .get()
            .map(|o| o.pending().map(|p| p.len()).unwrap_or(0))
    }

    /// Event counters by (tenant, store).
    pub fn event_counts(&self) -> BTreeMap<(String, String), EventCounts> {
        lock_std(&self.events).clone()
    }

    fn count(&self, tenant: &str, store: &str, f: impl FnOnce(&mut EventCounts)) {
        let mut events = lock_std(&self.events);
        f(events
            .entry((tenant.to_string(), store.to_string()))
            .or_default());
    }
}

impl UsageObserver for Metering {
    fn backup_finished(&self, tenant: &str, store: &str, snapshot: &str, logical: u64) {
        self.count(tenant, store, |c| c.backups_finished += 1);
        self.emit(
            "backup-finished",
            json!({
                "tenant": tenant, "store": store,
                "snapshot": snapshot.trim_end_matches('/'), "logical-bytes": logical,
            }),
        );
    }

    fn snapshot_removed(&self, tenant: &str, store: &str, snapshot: &str, logical: u64) {
        self.count(tenant, store, |c| c.snapshots_removed += 1);
        self.emit(
            "snapshot-removed",
            json!({
                "tenant": tenant, "store": store,
                "snapshot": snapshot.trim_end_matches('/'), "logical-bytes": logical,
            }),
        );
    }

    fn quota_exceeded(&self, tenant: &str, store: &str, used: u64, limit: u64) {
        self.count(tenant, store, |c| c.quota_refusals += 1);
        tracing::warn!(
            "tenant '{tenant}' passed its quota ({used} of {limit} bytes) on datastore '{store}'"
        );
        self.emit(
            "quota-exceeded",
            json!({
                "tenant": tenant, "store": store,
                "physical-bytes": used, "quota-bytes": limit,
            }),
        );
    }
}

/// Rescans datastores whose counters could not be trusted at open, then persists changed
/// counters every [`FLUSH_INTERVAL`] until the server is gone.
fn spawn_maintenance(server: Weak<dyn MeteredServer>) {
    tokio::spawn(async move {
        loop {
            let Some(state) = server.upgrade() else {
                return;
            };
            for entry in state.datastores() {
                if entry.store.usage().needs_rescan() {
                    match entry.store.usage_rescan().await {
                        Ok(u) => tracing::info!(
                            store = %entry.name,
                            "usage counted: {} physical bytes in {} chunks, {} snapshots",
                            u.physical_bytes, u.chunks, u.snapshots
                        ),
                        Err(e) => tracing::warn!(store = %entry.name, "usage scan failed: {e}"),
                    }
                }
                if let Err(e) = entry.store.usage().flush(false).await {
                    tracing::warn!(store = %entry.name, "persisting usage counters failed: {e}");
                }
            }
            drop(state);
            tokio::time::sleep(FLUSH_INTERVAL).await;
        }
    });
}
