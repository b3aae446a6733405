//! `pbs-bench gc`: garbage collection of a synthetic datastore with N small chunks, in process
//! (the server library's `Datastore`), on a local directory or on the test S3 server.
//!
//! The datastore gets N valid chunk blobs with 16-byte payloads (written with bounded
//! parallelism straight into the chunk store) and index files (one snapshot each) that reference
//! every second chunk. GC runs three times with cutoff 0:
//! 1. cold: marks from downloaded indexes and removes the unreferenced half;
//! 2. warm: the index digests come from the in-memory index cache (on object storage; the
//!    server keeps it off on a local directory, and so does this run there);
//! 3. cache disabled: the indexes are downloaded and parsed again.
//!
//! Runs 2 and 3 see the same datastore, so their mark times give the cache's effect as a ratio
//! measured in one run. S3 requests are counted by type for every run.
//!
//! On the local backend a server process (`PBS_CLOUD_SERVER_BIN`) starts on the datastore before
//! the GC runs: the time until it listens and answers, then until its usage recount (what a
//! datastore without trusted counters gets after an unclean stop) has counted every chunk, and
//! its peak RSS over all of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use pbs_cloud_server::backend::s3::S3Settings;
use pbs_cloud_server::backend::{Backend, LocalBackend, PutOptions, RequestCounts, S3Backend};
use pbs_cloud_server::datastore::layout::chunk_key;
use pbs_cloud_server::datastore::{Datastore, GcStatus};
use pbs_cloud_server::format::blob::encode_blob;
use pbs_cloud_server::format::dynamic_index::{DynamicEntry, DynamicIndex};
use pbs_cloud_server::format::manifest::Manifest;
use pbs_cloud_server::format::{sha256, Digest};
use serde::Serialize;

use super::s3_ingest::S3Target;
use super::{reset_own_peak_rss, vm_hwm_kib, vm_rss_kib, RssSampler};
use crate::TestServer;

/// Backup time of the first benchmark snapshot (2026-01-01T00:00:00Z).
const T0: i64 = 1_767_225_600;
/// Digests per index file.
const PER_INDEX: usize = 1000;

/// Where the synthetic datastore lives.
#[derive(Debug, Clone)]
pub enum Target {
    /// A new directory under this parent.
    Local(PathBuf),
    S3(S3Target),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub chunks: usize,
    pub target: Target,
    /// Object writes in flight while the datastore is created.
    pub parallelism: usize,
    /// Leave the datastore in place afterwards.
    pub keep: bool,
    /// Marked digests GC holds in memory before spilling (the server's default when `None`).
    pub mark_budget: Option<usize>,
}

/// One GC run.
#[derive(Debug, Clone, Serialize)]
pub struct GcRun {
    pub label: String,
    pub total_seconds: f64,
    pub mark_seconds: f64,
    pub sweep_seconds: f64,
    pub index_files: u64,
    pub index_cache_hits: u64,
    pub index_cache_misses: u64,
    pub removed_chunks: u64,
    pub disk_chunks: u64,
    pub pending_chunks: u64,
    /// S3 requests of this run (`None` on the local backend).
    pub requests: Option<RequestCounts>,
    /// This process's RSS before the run and its peak during it (KiB; the peak is reset
    /// before the run).
    pub rss_before_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
    /// Peaks of the anonymous (heap) and file-backed (mapped files) parts, sampled.
    pub peak_anon_kib: Option<u64>,
    pub peak_file_kib: Option<u64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub backend: String,
    /// `--mark-budget`, when given.
    pub mark_budget: Option<usize>,
    /// The index cache's bound for this backend (the server's default; 0: off) in runs 1 and 2.
    pub index_cache_digests: usize,
    pub location: String,
    pub chunks: usize,
    pub referenced_chunks: usize,
    pub index_files: usize,
    pub create_seconds: f64,
    /// Opening the datastore (on S3: rebuilding the known-chunk index by listing).
    pub open_seconds: f64,
    pub open_requests: Option<RequestCounts>,
    /// This process's peak RSS while opening the datastore (KiB).
    pub open_peak_rss_kib: Option<u64>,
    pub runs: Vec<GcRun>,
    /// Mark time with the index cache disabled / with it (runs 3 and 2).
    pub index_cache_mark_speedup: f64,
    /// A server started on the datastore (local backend only).
    pub server_startup: Option<ServerStartup>,
}

/// A server process started on the synthetic datastore (seconds from its spawn).
#[derive(Debug, Clone, Serialize)]
pub struct ServerStartup {
    pub server_bin: String,
    /// Listening, with every datastore open.
    pub listening_seconds: f64,
    /// A datastore status request answered.
    pub first_answer_seconds: f64,
    /// The background usage recount has counted every chunk (the usage document says so).
    pub recount_seconds: f64,
    /// VmRSS at the end and VmHWM over the whole step (KiB).
    pub rss_after_kib: u64,
    pub peak_rss_kib: u64,
}

fn chunk_payload(i: usize) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(b"gcbench!");
    p[8..].copy_from_slice(&(i as u64).to_le_bytes());
    p
}

fn digest_of(i: usize) -> Digest {
    sha256(&chunk_payload(i))
}

/// Creates the datastore, runs GC three times and removes the datastore (unless `keep`).
pub async fn run(opts: &Options) -> Result<GcReport> {
    if opts.chunks < 2 {
        bail!("gc needs --chunks >= 2");
    }
    let (backend, location, local_root, cleanup_dir): (Arc<dyn Backend>, String, _, _) =
        match &opts.target {
            Target::Local(parent) => {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?;
                let dir = tempfile::Builder::new()
                    .prefix("gc-bench-")
                    .tempdir_in(parent)
                    .with_context(|| format!("temporary directory in {}", parent.display()))?;
                let root = dir.path().join("store");
                let backend = LocalBackend::open(&root).context("open the local datastore")?;
                (
                    Arc::new(backend),
                    root.display().to_string(),
                    Some(root),
                    Some(dir),
                )
            }
            Target::S3(target) => {
                let prefix = format!(
                    "t/bench-gc-{}-{}",
                    opts.chunks,
                    hex::encode(rand::random::<[u8; 4]>())
                );
                let backend = S3Backend::connect(s3_settings(target, &prefix, opts.parallelism))
                    .await
                    .context("connect to the S3 server")?;
                let location = format!("s3://{}/{prefix}/", target.bucket);
                (Arc::new(backend), location, None, None)
            }
        };
    eprintln!("creating {} chunks at {location}", opts.chunks);
    let result = measure(opts, backend.clone(), local_root.as_deref(), &location).await;
    if opts.keep {
        eprintln!("keeping {location}");
        if let Some(dir) = cleanup_dir {
            let _ = dir.keep();
        }
    } else {
        eprintln!("removing {location}");
        if local_root.is_none() {
            if let Err(e) = backend.delete_prefix("").await {
                eprintln!("warning: could not remove {location}: {e}");
            }
        }
        drop(cleanup_dir);
    }
    result
}

/// Remove everything under an S3 prefix (a datastore left by `--keep` or an interrupted run).
pub async fn remove_s3_prefix(target: &S3Target, prefix: &str) -> Result<u64> {
    if !prefix.starts_with("t/bench-gc-") {
        bail!("refusing to remove '{prefix}': not a gc benchmark prefix (t/bench-gc-...)");
    }
    let backend = S3Backend::connect(s3_settings(target, prefix, 64))
        .await
        .context("connect to the S3 server")?;
    Ok(backend.delete_prefix("").await?)
}

fn s3_settings(target: &S3Target, prefix: &str, parallelism: usize) -> S3Settings {
    let mut settings = target.settings(prefix);
    settings.max_concurrency = settings.max_concurrency.max(parallelism);
    settings
}

async fn measure(
    opts: &Options,
    backend: Arc<dyn Backend>,
    local_root: Option<&Path>,
    location: &str,
) -> Result<GcReport> {
    let n = opts.chunks;
    let started = Instant::now();
    match local_root {
        Some(root) => create_local_chunks(root, n, opts.parallelism).await?,
        None => create_s3_chunks(backend.as_ref(), n, opts.parallelism).await?,
    }
    let index_files = write_indexes(backend.as_ref(), n, opts.parallelism).await?;
    let create_seconds = started.elapsed().as_secs_f64();
    eprintln!("created in {create_seconds:.1} s");
    let server_startup = match local_root {
        Some(root) => Some(server_startup(root, n).await?),
        None => None,
    };
    // Every chunk predates the GC start (S3 times have a 1 s resolution).
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let counts = || backend.request_counts();
    let before_open = counts();
    let own_pid = std::process::id();
    let _ = reset_own_peak_rss();
    let opened = Instant::now();
    let ds = Datastore::open_as("bench", backend.clone(), "pbs-bench-gc")
        .await
        .context("open the datastore")?;
    let open_seconds = opened.elapsed().as_secs_f64();
    let open_requests = since(counts(), before_open);
    let open_peak_rss_kib = vm_hwm_kib(own_pid);
    ds.gc().set_cutoff(Duration::ZERO);
    if let Some(budget) = opts.mark_budget {
        ds.gc().set_mark_budget(budget);
    }

    let index_cache_digests = ds.gc().index_cache_capacity();
    let mut runs = Vec::new();
    for (label, cache) in [
        ("1: cold (sweeps the unreferenced half)", true),
        ("2: index cache", true),
        ("3: index cache disabled", false),
    ] {
        if !cache {
            ds.gc().set_index_cache_capacity(0);
        }
        eprintln!("GC run {label}");
        let before = counts();
        let rss_before_kib = vm_rss_kib(own_pid);
        let _ = reset_own_peak_rss();
        let sampler = RssSampler::start();
        let t = Instant::now();
        let status = ds
            .gc()
            .run(&|line| {
                if line.starts_with("Start GC") || line.contains("% (") {
                    eprintln!("  {line}");
                }
            })
            .await
            .with_context(|| format!("GC run {label}"))?;
        let mut run = gc_run(label, &status, t.elapsed(), since(counts(), before));
        let (anon, file) = sampler.stop();
        run.rss_before_kib = rss_before_kib;
        run.peak_rss_kib = vm_hwm_kib(own_pid);
        run.peak_anon_kib = Some(anon);
        run.peak_file_kib = Some(file);
        runs.push(run);
    }
    let _ = ds.close().await;
    let referenced = n.div_ceil(2);
    if runs[0].removed_chunks != (n - referenced) as u64 {
        bail!(
            "GC removed {} chunks, expected {}",
            runs[0].removed_chunks,
            n - referenced
        );
    }
    let speedup = runs[2].mark_seconds / runs[1].mark_seconds.max(1e-6);
    Ok(GcReport {
        mark_budget: opts.mark_budget,
        index_cache_digests,
        backend: match local_root {
            Some(_) => "local".into(),
            None => "s3".into(),
        },
        location: location.to_string(),
        chunks: n,
        referenced_chunks: referenced,
        index_files,
        create_seconds,
        open_seconds,
        open_requests,
        open_peak_rss_kib,
        runs,
        index_cache_mark_speedup: speedup,
        server_startup,
    })
}

/// Starts a server on the datastore at `root` (no usage counters yet, so it recounts them in
/// the background, as after an unclean stop) and waits for the recount's log line.
async fn server_startup(root: &Path, chunks: usize) -> Result<ServerStartup> {
    let server_bin = crate::server::server_binary()?;
    eprintln!("starting {} on the datastore", server_bin.display());
    let mut server = TestServer::prepare()?;
    server.set_config(&format!(
        "[[datastore]]\nname = \"store1\"\npath = \"{}\"\n",
        root.display()
    ))?;
    let spawned = Instant::now();
    server.launch().await.context("start the server")?;
    let listening_seconds = spawned.elapsed().as_secs_f64();
    let pid = server.pid().context("server process has no pid")?;
    let client = server.admin_client().await.context("log in")?;
    client
        .get("admin/datastore/store1/status", None)
        .await
        .context("datastore status")?;
    let first_answer_seconds = spawned.elapsed().as_secs_f64();
    eprintln!("  answering after {first_answer_seconds:.2} s; waiting for the usage recount");
    // The usage document says when the recount is done (polled; the server logs it on stderr).
    let deadline = Instant::now() + Duration::from_secs(3600);
    let counted = loop {
        let doc = client
            .get("tenants/default/usage", None)
            .await
            .context("usage document")?;
        let store = doc["datastores"]
            .as_array()
            .and_then(|all| all.iter().find(|d| d["store"] == "store1"))
            .with_context(|| format!("no store1 in the usage document: {doc}"))?
            .clone();
        if store["recount-pending"] == false {
            break store;
        }
        if Instant::now() > deadline {
            bail!("the usage recount did not finish within an hour: {store}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recount_seconds = spawned.elapsed().as_secs_f64();
    if counted["chunks"] != chunks as u64 {
        bail!("the recount did not count {chunks} chunks: {counted}");
    }
    let startup = ServerStartup {
        server_bin: server_bin.display().to_string(),
        listening_seconds,
        first_answer_seconds,
        recount_seconds,
        rss_after_kib: vm_rss_kib(pid).context("read VmRSS of the server")?,
        peak_rss_kib: vm_hwm_kib(pid).context("read VmHWM of the server")?,
    };
    server.stop().await;
    Ok(startup)
}

fn since(now: Option<RequestCounts>, before: Option<RequestCounts>) -> Option<RequestCounts> {
    Some(now?.since(&before?))
}

fn gc_run(label: &str, s: &GcStatus, total: Duration, requests: Option<RequestCounts>) -> GcRun {
    GcRun {
        label: label.to_string(),
        total_seconds: total.as_secs_f64(),
        mark_seconds: s.mark_duration_ms as f64 / 1000.0,
        sweep_seconds: s.sweep_duration_ms as f64 / 1000.0,
        index_files: s.index_file_count,
        index_cache_hits: s.index_cache_hits,
        index_cache_misses: s.index_cache_misses,
        removed_chunks: s.removed_chunks,
        disk_chunks: s.disk_chunks,
        pending_chunks: s.pending_chunks,
        requests,
        rss_before_kib: None,
        peak_rss_kib: None,
        peak_anon_kib: None,
        peak_file_kib: None,
    }
}

fn progress(done: usize, total: usize, last: &mut usize, what: &str) {
    let step = done * 10 / total.max(1);
    if step > *last {
        *last = step;
        eprintln!("  {what}: {}% ({done} of {total})", step * 10);
    }
}

/// Chunk files written directly (the local backend would fsync each one; the benchmark
/// measures GC, not creation).
async fn create_local_chunks(root: &Path, n: usize, parallelism: usize) -> Result<()> {
    let workers = parallelism.clamp(1, 16);
    let per = n.div_ceil(workers);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let root = root.to_path_buf();
        let range = (w * per)..((w + 1) * per).min(n);
        tasks.push(tokio::task::spawn_blocking(move || -> Result<()> {
            for i in range {
                let path = root.join(chunk_key(&digest_of(i)));
                let blob = encode_blob(&chunk_payload(i), false);
                if let Err(e) = std::fs::write(&path, &blob) {
                    let dir = path.parent().context("chunk path has a parent")?;
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("create {}: after {e}", dir.display()))?;
                    std::fs::write(&path, &blob)
                        .with_context(|| format!("write {}", path.display()))?;
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await.context("chunk writer task")??;
    }
    Ok(())
}

async fn create_s3_chunks(backend: &dyn Backend, n: usize, parallelism: usize) -> Result<()> {
    let mut last = 0;
    let mut done = 0;
    let mut puts = futures::stream::iter(0..n)
        .map(|i| async move {
            let blob = encode_blob(&chunk_payload(i), false);
            backend
                .put(
                    &chunk_key(&digest_of(i)),
                    blob.into(),
                    PutOptions::default(),
                )
                .await
                .with_context(|| format!("upload chunk {i}"))
        })
        .buffer_unordered(parallelism.max(1));
    while puts.try_next().await?.is_some() {
        done += 1;
        progress(done, n, &mut last, "chunks");
    }
    Ok(())
}

/// One snapshot per [`PER_INDEX`] referenced chunks (every second chunk); returns the count.
async fn write_indexes(backend: &dyn Backend, n: usize, parallelism: usize) -> Result<usize> {
    let referenced: Vec<usize> = (0..n).step_by(2).collect();
    let groups: Vec<&[usize]> = referenced.chunks(PER_INDEX).collect();
    let count = groups.len();
    backend
        .put(
            "host/gc-bench/owner",
            bytes::Bytes::from_static(b"root@pam\n"),
            PutOptions::default(),
        )
        .await
        .context("write the group owner")?;
    futures::stream::iter(groups.into_iter().enumerate())
        .map(|(k, members)| async move {
            let time = T0 + k as i64;
            let mut end = 0;
            let entries = members
                .iter()
                .map(|&i| {
                    end += 16;
                    DynamicEntry {
                        end,
                        digest: digest_of(i),
                    }
                })
                .collect();
            let index = DynamicIndex {
                uuid: [7; 16],
                ctime: time,
                entries,
            };
            let dir = format!(
                "host/gc-bench/{}",
                pbs_cloud_server::format::names::format_backup_time(time)?
            );
            backend
                .put(
                    &format!("{dir}/root.pxar.didx"),
                    index.to_bytes().into(),
                    PutOptions::default(),
                )
                .await?;
            let manifest = Manifest::new("host", "gc-bench", time).to_blob();
            backend
                .put(
                    &format!("{dir}/index.json.blob"),
                    manifest.into(),
                    PutOptions::default(),
                )
                .await?;
            anyhow::Ok(())
        })
        .buffer_unordered(parallelism.clamp(1, 32))
        .try_collect::<Vec<()>>()
        .await
        .context("write the index files")?;
    Ok(count)
}

fn requests_cell(r: &Option<RequestCounts>) -> String {
    match r {
        None => "-".into(),
        Some(c) => format!(
            "GET {} PUT {} POST {} HEAD {} DELETE {} LIST {}",
            c.get, c.put, c.post, c.head, c.delete, c.list
        ),
    }
}

fn kib_cell(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.0}", k as f64 / 1024.0))
}

/// The table printed by default.
pub fn render(r: &GcReport) -> String {
    let mut out = format!(
        "gc: {} chunks ({} referenced by {} index files) on {} ({})\n\
         created in {:.1} s; datastore opened in {:.2} s (requests: {}, peak RSS {} MiB)\n\n",
        r.chunks,
        r.referenced_chunks,
        r.index_files,
        r.backend,
        r.location,
        r.create_seconds,
        r.open_seconds,
        requests_cell(&r.open_requests),
        kib_cell(r.open_peak_rss_kib)
    );
    out.push_str(&format!(
        "index cache bound (the server's default on this backend): {} digests\n",
        r.index_cache_digests
    ));
    if let Some(budget) = r.mark_budget {
        out.push_str(&format!("GC mark budget: {budget} digests in memory\n\n"));
    }
    out.push_str(&format!(
        "{:<40} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9} {:>10} {:>10} {:>15}  {}\n",
        "run",
        "total s",
        "mark s",
        "sweep s",
        "cache h/m",
        "removed",
        "on disk",
        "RSS0 MiB",
        "peak MiB",
        "anon/file MiB",
        "S3 requests"
    ));
    for run in &r.runs {
        out.push_str(&format!(
            "{:<40} {:>9.2} {:>9.2} {:>9.2} {:>11} {:>9} {:>9} {:>10} {:>10} {:>15}  {}\n",
            run.label,
            run.total_seconds,
            run.mark_seconds,
            run.sweep_seconds,
            format!("{}/{}", run.index_cache_hits, run.index_cache_misses),
            run.removed_chunks,
            run.disk_chunks,
            kib_cell(run.rss_before_kib),
            kib_cell(run.peak_rss_kib),
            format!(
                "{}/{}",
                kib_cell(run.peak_anon_kib),
                kib_cell(run.peak_file_kib)
            ),
            requests_cell(&run.requests)
        ));
    }
    out.push_str(&format!(
        "\nmark time without / with the index cache: {:.2}x\n",
        r.index_cache_mark_speedup
    ));
    if let Some(s) = &r.server_startup {
        out.push_str(&format!(
            "\nserver start-up on the datastore ({}):\n  listening after {:.2} s, first answer \
             after {:.2} s; usage recount done after {:.1} s; RSS then {} MiB, peak {} MiB\n",
            s.server_bin,
            s.listening_seconds,
            s.first_answer_seconds,
            s.recount_seconds,
            kib_cell(Some(s.rss_after_kib)),
            kib_cell(Some(s.peak_rss_kib)),
        ));
    }
    out
}
