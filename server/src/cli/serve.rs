//! `pbs-cloud-server serve`: wires config, TLS, auth, datastores and the listener together.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::config_apply::{auth_seed_for, AppliedConfig};
use super::Location;
use crate::auth::AuthService;
use crate::config::{Config, DEFAULT_DATASTORE, DEFAULT_LISTEN};
use crate::net::tls;
use crate::protocol::backup::budget::UploadBudget;
use crate::state::{AppState, NodeIdentity};
use crate::tasks::TaskRegistry;

/// User created on a zero-configuration start.
pub const DEFAULT_ADMIN: &str = "admin@pbs";
/// File in the data dir holding the generated admin password until it is changed.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

pub async fn serve(location: Location, listen: Option<String>) -> anyhow::Result<()> {
    let (config, data_dir) = location.resolve()?;
    crate::allocator::tune_system_allocator();
    tracing::info!("memory allocator: {}", crate::allocator::name());
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

    let mut auth = AuthService::open(&data_dir.join("auth"), auth_seed_for(&config))
        .context("unable to load users and tokens")?;
    auth.set_hash_pool_size(config.limits.hash_pool());
    let initial_password = ensure_admin(&auth, &config, &data_dir)?;

    let nofile = crate::net::limits::raise_open_file_limit();
    let mut app = AppState::new(auth, TaskRegistry::new(&node.name), node);
    app.limits = config
        .limits
        .edge_limits(crate::net::limits::EdgeLimits::for_open_file_limit(nofile));
    if let Some(limits) = &config.upload_limits {
        app.uploads = UploadBudget::new(limits.get_ref().limits());
    }
    let hashes = app.auth.hash_pool_size();
    tracing::info!(
        "credential checks: {} at once, {} waiting at most, argon2 memory at most {} MiB",
        hashes.workers,
        hashes.queue,
        hashes.memory_bound() / (1024 * 1024)
    );
    let state = Arc::new(app);
    let _ = state.tls_fingerprint.set(tls.fingerprint.clone());
    state.jobs.configure(Some(&data_dir), Vec::new());
    // The same path a config reload takes, applied to a server with nothing open yet.
    let mut applied = AppliedConfig::new(data_dir.clone(), holder, state.clone());
    let stores = applied.apply(&config).await?;
    state
        .meter
        .start(&config, &data_dir, Arc::downgrade(&state) as _)?;
    crate::jobs::scheduler::spawn(state.clone());
    if let Some(path) = &location.config {
        super::reload::spawn_watcher(path.clone(), applied);
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
        // PBS's built-in superuser carries this comment
        auth.set_user_comment(DEFAULT_ADMIN, Some("Superuser"))?;
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

/// The writer-lease holder of an offline command (`import-<pid>@<host>`): refused while a
/// server holds the datastore, and the other way round.
pub(super) fn offline_holder(command: &str) -> String {
    format!("{command}-{}@{}", std::process::id(), hostname())
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
