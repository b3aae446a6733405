//! The operator's own counters and gauges, rendered for Prometheus on `/metrics`: reconciles
//! and their errors per controller, Kubernetes API requests by verb and resource, the number
//! of Tenants waiting for a reconcile, leadership, and the usage poller's reads and writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// A counter with one label set per key (`verb="get",resource="secrets"`).
#[derive(Debug, Default)]
pub struct Labelled(Mutex<BTreeMap<String, u64>>);

impl Labelled {
    pub fn add(&self, labels: String, n: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(labels).or_default() += n;
    }

    /// The value of one label set (0 when never counted).
    pub fn get(&self, labels: &str) -> u64 {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(labels).copied().unwrap_or(0)
    }

    /// Sum over all label sets whose text contains `fragment`.
    pub fn sum_matching(&self, fragment: &str) -> u64 {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(k, _)| k.contains(fragment))
            .map(|(_, v)| *v)
            .sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, v) in map.iter() {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// Everything `/metrics` shows; shared by the controllers, the API client and the elector.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Finished reconciles per controller (`controller="tenant"`).
    pub reconciles: Labelled,
    /// Reconciles that returned an error, per controller.
    pub reconcile_errors: Labelled,
    pub reconcile_micros: AtomicU64,
    /// Reconciles running now.
    pub reconciles_in_flight: AtomicI64,
    /// Tenants with a change seen but no reconcile started yet.
    pub queue_depth: AtomicU64,
    /// Requests sent to the Kubernetes API (`verb="patch",resource="tenants/status"`).
    pub api_requests: Labelled,
    /// Writes refused because this process could not prove it holds the leader lease.
    pub writes_refused: AtomicU64,
    /// 1 while this process acts (leader, or leader election off).
    pub leader: AtomicBool,
    /// Usage reads from tenant servers, and how many failed.
    pub usage_reads: AtomicU64,
    pub usage_read_errors: AtomicU64,
    /// Tenant status writes by the usage poller (only when a figure moved past the rounding).
    pub usage_status_writes: AtomicU64,
}

impl Metrics {
    /// Counts one finished reconcile of `controller`.
    pub fn reconciled(&self, controller: &str, micros: u64, failed: bool) {
        let l = format!("controller=\"{controller}\"");
        self.reconciles.add(l.clone(), 1);
        if failed {
            self.reconcile_errors.add(l, 1);
        }
        self.reconcile_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts one API request.
    pub fn api_request(&self, verb: &str, resource: &str) {
        self.api_requests
            .add(format!("verb=\"{verb}\",resource=\"{resource}\""), 1);
    }

    /// API requests with `verb`, over all resources.
    pub fn api_requests_with_verb(&self, verb: &str) -> u64 {
        self.api_requests.sum_matching(&format!("verb=\"{verb}\""))
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut o = String::new();
        self.reconciles.render(
            &mut o,
            "pbs_cloud_operator_reconciles_total",
            "Finished reconciles per controller.",
        );
        self.reconcile_errors.render(
            &mut o,
            "pbs_cloud_operator_reconcile_errors_total",
            "Reconciles that failed, per controller.",
        );
        self.api_requests.render(
            &mut o,
            "pbs_cloud_operator_api_requests_total",
            "Requests sent to the Kubernetes API server, by verb and resource.",
        );
        let gauges: [(&str, &str, &str, String); 8] = [
            (
                "pbs_cloud_operator_reconcile_seconds_total",
                "counter",
                "Time spent inside reconciles.",
                format!("{:.6}", g(&self.reconcile_micros) as f64 / 1e6),
            ),
            (
                "pbs_cloud_operator_reconciles_in_flight",
                "gauge",
                "Reconciles running now.",
                self.reconciles_in_flight
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "pbs_cloud_operator_queue_depth",
                "gauge",
                "Tenants with a change seen and no reconcile started yet.",
                g(&self.queue_depth).to_string(),
            ),
            (
                "pbs_cloud_operator_writes_refused_total",
                "counter",
                "API writes refused because the leader lease could not be proven.",
                g(&self.writes_refused).to_string(),
            ),
            (
                "pbs_cloud_operator_leader",
                "gauge",
                "1 while this process reconciles (holds the lease, or runs without election).",
                u8::from(self.leader.load(Ordering::Relaxed)).to_string(),
            ),
            (
                "pbs_cloud_operator_usage_reads_total",
                "counter",
                "Usage reads from tenant servers.",
                g(&self.usage_reads).to_string(),
            ),
            (
                "pbs_cloud_operator_usage_read_errors_total",
                "counter",
                "Usage reads that failed.",
                g(&self.usage_read_errors).to_string(),
            ),
            (
                "pbs_cloud_operator_usage_status_writes_total",
                "counter",
                "Tenant status writes by the usage poller.",
                g(&self.usage_status_writes).to_string(),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters_and_gauges() {
        let m = Metrics::default();
        m.reconciled("tenant", 1500, false);
        m.reconciled("tenant", 500, true);
        m.api_request("get", "secrets");
        m.api_request("patch", "tenants/status");
        m.api_request("patch", "tenants/status");
        let text = m.render();
        assert!(text.contains("pbs_cloud_operator_reconciles_total{controller=\"tenant\"} 2\n"));
        assert!(
            text.contains("pbs_cloud_operator_reconcile_errors_total{controller=\"tenant\"} 1\n")
        );
        assert!(text.contains(
            "pbs_cloud_operator_api_requests_total{verb=\"patch\",resource=\"tenants/status\"} 2\n"
        ));
        assert!(text.contains("pbs_cloud_operator_reconcile_seconds_total 0.002000\n"));
        assert!(text.contains("pbs_cloud_operator_queue_depth 0\n"));
        assert_eq!(m.api_requests_with_verb("patch"), 2);
        assert_eq!(m.api_requests_with_verb("get"), 1);
    }
}
