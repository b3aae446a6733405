//! `pbs-bench memory`: resident memory of a real server process under backup, restore and GC
//! work, read from `/proc/<pid>/status` (`VmRSS` now, `VmHWM` peak).
//!
//! Sequence mode: backup of a 1 GiB image, restore of it, backup of a second image into the same
//! group, restore of that, GC; `VmRSS` after each step, the peak, then `VmRSS` while the server
//! sits idle (the figure a tenant pod costs between jobs).
//! Parallel mode (`--parallel N`): N clients back up N different images at once; peak RSS and
//! the total wall time. The images are windows of one buffer at different offsets, so every
//! client's chunks differ without the benchmark holding N copies.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::backup_restore::{backup, restore, IMAGE_GROUP};
use super::{bench_data, vm_hwm_kib, vm_rss_kib};
use crate::{PbsClient, TestServer};

/// Backup time of the first snapshot (2026-01-01T00:00:00Z).
const T0: i64 = 1_767_225_600;
/// Byte offset between the images of successive clients: not a multiple of anything the
/// chunker cares about, so no two images share a 4 MiB chunk.
const IMAGE_SHIFT: usize = 4099;
/// Seconds between `VmRSS` samples while idle.
const IDLE_SAMPLE: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub image_mib: usize,
    /// `None`: the sequence; `Some(n)`: n parallel backups.
    pub parallel: Option<usize>,
    /// Idle time after the sequence before the last `VmRSS` reading.
    pub idle_secs: u64,
    pub server_bin: std::path::PathBuf,
}

/// One measured step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub seconds: f64,
    /// Server `VmRSS` (KiB) right after the step.
    pub rss_kib: u64,
    /// Server `VmHWM` (KiB) right after the step.
    pub peak_kib: u64,
}

/// Everything one `memory` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub server_bin: String,
    pub image_bytes: u64,
    /// Parallel clients (1 for the sequence).
    pub clients: usize,
    pub start_rss_kib: u64,
    pub steps: Vec<Step>,
    /// `VmHWM` at the end (before idling).
    pub peak_kib: u64,
    /// `(seconds idle, VmRSS KiB)` samples.
    pub idle: Vec<(u64, u64)>,
}

/// Starts a fresh server and runs the sequence or the parallel backups.
pub async fn run(opts: &Options) -> Result<MemoryReport> {
    if opts.image_mib == 0 {
        bail!("memory needs --image-mib >= 1");
    }
    let clients = opts.parallel.unwrap_or(2).max(1);
    let image = opts.image_mib * 1024 * 1024;
    eprintln!("generating {} MiB of data", opts.image_mib);
    let data = bench_data(image + clients * IMAGE_SHIFT, 42);
    let server = TestServer::start()
        .await
        .context("start pbs-cloud-server for the benchmark")?;
    let pid = server.pid().context("server process has no pid")?;
    let client = server
        .admin_client()
        .await
        .context("log in to the benchmark server")?;
    let rss = || vm_rss_kib(pid).context("read VmRSS of the server");
    let start_rss_kib = rss()?;
    eprintln!("server started: {} MiB", start_rss_kib / 1024);
    let image_of = |i: usize| &data[i * IMAGE_SHIFT..i * IMAGE_SHIFT + image];
    let mut steps = Vec::new();
    let mut step = |name: &str, took: Duration| -> Result<()> {
        let s = Step {
            name: name.to_string(),
            seconds: took.as_secs_f64(),
            rss_kib: rss()?,
            peak_kib: vm_hwm_kib(pid).context("read VmHWM of the server")?,
        };
        eprintln!(
            "  {name}: {:.1} s, RSS {} MiB, peak {} MiB",
            s.seconds,
            s.rss_kib / 1024,
            s.peak_kib / 1024
        );
        steps.push(s);
        Ok(())
    };
    let store = server.store().to_string();
    match opts.parallel {
        None => {
            for (n, t) in [(0, T0), (1, T0 + 3600)] {
                let (_, took) = backup(&client, &store, IMAGE_GROUP, t, image_of(n), true).await?;
                step(&format!("backup {}", n + 1), took)?;
                let took = restore(&client, &store, t, image_of(n)).await?;
                step(&format!("restore {}", n + 1), took)?;
            }
            let started = Instant::now();
            run_gc(&client, &store).await?;
            step("gc", started.elapsed())?;
        }
        Some(n) => {
            let started = Instant::now();
            let jobs = (0..n).map(|i| {
                let (client, store) = (&client, &store);
                let group = format!("bench-par-{i}");
                let image = image_of(i);
                async move { backup(client, store, &group, T0, image, true).await }
            });
            for r in futures::future::join_all(jobs).await {
                r?;
            }
            step(&format!("{n} parallel backups"), started.elapsed())?;
        }
    }
    let peak_kib = vm_hwm_kib(pid).context("read VmHWM of the server")?;
    let mut idle = Vec::new();
    let idle_start = Instant::now();
    if opts.idle_secs > 0 {
        loop {
            tokio::time::sleep(IDLE_SAMPLE).await;
            let secs = idle_start.elapsed().as_secs();
            idle.push((secs, rss()?));
            if secs >= opts.idle_secs {
                break;
            }
        }
    }
    Ok(MemoryReport {
        server_bin: opts.server_bin.display().to_string(),
        image_bytes: image as u64,
        clients: opts.parallel.unwrap_or(1),
        start_rss_kib,
        steps,
        peak_kib,
        idle,
    })
}

/// Starts GC as the stock client does and follows its task until it stops.
async fn run_gc(client: &PbsClient, store: &str) -> Result<()> {
    let upid = client
        .post(&format!("admin/datastore/{store}/gc"), None)
        .await
        .context("start GC")?;
    let upid = upid.as_str().context("GC answered no UPID")?.to_string();
    let encoded = percent_encoding::utf8_percent_encode(&upid, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let status = client
            .get(&format!("nodes/localhost/tasks/{encoded}/status"), None)
            .await
            .context("GC task status")?;
        if status["status"] == "stopped" {
            if status["exitstatus"] != "OK" {
                bail!("GC task ended with {}", status["exitstatus"]);
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("GC task {upid} still running after 10 minutes");
        }
        // the stock client polls the task status the same way
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

/// The table printed by default.
pub fn render(r: &MemoryReport) -> String {
    let mut out = format!(
        "memory: {} MiB image(s), {} client(s) at once\nserver binary: {}\n\n\
         server RSS at start: {} MiB\n\n{:<28} {:>9} {:>9} {:>9}\n",
        r.image_bytes / (1024 * 1024),
        r.clients,
        r.server_bin,
        mib(r.start_rss_kib),
        "step",
        "seconds",
        "RSS MiB",
        "peak MiB"
    );
    for s in &r.steps {
        out.push_str(&format!(
            "{:<28} {:>9.1} {:>9} {:>9}\n",
            s.name,
            s.seconds,
            mib(s.rss_kib),
            mib(s.peak_kib)
        ));
    }
    out.push_str(&format!("\npeak RSS (VmHWM): {} MiB\n", mib(r.peak_kib)));
    if let Some((secs, kib)) = r.idle.last() {
        let series: Vec<String> = r
            .idle
            .iter()
            .map(|(s, k)| format!("{s}s:{}", mib(*k)))
            .collect();
        out.push_str(&format!(
            "idle RSS after {secs} s: {} MiB  ({})\n",
            mib(*kib),
            series.join(" ")
        ));
    }
    out
}
