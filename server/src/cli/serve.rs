//! `pbs-cloud-server serve`: wires config, TLS, auth, datastores and the listener together.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::storage::{self, StoreLocation};
use super::Location;
use crate::auth::{AclSpec, AuthSeed, AuthService, TenantSpec, TokenSpec, UserSpec};
use crate::config::{Config, DEFAULT_DATASTORE, DEFAULT_LISTEN};
use crate::datastore::Datastore;
use crate::net::tls;
use crate::state::{AppState, DatastoreEntry, NodeIdentity};
use crate::tasks::TaskRegistry;

/// User created on a zero-configuration start.
pub const DEFAULT_ADMIN: &str = "admin@pbs";
/// File in the data dir holding the generated admin password until it is changed.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

pub async fn serve(location: Location, listen: Option<String>) -> anyhow::Result<()> {
    let (config, data_dir) = location.resolve()?;
    let listen: SocketAddr = match listen {
        Some(text) => text
            .parse()
            .with_context(|| format!("--listen '{text}' is not an address like 0.0.0.0:8007"))?,
        None => config
            .listen_addr()
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
    };
    create_private_dir(&data_dir)?;

    let tls = tls::load_or_create(
        &data_dir.join("tls"),
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
    )?;
    let node = NodeIdentity {
        name: "localhost".to_string(),
        instance_id: instance_id(&data_dir)?,
    };
    // Who holds the datastore leases: stable across restarts of this server (same data dir).
    let holder = format!("{}@{}", node.instance_id, hostname());

    let auth = AuthService::open(&data_dir.join("auth"), auth_seed_for(&config))
        .context("unable to load users and tokens")?;
    let initial_password = ensure_admin(&auth, &config, &data_dir)?;

    let state = Arc::new(AppState::new(auth, TaskRegistry::new(&node.name), node));
    state.meter.apply_quotas(&config);
    let opened = open_datastores(&config, &data_dir, &state, &holder).await?;
    state.meter.start(&config, &data_dir, &state)?;
    let stores: Vec<String> = opened.iter().map(|(name, _)| name.clone()).collect();
    state
        .jobs
        .configure(Some(&data_dir), crate::jobs::specs_from_config(&config)?);
    crate::jobs::scheduler::spawn(state.clone());
    if let Some(path) = &location.config {
        super::reload::spawn_watcher(super::reload::Watcher {
            path: path.clone(),
            data_dir: data_dir.clone(),
            holder: holder.clone(),
            state: state.clone(),
            locations: opened.into_iter().collect(),
        });
    }

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("unable to listen on {listen}"))?;
    let bound = listener.local_addr()?;
    tracing::info!("listening on {bound}, data dir {}", data_dir.display());
    print_client_settings(
        bound,
        &stores,
        initial_password.as_deref(),
        &tls.fingerprint,
        &data_dir,
    );

    crate::listener::serve(listener, tls.config, state.clone(), shutdown_signal()).await;
    tracing::info!("shutting down");
    // Hand S3 leases back at once, so another server may take over without waiting for expiry.
    for entry in state.datastores() {
        if let Err(err) = entry.store.close().await {
            tracing::warn!(
                "datastore '{}': unable to release its lease: {err}",
                entry.name
            );
        }
    }
    Ok(())
}

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
async fn open_datastores(
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

/// On a server without any user, creates `admin@pbs` with a generated password kept (0600) in
/// the data dir so the start-up banner can show it. Returns the password while that file exists.
fn ensure_admin(
    auth: &AuthService,
    config: &Config,
    data_dir: &Path,
) -> anyhow::Result<Option<String>> {
    let password_file = data_dir.join(INITIAL_PASSWORD_FILE);
    if !auth.has_users() {
        let tenant = config.default_tenant();
        auth.ensure_tenant(&tenant, Some("created at first start"))?;
        let password = crate::auth::generate_secret()?;
        auth.add_user(DEFAULT_ADMIN, &tenant, &password, true)?;
        auth.add_acl("/", DEFAULT_ADMIN, "Admin")?;
        write_private_file(&password_file, password.as_bytes())?;
        tracing::info!("created user {DEFAULT_ADMIN} with a generated password");
    }
    match std::fs::read_to_string(&password_file) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("unable to read {}", password_file.display())),
    }
}

/// The lines a user pastes into a shell to point `proxmox-backup-client` at this server.
fn print_client_settings(
    bound: SocketAddr,
    stores: &[String],
    password: Option<&str>,
    fingerprint: &str,
    data_dir: &Path,
) {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let host = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let store = stores
        .first()
        .map(String::as_str)
        .unwrap_or(DEFAULT_DATASTORE);
    println!("# Use this server with proxmox-backup-client:");
    println!(
        "export PBS_REPOSITORY='{DEFAULT_ADMIN}@{host}:{}:{store}'",
        bound.port()
    );
    match password {
        Some(password) => println!("export PBS_PASSWORD='{password}'"),
        None => println!(
            "# PBS_PASSWORD: the admin password was changed; the generated one is gone from {}",
            data_dir.display()
        ),
    }
    println!("export PBS_FINGERPRINT='{fingerprint}'");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Host name for the datastore lease (who holds it), `unknown-host` if unreadable.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// A random id kept in `<data-dir>/instance-id`.
fn instance_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let bytes: [u8; 16] = rand::random();
            let id = hex::encode(bytes);
            write_private_file(&path, id.as_bytes())?;
            Ok(id)
        }
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("unable to create data dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("unable to restrict permissions of {}", dir.display()))?;
    Ok(())
}

fn write_private_file(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    crate::backend::local::write_private_file(path, data)
        .with_context(|| format!("unable to write {}", path.display()))
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
