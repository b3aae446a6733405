//! `pbs-bench lock-extension`: Object Lock requests per daily incremental backup under a
//! retention lock (server/docs/design.md#retention-locks), against the S3 server's Object Lock
//! bucket.
//!
//! Simulates `days` daily backups of one VM image (fixed 4 MiB chunks; a few percent of the
//! chunks change per day) at backup times one day apart, through the datastore API with the
//! datastore's retention clock set to each backup time. Counts the Object Lock requests the
//! server sends per backup and compares them, in the same run, with the naive policy that
//! extends every referenced chunk (and the snapshot's objects) on every backup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::{RngCore, SeedableRng};
use serde::Serialize;

use pbs_cloud_server::backend::lock::{LockMode, ObjectLock};
use pbs_cloud_server::backend::{Backend, S3Backend};
use pbs_cloud_server::datastore::retention::LockRule;
use pbs_cloud_server::datastore::Datastore;
use pbs_cloud_server::format::blob::encode_blob;
use pbs_cloud_server::format::fixed_index::FixedIndex;
use pbs_cloud_server::format::manifest::Manifest;
use pbs_cloud_server::format::names::{BackupGroup, BackupNamespace, BackupType};
use pbs_cloud_server::format::{sha256, Digest};

use super::s3_ingest::S3Target;

const DAY: i64 = 86_400;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    pub s3: S3Target,
    pub image_mib: usize,
    pub chunk_mib: usize,
    pub days: u32,
    /// Share of the image's chunks rewritten per day, in percent.
    pub change_percent: f64,
    pub lock_days: u64,
    pub generation_days: u64,
    pub mode: LockMode,
    /// Leave the objects in the bucket (otherwise governance-locked ones are removed with
    /// governance bypass; compliance-locked ones cannot be).
    pub keep: bool,
}

/// One simulated day.
#[derive(Debug, Clone, Serialize)]
pub struct DayFigures {
    pub day: u32,
    pub changed_chunks: usize,
    /// Object Lock requests this backup sent (generation policy).
    pub lock_requests: u64,
    /// What extending every referenced chunk and object would have sent.
    pub naive_requests: u64,
    /// All S3 requests of the backup, for context.
    pub s3_requests: u64,
}

/// Everything `lock-extension` measured.
#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    pub s3_endpoint: String,
    pub s3_bucket: String,
    pub s3_prefix: String,
    pub image_bytes: u64,
    pub chunks: usize,
    pub mode: String,
    pub lock_days: u64,
    pub generation_days: u64,
    pub per_day: Vec<DayFigures>,
    pub total: u64,
    pub min: u64,
    pub avg: f64,
    pub max: u64,
    pub naive_total: u64,
    pub naive_avg: f64,
    /// naive total / generation-policy total.
    pub saving_ratio: f64,
    pub elapsed_s: f64,
}

fn chunk_data(position: usize, version: u32, len: usize) -> Vec<u8> {
    let seed = ((position as u64) << 32) | u64::from(version);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_10c6);
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs the simulation and removes what it wrote unless `keep` (or compliance mode).
pub async fn run(opts: &Options) -> Result<LockReport> {
    if opts.image_mib == 0 || opts.chunk_mib == 0 || opts.days == 0 {
        bail!("lock-extension needs --image-mib, --chunk-mib and --days >= 1");
    }
    let started = Instant::now();
    let prefix = format!("t/bench-lock-{}", hex::encode(rand::random::<[u8; 6]>()));
    let settings = opts.s3.settings(&prefix);
    let raw = Arc::new(S3Backend::connect(settings).await?);
    let ds = Datastore::open("bench-lock", raw.clone()).await?;
    ds.retention()
        .set_locks(
            vec![LockRule {
                id: "bench".into(),
                ns: BackupNamespace::root(),
                groups: vec![],
                mode: opts.mode,
                days: opts.lock_days,
                legal_hold: false,
            }],
            opts.generation_days,
        )
        .await
        .context(
            "activate the retention lock (the bucket needs Object Lock: PBS_TEST_S3_LOCK_BUCKET)",
        )?;

    let chunk_len = opts.chunk_mib * 1024 * 1024;
    let chunks = (opts.image_mib / opts.chunk_mib).max(1);
    let changed_per_day = ((chunks as f64 * opts.change_percent / 100.0).round() as usize).max(1);
    let mut versions = vec![0u32; chunks];
    let mut digests: Vec<Digest> = Vec::with_capacity(chunks);
    let group = BackupGroup::new(BackupType::Vm, "900")?;
    let ns = BackupNamespace::root();
    let base = now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut per_day = Vec::new();
    for day in 0..opts.days {
        let time = base + i64::from(day) * DAY;
        ds.retention().set_clock(Some(time));
        // Which chunks change today (all of them on the first day).
        let mut changed: Vec<usize> = match day {
            0 => (0..chunks).collect(),
            _ => (0..changed_per_day)
                .map(|_| (rng.next_u64() % chunks as u64) as usize)
                .collect(),
        };
        changed.sort_unstable();
        changed.dedup();
        let lock_before = raw.lock_request_count();
        let s3_before = raw.request_counts().map_or(0, |c| c.total());
        let lease = ds.start_backup(&ns, &group, time, "bench@pbs").await?;
        for &pos in &changed {
            if day > 0 {
                versions[pos] += 1;
            }
            let data = chunk_data(pos, versions[pos], chunk_len);
            let digest = sha256(&data);
            if day == 0 {
                digests.push(digest);
            } else {
                digests[pos] = digest;
            }
            ds.insert_chunk(&digest, Bytes::from(encode_blob(&data, false)), false)
                .await?;
        }
        for d in &digests {
            lease.register_chunk(d, chunk_len as u64);
        }
        let index = FixedIndex {
            uuid: [9; 16],
            ctime: time,
            size: (chunks * chunk_len) as u64,
            chunk_size: chunk_len as u64,
            digests: digests.clone(),
        };
        lease
            .write_file("drive-scsi0.img.fidx", Bytes::from(index.to_bytes()))
            .await?;
        let manifest = Manifest::new("vm", "900", time).to_blob();
        lease.commit(Bytes::from(manifest)).await?;
        let mut distinct = digests.clone();
        distinct.sort_unstable();
        distinct.dedup();
        per_day.push(DayFigures {
            day,
            changed_chunks: changed.len(),
            lock_requests: raw.lock_request_count() - lock_before,
            // Every referenced chunk, the index and the manifest.
            naive_requests: distinct.len() as u64 + 2,
            s3_requests: raw.request_counts().map_or(0, |c| c.total()) - s3_before,
        });
    }
    ds.retention().set_clock(None);
    ds.close().await?;
    if !opts.keep && opts.mode == LockMode::Governance {
        purge(raw.as_ref()).await?;
    }
    Ok(summarize(opts, &prefix, chunks, per_day, started.elapsed()))
}

/// Delete every version under the prefix with governance bypass.
async fn purge(raw: &S3Backend) -> Result<()> {
    let ol: &dyn ObjectLock = raw;
    let versions = ol.list_versions("").await?;
    futures::stream::iter(
        versions
            .iter()
            .map(|v| ol.delete_version(&v.key, &v.version_id, true)),
    )
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await
    .context("removing the benchmark's objects")?;
    Ok(())
}

fn summarize(
    opts: &Options,
    prefix: &str,
    chunks: usize,
    per_day: Vec<DayFigures>,
    elapsed: Duration,
) -> LockReport {
    let total: u64 = per_day.iter().map(|d| d.lock_requests).sum();
    let naive_total: u64 = per_day.iter().map(|d| d.naive_requests).sum();
    let n = per_day.len().max(1) as f64;
    LockReport {
        s3_endpoint: opts.s3.endpoint.clone(),
        s3_bucket: opts.s3.bucket.clone(),
        s3_prefix: prefix.to_string(),
        image_bytes: (chunks * opts.chunk_mib * 1024 * 1024) as u64,
        chunks,
        mode: opts.mode.as_str().to_string(),
        lock_days: opts.lock_days,
        generation_days: opts.generation_days,
        min: per_day.iter().map(|d| d.lock_requests).min().unwrap_or(0),
        max: per_day.iter().map(|d| d.lock_requests).max().unwrap_or(0),
        avg: total as f64 / n,
        total,
        naive_avg: naive_total as f64 / n,
        naive_total,
        saving_ratio: naive_total as f64 / total.max(1) as f64,
        elapsed_s: elapsed.as_secs_f64(),
        per_day,
    }
}

/// The table printed by default.
pub fn render(r: &LockReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lock-extension: {} MiB image, {} chunks, {} days, {}-day {} lock, {}-day generations",
        r.image_bytes / (1024 * 1024),
        r.chunks,
        r.per_day.len(),
        r.lock_days,
        r.mode,
        r.generation_days
    );
    let _ = writeln!(
        out,
        "S3: {} bucket {} prefix {}",
        r.s3_endpoint, r.s3_bucket, r.s3_prefix
    );
    let _ = writeln!(
        out,
        "{:>4} {:>8} {:>10} {:>8} {:>8}",
        "day", "changed", "lock-reqs", "naive", "s3-reqs"
    );
    for d in &r.per_day {
        let _ = writeln!(
            out,
            "{:>4} {:>8} {:>10} {:>8} {:>8}",
            d.day, d.changed_chunks, d.lock_requests, d.naive_requests, d.s3_requests
        );
    }
    let _ = writeln!(
        out,
        "Object Lock requests per daily backup: min {} avg {:.1} max {}; total {}",
        r.min, r.avg, r.max, r.total
    );
    let _ = writeln!(
        out,
        "naive (extend every referenced chunk every backup): avg {:.1}, total {}; naive/generations = {:.2}x",
        r.naive_avg, r.naive_total, r.saving_ratio
    );
    let _ = writeln!(out, "elapsed {:.1} s", r.elapsed_s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_min_avg_max_and_ratio() {
        let day = |d, l, n| DayFigures {
            day: d,
            changed_chunks: 1,
            lock_requests: l,
            naive_requests: n,
            s3_requests: 0,
        };
        let opts = Options {
            s3: S3Target {
                endpoint: "e".into(),
                access_key: "a".into(),
                secret_key: "s".into(),
                bucket: "b".into(),
            },
            image_mib: 8,
            chunk_mib: 4,
            days: 2,
            change_percent: 3.0,
            lock_days: 30,
            generation_days: 10,
            mode: LockMode::Governance,
            keep: false,
        };
        let r = summarize(
            &opts,
            "p",
            2,
            vec![day(0, 4, 4), day(1, 2, 4)],
            Duration::ZERO,
        );
        assert_eq!((r.min, r.max, r.total, r.naive_total), (2, 4, 6, 8));
        assert!((r.avg - 3.0).abs() < 1e-9);
        assert!((r.saving_ratio - 8.0 / 6.0).abs() < 1e-9);
        assert!(render(&r).contains("min 2 avg 3.0 max 4"));
    }
}
