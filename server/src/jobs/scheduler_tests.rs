//! Scheduler behaviour: missed runs run once after start, new jobs wait for their first event,
//! a second job of a kind on a datastore is skipped, states persist in the data dir.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::auth::{AuthSeed, AuthService};
use crate::backend::LocalBackend;
use crate::datastore::{Datastore, JobKind, KeepOptions};
use crate::format::names::BackupNamespace;
use crate::jobs::calendar;
use crate::jobs::prune_job::PruneParams;
use crate::jobs::runner;
use crate::jobs::JobBody;
use crate::state::{DatastoreEntry, NodeIdentity};
use crate::tasks::TaskRegistry;

struct Env {
    dir: tempfile::TempDir,
    state: Arc<AppState>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let auth = AuthService::open(&dir.path().join("auth"), AuthSeed::default()).unwrap();
    let node = NodeIdentity {
        name: "testnode".into(),
        instance_id: "0123".into(),
    };
    let state = Arc::new(AppState::new(auth, TaskRegistry::new("testnode"), node));
    let backend = Arc::new(LocalBackend::open(&dir.path().join("st1")).unwrap());
    let store = Datastore::open("st1", backend).await.unwrap();
    state.insert_datastore(DatastoreEntry {
        name: "st1".into(),
        tenant: "default".into(),
        comment: None,
        store,
    });
    Env { dir, state }
}

fn prune_spec(id: &str, schedule: &str) -> JobSpec {
    JobSpec {
        kind: JobType::Prune,
        id: id.into(),
        store: "st1".into(),
        schedule: schedule.into(),
        event: calendar::parse(schedule).unwrap(),
        disable: false,
        body: JobBody::Prune(PruneParams {
            ns: BackupNamespace::root(),
            max_depth: None,
            filters: Vec::new(),
            keep: KeepOptions {
                keep_last: Some(1),
                ..KeepOptions::default()
            },
        }),
    }
}

fn job_tasks(state: &AppState) -> Vec<String> {
    state
        .tasks
        .list()
        .into_iter()
        .filter(|t| t.worker_type == "prunejob")
        .map(|t| t.upid)
        .collect()
}

async fn wait_finished(state: &AppState, upid: &str) -> String {
    for _ in 0..200 {
        if let Some(status) = state.tasks.status(upid) {
            if let Some(exit) = status.exitstatus {
                return exit;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("task {upid} did not finish");
}

#[tokio::test]
async fn missed_run_runs_once_after_start_and_new_jobs_wait() {
    let e = env().await;
    let now = now();
    let dir = state::state_dir(e.dir.path());
    // "missed" last ran two days ago: its daily event passed while the server was down.
    state::store(
        &dir,
        "prunejob-missed",
        &JobState {
            created: now - 3 * 86_400,
            last_start: Some(now - 2 * 86_400),
            ..JobState::default()
        },
    )
    .unwrap();
    e.state.jobs.configure(
        Some(e.dir.path()),
        vec![prune_spec("missed", "daily"), prune_spec("fresh", "daily")],
    );
    tick(&e.state, now);
    let started = job_tasks(&e.state);
    assert_eq!(started.len(), 1, "only the missed job runs: {started:?}");
    assert!(
        started[0].contains(":prunejob:st1\\x3amissed:"),
        "{}",
        started[0]
    );
    assert_eq!(wait_finished(&e.state, &started[0]).await, "OK");

    // Not again in the next ticks; the fresh job waits for its first event.
    tick(&e.state, now + 1);
    tick(&e.state, now + 2);
    assert_eq!(job_tasks(&e.state).len(), 1);

    // The state file records the run, and a reopened scheduler agrees.
    let st = state::load(&dir, "prunejob-missed").unwrap();
    assert_eq!(st.last_start, Some(now));
    assert_eq!(st.last_upid.as_deref(), Some(started[0].as_str()));
    assert_eq!(st.last_result.as_deref(), Some("OK"));
    assert!(state::load(&dir, "prunejob-fresh").is_some());
    let entry = e.state.datastore("st1").unwrap();
    let history = entry.store.job_history(Some(JobKind::Prune)).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].job_id, "missed");
    assert_eq!(history[0].upid.as_deref(), Some(started[0].as_str()));
}

#[tokio::test]
async fn second_job_of_a_kind_on_a_store_is_skipped() {
    let e = env().await;
    let now = now();
    e.state
        .jobs
        .configure(None, vec![prune_spec("every-second", "*:*:*")]);
    let slot = (JobType::Prune, "st1".to_string());
    assert!(e.state.jobs.claim(&slot).is_ok());
    tick(&e.state, now);
    tick(&e.state, now + 1);
    assert!(job_tasks(&e.state).is_empty(), "skipped while another runs");
    let spec = e.state.jobs.find(JobType::Prune, "every-second").unwrap();
    assert!(e.state.jobs.next_run(&spec).unwrap() > now + 1);
    let err = run_configured(&e.state, &spec, "root@pam", false).unwrap_err();
    assert!(matches!(err, JobError::Busy(_)), "{err}");
    e.state.jobs.release(&slot);
    tick(&e.state, now + 2);
    assert_eq!(job_tasks(&e.state).len(), 1);
}

#[tokio::test]
async fn reload_replaces_jobs_and_disabled_jobs_do_not_run() {
    let e = env().await;
    let now = now();
    e.state.jobs.configure(None, vec![prune_spec("a", "*:*:*")]);
    let mut disabled = prune_spec("b", "*:*:*");
    disabled.disable = true;
    e.state.jobs.set_specs(vec![disabled]);
    assert!(e.state.jobs.find(JobType::Prune, "a").is_none());
    tick(&e.state, now + 5);
    assert!(job_tasks(&e.state).is_empty());
}

fn tasks_of(state: &AppState, worker_type: &str) -> Vec<String> {
    state
        .tasks
        .list()
        .into_iter()
        .filter(|t| t.worker_type == worker_type)
        .map(|t| t.upid)
        .collect()
}

#[tokio::test]
async fn verify_and_gc_jobs_run_as_their_pbs_tasks() {
    let e = env().await;
    let config = crate::config::Config::parse(
        std::path::Path::new("server.toml"),
        "[[datastore]]\nname = \"st1\"\ngc_schedule = \"*:*:*\"\n\
         [[verify_job]]\nid = \"v1\"\nstore = \"st1\"\nschedule = \"*:*:*\"\nmode = \"cheap\"\n",
    )
    .unwrap();
    e.state
        .jobs
        .configure(None, crate::jobs::specs_from_config(&config).unwrap());
    let now = now();
    tick(&e.state, now);
    tick(&e.state, now + 1);
    let verify = tasks_of(&e.state, "verificationjob");
    let gc = tasks_of(&e.state, "garbage_collection");
    assert_eq!((verify.len(), gc.len()), (1, 1), "{verify:?} {gc:?}");
    assert!(
        verify[0].contains(":verificationjob:st1\\x3av1:root@pam:"),
        "{}",
        verify[0]
    );
    assert!(
        gc[0].contains(":garbage_collection:st1:root@pam:"),
        "{}",
        gc[0]
    );
    assert_eq!(wait_finished(&e.state, &verify[0]).await, "OK");
    assert_eq!(wait_finished(&e.state, &gc[0]).await, "OK");
    let entry = e.state.datastore("st1").unwrap();
    let history = entry
        .store
        .job_history(Some(JobKind::Verify))
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].job_id, "v1");
    assert_eq!(history[0].outcome, "OK");
    let gc_state = e.state.jobs.state("garbage_collection-st1").unwrap();
    assert_eq!(gc_state.last_result.as_deref(), Some("OK"));
}

#[tokio::test]
async fn manual_and_scheduled_gc_share_one_slot() {
    let e = env().await;
    let config = crate::config::Config::parse(
        std::path::Path::new("server.toml"),
        "[[datastore]]\nname = \"st1\"\ngc_schedule = \"*:*:*\"\n",
    )
    .unwrap();
    e.state
        .jobs
        .configure(None, crate::jobs::specs_from_config(&config).unwrap());
    // First sight of the scheduled job: due at its next event, a second later.
    let now = now();
    tick(&e.state, now);
    assert!(tasks_of(&e.state, "garbage_collection").is_empty());
    // The test runtime runs one thread: the manual GC has not run a step before we await.
    let manual = runner::start_manual_gc(&e.state, "st1", "admin@pbs").unwrap();
    assert!(e.state.jobs.is_running(JobType::GarbageCollection, "st1"));

    // A second manual start is refused naming the running task.
    let err = runner::start_manual_gc(&e.state, "st1", "admin@pbs").unwrap_err();
    assert!(matches!(err, JobError::Busy(_)), "{err}");
    assert!(
        err.to_string().contains(&manual) && err.to_string().contains("garbage collection"),
        "{err}"
    );

    // The scheduled GC that falls due now is skipped, with a line in the manual run's log.
    tick(&e.state, now + 1);
    assert_eq!(
        tasks_of(&e.state, "garbage_collection"),
        vec![manual.clone()]
    );
    assert_eq!(wait_finished(&e.state, &manual).await, "OK");
    let log = e.state.tasks.log_text(&manual).unwrap();
    assert!(
        log.contains("scheduled garbage collection job 'st1' skipped: this task is still running"),
        "{log}"
    );
    assert!(!e.state.jobs.is_running(JobType::GarbageCollection, "st1"));

    // Once the slot is free the scheduled GC runs at its next event; a manual start while
    // it runs is refused naming the scheduled task.
    tick(&e.state, now + 2);
    let gc = tasks_of(&e.state, "garbage_collection");
    assert_eq!(gc.len(), 2, "{gc:?}");
    let scheduled = gc.iter().find(|u| **u != manual).unwrap().clone();
    assert!(scheduled.contains(":root@pam:"), "{scheduled}");
    let err = runner::start_manual_gc(&e.state, "st1", "admin@pbs").unwrap_err();
    assert!(err.to_string().contains(&scheduled), "{err}");
    assert_eq!(wait_finished(&e.state, &scheduled).await, "OK");
    let again = runner::start_manual_gc(&e.state, "st1", "admin@pbs").unwrap();
    assert_eq!(wait_finished(&e.state, &again).await, "OK");
}
