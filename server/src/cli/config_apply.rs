//! What the configuration file asks of this process, shared by start-up (`serve`), config
//! reload and the offline commands: the datastores it names (as specs, then opened) and the
//! users, tokens and ACLs it seeds.

use std::path::Path;

use anyhow::Context;

use super::storage::{self, StoreLocation};
use crate::auth::{AclSpec, AuthSeed, TenantSpec, TokenSpec, UserSpec};
use crate::config::{Config, DEFAULT_DATASTORE};
use crate::datastore::Datastore;
use crate::state::{AppState, DatastoreEntry};

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
        });
    }
    Ok(specs)
}

/// Opens the backend and the datastore of one spec.
pub(super) async fn open_spec(
    spec: &DatastoreSpec,
    holder: &str,
) -> anyhow::Result<DatastoreEntry> {
    let backend = spec.location.open(&spec.name).await?;
    let store = Datastore::open_as(&spec.name, backend, holder)
        .await
        .with_context(|| format!("datastore '{}' ({})", spec.name, spec.location.describe()))?;
    if let Some(grace) = spec.abandoned_after {
        store.set_abandoned_after(grace);
    }
    if let Some(cutoff) = spec.gc_cutoff {
        store.set_gc_cutoff(cutoff);
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

/// Opens every configured datastore into `state`; returns their names and locations.
pub(super) async fn open_datastores(
    config: &Config,
    data_dir: &Path,
    state: &AppState,
    holder: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut opened = Vec::new();
    for spec in datastore_specs(config, data_dir)? {
        let entry = open_spec(&spec, holder).await?;
        super::retention::apply(config, &entry.store).await?;
        state.insert_datastore(entry);
        opened.push((spec.name.clone(), spec.location.describe()));
    }
    Ok(opened)
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
