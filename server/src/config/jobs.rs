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

/// `[[verify_job]]`: verify the snapshots of a datastore (or a namespace subtree) on a schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyJobConfig {
    pub id: Spanned<String>,
    pub store: Spanned<String>,
    /// Namespace to start in (`a/b`); root when absent.
    pub ns: Option<String>,
    /// Namespace levels below `ns` to include; all when absent.
    pub max_depth: Option<usize>,
    /// PBS calendar event, e.g. `daily`, `sat 03:00`.
    pub schedule: Spanned<String>,
    /// `cheap` (every referenced chunk exists, checksums from object attributes) or `deep`
    /// (download, decode and re-hash); default `deep`.
    pub mode: Option<Spanned<String>>,
    /// Deep verify only this percentage of the chunks (random sample); all when absent.
    pub sample_percent: Option<u8>,
    /// Skip snapshots whose last verify passed (PBS `ignore-verified`; default true).
    pub ignore_verified: Option<bool>,
    /// With `ignore_verified`: re-verify snapshots whose last verify is older than this many
    /// days (PBS `outdated-after`).
    pub outdated_after: Option<u64>,
    #[serde(default)]
    pub disable: bool,
}

/// Verify modes.
pub const VERIFY_MODES: &[&str] = &["cheap", "deep"];

/// `[datastore.lifecycle]`: bucket lifecycle rules for a datastore's prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Expire noncurrent object versions this many days after they became noncurrent (their
    /// Object Lock still has to pass first).
    pub expire_noncurrent_after_days: Option<u64>,
    /// Move current objects to `transition_storage_class` after this many days.
    pub transition_after_days: Option<u64>,
    /// An instant-access class such as `STANDARD_IA`; archive classes are refused.
    pub transition_storage_class: Option<Spanned<String>>,
}

/// `[webhook]`: the billing webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` address the JSON is posted to.
    pub url: Spanned<String>,
    /// File holding the HMAC-SHA256 key (the `X-PBS-Cloud-Signature` header signs each body).
    pub secret_file: Option<std::path::PathBuf>,
    /// PBS calendar event for usage reports (default `hourly`).
    pub report_schedule: Option<Spanned<String>>,
}
