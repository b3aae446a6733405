//! Config reload (docs/design.md#configuration): the server polls its config file and applies a
//! changed, valid file without a restart and without touching running sessions, through the
//! same [`AppliedConfig`] that start-up used (what reloads is listed there). A file that does
//! not load or apply is refused with its error in the log, and the last good configuration
//! stays in force.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::config_apply::AppliedConfig;
use crate::config::Config;

/// How often the file's modification time and size are compared.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Starts the polling task for the config file at `path`.
pub(super) fn spawn_watcher(path: PathBuf, mut applied: AppliedConfig) {
    tokio::spawn(async move {
        let mut seen = stamp(&path);
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            let result = match Config::load(&path) {
                Ok(config) => applied.apply(&config).await.map(drop),
                Err(err) => Err(err.into()),
            };
            match result {
                Ok(()) => tracing::info!("configuration reloaded from {}", path.display()),
                Err(err) => tracing::error!(
                    "configuration reload refused, keeping the running configuration: {err:#}"
                ),
            }
        }
    });
}

/// Modification time and length; `None` while the file is missing (e.g. mid-replace).
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
