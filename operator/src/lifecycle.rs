//! The process around the controllers: signals, readiness, leadership terms and shutdown.
//!
//! * Readiness does not depend on leadership: the process is ready as soon as its API client
//!   exists, so a follower is ready and a rolling update can start the new pod while the old
//!   one leads.
//! * SIGTERM or SIGINT: reconciles stop taking new work and the running ones may finish (for at
//!   most the drain time, and never past the renew deadline); then the Lease is released so a
//!   follower takes over at once, and the process exits. A second signal exits at once.
//! * A leader that cannot prove its lease any more stops acting at once: writes are refused
//!   (the client's write gate), the controllers are dropped (running reconciles aborted), and
//!   the process goes back to following.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::apiclient::{self, ApiLayer};
use crate::controller::{Controllers, Settings};
use crate::leader::{Elector, Lost, Timing, WriteGate};
use crate::metrics::Metrics;

/// Longest wait for running reconciles at shutdown.
pub const DRAIN: Duration = Duration::from_secs(3);

/// Where the leader Lease lives.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub timing: Timing,
}

/// Everything [`run`] needs.
pub struct Process {
    pub config: kube::Config,
    pub settings: Settings,
    /// Leader election; `None` runs the controllers right away (one replica only).
    pub lease: Option<LeaseSettings>,
    /// Names this process in the Lease, events and the User-Agent.
    pub identity: String,
    pub metrics: Arc<Metrics>,
    /// Flipped on once the client exists, off when shutting down (`/readyz`).
    pub ready: Arc<AtomicBool>,
}

/// SIGTERM/SIGINT, seen by any number of waiters.
#[derive(Clone)]
pub struct Signals(watch::Receiver<bool>);

impl Signals {
    /// Installs the handlers. A second signal ends the process at once (exit code 130).
    pub fn install() -> std::io::Result<Self> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                if !first {
                    tracing::warn!("{name} again: exiting without waiting");
                    std::process::exit(130);
                }
                tracing::info!("{name}: shutting down");
                first = false;
                let _ = tx.send(true);
            }
        });
        Ok(Signals(rx))
    }

    /// True once a signal came.
    pub fn received(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a signal came.
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// How a leadership term ended.
enum End {
    Shutdown,
    Lost(Lost),
}

/// Runs until a signal; see the module doc.
pub async fn run(p: Process) -> anyhow::Result<()> {
    let signals = Signals::install()?;
    let gate = match p.lease {
        Some(_) => WriteGate::leased(),
        None => WriteGate::always(),
    };
    let layer = ApiLayer::new(p.metrics.clone(), gate.clone(), &p.identity);
    let client = apiclient::client(p.config.clone(), &layer)?;
    p.ready.store(true, Ordering::Relaxed);
    let Some(lease) = p.lease.clone() else {
        p.metrics.leader.store(true, Ordering::Relaxed);
        tracing::info!("controllers running (no leader election)");
        term(&client, &p, None, &gate, &signals).await;
        p.ready.store(false, Ordering::Relaxed);
        return Ok(());
    };
    let lease_layer = ApiLayer::new(p.metrics.clone(), WriteGate::always(), &p.identity);
    let lease_client = apiclient::client(p.config.clone(), &lease_layer)?;
    let mut elector = Elector::new(
        lease_client,
        &lease.namespace,
        &lease.name,
        &p.identity,
        lease.timing,
        gate.clone(),
    );
    loop {
        tracing::info!(identity = %p.identity, "following; waiting for Lease {}/{}", lease.namespace, lease.name);
        tokio::select! {
            _ = elector.acquire() => {}
            _ = signals.wait() => break,
        }
        tracing::info!(identity = %p.identity, "leading: controllers running");
        p.metrics.leader.store(true, Ordering::Relaxed);
        let end = term(&client, &p, Some(&mut elector), &gate, &signals).await;
        p.metrics.leader.store(false, Ordering::Relaxed);
        match end {
            End::Shutdown => {
                match elector.release().await {
                    Ok(true) => tracing::info!("Lease released"),
                    Ok(false) => tracing::info!("Lease no longer ours; nothing to release"),
                    Err(e) => tracing::warn!("releasing the Lease: {e}"),
                }
                break;
            }
            End::Lost(why) => {
                tracing::error!("stopped reconciling: the lease could not be proven ({why:?})");
            }
        }
    }
    p.ready.store(false, Ordering::Relaxed);
    Ok(())
}

/// One term of running controllers: until a signal (drain) or a lost lease (abort).
async fn term(
    client: &kube::Client,
    p: &Process,
    elector: Option<&mut Elector>,
    gate: &WriteGate,
    signals: &Signals,
) -> End {
    let controllers = Controllers::new(client.clone(), p.settings.clone(), p.metrics.clone());
    let stop = signals.clone();
    let run = controllers.run(async move { stop.wait().await });
    tokio::pin!(run);
    let hold = async {
        match elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = &mut run => {
            if !signals.received() {
                tracing::warn!("controllers ended on their own");
            }
            End::Shutdown
        }
        lost = hold => End::Lost(lost),
        _ = signals.wait() => {
            p.ready.store(false, Ordering::Relaxed);
            let limit = match gate.deadline() {
                Some(d) => DRAIN.min(d.saturating_duration_since(tokio::time::Instant::now())),
                None => DRAIN,
            };
            if tokio::time::timeout(limit, &mut run).await.is_err() {
                tracing::warn!("reconciles still running after {limit:?}; abandoned");
            }
            End::Shutdown
        }
    }
}
