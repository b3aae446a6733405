//! `pbs-bench backup-restore`: backup and restore throughput of the protocol test client
//! against a real server process, with a local baseline measured in the same run.
//!
//! Baseline = what any backup of these bytes must cost on this machine without a server: the
//! client's CPU work (SHA-256 + zstd level 1 per 4 MiB chunk, as the client encodes them)
//! followed by writing the bytes to a file in the server's temp file system with fsync.
//! Server phases: full backup as fixed image and as dynamic archive, incremental backup of the
//! unchanged image (all chunks known), and restore of the image with all client checks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::report::{BackupRestoreReport, Phase, PhaseKind, Run};
use super::{bench_data, filesystem_of, mb_per_s, timed, vm_hwm_kib};
use crate::chunker::FIXED_CHUNK_SIZE;
use crate::pipeline::PipelineStats;
use crate::{wire, BackupParams, BackupSession, PbsClient, ReaderParams, ReaderSession};
use crate::{TestServer, UploadOptions};

/// Backup time of the first snapshot (2026-01-01T00:00:00Z).
const T0: i64 = 1_767_225_600;
pub(super) const IMAGE_GROUP: &str = "bench-img";
const DYNAMIC_GROUP: &str = "bench-dyn";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub image_mib: usize,
    pub runs: usize,
    /// Server binary (already exported as `PBS_CLOUD_SERVER_BIN` for [`TestServer`]).
    pub server_bin: PathBuf,
}

/// Runs `opts.runs` independent runs, each against a fresh server and data directory (so
/// every "first full backup" really finds an empty datastore).
pub async fn run(opts: &Options) -> Result<BackupRestoreReport> {
    if opts.image_mib == 0 || opts.runs == 0 {
        bail!("backup-restore needs --image-mib >= 1 and --runs >= 1");
    }
    let data = bench_data(opts.image_mib * 1024 * 1024, 42);
    let mut runs = Vec::with_capacity(opts.runs);
    let (mut temp_dir, mut filesystem) = (String::new(), None);
    for n in 0..opts.runs {
        eprintln!("run {}/{}: starting server", n + 1, opts.runs);
        let server = TestServer::start()
            .await
            .context("start pbs-cloud-server for the benchmark")?;
        temp_dir = server.data_dir().display().to_string();
        filesystem = filesystem_of(server.data_dir());
        runs.push(one_run(n, &server, &data).await?);
    }
    Ok(BackupRestoreReport {
        image_bytes: data.len() as u64,
        server_bin: opts.server_bin.display().to_string(),
        temp_dir,
        filesystem,
        cpu_model: super::cpu_model(),
        cpu_sha_ni: super::cpu_has_sha_ni(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        runs,
    })
}

/// Collects the phases of one run; ratios use this run's own baseline.
struct RunBuilder {
    bytes: u64,
    pid: u32,
    baseline_mb_per_s: f64,
    phases: Vec<Phase>,
}

impl RunBuilder {
    fn baseline(&mut self, name: &str, took: Duration) {
        self.push(name, PhaseKind::Baseline, took, None, false);
    }

    fn server(&mut self, name: &str, took: Duration, stats: Option<&PipelineStats>) {
        self.push(name, PhaseKind::Server, took, stats, true);
    }

    fn push(
        &mut self,
        name: &str,
        kind: PhaseKind,
        took: Duration,
        stats: Option<&PipelineStats>,
        hwm: bool,
    ) {
        let mb = mb_per_s(self.bytes, took);
        eprintln!("  {name}: {:.2} s, {mb:.1} MB/s", took.as_secs_f64());
        self.phases.push(Phase {
            name: name.to_string(),
            kind,
            bytes: self.bytes,
            seconds: took.as_secs_f64(),
            mb_per_s: mb,
            vs_baseline: mb / self.baseline_mb_per_s,
            chunks_uploaded: stats.map(|s| s.chunks_uploaded),
            chunks_reused: stats.map(|s| s.chunks_reused),
            bytes_sent: stats.map(|s| s.bytes_sent),
            server_vm_hwm_kib: if hwm { vm_hwm_kib(self.pid) } else { None },
        });
    }
}

async fn one_run(n: usize, server: &TestServer, data: &[u8]) -> Result<Run> {
    let pid = server.pid().context("server process has no pid")?;
    let client = server
        .admin_client()
        .await
        .context("log in to the benchmark server")?;
    let store = server.store().to_string();

    // (1) baseline: client CPU work, then write+fsync in the server's file system
    let ((encoded, encoded_len), cpu) = timed(|| encode_chunks(data));
    let write = write_fsync(&server.data_dir().join("bench-baseline.bin"), data)?;
    let (decoded, decode) = timed(|| decode_chunks(&encoded));
    decoded.context("baseline decode of the encoded chunks")?;
    drop(encoded);
    let combined = cpu + write;
    let mut b = RunBuilder {
        bytes: data.len() as u64,
        pid,
        baseline_mb_per_s: mb_per_s(data.len() as u64, combined),
        phases: Vec::new(),
    };
    b.baseline("baseline: client SHA-256 + zstd-1 (CPU)", cpu);
    b.baseline("baseline: write + fsync", write);
    b.baseline("baseline: CPU then write+fsync  [= 1.00x]", combined);
    b.baseline("  (ideal overlap: max(CPU, write+fsync))", cpu.max(write));
    b.baseline("baseline: client CRC + unzstd + SHA-256 (CPU)", decode);

    // (2) first full backups, (3) incremental, (4) restore
    let (img, took) = backup(&client, &store, IMAGE_GROUP, T0, data, true).await?;
    b.server("full backup: fixed image (disk.img)", took, Some(&img));
    let (dynamic, took) = backup(&client, &store, DYNAMIC_GROUP, T0, data, false).await?;
    b.server(
        "full backup: dynamic archive (root.pxar)",
        took,
        Some(&dynamic),
    );
    let (incr, took) = backup(&client, &store, IMAGE_GROUP, T0 + 3600, data, true).await?;
    if incr.chunks_uploaded != 0 {
        bail!(
            "incremental backup of the unchanged image uploaded {} chunks, expected 0",
            incr.chunks_uploaded
        );
    }
    b.server("incremental backup: unchanged image", took, Some(&incr));
    let took = restore(&client, &store, T0 + 3600, data).await?;
    b.server("restore: fixed image (all client checks)", took, None);

    Ok(Run {
        run: n,
        baseline_mb_per_s: b.baseline_mb_per_s,
        compressed_ratio: encoded_len as f64 / data.len() as f64,
        phases: b.phases,
        server_peak_rss_kib: vm_hwm_kib(pid),
    })
}

/// The client's per-chunk encoding work: digest plus zstd-1 blob. Returns the blobs and
/// their total size.
fn encode_chunks(data: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let blobs: Vec<Vec<u8>> = data
        .chunks(FIXED_CHUNK_SIZE)
        .map(|chunk| {
            std::hint::black_box(wire::sha256(chunk));
            wire::encode_plain_blob(chunk, true)
        })
        .collect();
    let total = blobs.iter().map(Vec::len).sum();
    (blobs, total)
}

/// The restoring client's per-chunk work: CRC, decompression and digest check.
fn decode_chunks(blobs: &[Vec<u8>]) -> Result<()> {
    for (i, blob) in blobs.iter().enumerate() {
        let plain = wire::decode_plain_blob(blob, wire::MAX_CHUNK)
            .with_context(|| format!("decode baseline chunk {i}"))?;
        std::hint::black_box(wire::sha256(&plain));
    }
    Ok(())
}

/// Writes `data` to `path` in chunk-sized writes and fsyncs it; removes the file afterwards.
fn write_fsync(path: &Path, data: &[u8]) -> Result<Duration> {
    let start = Instant::now();
    let mut file = std::fs::File::create(path)
        .with_context(|| format!("create baseline file {}", path.display()))?;
    for chunk in data.chunks(FIXED_CHUNK_SIZE) {
        file.write_all(chunk)
            .with_context(|| format!("write baseline file {}", path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("fsync baseline file {}", path.display()))?;
    let took = start.elapsed();
    drop(file);
    std::fs::remove_file(path)
        .with_context(|| format!("remove baseline file {}", path.display()))?;
    Ok(took)
}

/// One backup job (session start to finish) with a single archive; returns its chunk counters.
pub(super) async fn backup(
    client: &PbsClient,
    store: &str,
    group: &str,
    time: i64,
    data: &[u8],
    fixed: bool,
) -> Result<(PipelineStats, Duration)> {
    let what = format!("backup host/{group}/{time}");
    let start = Instant::now();
    let params = BackupParams::new(store, "host", group, time);
    let mut session = BackupSession::start(client, params)
        .await
        .with_context(|| format!("{what}: start session"))?;
    let opts = UploadOptions::default();
    let stats = if fixed {
        session.upload_fixed_image("disk.img", data, &opts).await
    } else {
        session
            .upload_dynamic_archive("root.pxar", data, &opts)
            .await
    }
    .with_context(|| format!("{what}: upload archive"))?;
    session
        .finish()
        .await
        .with_context(|| format!("{what}: finish"))?;
    Ok((stats.chunks, start.elapsed()))
}

/// Restores `disk.img` of `host/bench-img/<time>` and checks it matches `data` (the compare
/// is not timed).
pub(super) async fn restore(
    client: &PbsClient,
    store: &str,
    time: i64,
    data: &[u8],
) -> Result<Duration> {
    let what = format!("restore host/{IMAGE_GROUP}/{time} disk.img");
    let start = Instant::now();
    let params = ReaderParams::new(store, "host", IMAGE_GROUP, time);
    let session = ReaderSession::open(client, params, None)
        .await
        .with_context(|| format!("{what}: open reader"))?;
    let restored = session
        .restore_archive("disk.img")
        .await
        .with_context(|| format!("{what}: download"))?;
    let took = start.elapsed();
    if restored != data {
        bail!(
            "{what}: restored {} bytes differ from the {} bytes backed up",
            restored.len(),
            data.len()
        );
    }
    Ok(took)
}
