//! Scheduled datastore jobs (ARCHITECTURE.md: the `jobs/` layer, above `datastore/` and `tasks/`):
//! PBS calendar events, the scheduler that starts prune, verify and GC jobs as tasks, and the
//! per-job state that makes a run missed while the server was down happen once after start.

pub mod calendar;
pub mod prune_job;
pub mod runner;
pub mod scheduler;
pub mod state;

use std::path::PathBuf;

use crate::format::group_filter::GroupFilter;
use calendar::CalendarEvent;
use prune_job::PruneParams;

use crate::config::Config;
use crate::datastore::{ChunkCheck, DatastoreError, JobKind, KeepOptions, VerifyOptions};
use crate::format::names::BackupNamespace;
use crate::sync::{Direction, RemoteSpec, SyncParams};

pub use scheduler::Jobs;

/// Auth id PBS uses for scheduled runs (and the default owner of what a pull job writes).
pub const SCHEDULER_AUTHID: &str = "root@pam";

/// Errors of the jobs layer.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no {kind} job '{id}'")]
    NotFound { kind: &'static str, id: String },
    #[error("datastore '{0}' is not served by this server")]
    NoDatastore(String),
    /// Another job of the same kind runs on the datastore.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Invalid(String),
    #[error("job state {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("{0}")]
    Datastore(#[from] DatastoreError),
}

/// The kinds of scheduled jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobType {
    Prune,
    Verify,
    GarbageCollection,
    Sync,
}

impl JobType {
    /// PBS's worker type of the job's task.
    pub fn worker_type(self) -> &'static str {
        match self {
            JobType::Prune => "prunejob",
            JobType::Verify => "verificationjob",
            JobType::GarbageCollection => "garbage_collection",
            JobType::Sync => "syncjob",
        }
    }

    /// Word used in messages.
    pub fn label(self) -> &'static str {
        match self {
            JobType::Prune => "prune",
            JobType::Verify => "verify",
            JobType::GarbageCollection => "garbage collection",
            JobType::Sync => "sync",
        }
    }

    /// The job-history kind.
    pub fn history_kind(self) -> JobKind {
        match self {
            JobType::Prune => JobKind::Prune,
            JobType::Verify => JobKind::Verify,
            JobType::GarbageCollection => JobKind::GarbageCollection,
            JobType::Sync => JobKind::Sync,
        }
    }
}

/// What a verify run covers.
#[derive(Clone, Debug)]
pub struct VerifyParams {
    pub ns: BackupNamespace,
    pub max_depth: Option<usize>,
    pub group: Option<crate::format::names::BackupGroup>,
    pub time: Option<i64>,
    pub opts: VerifyOptions,
}

/// The work of a job.
#[derive(Clone, Debug)]
pub enum JobBody {
    Prune(PruneParams),
    Verify(VerifyParams),
    GarbageCollection,
    Sync(Box<SyncParams>),
}

/// A configured job.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub kind: JobType,
    /// Job id (the datastore name for GC).
    pub id: String,
    pub store: String,
    /// The schedule as written.
    pub schedule: String,
    pub event: CalendarEvent,
    pub disable: bool,
    pub body: JobBody,
}

impl JobSpec {
    /// Name of the job's state file (PBS style: `<worker type>-<id>`).
    pub fn state_key(&self) -> String {
        format!("{}-{}", self.kind.worker_type(), self.id)
    }
}

/// The jobs a configuration declares: `[[prune_job]]`, `[[verify_job]]`, `[[sync_job]]` and
/// each datastore's `gc_schedule`. The file was validated at load; anything that still does not convert is an
/// error naming the job.
pub fn specs_from_config(config: &Config) -> Result<Vec<JobSpec>, JobError> {
    let bad = |what: String| JobError::Invalid(what);
    let event =
        |text: &str, job: &str| calendar::parse(text).map_err(|e| bad(format!("job '{job}': {e}")));
    let namespace = |ns: &Option<String>, job: &str| match ns {
        None => Ok(BackupNamespace::root()),
        Some(text) => BackupNamespace::parse(text)
            .map_err(|e| bad(format!("job '{job}': namespace '{text}': {e}"))),
    };
    let mut out = Vec::new();
    for job in &config.prune_jobs {
        let id = job.id.get_ref().clone();
        let filters = job
            .group_filter
            .iter()
            .map(|f| GroupFilter::parse(f).map_err(|e| bad(format!("prune job '{id}': {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(JobSpec {
            kind: JobType::Prune,
            store: job.store.get_ref().clone(),
            schedule: job.schedule.get_ref().clone(),
            event: event(job.schedule.get_ref(), &id)?,
            disable: job.disable,
            body: JobBody::Prune(PruneParams {
                ns: namespace(&job.ns, &id)?,
                max_depth: job.max_depth,
                filters,
                keep: KeepOptions {
                    keep_last: job.keep_last,
                    keep_hourly: job.keep_hourly,
                    keep_daily: job.keep_daily,
                    keep_weekly: job.keep_weekly,
                    keep_monthly: job.keep_monthly,
                    keep_yearly: job.keep_yearly,
                },
            }),
            id,
        });
    }
    for job in &config.verify_jobs {
        let id = job.id.get_ref().clone();
        let level = match job.mode.as_ref().map(|m| m.get_ref().as_str()) {
            Some("cheap") => ChunkCheck::Cheap,
            _ => ChunkCheck::Deep,
        };
        out.push(JobSpec {
            kind: JobType::Verify,
            store: job.store.get_ref().clone(),
            schedule: job.schedule.get_ref().clone(),
            event: event(job.schedule.get_ref(), &id)?,
            disable: job.disable,
            body: JobBody::Verify(VerifyParams {
                ns: namespace(&job.ns, &id)?,
                max_depth: job.max_depth,
                group: None,
                time: None,
                opts: VerifyOptions {
                    level,
                    sample_percent: job.sample_percent,
                    ignore_verified: job.ignore_verified.unwrap_or(true),
                    outdated_after_days: job.outdated_after,
                },
            }),
            id,
        });
    }
    for job in &config.sync_jobs {
        let id = job.id.get_ref().clone();
        let remote = config
            .remotes
            .iter()
            .find(|r| r.name.get_ref() == job.remote.get_ref())
            .ok_or_else(|| {
                bad(format!(
                    "sync job '{id}': unknown remote '{}'",
                    job.remote.get_ref()
                ))
            })?;
        let filters = job
            .group_filter
            .iter()
            .map(|f| GroupFilter::parse(f).map_err(|e| bad(format!("sync job '{id}': {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let rate = |rate: &Option<toml::Spanned<toml::Value>>| match rate {
            Some(rate) => crate::config::parse_rate(rate.get_ref())
                .map(Some)
                .map_err(|e| bad(format!("sync job '{id}': {e}"))),
            None => Ok(None),
        };
        let direction = match job.direction.as_ref().map(|d| d.get_ref().as_str()) {
            Some("push") => Direction::Push,
            _ => Direction::Pull,
        };
        out.push(JobSpec {
            kind: JobType::Sync,
            store: job.store.get_ref().clone(),
            schedule: job.schedule.get_ref().clone(),
            event: event(job.schedule.get_ref(), &id)?,
            disable: job.disable,
            body: JobBody::Sync(Box::new(SyncParams {
                direction,
                remote: RemoteSpec {
                    name: remote.name.get_ref().clone(),
                    host: remote.host.get_ref().clone(),
                    port: remote.port.unwrap_or(8007),
                    auth_id: remote.auth_id.get_ref().clone(),
                    fingerprint: remote.fingerprint.get_ref().clone(),
                    secret_file: remote.secret_file.get_ref().clone(),
                },
                remote_store: job.remote_store.get_ref().clone(),
                remote_ns: namespace(&job.remote_ns, &id)?,
                ns: namespace(&job.ns, &id)?,
                max_depth: job.max_depth,
                filters,
                remove_vanished: job.remove_vanished,
                transfer_last: job.transfer_last,
                owner: job
                    .owner
                    .as_ref()
                    .map_or_else(|| SCHEDULER_AUTHID.to_string(), |o| o.get_ref().clone()),
                verified_only: job.verified_only,
                encrypted_only: job.encrypted_only,
                rate_in: rate(&job.rate_in)?,
                rate_out: rate(&job.rate_out)?,
                worker_threads: job.worker_threads.as_ref().map_or(1, |t| *t.get_ref()),
            })),
            id,
        });
    }
    for ds in &config.datastores {
        if let Some(schedule) = &ds.gc_schedule {
            let store = ds.name.get_ref().clone();
            out.push(JobSpec {
                kind: JobType::GarbageCollection,
                id: store.clone(),
                schedule: schedule.get_ref().clone(),
                event: event(schedule.get_ref(), &store)?,
                disable: false,
                body: JobBody::GarbageCollection,
                store,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_jobs_resolve_their_remote_and_bad_fields_are_named() {
        let path = std::path::Path::new("server.toml");
        let fp = ["ab"; 32].join(":");
        let remote = format!(
            "[[remote]]\nname = \"site-a\"\nhost = \"pbs.example\"\nauth_id = \"sync@pbs\"\n\
             fingerprint = \"{fp}\"\nsecret_file = \"/etc/secret\"\n"
        );
        let job = "[[sync_job]]\nid = \"s1\"\nstore = \"store1\"\nremote = \"site-a\"\n\
                   remote_store = \"remote1\"\nremote_ns = \"prod\"\nns = \"mirror\"\n\
                   schedule = \"hourly\"\nrate_in = \"2 MiB\"\nworker_threads = 4\n";
        let config = Config::parse(path, &format!("{remote}{job}")).unwrap();
        let specs = specs_from_config(&config).unwrap();
        let JobBody::Sync(p) = &specs[0].body else {
            panic!("{specs:?}")
        };
        assert_eq!(specs[0].kind.worker_type(), "syncjob");
        assert_eq!(
            (p.remote.host.as_str(), p.remote.port),
            ("pbs.example", 8007)
        );
        assert_eq!(p.remote_ns.display_path(), "prod");
        assert_eq!(p.ns.display_path(), "mirror");
        assert_eq!(p.owner, "root@pam");
        assert_eq!(p.rate_in, Some(2 << 20));
        assert_eq!(p.worker_threads, 4);
        assert_eq!(p.direction, Direction::Pull);
        let push = format!("{remote}{job}direction = \"push\"\nrate_out = 1000\n");
        let specs = specs_from_config(&Config::parse(path, &push).unwrap()).unwrap();
        let JobBody::Sync(p) = &specs[0].body else {
            panic!("{specs:?}")
        };
        assert_eq!((p.direction, p.rate_out), (Direction::Push, Some(1000)));
        for (text, field, needle) in [
            (
                job.replace("site-a", "nowhere"),
                "sync_job[0].remote",
                "unknown remote",
            ),
            (
                job.replace("2 MiB", "fast"),
                "sync_job[0].rate_in",
                "not a rate",
            ),
            (
                job.replace("= 4", "= 99"),
                "sync_job[0].worker_threads",
                "1 to 32",
            ),
            (
                job.replace("\"prod\"", "\"a//b\""),
                "sync_job[0].remote_ns",
                "a//b",
            ),
        ] {
            let err = Config::parse(path, &format!("{remote}{text}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field) && err.contains(needle), "{err}");
        }
        let bad_fp = remote.replace(&fp, "ab:cd");
        let err = Config::parse(path, &bad_fp).unwrap_err().to_string();
        assert!(err.contains("remote[0].fingerprint"), "{err}");
    }

    #[test]
    fn config_schedules_are_parsed_and_errors_name_the_field() {
        let path = std::path::Path::new("server.toml");
        let ok = Config::parse(
            path,
            "[[datastore]]\nname = \"store1\"\ngc_schedule = \"sat *-1..7 03:00\"\n\
             [[prune_job]]\nid = \"p1\"\nstore = \"store1\"\nschedule = \"*:0/15\"\n\
             keep_last = 3\ngroup_filter = [\"type:vm\", \"exclude:group:vm/100\"]\n\
             [[verify_job]]\nid = \"v1\"\nstore = \"store1\"\nschedule = \"mon..fri 02:00\"\nmode = \"cheap\"\n",
        )
        .unwrap();
        let specs = specs_from_config(&ok).unwrap();
        let kinds: Vec<(JobType, &str)> = specs.iter().map(|s| (s.kind, s.id.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (JobType::Prune, "p1"),
                (JobType::Verify, "v1"),
                (JobType::GarbageCollection, "store1")
            ]
        );
        for (text, field) in [
            (
                "[[datastore]]\nname = \"store1\"\ngc_schedule = \"every day\"\n",
                "datastore[0].gc_schedule",
            ),
            (
                "[[prune_job]]\nid = \"p\"\nstore = \"store1\"\nschedule = \"25:00\"\n",
                "prune_job[0].schedule",
            ),
            (
                "[[verify_job]]\nid = \"v\"\nstore = \"store1\"\nschedule = \"\"\n",
                "verify_job[0].schedule",
            ),
            (
                "[webhook]\nurl = \"https://x\"\nreport_schedule = \"sometimes\"\n",
                "webhook.report_schedule",
            ),
        ] {
            let err = Config::parse(path, text).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
            assert!(err.contains("invalid calendar event"), "{err}");
        }
    }
}
