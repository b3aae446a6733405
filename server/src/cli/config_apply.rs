//! What the configuration file asks of this process, shared by start-up (`serve`), config
//! reload and the offline commands: the datastores it names (as specs, then opened) and the
//! users, tokens and ACLs it seeds. [`AppliedConfig`] is the one path that puts a configuration
//! into force: start-up applies the first file to an empty server, reload applies each later
//! one to the running server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::storage::{self, StoreLocation};
use crate::auth::{AclSpec, AuthSeed, TenantSpec, TokenSpec, UserSpec};
use crate::config::{Config, DEFAULT_DATASTORE};
use crate::datastore::Datastore;
use crate::state::{AppState, DatastoreEntry};

/// How long sessions and tasks of a removed datastore may run on before it is closed.
pub const RETIRE_DRAIN: Duration = Duration::from_secs(300);

/// One datastore as the configuration describes it, before it is opened.
pub(super) struct DatastoreSpec {
    pub name: String,
    pub tenant: String,
    pub location: StoreLocation,
    pub comment: Option<String>,
    /// Grace period for abandoned backups (`abandoned_after_hours`).
    pub abandoned_after: Option<std::time::Duration>,
    /// GC's minimum chunk age (`gc_atime_cutoff_minutes`).
    pub gc_cutoff: Option<std::time::Duration>,
    /// Where the known-chunk set's local file goes (docs/design.md#known-chunk-set).
    pub cache_dir: PathBuf,
}

/// Every configured datastore, or the default one. The default datastore follows the seed's
/// `[storage]` section, else the environment quick start (`PBS_CLOUD_BUCKET`, ...), else a
/// directory in the data dir.
pub(super) fn datastore_specs(
    config: &Config,
    data_dir: &Path,
) -> anyhow::Result<Vec<DatastoreSpec>> {
    let default_tenant = config.default_tenant();
    let mut specs = Vec::new();
    for ds in &config.datastores {
        let name = ds.name.get_ref().clone();
        let tenant = ds
            .tenant
            .as_ref()
            .map(|t| t.get_ref().clone())
            .unwrap_or_else(|| default_tenant.clone());
        let location = match &ds.s3 {
            Some(s3) => StoreLocation::S3(Box::new(
                storage::settings_from_s3_config(s3)
                    .with_context(|| format!("datastore '{name}'"))?,
            )),
            None => StoreLocation::Local(
                ds.path
                    .clone()
                    .unwrap_or_else(|| data_dir.join("datastores").join(&name)),
            ),
        };
        specs.push(DatastoreSpec {
            name,
            tenant,
            location,
            comment: ds.comment.clone(),
            abandoned_after: ds
                .abandoned_after_hours
                .map(|h| std::time::Duration::from_secs(h.saturating_mul(3600))),
            gc_cutoff: ds
                .gc_atime_cutoff_minutes
                .map(|m| std::time::Duration::from_secs(m.saturating_mul(60))),
            cache_dir: known_cache_dir(data_dir),
        });
    }
    if specs.is_empty() {
        let default_path = data_dir.join("datastores").join(DEFAULT_DATASTORE);
        let location = match &config.storage {
            Some(storage) => storage::location_from_storage(storage, &default_path)?,
            None => storage::location_from_env().unwrap_or(StoreLocation::Local(default_path)),
        };
        specs.push(DatastoreSpec {
            name: DEFAULT_DATASTORE.to_string(),
            tenant: default_tenant,
            location,
            comment: None,
            abandoned_after: None,
            gc_cutoff: None,
            cache_dir: known_cache_dir(data_dir),
        });
    }
    Ok(specs)
}

/// Local copies of the datastores' known-chunk sets (one file per datastore).
fn known_cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("known-chunks")
}

/// Opens the backend and the datastore of one spec.
pub(super) async fn open_spec(
    spec: &DatastoreSpec,
    holder: &str,
) -> anyhow::Result<DatastoreEntry> {
    let backend = spec.location.open(&spec.name).await?;
    let store = Datastore::open_cached(&spec.name, backend, holder, &spec.cache_dir)
        .await
        .with_context(|| format!("datastore '{}' ({})", spec.name, spec.location.describe()))?;
    if let Some(grace) = spec.abandoned_after {
        store.gc().set_abandoned_after(grace);
    }
    if let Some(cutoff) = spec.gc_cutoff {
        store.gc().set_cutoff(cutoff);
    }
    tracing::info!(
        "datastore '{}' (tenant '{}') at {}",
        spec.name,
        spec.tenant,
        spec.location.describe()
    );
    Ok(DatastoreEntry {
        name: spec.name.clone(),
        tenant: spec.tenant.clone(),
        comment: spec.comment.clone(),
        store,
    })
}

/// Opens one configured datastore for an offline command (`import`, `onboard`) under a holder
/// id of its own (`holder`), so the command refuses to run while a server writes the
/// datastore: the one named, or the only one configured.
pub(super) async fn open_offline(
    location: &super::Location,
    store: Option<&str>,
    holder: &str,
) -> anyhow::Result<DatastoreEntry> {
    let (config, data_dir) = location.resolve()?;
    let specs = datastore_specs(&config, &data_dir)?;
    let spec = match store {
        Some(name) => specs
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no datastore '{name}' in the configuration"))?,
        None if specs.len() == 1 => &specs[0],
        None => anyhow::bail!("several datastores are configured; choose one with --store"),
    };
    open_spec(spec, holder).await
}

/// The configuration in force in a running server, and the one way to change it.
///
/// What applies: users, tokens, ACL entries and tenants of the file; datastores added, removed,
/// re-assigned to another tenant or moved to another location; retention rules; scheduled jobs;
/// quotas and capacities. A datastore removed (or moved away) takes no new work; sessions and
/// tasks that already hold it get [`RETIRE_DRAIN`] to end, then it is closed: its writes are
/// refused, its counters persisted and its lease released. Listen address, TLS files and the
/// `[limits]` and `[upload_limits]` sections are read at start only.
pub(super) struct AppliedConfig {
    data_dir: PathBuf,
    /// Lease holder id for the datastores this server opens.
    holder: String,
    state: Arc<AppState>,
    /// Datastore name → location description of what is open now.
    locations: BTreeMap<String, String>,
}

impl AppliedConfig {
    /// A server with nothing applied yet: no datastore open.
    pub fn new(data_dir: PathBuf, holder: String, state: Arc<AppState>) -> Self {
        Self {
            data_dir,
            holder,
            state,
            locations: BTreeMap::new(),
        }
    }

    /// Puts `config` into force. Everything that can fail (specs, job specs, opening new or
    /// moved datastores, their retention rules, the auth seed) happens before anything the
    /// server serves changes, so on an error the running configuration stays as it was.
    /// Returns the names of the datastores now in force, in the order the file lists them.
    pub async fn apply(&mut self, config: &Config) -> anyhow::Result<Vec<String>> {
        let specs = datastore_specs(config, &self.data_dir)?;
        let jobs = crate::jobs::specs_from_config(config)?;
        let seed = auth_seed_for(config);

        // Open what is new or moved first, so a failure leaves everything as it was.
        let mut opened = Vec::new();
        for spec in &specs {
            let location = spec.location.describe();
            if self.locations.get(&spec.name) != Some(&location) {
                opened.push((open_spec(spec, &self.holder).await?, location));
            }
        }
        for (entry, _) in &opened {
            super::retention::apply(config, &entry.store).await?;
        }
        for spec in &specs {
            if let Some(current) = self.state.datastore(&spec.name) {
                if !opened.iter().any(|(e, _)| e.name == spec.name) {
                    super::retention::apply(config, &current.store).await?;
                }
            }
        }
        self.state.auth.replace_seed(seed)?;

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
                current.store.gc().set_abandoned_after(
                    spec.abandoned_after
                        .unwrap_or(crate::datastore::DEFAULT_ABANDONED_AFTER),
                );
                if current.tenant != spec.tenant || current.comment != spec.comment {
                    self.state.insert_datastore(DatastoreEntry {
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
            .reconfigure(config, &self.state.datastores());
        Ok(specs.into_iter().map(|spec| spec.name).collect())
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

/// Users, tokens and ACLs declared in the config file, for `AuthService::open`.
pub(super) fn auth_seed_for(config: &Config) -> AuthSeed {
    let default_tenant = config.default_tenant();
    AuthSeed {
        tenants: config
            .tenants
            .iter()
            .map(|t| TenantSpec {
                id: t.id.get_ref().clone(),
                comment: t.comment.clone(),
            })
            .collect(),
        users: config
            .users
            .iter()
            .map(|u| UserSpec {
                userid: u.userid.get_ref().clone(),
                tenant: u
                    .tenant
                    .as_ref()
                    .map(|t| t.get_ref().clone())
                    .unwrap_or_else(|| default_tenant.clone()),
                password_hash: u.password_hash.clone(),
                superuser: u.superuser,
            })
            .collect(),
        tokens: config
            .tokens
            .iter()
            .map(|t| TokenSpec {
                tokenid: t.tokenid.get_ref().clone(),
                secret_hash: t.secret_hash.clone(),
            })
            .collect(),
        acl: config
            .acl
            .iter()
            .map(|a| AclSpec {
                path: a.path.get_ref().clone(),
                authid: a.authid.get_ref().clone(),
                role: a.role.get_ref().clone(),
            })
            .collect(),
    }
}
