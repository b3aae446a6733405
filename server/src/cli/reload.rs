//! Config reload (docs/design.md#configuration): the server polls its config file and applies a
//! changed, valid file without a restart and without touching running sessions. A file that does
//! not load is refused with its error in the log, and the last good configuration stays in force.
//!
//! What reloads: users, tokens, ACL entries and tenants of the file; datastores added, removed,
//! re-assigned to another tenant or moved to another location; scheduled jobs (prune, verify,
//! GC schedules). A datastore removed (or moved away) takes no new work; sessions and tasks that
//! already hold it get [`RETIRE_DRAIN`] to end, then it is closed: its writes are refused, its
//! counters persisted and its lease released. Listen address and TLS files need a restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::config_apply::{auth_seed_for, datastore_specs, open_spec};
use crate::config::Config;
use crate::datastore::Datastore;
use crate::state::AppState;

/// How often the file's modification time and size are compared.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long sessions and tasks of a removed datastore may run on before it is closed.
pub const RETIRE_DRAIN: Duration = Duration::from_secs(300);

/// What the watcher needs to apply a new configuration.
pub(super) struct Watcher {
    pub path: PathBuf,
    pub data_dir: PathBuf,
    /// Lease holder id for datastores opened on reload.
    pub holder: String,
    pub state: Arc<AppState>,
    /// Datastore name → location description of what is open now.
    pub locations: BTreeMap<String, String>,
}

/// Starts the polling task.
pub(super) fn spawn_watcher(mut watcher: Watcher) {
    tokio::spawn(async move {
        let mut seen = stamp(&watcher.path);
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let now = stamp(&watcher.path);
            if now == seen {
                continue;
            }
            seen = now;
            match watcher.reload().await {
                Ok(()) => tracing::info!("configuration reloaded from {}", watcher.path.display()),
                Err(err) => tracing::error!(
                    "configuration reload refused, keeping the running configuration: {err:#}"
                ),
            }
        }
    });
}

/// Modification time and length; `None` while the file is missing (e.g. mid-replace).
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Watcher {
    /// Loads the file and applies it; on any error nothing is changed.
    async fn reload(&mut self) -> anyhow::Result<()> {
        let config = Config::load(&self.path)?;
        let specs = datastore_specs(&config, &self.data_dir)?;
        let jobs = crate::jobs::specs_from_config(&config)?;

        // Open what is new or moved first, so a failure leaves everything as it was.
        let mut opened = Vec::new();
        for spec in &specs {
            let location = spec.location.describe();
            if self.locations.get(&spec.name) != Some(&location) {
                opened.push((open_spec(spec, &self.holder).await?, location));
            }
        }
        for (entry, _) in &opened {
            super::retention::apply(&config, &entry.store).await?;
        }
        for spec in &specs {
            if let Some(current) = self.state.datastore(&spec.name) {
                if !opened.iter().any(|(e, _)| e.name == spec.name) {
                    super::retention::apply(&config, &current.store).await?;
                }
            }
        }
        self.state.auth.replace_seed(auth_seed_for(&config))?;

        let wanted: BTreeMap<&str, _> = specs.iter().map(|s| (s.name.as_str(), s)).collect();
        for name in self.locations.keys().cloned().collect::<Vec<_>>() {
            if !wanted.contains_key(name.as_str()) {
                if let Some(old) = self.state.remove_datastore(&name) {
                    spawn_retire(old.store.clone());
                }
                self.locations.remove(&name);
                tracing::info!("datastore '{name}' removed from the configuration");
            }
        }
        for spec in &specs {
            if let Some(current) = self.state.datastore(&spec.name) {
                current.store.set_abandoned_after(
                    spec.abandoned_after
                        .unwrap_or(crate::datastore::DEFAULT_ABANDONED_AFTER),
                );
                if current.tenant != spec.tenant || current.comment != spec.comment {
                    self.state.insert_datastore(crate::state::DatastoreEntry {
                        name: spec.name.clone(),
                        tenant: spec.tenant.clone(),
                        comment: spec.comment.clone(),
                        store: current.store.clone(),
                    });
                }
            }
        }
        for (entry, location) in opened {
            self.locations.insert(entry.name.clone(), location);
            let moved = self.state.datastore(&entry.name);
            self.state.insert_datastore(entry);
            if let Some(old) = moved {
                spawn_retire(old.store.clone());
            }
        }
        self.state.jobs.set_specs(jobs);
        self.state
            .meter
            .reconfigure(&config, &self.state.datastores());
        Ok(())
    }
}

/// Closes a datastore the configuration no longer serves once nothing uses it any more (or
/// after [`RETIRE_DRAIN`]): sessions, tasks and jobs hold it by reference, the server's tables
/// no longer do.
fn spawn_retire(store: Arc<Datastore>) {
    tokio::spawn(async move {
        let name = store.name().to_string();
        let deadline = tokio::time::Instant::now() + RETIRE_DRAIN;
        // This task's reference is the only one left once every user is gone.
        while Arc::strong_count(&store) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if Arc::strong_count(&store) > 1 {
            tracing::warn!(
                "datastore '{name}': still in use {}s after it was removed from the \
                 configuration; closing it now (its remaining writes are refused)",
                RETIRE_DRAIN.as_secs()
            );
        }
        match store.close().await {
            Ok(()) => tracing::info!("datastore '{name}' closed and its lease released"),
            Err(e) => tracing::warn!("datastore '{name}': closing it failed: {e}"),
        }
    });
}
