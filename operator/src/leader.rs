//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's timing rules:
//!
//! * The leader renews every retry period. It may act only until its *renew deadline* has
//!   passed since the start of its last successful renewal; after that its [`WriteGate`] closes
//!   (every write the operator sends is checked against it) and it stops reconciling.
//! * A follower takes the lease only after it has seen the same record, unchanged, for a whole
//!   lease duration on its own monotonic clock (wall clocks of different nodes are never
//!   compared), or at once when the holder released it.
//!
//! Because the renew deadline is shorter than the lease duration, the old leader has stopped
//! writing before any follower can take over, even when the old leader is frozen, partitioned
//! or slow: its last renewal started before the follower saw it, so `start + renew deadline`
//! comes before `seen + lease duration`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;

/// Default lease duration (client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default renew deadline: the leader stops acting this long after its last renewal started.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Default interval between acquire or renew attempts.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Lease timing; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        }
    }
}

impl Timing {
    /// Refuses timings that would let two leaders act at once or never renew in time.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration.as_secs() < 1 || self.lease_duration.subsec_nanos() != 0 {
            return Err("lease duration must be a whole number of seconds, at least 1".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "retry period ({:?}) must be positive and shorter than the renew deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// Whether this process may write to the API now. Without leader election it is always open;
/// with it, it is open only until the renew deadline of the last successful renewal.
#[derive(Debug, Clone, Default)]
pub struct WriteGate(Option<Arc<Mutex<Option<Instant>>>>);

impl WriteGate {
    /// Always open (no leader election).
    pub fn always() -> Self {
        WriteGate(None)
    }

    /// Closed until a lease is won.
    pub fn leased() -> Self {
        WriteGate(Some(Arc::new(Mutex::new(None))))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Option<Instant>) -> T) -> Option<T> {
        self.0
            .as_ref()
            .map(|m| f(&mut m.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// True when a write may be sent now.
    pub fn is_open(&self) -> bool {
        self.with(|until| until.is_some_and(|t| Instant::now() < t))
            .unwrap_or(true)
    }

    /// When the gate closes by itself (`None`: closed already, or never closes).
    pub fn deadline(&self) -> Option<Instant> {
        self.with(|until| *until).flatten()
    }

    fn open_until(&self, t: Instant) {
        self.with(|until| *until = Some(t));
    }

    fn close(&self) {
        self.with(|until| *until = None);
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Why [`Elector::hold`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// No renewal succeeded before the renew deadline.
    DeadlinePassed,
    /// The record names another holder.
    TakenBy(String),
}

/// One participant in the election for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    gate: WriteGate,
    /// The record last seen, and when (monotonic) it was first seen in that state.
    observed: Option<(LeaseSpec, Instant)>,
    /// The Lease as this process last wrote it, while it holds it.
    held: Option<Lease>,
}

impl Elector {
    /// `client` must not be gated by `gate` (renewals happen while the gate is closing).
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
        gate: WriteGate,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing,
            gate,
            observed: None,
            held: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// True while this process holds the lease and its renew deadline has not passed.
    pub fn is_leader(&self) -> bool {
        self.held.is_some() && self.gate.is_open()
    }

    fn won(&mut self, lease: Lease, started: Instant) {
        self.gate.open_until(started + self.timing.renew_deadline);
        self.observed = Some((lease.spec.clone().unwrap_or_default(), Instant::now()));
        self.held = Some(lease);
    }

    fn lose(&mut self) {
        self.gate.close();
        self.held = None;
    }

    fn observe(&mut self, spec: &LeaseSpec) -> Instant {
        match &self.observed {
            Some((seen, at)) if seen == spec => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((spec.clone(), at));
                at
            }
        }
    }

    fn record(&self, old: Option<&LeaseSpec>) -> LeaseSpec {
        let held_before = old.is_some_and(|o| o.holder_identity.as_deref() == Some(&self.identity));
        let transitions = old.and_then(|o| o.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs() as i32),
            acquire_time: match old {
                Some(o) if held_before => o.acquire_time.clone(),
                _ => Some(now()),
            },
            renew_time: Some(now()),
            lease_transitions: Some(if held_before || old.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to take or renew the lease; `Ok(true)` when this process holds it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let started = Instant::now();
        let pp = PostParams::default();
        // Fast path while leading: write over our own last record (optimistic concurrency:
        // a 409 means someone else wrote it, and the slow path looks at what they wrote).
        if let Some(mut lease) = self.held.clone() {
            let old = lease.spec.clone();
            lease.spec = Some(self.record(old.as_ref()));
            match self.api.replace(&self.name, &pp, &lease).await {
                Ok(l) => {
                    self.won(l, started);
                    return Ok(true);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => self.held = None,
                Err(e) => return Err(e),
            }
        }
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.record(None)),
            };
            return match self.api.create(&pp, &lease).await {
                Ok(l) => {
                    self.won(l, started);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let seen_at = self.observe(&spec);
        let holder = spec
            .holder_identity
            .as_deref()
            .filter(|h| !h.is_empty())
            .map(str::to_string);
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if let Some(other) = holder.filter(|_| !mine) {
            let duration = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(self.timing.lease_duration);
            if Instant::now() < seen_at + duration {
                tracing::debug!(holder = %other, "Lease {} is held", self.name);
                self.lose();
                return Ok(false);
            }
            tracing::info!(holder = %other, "Lease {} expired; taking it", self.name);
        }
        lease.spec = Some(self.record(Some(&spec)));
        match self.api.replace(&self.name, &pp, &lease).await {
            Ok(l) => {
                self.won(l, started);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.lose();
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!("leader election on Lease {}: {e}", self.name),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews every retry period while leading; returns (with the gate closed) as soon as
    /// the lease cannot be proven any more.
    pub async fn hold(&mut self) -> Lost {
        loop {
            let Some(deadline) = self.gate.deadline() else {
                self.lose();
                return Lost::DeadlinePassed;
            };
            let wake = (Instant::now() + self.timing.retry_period).min(deadline);
            tokio::time::sleep_until(wake).await;
            if Instant::now() >= deadline {
                self.lose();
                return Lost::DeadlinePassed;
            }
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    let holder = self
                        .observed
                        .as_ref()
                        .and_then(|(s, _)| s.holder_identity.clone())
                        .unwrap_or_default();
                    self.lose();
                    return Lost::TakenBy(holder);
                }
                Ok(Err(e)) => tracing::warn!("renewing Lease {}: {e}", self.name),
                Err(_) => {
                    self.lose();
                    return Lost::DeadlinePassed;
                }
            }
        }
    }

    /// Gives the lease up so that a follower can take it at once: clears the holder (as
    /// client-go's release does). Only while this process still holds it; `Ok(true)` when
    /// released.
    pub async fn release(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.held.take() else {
            return Ok(false);
        };
        self.gate.close();
        let old = lease.spec.clone().unwrap_or_default();
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            lease_transitions: old.lease_transitions,
            ..LeaseSpec::default()
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_rules() {
        assert_eq!(Timing::default().validate(), Ok(()));
        let t = |l, d, r| Timing {
            lease_duration: Duration::from_secs(l),
            renew_deadline: Duration::from_secs(d),
            retry_period: Duration::from_secs(r),
        };
        assert!(t(10, 10, 2)
            .validate()
            .unwrap_err()
            .contains("renew deadline"));
        assert!(t(10, 5, 5).validate().unwrap_err().contains("retry period"));
        assert!(t(0, 0, 0).validate().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_closes_at_the_renew_deadline() {
        assert!(WriteGate::always().is_open());
        let g = WriteGate::leased();
        assert!(!g.is_open(), "closed until a lease is won");
        g.open_until(Instant::now() + Duration::from_secs(10));
        assert!(g.is_open());
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(g.is_open());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!g.is_open(), "closed the moment the deadline passes");
        g.open_until(Instant::now() + Duration::from_secs(10));
        g.close();
        assert!(!g.is_open());
        assert_eq!(g.deadline(), None);
    }
}
