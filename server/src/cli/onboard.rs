//! `pbs-cloud-server onboard`: bring a customer's existing PBS into a tenant datastore — every
//! datastore and namespace of it pulled, every group owned by one tenant user — with progress
//! lines and a final summary (docs/design.md#sync).
//!
//! Like `import` it works offline on the target: it opens the datastore under a holder id of
//! its own, so it refuses to run while a server writes it. The copy is a pull sync job run
//! once (same checks, same resumability): run it again after an interruption and it fetches
//! only what is still missing.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Serialize;

use super::Location;
use crate::format::names::BackupNamespace;
use crate::sync::{pull, Direction, PullSummary, RemoteClient, RemoteSpec, SyncParams};

/// Command line of `onboard`.
#[derive(Debug, clap::Args)]
pub struct OnboardArgs {
    /// The customer's PBS: `host` or `host:port` (port 8007 when absent).
    #[arg(long)]
    pub from: String,
    /// `user@realm` or `user@realm!token` on that PBS; it needs read access (DatastoreReader).
    #[arg(long)]
    pub auth_id: String,
    /// SHA-256 fingerprint of that PBS's certificate (`ab:cd:…`).
    #[arg(long)]
    pub fingerprint: String,
    /// File holding the password or token secret.
    #[arg(long)]
    pub secret_file: PathBuf,
    /// Datastores of that PBS to bring; all when absent. With several, each goes into a
    /// namespace of its name below `--ns`.
    #[arg(long = "remote-store")]
    pub remote_stores: Vec<String>,
    /// Tenant user who owns every group brought over.
    #[arg(long)]
    pub owner: String,
    /// Local namespace to bring everything under; root when absent.
    #[arg(long)]
    pub ns: Option<String>,
    /// Configuration file naming the target datastore.
    #[arg(long = "to-config", env = "PBS_CLOUD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (for datastores without an explicit path).
    #[arg(long, env = "PBS_CLOUD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Target datastore name; default: the only configured one.
    #[arg(long)]
    pub store: Option<String>,
    /// Download limit, e.g. `50 MiB` (per second).
    #[arg(long)]
    pub rate_in: Option<String>,
    /// Groups pulled at the same time.
    #[arg(long, default_value_t = 4)]
    pub worker_threads: usize,
}

/// What one remote datastore brought.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StoreOnboarded {
    pub remote_store: String,
    pub namespace: String,
    #[serde(flatten)]
    pub summary: PullSummary,
}

/// Runs the `onboard` command.
pub fn run(args: OnboardArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(onboard(&args))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&result).context("encode onboarding summary")?
    );
    let errors: u64 = result.iter().map(|s| s.summary.errors).sum();
    if errors > 0 {
        bail!("onboarding finished with {errors} failed group(s) or namespace(s); see the log above, then run it again");
    }
    Ok(())
}

async fn onboard(args: &OnboardArgs) -> anyhow::Result<Vec<StoreOnboarded>> {
    let (host, port) = host_port(&args.from)?;
    let remote = RemoteSpec {
        name: "onboard".to_string(),
        host,
        port,
        auth_id: args.auth_id.clone(),
        fingerprint: args.fingerprint.clone(),
        secret_file: args.secret_file.clone(),
    };
    let rate_in = match &args.rate_in {
        Some(text) => Some(
            crate::config::parse_rate(&toml::Value::String(text.clone()))
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let base = match &args.ns {
        Some(text) => BackupNamespace::parse(text).with_context(|| format!("--ns '{text}'"))?,
        None => BackupNamespace::root(),
    };
    let client = RemoteClient::connect(&remote, None, None).await?;
    let stores = match args.remote_stores.is_empty() {
        false => args.remote_stores.clone(),
        true => {
            let listed = client.get_json("/api2/json/admin/datastore", &[]).await?;
            let names: Vec<String> = listed
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["store"].as_str().map(str::to_string))
                .collect();
            if names.is_empty() {
                bail!("{} shows {} no datastore", args.from, args.auth_id);
            }
            names
        }
    };
    let location = Location {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
    };
    let entry = super::config_apply::open_offline(
        &location,
        args.store.as_deref(),
        &super::serve::offline_holder("onboard"),
    )
    .await?;
    let target = entry.store;
    let mut results = Vec::new();
    let mut failure = None;
    for remote_store in &stores {
        let ns = match stores.len() {
            1 => base.clone(),
            _ => base
                .child(remote_store)
                .with_context(|| format!("namespace for datastore '{remote_store}'"))?,
        };
        println!(
            "onboarding datastore '{remote_store}' of {} into '{}', namespace '{}', owner {}",
            args.from,
            entry.name,
            ns.display_path(),
            args.owner
        );
        let params = SyncParams {
            direction: Direction::Pull,
            remote: remote.clone(),
            remote_store: remote_store.clone(),
            remote_ns: BackupNamespace::root(),
            ns: ns.clone(),
            max_depth: None,
            filters: Vec::new(),
            remove_vanished: false,
            transfer_last: None,
            owner: args.owner.clone(),
            verified_only: false,
            encrypted_only: false,
            rate_in,
            rate_out: None,
            worker_threads: args.worker_threads.clamp(1, 32),
        };
        let log = Arc::new(|line: String| println!("{line}"));
        match pull::run(target.clone(), params, log, Arc::new(|| false)).await {
            Ok(summary) => results.push(StoreOnboarded {
                remote_store: remote_store.clone(),
                namespace: ns.display_path(),
                summary,
            }),
            Err(e) => {
                failure =
                    Some(anyhow::Error::new(e).context(format!("datastore '{remote_store}'")));
                break;
            }
        }
    }
    let closed = target.close().await;
    if let Some(e) = failure {
        return Err(e);
    }
    closed.context("closing the target datastore (known-chunk journal, lease)")?;
    Ok(results)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; port 8007 when absent.
fn host_port(from: &str) -> anyhow::Result<(String, u16)> {
    let port = |text: &str| {
        text.parse::<u16>()
            .with_context(|| format!("'{text}' in --from '{from}' is not a port"))
    };
    if let Some(rest) = from.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .with_context(|| format!("--from '{from}': no ']' after the IPv6 address"))?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host.to_string(), port(p)?)),
            None if after.is_empty() => Ok((host.to_string(), 8007)),
            None => bail!("--from '{from}': unexpected '{after}' after the address"),
        };
    }
    match from.split_once(':') {
        Some((host, p)) if !p.contains(':') => Ok((host.to_string(), port(p)?)),
        _ => Ok((from.to_string(), 8007)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_takes_hosts_ports_and_ipv6() {
        let ok = |s: &str| host_port(s).unwrap();
        assert_eq!(ok("pbs.example"), ("pbs.example".into(), 8007));
        assert_eq!(ok("pbs.example:8117"), ("pbs.example".into(), 8117));
        assert_eq!(ok("[fd00::1]:8007"), ("fd00::1".into(), 8007));
        assert_eq!(ok("[fd00::1]"), ("fd00::1".into(), 8007));
        assert_eq!(ok("fd00::1"), ("fd00::1".into(), 8007));
        assert!(host_port("pbs:http")
            .unwrap_err()
            .to_string()
            .contains("not a port"));
        assert!(host_port("[fd00::1").is_err());
    }
}
