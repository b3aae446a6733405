//! `/admin/prune`, `/admin/verify`, `/admin/sync` and `/admin/gc` (PBS's job endpoints): list
//! configured prune, verify, sync or garbage collection jobs with their state, and `POST .../{id}/run` to start
//! one now as a task (our extensions: `dry-run` for prune jobs, and `run` for GC jobs, whose id
//! is the datastore's name; PBS starts GC with `POST /admin/datastore/{store}/gc`, which works
//! here too).

use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::context::Ctx;
use crate::auth::Privileges;
use crate::format::names::BackupNamespace;
use crate::jobs::{runner, JobBody, JobError, JobSpec, JobType};
use crate::net::{json_data, Body, HttpError};

fn job_type(kind: &str) -> Result<JobType, HttpError> {
    match kind {
        "prune" => Ok(JobType::Prune),
        "verify" => Ok(JobType::Verify),
        "gc" => Ok(JobType::GarbageCollection),
        "sync" => Ok(JobType::Sync),
        other => Err(HttpError::not_found(format!("no job type '{other}'"))),
    }
}

/// Maps job errors: unknown job 404, already running 409 (PBS answers 400 with a message;
/// the message is the same), the rest 400 or 500.
pub fn job_error(err: JobError) -> HttpError {
    let status = match &err {
        JobError::NotFound { .. } | JobError::NoDatastore(_) => StatusCode::NOT_FOUND,
        JobError::Busy(_) => StatusCode::CONFLICT,
        JobError::Invalid(_) => StatusCode::BAD_REQUEST,
        JobError::State { .. } | JobError::Datastore(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    HttpError::new(status, err.to_string())
}

fn namespace_of(spec: &JobSpec) -> BackupNamespace {
    match &spec.body {
        JobBody::Prune(p) => p.ns.clone(),
        JobBody::Verify(v) => v.ns.clone(),
        JobBody::GarbageCollection => BackupNamespace::root(),
        JobBody::Sync(p) => p.ns.clone(),
    }
}

/// One job as PBS lists it: its config and `next-run`, `last-run-*`.
fn describe(ctx: &Ctx, spec: &JobSpec) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), json!(spec.id));
    obj.insert("store".into(), json!(spec.store));
    obj.insert("schedule".into(), json!(spec.schedule));
    obj.insert("disable".into(), json!(spec.disable));
    match &spec.body {
        JobBody::Prune(p) => {
            if !p.ns.is_root() {
                obj.insert("ns".into(), json!(p.ns.display_path()));
            }
            if let Some(d) = p.max_depth {
                obj.insert("max-depth".into(), json!(d));
            }
            if let Value::Object(keep) = json!(p.keep) {
                obj.extend(keep);
            }
        }
        JobBody::Verify(v) => {
            if !v.ns.is_root() {
                obj.insert("ns".into(), json!(v.ns.display_path()));
            }
            if let Some(d) = v.max_depth {
                obj.insert("max-depth".into(), json!(d));
            }
            obj.insert("ignore-verified".into(), json!(v.opts.ignore_verified));
            if let Some(d) = v.opts.outdated_after_days {
                obj.insert("outdated-after".into(), json!(d));
            }
            let mode = match v.opts.level {
                crate::datastore::ChunkCheck::Cheap => "cheap",
                crate::datastore::ChunkCheck::Deep => "deep",
            };
            obj.insert("mode".into(), json!(mode));
            if let Some(p) = v.opts.sample_percent {
                obj.insert("sample-percent".into(), json!(p));
            }
        }
        JobBody::GarbageCollection => {}
        JobBody::Sync(p) => {
            if !p.ns.is_root() {
                obj.insert("ns".into(), json!(p.ns.display_path()));
            }
            obj.insert("remote".into(), json!(p.remote.name));
            obj.insert("remote-store".into(), json!(p.remote_store));
            if !p.remote_ns.is_root() {
                obj.insert("remote-ns".into(), json!(p.remote_ns.display_path()));
            }
            if let Some(d) = p.max_depth {
                obj.insert("max-depth".into(), json!(d));
            }
            obj.insert("owner".into(), json!(p.owner));
            obj.insert("remove-vanished".into(), json!(p.remove_vanished));
            if let Some(n) = p.transfer_last {
                obj.insert("transfer-last".into(), json!(n));
            }
            obj.insert("sync-direction".into(), json!(p.direction.as_str()));
            if let Some(rate) = p.rate_in {
                obj.insert("rate-in".into(), json!(rate));
            }
            if let Some(rate) = p.rate_out {
                obj.insert("rate-out".into(), json!(rate));
            }
        }
    }
    let jobs = &ctx.state.jobs;
    if let Some(next) = jobs.next_run(spec) {
        obj.insert("next-run".into(), json!(next));
    }
    if let Some(st) = jobs.state(&spec.state_key()) {
        if let Some(upid) = st.last_upid {
            obj.insert("last-run-upid".into(), json!(upid));
        }
        if jobs.is_running(spec.kind, &spec.store) && st.last_end < st.last_start {
            obj.insert("last-run-state".into(), json!("running"));
        } else if let (Some(end), Some(result)) = (st.last_end, st.last_result) {
            obj.insert("last-run-endtime".into(), json!(end));
            obj.insert("last-run-state".into(), json!(result));
        }
    }
    Value::Object(obj)
}

/// `GET /admin/prune`, `/admin/verify` or `/admin/gc`: jobs on datastores the caller may audit.
pub fn list(ctx: &Ctx, kind: &str) -> Result<Response<Body>, HttpError> {
    let kind = job_type(kind)?;
    let store_filter = ctx.params.str("store")?;
    let mut out = Vec::new();
    for spec in ctx.state.jobs.specs() {
        if spec.kind != kind || store_filter.as_ref().is_some_and(|s| *s != spec.store) {
            continue;
        }
        let Ok(entry) = ctx.store(&spec.store) else {
            continue;
        };
        if ctx
            .privs(&entry, &namespace_of(&spec))
            .intersects(Privileges::AUDIT)
        {
            out.push(describe(ctx, &spec));
        }
    }
    Ok(json_data(out))
}

/// `POST /admin/{prune,verify,gc}/{id}/run`: start the job now; the UPID.
pub fn run(ctx: &Ctx, kind: &str, id: &str) -> Result<Response<Body>, HttpError> {
    let kind = job_type(kind)?;
    let spec = ctx.state.jobs.find(kind, id).ok_or_else(|| {
        job_error(JobError::NotFound {
            kind: kind.label(),
            id: id.to_string(),
        })
    })?;
    let entry = ctx.store(&spec.store)?;
    let needed = match kind {
        JobType::Prune => Privileges::MODIFY | Privileges::PRUNE,
        JobType::Verify => Privileges::MODIFY | Privileges::VERIFY,
        JobType::GarbageCollection | JobType::Sync => Privileges::MODIFY,
    };
    ctx.require_any(&entry, &namespace_of(&spec), needed)?;
    let dry_run = match kind {
        JobType::Prune => ctx.params.bool_or("dry-run", false)?,
        _ => false,
    };
    let upid = runner::run_configured(&ctx.state, &spec, &ctx.id.authid.to_string(), dry_run)
        .map_err(job_error)?;
    Ok(json_data(upid))
}
