//! Hands a datastore its `[[retention_lock]]` rules and installs its `[datastore.lifecycle]`
//! rules, at start and on every reload.

use anyhow::Context;

use crate::backend::lock::{LifecycleRules, LockMode};
use crate::config::Config;
use crate::datastore::retention::{LockRule, DEFAULT_GENERATION_DAYS};
use crate::datastore::Datastore;
use crate::format::names::BackupNamespace;

/// The rules of `config` that apply to the datastore `store`.
pub(super) fn rules_for(config: &Config, store: &str) -> anyhow::Result<Vec<LockRule>> {
    let mut rules = Vec::new();
    for lock in config
        .retention_locks
        .iter()
        .filter(|l| l.store.get_ref() == store)
    {
        let id = lock.id.get_ref().clone();
        let mode = LockMode::parse(lock.mode.get_ref())
            .with_context(|| format!("retention_lock '{id}': unknown mode"))?;
        let ns = match &lock.ns {
            Some(ns) => BackupNamespace::parse(ns)
                .with_context(|| format!("retention_lock '{id}': namespace '{ns}'"))?,
            None => BackupNamespace::root(),
        };
        rules.push(LockRule {
            id,
            ns,
            groups: lock.groups.clone(),
            mode,
            days: *lock.days.get_ref(),
            legal_hold: lock.legal_hold,
        });
    }
    Ok(rules)
}

/// Activate the retention locks of `store` and install its lifecycle rules. Refused (with
/// the datastore's clear error) when locks are configured on a bucket without Object Lock.
pub(super) async fn apply(config: &Config, store: &Datastore) -> anyhow::Result<()> {
    let name = store.name();
    let ds = config.datastores.iter().find(|d| d.name.get_ref() == name);
    let generation = ds
        .and_then(|d| d.lock_generation_days)
        .unwrap_or(DEFAULT_GENERATION_DAYS);
    let rules = rules_for(config, name)?;
    let count = rules.len();
    store.retention().set_locks(rules, generation).await?;
    if count > 0 {
        tracing::info!(
            "datastore '{name}': {count} retention lock(s) in force, enforced by {}{}",
            store.retention().enforced_by(),
            match store.retention().enforced_by() {
                "server" => " only (the local backend has no Object Lock)",
                _ => "",
            }
        );
    }
    if let Some(lc) = ds.and_then(|d| d.lifecycle.as_ref()) {
        let days = |d: Option<u64>| d.map(|d| u32::try_from(d).unwrap_or(u32::MAX));
        let rules = LifecycleRules {
            expire_noncurrent_after_days: days(lc.expire_noncurrent_after_days),
            transition_after_days: days(lc.transition_after_days),
            transition_storage_class: lc
                .transition_storage_class
                .as_ref()
                .map(|c| c.get_ref().clone()),
        };
        store
            .retention()
            .install_lifecycle(&rules)
            .await
            .with_context(|| format!("datastore '{name}': installing lifecycle rules"))?;
        tracing::info!("datastore '{name}': lifecycle rules installed for its prefix");
    }
    Ok(())
}
