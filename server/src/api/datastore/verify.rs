//! `POST /admin/datastore/{store}/verify` (PBS): verify the datastore, a namespace subtree, a
//! group or one snapshot as a task; returns the UPID. Parameters as PBS: `ns`, `max-depth`,
//! `backup-type` + `backup-id` (+ `backup-time`), `ignore-verified` (default true),
//! `outdated-after` (days). Our extensions: `mode` (`deep`, the default, or `cheap`) and
//! `sample-percent` (deep-check only a random share of the chunks).

use http::Response;

use crate::api::context::Ctx;
use crate::api::jobs::job_error;
use crate::auth::Privileges;
use crate::datastore::{ChunkCheck, VerifyOptions};
use crate::jobs::{runner, VerifyParams};
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

pub async fn start(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let p = &ctx.params;
    let ns = p.namespace("ns")?;
    let group = match p.str("backup-type")? {
        Some(_) => Some(p.group()?),
        None => None,
    };
    let time = match group {
        Some(_) => p.i64("backup-time")?,
        None => None,
    };
    let max_depth = match p.u64("max-depth")? {
        Some(d) if d > 7 => return Err(HttpError::bad_param("max-depth", "must be 0..7")),
        d => d.map(|d| d as usize),
    };
    let level = match p.str("mode")?.as_deref() {
        None | Some("deep") => ChunkCheck::Deep,
        Some("cheap") => ChunkCheck::Cheap,
        Some(other) => {
            return Err(HttpError::bad_param(
                "mode",
                format!("'{other}' is not 'cheap' or 'deep'"),
            ))
        }
    };
    let sample_percent = match p.u64("sample-percent")? {
        Some(v) if !(1..=100).contains(&v) => {
            return Err(HttpError::bad_param("sample-percent", "must be 1..100"))
        }
        v => v.map(|v| v as u8),
    };
    let needed = Privileges::VERIFY | Privileges::MODIFY;
    match &group {
        Some(g) => {
            ctx.check_group(entry, &ns, g, needed, Privileges::BACKUP)
                .await?
        }
        None => {
            ctx.require_any(entry, &ns, needed)?;
        }
    }
    let params = VerifyParams {
        ns,
        max_depth,
        group,
        time,
        opts: VerifyOptions {
            level,
            sample_percent,
            ignore_verified: p.bool_or("ignore-verified", true)?,
            outdated_after_days: p.u64("outdated-after")?,
        },
    };
    let upid =
        runner::start_manual_verify(&ctx.state, &entry.name, params, &ctx.id.authid.to_string())
            .map_err(job_error)?;
    Ok(json_data(upid))
}
