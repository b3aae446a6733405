//! Starting a job as a task: one job of a kind per datastore at a time, scheduled and manual
//! runs (GC and verify through the API) alike. A second start is refused with
//! [`JobError::Busy`] naming the running task's UPID; the scheduler then skips that run with a
//! line in the running task's log. A job's state is updated at start and end, and prune and
//! verify runs are recorded in the datastore's job history with their summary.

use std::sync::Arc;

use serde_json::{json, Value};

pub use super::SCHEDULER_AUTHID;
use super::{prune_job, JobBody, JobError, JobSpec, JobType, VerifyParams};
use crate::datastore::{Datastore, JobRecord};
use crate::state::AppState;
use crate::sync::Direction;
use crate::tasks::TaskLog;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Holds the "running" slot of (kind, datastore) until dropped.
pub struct RunningGuard {
    state: Arc<AppState>,
    slot: (JobType, String),
}

impl RunningGuard {
    /// Claim the slot, or say what runs already.
    pub fn claim(state: &Arc<AppState>, kind: JobType, store: &str) -> Result<Self, JobError> {
        let slot = (kind, store.to_string());
        if let Err(holder) = state.jobs.claim(&slot) {
            let task = match holder {
                Some(upid) => format!("task {upid}"),
                None => "its task is starting".to_string(),
            };
            return Err(JobError::Busy(format!(
                "a {} job is already running on datastore '{store}' ({task})",
                kind.label()
            )));
        }
        Ok(RunningGuard {
            state: state.clone(),
            slot,
        })
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.state.jobs.release(&self.slot);
    }
}

/// One start of a job.
pub struct Launch {
    pub kind: JobType,
    pub store: String,
    /// Configured id, or `manual`.
    pub job_id: String,
    pub worker_type: String,
    pub worker_id: String,
    pub authid: String,
    /// State file of a configured job (`None` for manual runs and dry runs).
    pub state_key: Option<String>,
    pub dry_run: bool,
    pub body: JobBody,
}

/// Start a configured job now.
pub fn run_configured(
    state: &Arc<AppState>,
    spec: &JobSpec,
    authid: &str,
    dry_run: bool,
) -> Result<String, JobError> {
    launch(
        state,
        Launch {
            kind: spec.kind,
            store: spec.store.clone(),
            job_id: spec.id.clone(),
            worker_type: spec.kind.worker_type().to_string(),
            worker_id: match &spec.body {
                JobBody::GarbageCollection => spec.store.clone(),
                // PBS's: `<remote>:<remote store>:<store>:<ns>:<job id>`.
                JobBody::Sync(p) => format!(
                    "{}:{}:{}:{}:{}",
                    p.remote.name,
                    p.remote_store,
                    spec.store,
                    p.ns.display_path(),
                    spec.id
                ),
                _ => format!("{}:{}", spec.store, spec.id),
            },
            authid: authid.to_string(),
            state_key: (!dry_run).then(|| spec.state_key()),
            dry_run,
            body: spec.body.clone(),
        },
    )
}

/// Start a verify asked for through the API (worker types `verify`, `verify_group`,
/// `verify_snapshot` like PBS).
pub fn start_manual_verify(
    state: &Arc<AppState>,
    store: &str,
    params: VerifyParams,
    authid: &str,
) -> Result<String, JobError> {
    let (worker_type, worker_id) = match (&params.group, params.time) {
        (Some(g), Some(t)) => ("verify_snapshot", format!("{store}:{}/{t:08X}", g.path())),
        (Some(g), None) => ("verify_group", format!("{store}:{}", g.path())),
        _ => ("verify", store.to_string()),
    };
    launch(
        state,
        Launch {
            kind: JobType::Verify,
            store: store.to_string(),
            job_id: "manual".to_string(),
            worker_type: worker_type.to_string(),
            worker_id,
            authid: authid.to_string(),
            state_key: None,
            dry_run: false,
            body: JobBody::Verify(params),
        },
    )
}

/// Start a garbage collection asked for through the API (`POST .../gc`): it takes the same
/// slot as the scheduled GC of the datastore, so neither starts while the other runs.
pub fn start_manual_gc(
    state: &Arc<AppState>,
    store: &str,
    authid: &str,
) -> Result<String, JobError> {
    launch(
        state,
        Launch {
            kind: JobType::GarbageCollection,
            store: store.to_string(),
            job_id: "manual".to_string(),
            worker_type: JobType::GarbageCollection.worker_type().to_string(),
            worker_id: store.to_string(),
            authid: authid.to_string(),
            state_key: None,
            dry_run: false,
            body: JobBody::GarbageCollection,
        },
    )
}

/// Claim the slot, note the start, and spawn the task.
pub fn launch(state: &Arc<AppState>, job: Launch) -> Result<String, JobError> {
    let entry = state
        .datastore(&job.store)
        .ok_or_else(|| JobError::NoDatastore(job.store.clone()))?;
    let guard = RunningGuard::claim(state, job.kind, &job.store)?;
    let started = now();
    if let Some(key) = &job.state_key {
        state.jobs.note_start(key, started);
    }
    let store: Arc<Datastore> = entry.store.clone();
    let jobs_state = state.clone();
    let state_key = job.state_key.clone();
    let upid = state.tasks.spawn(
        &job.worker_type,
        Some(&job.worker_id),
        &job.authid,
        move |log| {
            // Runs before the task does: the slot names its task from now on.
            guard.state.jobs.attach(&guard.slot, &log);
            async move {
                let _guard = guard;
                let upid = log.upid().to_string();
                log.log(format!(
                    "starting {} job '{}' on datastore '{}'{}",
                    job.kind.label(),
                    job.job_id,
                    job.store,
                    if job.dry_run { " (dry run)" } else { "" }
                ));
                let (summary, result) = execute(&store, &job.body, job.dry_run, &log).await;
                if job.kind != JobType::GarbageCollection {
                    let record = JobRecord {
                        kind: job.kind.history_kind(),
                        job_id: job.job_id.clone(),
                        upid: Some(upid.clone()),
                        started,
                        finished: now(),
                        outcome: match &result {
                            Ok(()) => "OK".to_string(),
                            Err(e) => e.clone(),
                        },
                        dry_run: job.dry_run,
                        summary,
                    };
                    if let Err(e) = store.record_job(&record).await {
                        log.warn(format!("unable to record the job history: {e}"));
                    }
                }
                if let Some(key) = &state_key {
                    let outcome = match &result {
                        Ok(()) => "OK".to_string(),
                        Err(e) => format!("ERROR: {e}"),
                    };
                    jobs_state.jobs.note_end(key, now(), &outcome);
                }
                result
            }
        },
    );
    if let Some(key) = &job.state_key {
        state.jobs.note_upid(key, &upid);
    }
    Ok(upid)
}

/// Run the body; returns the history summary and the task result.
async fn execute(
    store: &Arc<Datastore>,
    body: &JobBody,
    dry_run: bool,
    log: &TaskLog,
) -> (Value, Result<(), String>) {
    let sink = {
        let log = log.clone();
        move |line: String| log.log(line)
    };
    let aborted = {
        let log = log.clone();
        move || log.is_aborted()
    };
    match body {
        JobBody::Prune(params) => {
            match prune_job::run(store, params, dry_run, &sink, &aborted).await {
                Ok(summary) => (json!(summary), Ok(())),
                Err(e) => (Value::Null, Err(e.to_string())),
            }
        }
        JobBody::Verify(p) => {
            let targets = match store
                .verify_targets(&p.ns, p.max_depth, p.group.as_ref(), p.time)
                .await
            {
                Ok(t) => t,
                Err(e) => return (Value::Null, Err(e.to_string())),
            };
            match store
                .verify(&targets, &p.opts, log.upid(), &sink, &aborted)
                .await
            {
                Ok(summary) if summary.snapshots_failed.is_empty() => (json!(summary), Ok(())),
                Ok(summary) => {
                    let n = summary.snapshots_failed.len();
                    (
                        json!(summary),
                        Err(format!(
                            "verification failed on {n} snapshots - please check the log for details"
                        )),
                    )
                }
                Err(e) => (Value::Null, Err(e.to_string())),
            }
        }
        JobBody::Sync(params) => {
            // Its own task: the job's concurrent futures need not be part of this one.
            let (store, params) = (store.clone(), (**params).clone());
            let (sink, aborted) = (Arc::new(sink), Arc::new(aborted));
            let run = tokio::spawn(async move {
                match params.direction {
                    Direction::Pull => crate::sync::pull::run(store, params, sink, aborted)
                        .await
                        .map(|s| (s.errors, json!(s))),
                    Direction::Push => crate::sync::push::run(store, params, sink, aborted)
                        .await
                        .map(|s| (s.errors, json!(s))),
                }
            });
            match run.await {
                Ok(Ok((0, summary))) => (summary, Ok(())),
                Ok(Ok((_, summary))) => (
                    summary,
                    Err(
                        "sync failed with some errors - please check the log for details"
                            .to_string(),
                    ),
                ),
                Ok(Err(e)) => (Value::Null, Err(e.to_string())),
                Err(e) => (Value::Null, Err(format!("sync task failed: {e}"))),
            }
        }
        JobBody::GarbageCollection => {
            // A stop request reaches GC as a flag it checks at safe points.
            let watcher = {
                let (log, store) = (log.clone(), store.clone());
                tokio::spawn(async move {
                    log.aborted().await;
                    store.gc().request_abort();
                })
            };
            let result = store.gc().run_as(Some(log.upid().to_string()), &sink).await;
            watcher.abort();
            match result {
                Ok(status) => (json!(status), Ok(())),
                Err(e) => (Value::Null, Err(e.to_string())),
            }
        }
    }
}
