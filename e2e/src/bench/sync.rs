//! `pbs-bench sync`: pull and push of an image between server processes, with the client's own
//! backup and restore of the same bytes measured in the same run as the baseline.
//!
//! Three servers: A holds the backups, B pulls them from A (`direction = "pull"`) and pushes
//! its copy to C (`direction = "push"`). Phases: client backup of the image to A and restore
//! from A (baselines), pull A→B and push B→C of the first snapshot, then a second snapshot with
//! `--change-percent` of the image's chunks changed, pulled and pushed again (incremental: only
//! the changed chunks cross). Chunks crossing are read from each job's summary.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::backup_restore::{backup, restore, IMAGE_GROUP};
use super::{bench_data, mb_per_s, vm_hwm_kib};
use crate::chunker::FIXED_CHUNK_SIZE;
use crate::sync_pair::{self, summary_chunks, with_remotes, with_user, RemoteLogin};

/// Backup time of the first snapshot (2026-01-01T00:00:00Z).
const T0: i64 = 1_767_225_600;
const SOURCE_USER: &str = "sync@pbs";
const TARGET_USER: &str = "pusher@pbs";
const PASSWORD: &str = "bench-sync-secret";
/// Longest a job may take.
const JOB_LIMIT: Duration = Duration::from_secs(1800);

const JOBS: &str = r#"
[[sync_job]]
id = "pull"
store = "store1"
ns = "mirror"
remote = "site-a"
remote_store = "store1"
max_depth = 0
schedule = "2099-01-01"

[[sync_job]]
id = "push"
direction = "push"
store = "store1"
ns = "mirror"
remote = "site-c"
remote_store = "store1"
max_depth = 0
schedule = "2099-01-01"
"#;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub image_mib: usize,
    /// Percentage of the image's 4 MiB chunks the second snapshot changes.
    pub change_percent: f64,
    pub server_bin: std::path::PathBuf,
}

/// One measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct SyncPhase {
    pub name: String,
    pub seconds: f64,
    /// Image bytes per second (MB/s) for the phase.
    pub mb_per_s: f64,
    /// This phase's time relative to the client's backup of the same image (1.0 = as long).
    pub vs_backup: f64,
    /// Chunks that crossed the network (sync jobs only).
    pub chunks: Option<usize>,
}

/// Everything one `sync` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub server_bin: String,
    pub image_bytes: u64,
    pub image_chunks: usize,
    pub changed_chunks: usize,
    pub phases: Vec<SyncPhase>,
    /// Peak RSS (KiB) of server B, which ran both jobs.
    pub syncing_server_peak_kib: Option<u64>,
}

pub async fn run(opts: &Options) -> Result<SyncReport> {
    if opts.image_mib == 0 {
        bail!("sync needs --image-mib >= 1");
    }
    let mut data = bench_data(opts.image_mib * 1024 * 1024, 77);
    let image_chunks = data.len().div_ceil(FIXED_CHUNK_SIZE);
    let changed_chunks = ((image_chunks as f64 * opts.change_percent / 100.0).round() as usize)
        .clamp(1, image_chunks);

    eprintln!("starting servers A (source), C (push target), B (syncs)");
    let (a, a_admin) = with_user(SOURCE_USER, PASSWORD, "DatastoreReader")
        .await
        .context("start server A")?;
    let (c, _c_admin) = with_user(TARGET_USER, PASSWORD, "DatastoreAdmin")
        .await
        .context("start server C")?;
    let secrets = tempfile::tempdir().context("temp dir for secrets")?;
    let remotes = [
        RemoteLogin {
            name: "site-a",
            server: &a,
            port: a.port(),
            user: SOURCE_USER,
            password: PASSWORD,
        },
        RemoteLogin {
            name: "site-c",
            server: &c,
            port: c.port(),
            user: TARGET_USER,
            password: PASSWORD,
        },
    ];
    let (b, b_admin) = with_remotes(&remotes, secrets.path(), JOBS)
        .await
        .context("start server B")?;
    b_admin
        .post(
            "admin/datastore/store1/namespace",
            Some(&serde_json::json!({ "name": "mirror" })),
        )
        .await
        .context("create namespace mirror on B")?;

    let mut phases = Vec::new();
    let bytes = data.len() as u64;
    let (_, backup_took) = backup(&a_admin, "store1", IMAGE_GROUP, T0, &data, true)
        .await
        .context("client backup to A")?;
    let backup_secs = backup_took.as_secs_f64();
    let mut phase = |name: &str, seconds: f64, chunks: Option<usize>| {
        eprintln!(
            "  {name}: {seconds:.2} s{}",
            chunks.map_or(String::new(), |c| format!(", {c} chunks"))
        );
        phases.push(SyncPhase {
            name: name.to_string(),
            seconds,
            mb_per_s: mb_per_s(bytes, Duration::from_secs_f64(seconds)),
            vs_backup: seconds / backup_secs,
            chunks,
        });
    };
    phase("client backup to A (baseline)", backup_secs, None);
    let restore_took = restore(&a_admin, "store1", T0, &data)
        .await
        .context("client restore from A")?;
    phase(
        "client restore from A (baseline)",
        restore_took.as_secs_f64(),
        None,
    );

    let job = |id: &'static str| {
        let b_admin = &b_admin;
        async move {
            let run = sync_pair::run_job(b_admin, id, JOB_LIMIT)
                .await
                .with_context(|| format!("sync job {id}"))?;
            if run.exitstatus != "OK" {
                bail!("sync job {id} ended {}: {:#?}", run.exitstatus, run.log);
            }
            anyhow::Ok((run.elapsed.as_secs_f64(), summary_chunks(&run.log)))
        }
    };
    let (secs, chunks) = job("pull").await?;
    phase("pull A→B, first snapshot", secs, chunks);
    let (secs, chunks) = job("push").await?;
    phase("push B→C, first snapshot", secs, chunks);

    // The second snapshot: the first byte of evenly spread chunks flipped.
    let stride = image_chunks / changed_chunks;
    for i in 0..changed_chunks {
        data[i * stride * FIXED_CHUNK_SIZE] ^= 0xff;
    }
    let (_, took) = backup(&a_admin, "store1", IMAGE_GROUP, T0 + 3600, &data, true)
        .await
        .context("second client backup to A")?;
    phase("client backup to A, incremental", took.as_secs_f64(), None);
    let (secs, chunks) = job("pull").await?;
    phase("pull A→B, incremental", secs, chunks);
    let (secs, chunks) = job("push").await?;
    phase("push B→C, incremental", secs, chunks);

    let report = SyncReport {
        server_bin: opts.server_bin.display().to_string(),
        image_bytes: bytes,
        image_chunks,
        changed_chunks,
        phases,
        syncing_server_peak_kib: b.pid().and_then(vm_hwm_kib),
    };
    drop((a, b, c));
    Ok(report)
}

/// The report as a table.
pub fn render(r: &SyncReport) -> String {
    let mut out = format!(
        "sync of a {} MiB image ({} chunks; {} changed in the second snapshot), server {}\n\n",
        r.image_bytes >> 20,
        r.image_chunks,
        r.changed_chunks,
        r.server_bin
    );
    out.push_str(&format!(
        "{:<36} {:>9} {:>9} {:>10} {:>8}\n",
        "phase", "seconds", "MB/s", "vs backup", "chunks"
    ));
    for p in &r.phases {
        out.push_str(&format!(
            "{:<36} {:>9.2} {:>9.1} {:>10.2} {:>8}\n",
            p.name,
            p.seconds,
            p.mb_per_s,
            p.vs_backup,
            p.chunks.map_or("-".to_string(), |c| c.to_string())
        ));
    }
    if let Some(kib) = r.syncing_server_peak_kib {
        out.push_str(&format!(
            "\npeak RSS of the syncing server B: {} MiB\n",
            kib / 1024
        ));
    }
    out
}
