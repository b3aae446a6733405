//! The steady-state API load of the operator, measured from the API server's audit log:
//! create N Tenants, let the operator (a real process, with leader election) reconcile them,
//! mark their pods ready, wait until it is quiet, then count every request it sends during a
//! window in which nothing changes. `operator-bench` prints the result; a short version runs
//! as a test (`tests/kube_steady.rs`).

pub mod audit;
pub mod fixture;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chrono::Utc;

use audit::Counts;
use process::{OperatorProcess, Spawn};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub tenants: usize,
    /// Length of the measured window.
    pub window: Duration,
    pub kubeconfig: PathBuf,
    /// The API server's audit log (`audit.log` next to the kubeconfig by default).
    pub audit_log: PathBuf,
    pub operator_bin: PathBuf,
    /// `PBS_CLOUD_RESYNC_INTERVAL` / `PBS_CLOUD_USAGE_INTERVAL` of the operator (its defaults
    /// when `None`).
    pub resync: Option<Duration>,
    pub usage_interval: Option<Duration>,
    /// How long the operator must have written nothing before the window starts.
    pub quiet: Duration,
    /// Where the operator's log goes.
    pub log_dir: PathBuf,
    /// Leave the namespace behind.
    pub keep: bool,
}

/// What the operator sent during the window.
#[derive(Debug, Clone)]
pub struct Report {
    pub tenants: usize,
    pub window: Duration,
    pub namespace: String,
    pub identity: String,
    /// Every request of the operator in the window, by verb and resource.
    pub counts: Counts,
    /// Tenant reconciles during the window (from the operator's metrics).
    pub reconciles: f64,
    /// Usage reads from tenant servers during the window.
    pub usage_reads: f64,
}

impl Report {
    /// Writes other than the leader Lease's renewals.
    pub fn writes(&self) -> u64 {
        self.counts
            .sum(|v, r| crate::apiclient::is_write(v) && r != "leases")
    }

    /// Reads other than watches and the Lease's.
    pub fn reads(&self) -> u64 {
        self.counts
            .sum(|v, r| !crate::apiclient::is_write(v) && v != "watch" && r != "leases")
    }

    /// Watch requests (each one long-running; they restart every few minutes).
    pub fn watches(&self) -> u64 {
        self.counts.sum(|v, _| v == "watch")
    }

    /// Requests on the leader Lease.
    pub fn lease_requests(&self) -> u64 {
        self.counts.sum(|_, r| r == "leases")
    }

    fn hours(&self) -> f64 {
        self.window.as_secs_f64() / 3600.0
    }

    /// `n` requests in the window, per tenant and hour.
    pub fn per_tenant_hour(&self, n: u64) -> f64 {
        n as f64 / self.tenants.max(1) as f64 / self.hours()
    }

    /// `n` requests in the window, per hour.
    pub fn per_hour(&self, n: u64) -> f64 {
        n as f64 / self.hours()
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut o = format!(
            "steady state: {} tenants, {:.0} s window, namespace {}, operator {}\n",
            self.tenants,
            self.window.as_secs_f64(),
            self.namespace,
            self.identity
        );
        o.push_str("requests of the operator in the window (audit log):\n");
        for ((verb, res), n) in &self.counts.0 {
            o.push_str(&format!("  {verb:<8} {res:<28} {n}\n"));
        }
        o.push_str(&format!(
            "writes (without the Lease):  {} = {:.2} per tenant per hour\n\
             reads (without watches, Lease): {} = {:.2} per tenant per hour\n\
             watch requests:              {} = {:.1} per hour ({:.2} per tenant per hour)\n\
             Lease requests:              {} = {:.1} per hour (leader election, independent of tenants)\n\
             reconciles in the window:    {:.0} (all from the caches)\n\
             usage reads in the window:   {:.0}\n",
            self.writes(),
            self.per_tenant_hour(self.writes()),
            self.reads(),
            self.per_tenant_hour(self.reads()),
            self.watches(),
            self.per_hour(self.watches()),
            self.per_tenant_hour(self.watches()),
            self.lease_requests(),
            self.per_hour(self.lease_requests()),
            self.reconciles,
            self.usage_reads,
        ));
        o
    }

    /// One JSON object with the figures.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "tenants": self.tenants,
            "window_seconds": self.window.as_secs_f64(),
            "writes": self.writes(),
            "reads": self.reads(),
            "watches": self.watches(),
            "lease_requests": self.lease_requests(),
            "writes_per_tenant_hour": self.per_tenant_hour(self.writes()),
            "reads_per_tenant_hour": self.per_tenant_hour(self.reads()),
            "watches_per_hour": self.per_hour(self.watches()),
            "lease_requests_per_hour": self.per_hour(self.lease_requests()),
            "reconciles": self.reconciles,
            "usage_reads": self.usage_reads,
        })
    }
}

/// The default audit log: `audit.log` next to the kubeconfig `e2e/kube/start-kube.sh` writes.
pub fn default_audit_log(kubeconfig: &std::path::Path) -> PathBuf {
    kubeconfig
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("audit.log")
}

/// Operator writes (without the Lease) in the last `quiet`; waits until there were none.
async fn wait_quiet(o: &Options, agent: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let quiet = chrono::Duration::from_std(o.quiet)?;
    loop {
        let now = Utc::now();
        let evs = audit::read(&o.audit_log, agent, now - quiet, now)?;
        if !evs.iter().any(|e| e.is_write() && e.resource() != "leases") {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the operator kept writing for 10 minutes without any change");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the measurement described in the module doc.
pub async fn measure(o: &Options) -> anyhow::Result<Report> {
    if !o.audit_log.exists() {
        bail!(
            "no audit log at {}: the API server must write one (e2e/kube/start-kube.sh enables it; \
             an API server started by an older version of the script is restarted by running it again)",
            o.audit_log.display()
        );
    }
    let client = fixture::client(&o.kubeconfig).await?;
    fixture::ensure_crds(&client).await?;
    let ns = fixture::namespace(&client, "op-steady").await?;
    let result = measure_in(o, &client, &ns).await;
    if !o.keep {
        fixture::drop_namespace(&client, &ns).await;
    }
    result
}

async fn measure_in(o: &Options, client: &kube::Client, ns: &str) -> anyhow::Result<Report> {
    fixture::tenants(client, ns, o.tenants).await?;
    let identity = format!("bench-{}", fixture::suffix());
    let mut env = Vec::new();
    if let Some(r) = o.resync {
        env.push(("PBS_CLOUD_RESYNC_INTERVAL".into(), r.as_secs().to_string()));
    }
    if let Some(u) = o.usage_interval {
        env.push(("PBS_CLOUD_USAGE_INTERVAL".into(), u.as_secs().to_string()));
    }
    let mut op = OperatorProcess::start(&Spawn {
        binary: o.operator_bin.clone(),
        kubeconfig: o.kubeconfig.clone(),
        identity: identity.clone(),
        namespace: ns.to_string(),
        leader_elect: true,
        env,
        log_dir: o.log_dir.clone(),
    })?;
    let setup = Duration::from_secs(120 + 3 * o.tenants as u64);
    fixture::wait_reconciled(client, ns, o.tenants, setup)
        .await
        .with_context(|| format!("operator log: {}", op.log_path().display()))?;
    fixture::make_ready(client, ns, o.tenants, setup)
        .await
        .with_context(|| format!("operator log: {}", op.log_path().display()))?;
    let agent = format!("({identity})");
    wait_quiet(o, &agent).await?;

    let reconciles = "pbs_cloud_operator_reconciles_total{controller=\"tenant\"}";
    let before = (
        op.metric(reconciles).await.unwrap_or(0.0),
        op.metric("pbs_cloud_operator_usage_reads_total")
            .await
            .unwrap_or(0.0),
    );
    let from = Utc::now();
    // The measurement itself: nothing changes for the length of the window.
    tokio::time::sleep(o.window).await;
    let to = Utc::now();
    let after = (
        op.metric(reconciles).await.unwrap_or(0.0),
        op.metric("pbs_cloud_operator_usage_reads_total")
            .await
            .unwrap_or(0.0),
    );
    let events = audit::read(&o.audit_log, &agent, from, to)?;
    let _ = op.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = op.wait_exit(Duration::from_secs(10)).await;
    Ok(Report {
        tenants: o.tenants,
        window: (to - from).to_std()?,
        namespace: ns.to_string(),
        identity,
        counts: Counts::of(&events),
        reconciles: after.0 - before.0,
        usage_reads: after.1 - before.1,
    })
}
