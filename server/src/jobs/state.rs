//! Per-job state in the data dir (`<data-dir>/jobstates/<worker type>-<id>.json`, like PBS's
//! jobstates): when the job was first seen and when and how it last ran. The scheduler takes
//! the next event after the last start (or after the creation time), so a run missed while
//! the server was down happens once right after start.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::JobError;

/// What is kept about one job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobState {
    /// When the job was first seen (Unix seconds).
    pub created: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_end: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upid: Option<String>,
    /// `OK`, `WARNINGS: n` or `ERROR: ...` of the last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
}

impl JobState {
    /// The time the next event is computed from.
    pub fn reference_time(&self) -> i64 {
        self.last_start.unwrap_or(self.created)
    }
}

/// Directory of the state files under `data_dir`.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("jobstates")
}

fn state_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.json"))
}

/// Read a job's state; `None` when it has none yet. An unreadable file counts as none (with
/// a warning), so a damaged file cannot stop the scheduler.
pub fn load(dir: &Path, key: &str) -> Option<JobState> {
    let path = state_path(dir, key);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("unable to read job state {}: {e}", path.display());
            return None;
        }
    };
    match serde_json::from_slice(&text) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!("ignoring unparsable job state {}: {e}", path.display());
            None
        }
    }
}

/// Write a job's state atomically (temp file and rename, mode 0600).
pub fn store(dir: &Path, key: &str, state: &JobState) -> Result<(), JobError> {
    let path = state_path(dir, key);
    let fail = |message: String| JobError::State {
        path: path.clone(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let body = serde_json::to_vec_pretty(state).map_err(|e| fail(e.to_string()))?;
    crate::backend::local::write_private_file(&path, &body).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damage_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "prunejob-a"), None);
        let state = JobState {
            created: 10,
            last_start: Some(20),
            last_end: Some(25),
            last_upid: Some("UPID:x".into()),
            last_result: Some("OK".into()),
        };
        store(dir.path(), "prunejob-a", &state).unwrap();
        assert_eq!(load(dir.path(), "prunejob-a"), Some(state.clone()));
        assert_eq!(state.reference_time(), 20);
        std::fs::write(dir.path().join("prunejob-b.json"), b"{oops").unwrap();
        assert_eq!(load(dir.path(), "prunejob-b"), None);
        assert_eq!(
            JobState {
                created: 5,
                ..JobState::default()
            }
            .reference_time(),
            5
        );
    }
}
