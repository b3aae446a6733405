//! `operator-bench`: the operator's steady-state API load, measured from the API server's
//! audit log (see `pbs_cloud_operator::bench`). Against the test API server:
//!
//! ```text
//! e2e/kube/start-kube.sh
//! cargo build -p pbs-cloud-operator --bins
//! target/debug/operator-bench --tenants 100 --minutes 10
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pbs_cloud_operator::bench::{self, Options};

#[derive(Debug, Parser)]
#[command(
    name = "operator-bench",
    about = "Steady-state API load of pbs-cloud-operator"
)]
struct Args {
    /// Tenants to create (each with an S3 Datastore and a PrunePolicy).
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    /// Length of the measured window, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Kubeconfig of the API server (default: the one e2e/kube/start-kube.sh writes).
    #[arg(long, env = "PBS_CLOUD_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The API server's audit log (default: audit.log next to the kubeconfig).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// The operator binary (default: pbs-cloud-operator next to this binary).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Resync interval of the operator, seconds (its default when absent).
    #[arg(long)]
    resync_seconds: Option<u64>,
    /// Usage interval of the operator, seconds (its default when absent).
    #[arg(long)]
    usage_interval_seconds: Option<u64>,
    /// Seconds without operator writes before the window starts.
    #[arg(long, default_value_t = 20)]
    quiet_seconds: u64,
    /// Keep the namespace with the Tenants afterwards.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kubeconfig = args.kubeconfig.unwrap_or_else(|| {
        let home = std::env::var("HOME").unwrap_or_default();
        PathBuf::from(home).join(".cache/pbs-cloud/kube-run/kubeconfig")
    });
    let operator_bin = match args.operator_bin {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("pbs-cloud-operator"),
    };
    let log_dir = std::env::temp_dir().join(format!("operator-bench-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir)?;
    let opts = Options {
        tenants: args.tenants,
        window: Duration::from_secs_f64(args.minutes * 60.0),
        audit_log: args
            .audit_log
            .unwrap_or_else(|| bench::default_audit_log(&kubeconfig)),
        kubeconfig,
        operator_bin,
        resync: args.resync_seconds.map(Duration::from_secs),
        usage_interval: args.usage_interval_seconds.map(Duration::from_secs),
        quiet: Duration::from_secs(args.quiet_seconds),
        log_dir: log_dir.clone(),
        keep: args.keep,
    };
    eprintln!(
        "setting up {} tenants, then measuring {} min (operator log in {})",
        opts.tenants,
        args.minutes,
        log_dir.display()
    );
    let report = bench::measure(&opts).await?;
    print!("{}", report.render());
    println!("{}", report.json());
    Ok(())
}
