//! `pbs-cloud-operator`: runs the controllers (optionally behind leader election) and serves
//! health and metrics endpoints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use pbs_cloud_operator::{controller, health, leader, render};

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
    /// Take a Lease before reconciling (for more than one replica).
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let args = Args::parse();
    let client = kube::Client::try_default().await?;
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(controller::Metrics::default());
    tokio::spawn(health::serve(
        args.metrics_addr,
        metrics.clone(),
        ready.clone(),
    ));
    let election = args.leader_elect.then(|| {
        let identity =
            std::env::var("POD_NAME").unwrap_or_else(|_| format!("pid-{}", std::process::id()));
        leader::LeaderElection::new(
            client.clone(),
            &args.lease_namespace,
            "pbs-cloud-operator",
            &identity,
        )
    });
    if let Some(e) = &election {
        tracing::info!("waiting for leadership");
        e.acquire().await;
    }
    let ctx =
        controller::context_with_metrics(client, args.server_image, args.namespace, metrics).await;
    ready.store(true, Ordering::Relaxed);
    tracing::info!("controllers running");
    let shutdown = async move {
        match election {
            Some(e) => {
                tokio::select! {
                    _ = e.hold() => tracing::error!("lost leadership; exiting"),
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    controller::run(ctx, shutdown).await;
    Ok(())
}
