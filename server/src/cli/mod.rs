//! Command line: `serve` runs the server; the other sub-commands manage users, tokens, tenants and
//! ACLs in a data dir (while the server is stopped, or followed by a restart).

mod compliance;
mod config_apply;
pub mod import;
mod manage;
pub mod onboard;
mod reload;
mod retention;
mod serve;
pub mod storage;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_DATA_DIR};

#[derive(Debug, Parser)]
#[command(
    name = "pbs-cloud-server",
    version,
    about = "Backup server for proxmox-backup-client and Proxmox VE, on local disks or S3"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the server keeps its state, shared by every sub-command.
#[derive(Debug, clap::Args)]
pub struct Location {
    /// TOML configuration file (validated at load).
    #[arg(long, env = "PBS_CLOUD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (certificates, users, default datastore); overrides the config file.
    #[arg(long, env = "PBS_CLOUD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server. Without configuration it creates a data dir with one datastore and an
    /// admin, and prints the PBS_REPOSITORY, PBS_PASSWORD and PBS_FINGERPRINT to use.
    Serve {
        #[command(flatten)]
        location: Location,
        /// Address to listen on, e.g. 0.0.0.0:8007; overrides the config file.
        #[arg(long, env = "PBS_CLOUD_LISTEN")]
        listen: Option<String>,
    },
    /// Manage users (realm pbs).
    User {
        #[command(flatten)]
        location: Location,
        #[command(subcommand)]
        action: manage::UserAction,
    },
    /// Manage API tokens.
    Token {
        #[command(flatten)]
        location: Location,
        #[command(subcommand)]
        action: manage::TokenAction,
    },
    /// Manage tenants.
    Tenant {
        #[command(flatten)]
        location: Location,
        #[command(subcommand)]
        action: manage::TenantAction,
    },
    /// Grant a role on a path, e.g. `acl add /datastore/store1 alice@pbs DatastoreBackup`.
    Acl {
        #[command(flatten)]
        location: Location,
        #[command(subcommand)]
        action: manage::AclAction,
    },
    /// Copy a datastore directory in PBS's layout into a configured datastore (e.g. on S3),
    /// verifying every chunk and index; safe to run again after an interruption.
    Import(import::ImportArgs),
    /// Bring a customer's existing PBS (every datastore and namespace) into a datastore here,
    /// every group owned by one tenant user; safe to run again after an interruption.
    Onboard(onboard::OnboardArgs),
    /// Print a tenant's compliance report (JSON or CSV), fetched from the running server's
    /// API with the given credentials.
    ComplianceReport(compliance::ComplianceArgs),
    /// Print an argon2 hash of a password read from stdin (for `password_hash` in config files).
    HashPassword,
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs one command to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { location, listen } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve::serve(location, listen))
        }
        Command::User { location, action } => manage::user(&location, action),
        Command::Token { location, action } => manage::token(&location, action),
        Command::Tenant { location, action } => manage::tenant(&location, action),
        Command::Acl { location, action } => manage::acl(&location, action),
        Command::Import(args) => import::run(args),
        Command::Onboard(args) => onboard::run(args),
        Command::ComplianceReport(args) => compliance::run(args),
        Command::HashPassword => manage::hash_password_from_stdin(),
    }
}

impl Location {
    /// The config file (or the empty default) and the data dir it implies.
    pub fn resolve(&self) -> anyhow::Result<(Config, PathBuf)> {
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let data_dir = self
            .data_dir
            .clone()
            .or_else(|| config.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        Ok((config, data_dir))
    }
}
