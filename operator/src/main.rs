//! `pbs-cloud-operator`: runs the controllers (optionally behind leader election) and serves
//! health and metrics endpoints. SIGTERM and SIGINT shut it down gracefully (see
//! `lifecycle`).

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pbs_cloud_operator::controller::Settings;
use pbs_cloud_operator::leader::{self, Timing};
use pbs_cloud_operator::lifecycle::{self, LeaseSettings, Process};
use pbs_cloud_operator::{health, metrics, render};

#[derive(Debug, Parser)]
#[command(
    name = "pbs-cloud-operator",
    version,
    about = "Kubernetes operator for PBS Cloud tenants"
)]
struct Args {
    /// Server image for Tenants that do not name one.
    #[arg(long, env = "PBS_CLOUD_SERVER_IMAGE", default_value = render::DEFAULT_IMAGE)]
    server_image: String,
    /// Watch only this namespace (all namespaces when absent).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Take a Lease before reconciling (needed for more than one replica).
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "pbs-cloud-operator")]
    lease_name: String,
    /// Seconds a follower waits, after it last saw the Lease change, before taking it.
    #[arg(long, default_value_t = leader::LEASE_DURATION.as_secs())]
    lease_duration: u64,
    /// Seconds after the start of its last successful renewal at which a leader stops acting;
    /// must be shorter than the lease duration.
    #[arg(long, default_value_t = leader::RENEW_DEADLINE.as_secs())]
    renew_deadline: u64,
    /// Seconds between renewals (and acquire attempts).
    #[arg(long, default_value_t = leader::RETRY_PERIOD.as_secs())]
    retry_period: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let args = Args::parse();
    let timing = Timing {
        lease_duration: Duration::from_secs(args.lease_duration),
        renew_deadline: Duration::from_secs(args.renew_deadline),
        retry_period: Duration::from_secs(args.retry_period),
    };
    timing.validate().map_err(anyhow::Error::msg)?;
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(metrics::Metrics::default());
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tokio::spawn(health::serve(listener, metrics.clone(), ready.clone()));
    let config = kube::Config::infer().await?;
    let mut settings = Settings::new(args.server_image, args.namespace);
    settings.instance = Some(identity.clone());
    lifecycle::run(Process {
        config,
        settings,
        lease: args.leader_elect.then_some(LeaseSettings {
            namespace: args.lease_namespace,
            name: args.lease_name,
            timing,
        }),
        identity,
        metrics,
        ready,
    })
    .await
}
