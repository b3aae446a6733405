//! The scheduler: once a second, every enabled job whose next event (after its last start, or
//! after it was first seen) has passed is started as a task. A run missed while the server was
//! down therefore happens once right after start, as in PBS. A start refused because another
//! job of the kind runs on the datastore is skipped with a warning; the job then waits for its
//! next event after that moment. Config reload replaces the job list ([`Jobs::set_specs`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::runner::{run_configured, SCHEDULER_AUTHID};
use super::state::{self, JobState};
use super::{JobError, JobSpec, JobType};
use crate::state::AppState;
use crate::tasks::TaskLog;

/// How often the scheduler looks at the job list.
pub const TICK: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Inner {
    /// Where job states are persisted; in memory only when `None`.
    state_dir: Option<PathBuf>,
    specs: Vec<Arc<JobSpec>>,
    states: HashMap<String, JobState>,
    /// Jobs whose due start was refused, and when.
    skipped_at: HashMap<String, i64>,
}

/// Configured jobs, their states and the running (kind, datastore) slots, each with the task
/// that holds it (scheduled and manual runs alike). Lives in [`AppState`]; empty until
/// [`Jobs::configure`].
#[derive(Default)]
pub struct Jobs {
    inner: Mutex<Inner>,
    running: Mutex<HashMap<(JobType, String), Option<TaskLog>>>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Jobs {
    /// Set where states are kept (`<data-dir>/jobstates`) and the initial job list.
    pub fn configure(&self, data_dir: Option<&std::path::Path>, specs: Vec<JobSpec>) {
        lock(&self.inner).state_dir = data_dir.map(state::state_dir);
        self.set_specs(specs);
    }

    /// Replace the job list (config reload). Running jobs go on; states are kept by id.
    pub fn set_specs(&self, specs: Vec<JobSpec>) {
        let mut inner = lock(&self.inner);
        inner.specs = specs.into_iter().map(Arc::new).collect();
        let keys: HashSet<String> = inner.specs.iter().map(|s| s.state_key()).collect();
        inner.skipped_at.retain(|k, _| keys.contains(k));
    }

    /// All configured jobs.
    pub fn specs(&self) -> Vec<Arc<JobSpec>> {
        lock(&self.inner).specs.clone()
    }

    /// A configured job by kind and id.
    pub fn find(&self, kind: JobType, id: &str) -> Option<Arc<JobSpec>> {
        lock(&self.inner)
            .specs
            .iter()
            .find(|s| s.kind == kind && s.id == id)
            .cloned()
    }

    /// The job's state (`None` before the scheduler first saw it).
    pub fn state(&self, key: &str) -> Option<JobState> {
        let mut inner = lock(&self.inner);
        Self::cached(&mut inner, key).cloned()
    }

    fn cached<'a>(inner: &'a mut Inner, key: &str) -> Option<&'a JobState> {
        if !inner.states.contains_key(key) {
            let loaded = inner.state_dir.as_deref().and_then(|d| state::load(d, key));
            if let Some(st) = loaded {
                inner.states.insert(key.to_string(), st);
            }
        }
        inner.states.get(key)
    }

    fn update(&self, key: &str, f: impl FnOnce(&mut JobState)) {
        let mut inner = lock(&self.inner);
        let mut st = Self::cached(&mut inner, key).cloned().unwrap_or(JobState {
            created: now(),
            ..JobState::default()
        });
        f(&mut st);
        if let Some(dir) = inner.state_dir.clone() {
            if let Err(e) = state::store(&dir, key, &st) {
                tracing::error!("{e}");
            }
        }
        inner.states.insert(key.to_string(), st);
    }

    /// A run started at `time`.
    pub fn note_start(&self, key: &str, time: i64) {
        self.update(key, |st| st.last_start = Some(time));
    }

    /// The task of the run that started last.
    pub fn note_upid(&self, key: &str, upid: &str) {
        self.update(key, |st| st.last_upid = Some(upid.to_string()));
    }

    /// The run ended at `time` with `result` (`OK` or `ERROR: ...`).
    pub fn note_end(&self, key: &str, time: i64, result: &str) {
        self.update(key, |st| {
            st.last_end = Some(time);
            st.last_result = Some(result.to_string());
        });
    }

    /// When the job runs next (`None`: never, or disabled).
    pub fn next_run(&self, spec: &JobSpec) -> Option<i64> {
        if spec.disable {
            return None;
        }
        let key = spec.state_key();
        let mut inner = lock(&self.inner);
        let reference = Self::cached(&mut inner, &key).map(|s| s.reference_time());
        let skipped = inner.skipped_at.get(&key).copied();
        let reference = reference
            .unwrap_or_else(now)
            .max(skipped.unwrap_or(i64::MIN));
        spec.event.next_after(reference)
    }

    /// Whether a job of `kind` runs on `store` now.
    pub fn is_running(&self, kind: JobType, store: &str) -> bool {
        lock(&self.running).contains_key(&(kind, store.to_string()))
    }

    /// The task holding the slot of `kind` on `store` (`None` when free or still starting).
    pub fn running_task(&self, kind: JobType, store: &str) -> Option<TaskLog> {
        lock(&self.running)
            .get(&(kind, store.to_string()))
            .cloned()
            .flatten()
    }

    /// Take a free slot; when taken, `Err` carries the UPID of the task holding it (`None`
    /// while that task is being started).
    pub(crate) fn claim(&self, slot: &(JobType, String)) -> Result<(), Option<String>> {
        let mut running = lock(&self.running);
        if let Some(holder) = running.get(slot) {
            return Err(holder.as_ref().map(|log| log.upid().to_string()));
        }
        running.insert(slot.clone(), None);
        Ok(())
    }

    /// Record the task that holds a claimed slot.
    pub(crate) fn attach(&self, slot: &(JobType, String), log: &TaskLog) {
        if let Some(holder) = lock(&self.running).get_mut(slot) {
            *holder = Some(log.clone());
        }
    }

    pub(crate) fn release(&self, slot: &(JobType, String)) {
        lock(&self.running).remove(slot);
    }

    /// Jobs due at `now`; a job seen for the first time gets its state (created now).
    fn due(&self, now: i64) -> Vec<Arc<JobSpec>> {
        let specs = self.specs();
        let mut out = Vec::new();
        for spec in specs {
            if spec.disable {
                continue;
            }
            let key = spec.state_key();
            if self.state(&key).is_none() {
                self.update(&key, |st| st.created = now);
            }
            if self.next_run(&spec).is_some_and(|next| next <= now) {
                out.push(spec);
            }
        }
        out
    }

    fn skipped(&self, key: &str, time: i64) {
        lock(&self.inner).skipped_at.insert(key.to_string(), time);
    }
}

/// Start every due job once.
pub fn tick(state: &Arc<AppState>, now: i64) {
    for spec in state.jobs.due(now) {
        let key = spec.state_key();
        match run_configured(state, &spec, SCHEDULER_AUTHID, false) {
            Ok(upid) => tracing::info!(
                "started scheduled {} job '{}' on datastore '{}': {upid}",
                spec.kind.label(),
                spec.id,
                spec.store
            ),
            Err(JobError::Busy(why)) => {
                tracing::warn!(
                    "scheduled {} job '{}' skipped: {why}",
                    spec.kind.label(),
                    spec.id
                );
                // Say so where an operator looks: in the log of the run that holds the slot.
                if let Some(holder) = state.jobs.running_task(spec.kind, &spec.store) {
                    holder.log(format!(
                        "scheduled {} job '{}' skipped: this task is still running on datastore '{}'",
                        spec.kind.label(),
                        spec.id,
                        spec.store
                    ));
                }
                state.jobs.skipped(&key, now);
            }
            Err(e) => {
                tracing::error!(
                    "scheduled {} job '{}' could not start: {e}",
                    spec.kind.label(),
                    spec.id
                );
                state.jobs.skipped(&key, now);
            }
        }
    }
}

/// Run the scheduler for as long as the server runs.
pub fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            tick(&state, now());
        }
    })
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
