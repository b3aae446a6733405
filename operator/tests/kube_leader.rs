//! Two operator processes (the real binary) with leader election against the real
//! kube-apiserver (`e2e/kube/start-kube.sh`): the follower is ready while the leader leads;
//! SIGTERM makes the leader exit within 5 s and release the Lease, and the follower takes over
//! within one lease duration; a leader frozen past its renew deadline writes nothing once it
//! runs again. Who wrote what is read from the API server's audit log (each process names
//! itself in its User-Agent).

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{apply_json, client, drop_namespace, kubeconfig_path, namespace, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use nix::sys::signal::Signal;
use pbs_cloud_operator::bench::audit::{self, AuditEvent};
use pbs_cloud_operator::bench::process::{OperatorProcess, Spawn};
use pbs_cloud_operator::bench::{default_audit_log, fixture};
use pbs_cloud_operator::crd::Tenant;
use pbs_cloud_operator::leader::LEASE_DURATION;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const LEASE: &str = "pbs-cloud-operator";

fn audit_log() -> std::path::PathBuf {
    let log = default_audit_log(&kubeconfig_path());
    assert!(
        log.exists(),
        "no audit log at {}: (re)start the API server with e2e/kube/start-kube.sh, which enables it",
        log.display()
    );
    log
}

fn spawn(ns: &str, name: &str, dir: &std::path::Path) -> OperatorProcess {
    OperatorProcess::start(&Spawn {
        binary: env!("CARGO_BIN_EXE_pbs-cloud-operator").into(),
        kubeconfig: kubeconfig_path(),
        identity: format!("{name}-{}", fixture::suffix()),
        namespace: ns.into(),
        leader_elect: true,
        env: vec![],
        log_dir: dir.into(),
    })
    .expect("start operator")
}

async fn holder(client: &Client, ns: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

async fn wait_holder(client: &Client, ns: &str, who: &str, timeout: Duration) {
    wait_for(&format!("Lease held by {who}"), timeout, || async {
        (holder(client, ns).await.as_deref() == Some(who)).then_some(())
    })
    .await;
}

async fn tenant(client: &Client, ns: &str, name: &str) {
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), ns);
    apply_json(
        &tenants,
        json!({"apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant",
               "metadata": {"name": name, "namespace": ns}, "spec": {}}),
    )
    .await
    .expect("tenant");
}

/// Waits until Tenant `name` is reconciled; on a timeout the operators' logs are shown.
async fn wait_reconciled(client: &Client, ns: &str, name: &str, ops: &[&OperatorProcess]) {
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), ns);
    let res = fixture::wait_for(&format!("Tenant {name} reconciled"), WAIT, || async {
        let t = tenants.get(name).await.ok()?;
        let s = t.status?;
        (s.observed_generation == t.metadata.generation && s.endpoint.is_some()).then_some(())
    })
    .await;
    if let Err(e) = res {
        let logs: Vec<String> = ops
            .iter()
            .map(|o| format!("--- {} ---\n{}", o.identity, o.log_text()))
            .collect();
        panic!("{e}\n{}", logs.join("\n"));
    }
}

/// The operator writes (without the Lease's) of process `p` since `from`.
fn writes(p: &OperatorProcess, from: DateTime<Utc>) -> Vec<AuditEvent> {
    let agent = format!("({})", p.identity);
    audit::read(
        &audit_log(),
        &agent,
        from,
        Utc::now() + chrono::Duration::hours(1),
    )
    .expect("read audit log")
    .into_iter()
    .filter(|e| e.is_write() && e.resource() != "leases")
    .collect()
}

fn times(evs: &[AuditEvent]) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let t: Vec<DateTime<Utc>> = evs.iter().filter_map(|e| e.received()).collect();
    (t.iter().min().copied(), t.iter().max().copied())
}

fn describe(evs: &[AuditEvent]) -> String {
    evs.iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e.request_received_timestamp,
                e.verb,
                e.resource(),
                e.request_uri
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_is_ready_and_takes_over_after_sigterm_without_overlap() {
    let client = client().await;
    let _ = audit_log();
    let ns = namespace(&client, "op-leader").await;
    let dir = tempfile::tempdir().expect("tmp");
    let start = Utc::now();
    let mut a = spawn(&ns, "lead-a", dir.path());
    wait_holder(&client, &ns, &a.identity, WAIT).await;
    let b = spawn(&ns, "lead-b", dir.path());
    wait_for("follower ready", WAIT, || async {
        b.ready().await.then_some(())
    })
    .await;
    assert!(a.ready().await, "the leader is ready too");
    assert_eq!(a.metric("pbs_cloud_operator_leader").await, Some(1.0));
    assert_eq!(b.metric("pbs_cloud_operator_leader").await, Some(0.0));

    tenant(&client, &ns, "first").await;
    wait_reconciled(&client, &ns, "first", &[&a, &b]).await;
    // While the leader renews, the follower keeps following for longer than a lease duration.
    let watch_until = Instant::now() + LEASE_DURATION + Duration::from_secs(2);
    while Instant::now() < watch_until {
        assert_eq!(
            holder(&client, &ns).await.as_deref(),
            Some(a.identity.as_str())
        );
        assert_eq!(b.metric("pbs_cloud_operator_leader").await, Some(0.0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let sent = Instant::now();
    a.signal(Signal::SIGTERM).expect("SIGTERM");
    let status = a
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the leader did not exit within 5 s of SIGTERM:\n{}",
                a.log_text()
            )
        });
    let exit = sent.elapsed();
    let a_gone = Utc::now();
    assert!(status.success(), "exit status {status}:\n{}", a.log_text());
    assert!(a.log_text().contains("Lease released"), "{}", a.log_text());
    assert_ne!(
        holder(&client, &ns).await.as_deref(),
        Some(a.identity.as_str()),
        "the Lease no longer names the old leader once it exited"
    );
    let gone = Instant::now();
    wait_holder(&client, &ns, &b.identity, LEASE_DURATION).await;
    let takeover = gone.elapsed();
    wait_for("the new leader acts", WAIT, || async {
        (b.metric("pbs_cloud_operator_leader").await == Some(1.0)).then_some(())
    })
    .await;
    tenant(&client, &ns, "second").await;
    wait_reconciled(&client, &ns, "second", &[&b]).await;
    eprintln!(
        "TIMING: SIGTERM -> leader exited in {} ms; exit -> follower holds the Lease in {} ms",
        exit.as_millis(),
        takeover.as_millis()
    );

    // No two leaders at once: every write of A precedes A's exit, every write of B follows it.
    let wa = writes(&a, start);
    let wb = writes(&b, start);
    assert!(!wa.is_empty(), "A reconciled Tenant first");
    assert!(!wb.is_empty(), "B reconciled Tenant second");
    let (_, last_a) = times(&wa);
    let (first_b, _) = times(&wb);
    assert!(
        last_a < Some(a_gone) && first_b > last_a,
        "writes overlap:\nA:\n{}\nB:\n{}",
        describe(&wa),
        describe(&wb)
    );
    assert!(
        wb.iter()
            .all(|e| e.received() > Some(a_gone - chrono::Duration::seconds(1))),
        "B wrote while following:\n{}",
        describe(&wb)
    );
    drop(b);
    drop_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_writes_nothing_once_it_runs_again() {
    let client = client().await;
    let _ = audit_log();
    let ns = namespace(&client, "op-frozen").await;
    let dir = tempfile::tempdir().expect("tmp");
    let a = spawn(&ns, "frozen-a", dir.path());
    wait_holder(&client, &ns, &a.identity, WAIT).await;
    let b = spawn(&ns, "frozen-b", dir.path());
    wait_for("follower ready", WAIT, || async {
        b.ready().await.then_some(())
    })
    .await;
    tenant(&client, &ns, "one").await;
    wait_reconciled(&client, &ns, "one", &[&a, &b]).await;

    // Freeze the leader (as a long GC pause or a stalled node would); the follower takes
    // over after a lease duration.
    a.signal(Signal::SIGSTOP).expect("SIGSTOP");
    let frozen = Utc::now();
    wait_holder(&client, &ns, &b.identity, LEASE_DURATION + WAIT).await;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    tenants
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"adminUser": "root@pbs"}})),
        )
        .await
        .expect("edit tenant");
    wait_reconciled(&client, &ns, "one", &[&a, &b]).await;

    // Let the old leader run again while there is work to do.
    a.signal(Signal::SIGCONT).expect("SIGCONT");
    tenant(&client, &ns, "two").await;
    wait_reconciled(&client, &ns, "two", &[&a, &b]).await;
    wait_for("the old leader knows it lost", WAIT, || async {
        a.log_text()
            .contains("stopped reconciling: the lease could not be proven")
            .then_some(())
    })
    .await;
    assert_eq!(a.metric("pbs_cloud_operator_leader").await, Some(0.0));
    assert!(a.ready().await, "it follows again, and is ready");
    assert_eq!(
        holder(&client, &ns).await.as_deref(),
        Some(b.identity.as_str())
    );
    let late = writes(&a, frozen);
    assert!(
        late.is_empty(),
        "the frozen leader wrote after losing its lease:\n{}",
        describe(&late)
    );
    let lease_writes: Vec<AuditEvent> = audit::read(
        &audit_log(),
        &format!("({})", a.identity),
        frozen,
        Utc::now(),
    )
    .expect("audit")
    .into_iter()
    .filter(|e| e.is_write() && e.response_status.as_ref().is_some_and(|s| s.code < 300))
    .collect();
    assert!(
        lease_writes.is_empty(),
        "no successful write at all, Lease included:\n{}",
        describe(&lease_writes)
    );
    drop(a);
    drop(b);
    drop_namespace(&client, &ns).await;
}
