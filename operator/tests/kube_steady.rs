//! The operator at steady state against the real kube-apiserver (`e2e/kube/start-kube.sh`,
//! which enables the audit log): 10 ready Tenants, nothing changes for a minute while resyncs
//! and usage polls run, and the operator sends no write and no read apart from its watches
//! and its Lease renewals. The full measurement (100 tenants, 10 minutes, per-tenant-hour
//! figures) is `operator-bench`.

mod common;

use std::time::Duration;

use pbs_cloud_operator::bench::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_writes_nothing_and_reads_only_from_caches() {
    const TENANTS: usize = 10;
    // Fails with the how-to when there is no API server; installs the CRDs.
    let _ = common::client().await;
    let kubeconfig = common::kubeconfig_path();
    let dir = tempfile::tempdir().expect("tmp");
    let opts = Options {
        tenants: TENANTS,
        window: Duration::from_secs(60),
        audit_log: bench::default_audit_log(&kubeconfig),
        kubeconfig,
        operator_bin: env!("CARGO_BIN_EXE_pbs-cloud-operator").into(),
        resync: Some(Duration::from_secs(15)),
        usage_interval: Some(Duration::from_secs(10)),
        quiet: Duration::from_secs(10),
        log_dir: dir.path().into(),
        keep: false,
    };
    let report = bench::measure(&opts)
        .await
        .unwrap_or_else(|e| panic!("measuring: {e:#}"));
    eprintln!("{}", report.render());
    assert!(
        report.lease_requests() > 0,
        "the operator's requests are in the audit log (its Lease renewals)"
    );
    assert_eq!(
        report.writes(),
        0,
        "writes at steady state:\n{}",
        report.render()
    );
    assert_eq!(
        report.reads(),
        0,
        "reads not served from the caches:\n{}",
        report.render()
    );
    assert!(
        report.reconciles >= (TENANTS * 3) as f64,
        "every Tenant was resynced during the window:\n{}",
        report.render()
    );
    assert!(
        report.usage_reads >= (TENANTS * 4) as f64,
        "usage was polled during the window:\n{}",
        report.render()
    );
}
