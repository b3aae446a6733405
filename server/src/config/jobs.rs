//! Scheduled datastore jobs and retention locks declared in the config file.

use serde::Deserialize;
use toml::Spanned;

/// `[[prune_job]]`: prune a datastore (or a namespace subtree) on a schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneJobConfig {
    pub id: Spanned<String>,
    pub store: Spanned<String>,
    /// Namespace to start in (`a/b`); root when absent.
    pub ns: Option<String>,
    /// Namespace levels below `ns` to include; all when absent.
    pub max_depth: Option<usize>,
    /// PBS calendar event, e.g. `daily`, `*-*-* 02:00`.
    pub schedule: Spanned<String>,
    /// Group filters like PBS's: `type:vm`, `group:vm/100`, `regex:^ct/`.
    #[serde(default)]
    pub group_filter: Vec<String>,
    pub keep_last: Option<u64>,
    pub keep_hourly: Option<u64>,
    pub keep_daily: Option<u64>,
    pub keep_weekly: Option<u64>,
    pub keep_monthly: Option<u64>,
    pub keep_yearly: Option<u64>,
    #[serde(default)]
    pub disable: bool,
}

/// `[[retention_lock]]`: WORM retention for snapshots of a datastore, namespace or groups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionLockConfig {
    pub id: Spanned<String>,
    pub store: Spanned<String>,
    pub ns: Option<String>,
    /// Groups (`vm/100`) the lock covers; the whole scope when empty.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `governance` or `compliance`.
    pub mode: Spanned<String>,
    /// Retention after each snapshot's backup time, in days.
    pub days: Spanned<u64>,
    #[serde(default)]
    pub legal_hold: bool,
}

/// Retention lock modes (S3 Object Lock's).
pub const LOCK_MODES: &[&str] = &["governance", "compliance"];
