//! `[[remote]]` and `[[sync_job]]`: other PBS-compatible servers and the jobs that pull from
//! them (docs/design.md#sync).

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// `[[remote]]`: a PBS-compatible server a sync job talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    pub name: Spanned<String>,
    /// Host name or IP address.
    pub host: Spanned<String>,
    /// HTTPS port; PBS's 8007 when absent.
    pub port: Option<u16>,
    /// `user@realm` (password login) or `user@realm!token` (API token).
    pub auth_id: Spanned<String>,
    /// SHA-256 fingerprint of the remote's certificate (`ab:cd:…`); the only certificate
    /// trusted.
    pub fingerprint: Spanned<String>,
    /// File holding the password or the token secret, read at each run (so it can be rotated
    /// without a reload, and is never part of this file).
    pub secret_file: Spanned<PathBuf>,
}

/// `[[sync_job]]`: pull a remote datastore (or namespace subtree) into a local one, or push a
/// local one to a remote, on a schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncJobConfig {
    pub id: Spanned<String>,
    /// `pull` (default: from the remote into `store`) or `push` (from `store` to the remote).
    pub direction: Option<Spanned<String>>,
    /// The local datastore.
    pub store: Spanned<String>,
    /// Local namespace the remote namespace maps to; root when absent.
    pub ns: Option<String>,
    /// Name of a `[[remote]]`.
    pub remote: Spanned<String>,
    pub remote_store: Spanned<String>,
    /// Remote namespace to start in; root when absent.
    pub remote_ns: Option<String>,
    /// Namespace levels below the source's namespace to include; all when absent.
    pub max_depth: Option<usize>,
    pub schedule: Spanned<String>,
    /// Group filters like prune jobs' (`type:vm`, `group:vm/100`, `regex:…`, `exclude:…`).
    #[serde(default)]
    pub group_filter: Vec<String>,
    /// Remove target snapshots, groups and namespaces that vanished on the source (protected
    /// and retention-locked snapshots stay).
    #[serde(default)]
    pub remove_vanished: bool,
    /// Pull only the newest N snapshots of each group.
    pub transfer_last: Option<u64>,
    /// Pull: local owner of the groups the job creates; `root@pam` when absent.
    pub owner: Option<Spanned<String>>,
    /// Pull only snapshots whose last verification passed on the remote.
    #[serde(default)]
    pub verified_only: bool,
    /// Pull only snapshots whose every file is client-side encrypted.
    #[serde(default)]
    pub encrypted_only: bool,
    /// Download limit in bytes per second, e.g. `"20 MiB"` or `1000000`; none when absent.
    pub rate_in: Option<Spanned<toml::Value>>,
    /// Upload limit, like `rate_in`.
    pub rate_out: Option<Spanned<toml::Value>>,
    /// Groups pulled at the same time (PBS `worker-threads`), 1–32; 1 when absent.
    pub worker_threads: Option<Spanned<usize>>,
    #[serde(default)]
    pub disable: bool,
}

/// Sync directions.
pub const SYNC_DIRECTIONS: &[&str] = &["pull", "push"];

/// Parses a rate like PBS's: a number of bytes, optionally followed by a unit (`B`, `KB`,
/// `KiB`, `MB`, `MiB`, `GB`, `GiB`), per second.
pub fn parse_rate(value: &toml::Value) -> Result<u64, String> {
    let text = match value {
        toml::Value::Integer(n) if *n > 0 => return Ok(*n as u64),
        toml::Value::String(s) => s.trim(),
        other => return Err(format!("'{other}' is not a rate like \"20 MiB\"")),
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a rate like \"20 MiB\""))?;
    let factor: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "KiB" => 1024.0,
        "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit '{other}' in rate '{text}'")),
    };
    let rate = (number * factor) as u64;
    if rate == 0 {
        return Err(format!("rate '{text}' must be above zero"));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_pbs_units() {
        let s = |t: &str| parse_rate(&toml::Value::String(t.into()));
        assert_eq!(s("20 MiB"), Ok(20 * 1024 * 1024));
        assert_eq!(s("1.5MB"), Ok(1_500_000));
        assert_eq!(s("512"), Ok(512));
        assert_eq!(parse_rate(&toml::Value::Integer(4096)), Ok(4096));
        assert!(s("fast").unwrap_err().contains("not a rate"));
        assert!(s("3 parsecs").unwrap_err().contains("unknown unit"));
        assert!(s("0 KiB").unwrap_err().contains("above zero"));
        assert!(parse_rate(&toml::Value::Integer(0)).is_err());
    }
}
