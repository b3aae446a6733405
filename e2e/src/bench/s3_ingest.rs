//! `pbs-bench s3-ingest`: the same image backed up to and restored from two release servers in
//! one run, one on the default local datastore and one on an S3 datastore (the test RGW under a
//! fresh prefix). Reports times, MB/s, the S3/local ratios, and the S3 requests per GiB taken
//! from the `s3-statistics` of the datastore status before and after each phase.
//!
//! On a small shared machine one pair of timings swings by ±20% with whatever else runs, so the
//! benchmark runs several rounds, each with new data (nothing deduplicates against an earlier
//! round), alternates which backend goes first, and reports the median of the per-round
//! ratios next to the lowest and highest.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pbs_cloud_server::backend::s3::{ConditionalWrites, S3Credentials, S3Settings};
use pbs_cloud_server::backend::{Backend, RequestCounts, S3Backend};
use serde::Serialize;

use super::backup_restore::{backup, restore};
use super::{bench_data, mb_per_s};
use crate::{PbsClient, TestServer};

/// Backup time of the benchmark snapshot (2026-01-01T00:00:00Z).
const T0: i64 = 1_767_225_600;
const GIB: f64 = (1u64 << 30) as f64;

/// Where the S3 datastore lives (the `PBS_TEST_S3_*` variables of `e2e/s3/start-ceph-rgw.sh`).
#[derive(Debug, Clone)]
pub struct S3Target {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

impl S3Target {
    /// From `PBS_TEST_S3_ENDPOINT`, `_ACCESS_KEY`, `_SECRET_KEY` and `_BUCKET` (default
    /// `pbs-test`).
    pub fn from_env() -> Result<S3Target> {
        let var = |key: &str| {
            std::env::var(key)
                .ok()
                .filter(|v| !v.is_empty())
                .with_context(|| {
                    format!(
                        "{key} is not set; start the test S3 server with \
                         `eval \"$(e2e/s3/start-ceph-rgw.sh)\"`"
                    )
                })
        };
        Ok(S3Target {
            endpoint: var("PBS_TEST_S3_ENDPOINT")?,
            access_key: var("PBS_TEST_S3_ACCESS_KEY")?,
            secret_key: var("PBS_TEST_S3_SECRET_KEY")?,
            bucket: std::env::var("PBS_TEST_S3_BUCKET").unwrap_or_else(|_| "pbs-test".into()),
        })
    }

    /// Settings of a datastore under `prefix` of this target's bucket (static credentials,
    /// path-style addressing, conditional writes probed).
    pub fn settings(&self, prefix: &str) -> S3Settings {
        let mut settings = S3Settings::new(
            &self.bucket,
            prefix,
            S3Credentials::Static {
                access_key_id: self.access_key.clone(),
                secret_access_key: self.secret_key.clone(),
            },
        );
        settings.endpoint = Some(self.endpoint.clone());
        settings.path_style = true;
        settings.conditional_writes = ConditionalWrites::Auto;
        settings
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub image_mib: usize,
    /// Server binary (already exported as `PBS_CLOUD_SERVER_BIN` for [`TestServer`]).
    pub server_bin: PathBuf,
    pub s3: S3Target,
    /// Extra lines for the `[datastore.s3]` table (e.g. `max_concurrency = 64`).
    pub s3_extra: String,
    /// Rounds of (ingest, restore) on both backends.
    pub rounds: usize,
    /// How CPUs were split between the store and the benchmark, if they were.
    pub placement: Option<String>,
}

/// Times of one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendFigures {
    pub ingest_seconds: f64,
    pub ingest_mb_per_s: f64,
    pub restore_seconds: f64,
    pub restore_mb_per_s: f64,
}

/// Requests of one phase on the S3 datastore, absolute and per GiB of image.
#[derive(Debug, Clone, Serialize)]
pub struct RequestFigures {
    pub counts: RequestCounts,
    pub requests_per_gib: f64,
    pub puts_per_gib: f64,
    pub gets_per_gib: f64,
    /// Bytes sent to S3 / image bytes.
    pub bytes_up_per_byte: f64,
    /// Bytes received from S3 / image bytes.
    pub bytes_down_per_byte: f64,
}

impl RequestFigures {
    fn new(counts: RequestCounts, image_bytes: u64) -> Self {
        let gib = image_bytes as f64 / GIB;
        let per_byte = |n: u64| n as f64 / image_bytes.max(1) as f64;
        RequestFigures {
            counts,
            requests_per_gib: counts.total() as f64 / gib,
            puts_per_gib: counts.put as f64 / gib,
            gets_per_gib: counts.get as f64 / gib,
            bytes_up_per_byte: per_byte(counts.uploaded),
            bytes_down_per_byte: per_byte(counts.downloaded),
        }
    }
}

/// One round: the same new image on both backends.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub local: BackendFigures,
    pub s3: BackendFigures,
    /// Whether the S3 server went first in this round.
    pub s3_first: bool,
    /// S3 time / local time of this round.
    pub ingest_ratio: f64,
    pub restore_ratio: f64,
}

/// Median, lowest and highest of the per-round ratios.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RatioSummary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl RatioSummary {
    fn of(values: impl Iterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.collect();
        v.sort_by(f64::total_cmp);
        let median = match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        RatioSummary {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// Everything `s3-ingest` measured.
#[derive(Debug, Clone, Serialize)]
pub struct S3IngestReport {
    pub image_bytes: u64,
    pub server_bin: String,
    pub s3_endpoint: String,
    pub s3_bucket: String,
    pub s3_prefix: String,
    /// CPU placement (`--store-cpus`); `None`: everything shares every CPU.
    pub placement: Option<String>,
    pub rounds: Vec<Round>,
    /// S3 time / local time over the rounds (lower is better; the goal is <= 1.2).
    pub ingest_ratio: RatioSummary,
    pub restore_ratio: RatioSummary,
    /// Requests of all rounds, per GiB of image ingested or restored.
    pub s3_ingest_requests: RequestFigures,
    pub s3_restore_requests: RequestFigures,
}

/// Starts both servers, backs up and restores a new image on each per round (interleaved, so
/// slow phases of the shared machine hit both), and removes the S3 prefix afterwards.
pub async fn run(opts: &Options) -> Result<S3IngestReport> {
    if opts.image_mib == 0 || opts.rounds == 0 {
        bail!("s3-ingest needs --image-mib >= 1 and --rounds >= 1");
    }
    let prefix = format!(
        "t/bench-s3-ingest-{}",
        hex::encode(rand::random::<[u8; 6]>())
    );
    eprintln!("starting the local server");
    let local = TestServer::start()
        .await
        .context("start pbs-cloud-server with a local datastore")?;
    eprintln!("starting the S3 server (s3://{}/{prefix}/)", opts.s3.bucket);
    let s3 = s3_server(opts, &prefix).await?;
    let result = measure(&local, &s3, opts).await;
    drop(s3);
    if let Err(e) = remove_prefix(&opts.s3, &prefix).await {
        eprintln!("warning: could not remove the benchmark prefix {prefix}: {e:#}");
    }
    let measured = result?;
    let bytes = (opts.image_mib * 1024 * 1024) as u64;
    let all_bytes = bytes * measured.rounds.len() as u64;
    Ok(S3IngestReport {
        image_bytes: bytes,
        server_bin: opts.server_bin.display().to_string(),
        s3_endpoint: opts.s3.endpoint.clone(),
        s3_bucket: opts.s3.bucket.clone(),
        s3_prefix: prefix,
        placement: opts.placement.clone(),
        ingest_ratio: RatioSummary::of(measured.rounds.iter().map(|r| r.ingest_ratio)),
        restore_ratio: RatioSummary::of(measured.rounds.iter().map(|r| r.restore_ratio)),
        rounds: measured.rounds,
        s3_ingest_requests: RequestFigures::new(measured.ingest, all_bytes),
        s3_restore_requests: RequestFigures::new(measured.restore, all_bytes),
    })
}

struct Measured {
    rounds: Vec<Round>,
    /// S3 requests of all ingest phases, and of all restore phases.
    ingest: RequestCounts,
    restore: RequestCounts,
}

/// One backend's server, logged in.
struct Side {
    name: &'static str,
    /// Index of this side in the per-round arrays: 0 local, 1 S3.
    slot: usize,
    client: PbsClient,
    store: String,
}

impl Side {
    async fn new(name: &'static str, slot: usize, server: &TestServer) -> Result<Side> {
        let client = server
            .admin_client()
            .await
            .with_context(|| format!("log in ({name})"))?;
        Ok(Side {
            name,
            slot,
            client,
            store: server.store().to_string(),
        })
    }

    async fn ingest(&self, time: i64, data: &[u8]) -> Result<Duration> {
        eprintln!("ingest ({})", self.name);
        let (_, took) = backup(&self.client, &self.store, "bench-img", time, data, true).await?;
        eprintln!("  {:.2} s", took.as_secs_f64());
        Ok(took)
    }

    async fn restore(&self, time: i64, data: &[u8]) -> Result<Duration> {
        eprintln!("restore ({})", self.name);
        let took = restore(&self.client, &self.store, time, data).await?;
        eprintln!("  {:.2} s", took.as_secs_f64());
        Ok(took)
    }
}

async fn measure(local: &TestServer, s3: &TestServer, opts: &Options) -> Result<Measured> {
    let local = Side::new("local", 0, local).await?;
    let s3 = Side::new("S3", 1, s3).await?;
    let len = opts.image_mib * 1024 * 1024;
    let mut ingest = RequestCounts::default();
    let mut restored = RequestCounts::default();
    let mut rounds = Vec::with_capacity(opts.rounds);
    for round in 0..opts.rounds {
        eprintln!("round {} of {}", round + 1, opts.rounds);
        let data = bench_data(len, 42 + round as u64);
        let time = T0 + 86_400 * round as i64;
        // Alternate the order so that a warm-up or a slow spell does not always hit one side.
        let s3_first = round % 2 == 1;
        let order = if s3_first {
            [&s3, &local]
        } else {
            [&local, &s3]
        };

        let mut ingest_took = [Duration::ZERO; 2];
        for side in order {
            let before = s3_counts(&s3.client, &s3.store).await?;
            let took = side.ingest(time, &data).await?;
            ingest.add(&s3_counts(&s3.client, &s3.store).await?.since(&before));
            ingest_took[side.slot] = took;
        }
        let mut restore_took = [Duration::ZERO; 2];
        for side in order {
            let before = s3_counts(&s3.client, &s3.store).await?;
            let took = side.restore(time, &data).await?;
            restored.add(&s3_counts(&s3.client, &s3.store).await?.since(&before));
            restore_took[side.slot] = took;
        }

        let bytes = len as u64;
        let local_fig = figures(bytes, ingest_took[0], restore_took[0]);
        let s3_fig = figures(bytes, ingest_took[1], restore_took[1]);
        rounds.push(Round {
            ingest_ratio: s3_fig.ingest_seconds / local_fig.ingest_seconds,
            restore_ratio: s3_fig.restore_seconds / local_fig.restore_seconds,
            local: local_fig,
            s3: s3_fig,
            s3_first,
        });
    }
    Ok(Measured {
        rounds,
        ingest,
        restore: restored,
    })
}

fn figures(bytes: u64, ingest: Duration, restore: Duration) -> BackendFigures {
    BackendFigures {
        ingest_seconds: ingest.as_secs_f64(),
        ingest_mb_per_s: mb_per_s(bytes, ingest),
        restore_seconds: restore.as_secs_f64(),
        restore_mb_per_s: mb_per_s(bytes, restore),
    }
}

/// `s3-statistics` of the datastore status.
async fn s3_counts(client: &PbsClient, store: &str) -> Result<RequestCounts> {
    let status = client
        .get(&format!("admin/datastore/{store}/status"), None)
        .await
        .with_context(|| format!("GET status of datastore {store}"))?;
    let stats = status
        .get("s3-statistics")
        .with_context(|| format!("status of datastore {store} has no s3-statistics: {status}"))?;
    serde_json::from_value(stats.clone())
        .with_context(|| format!("parse s3-statistics of datastore {store}: {stats}"))
}

/// A release server whose only datastore `store1` is on S3 under `prefix`.
async fn s3_server(opts: &Options, prefix: &str) -> Result<TestServer> {
    let mut server = TestServer::prepare().context("prepare the S3 server")?;
    let secret = server.data_dir().join("s3-secret");
    std::fs::write(&secret, format!("{}\n", opts.s3.secret_key))
        .with_context(|| format!("write {}", secret.display()))?;
    let config = format!(
        "[[datastore]]\nname = \"store1\"\n\n[datastore.s3]\nbucket = \"{}\"\nprefix = \"{prefix}\"\n\
         endpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\naccess_key_id = \"{}\"\n\
         secret_access_key_file = \"{}\"\n{}\n",
        opts.s3.bucket,
        opts.s3.endpoint,
        opts.s3.access_key,
        secret.display(),
        opts.s3_extra,
    );
    server
        .set_config(&config)
        .context("write the S3 server config")?;
    server
        .launch()
        .await
        .context("start pbs-cloud-server with an S3 datastore")?;
    Ok(server)
}

/// Deletes everything the benchmark wrote under `prefix`.
async fn remove_prefix(target: &S3Target, prefix: &str) -> Result<()> {
    let mut settings = target.settings(prefix);
    // Only deletes follow: no need to probe conditional writes.
    settings.conditional_writes = ConditionalWrites::On;
    let backend = S3Backend::connect(settings).await?;
    backend.delete_prefix("").await?;
    Ok(())
}

/// The table printed by default.
pub fn render(r: &S3IngestReport) -> String {
    let mib = r.image_bytes / (1024 * 1024);
    let mut out = format!(
        "s3-ingest: {mib} MiB image (half random / half text), fixed index, {} round(s), \
         new data each round\nserver binary: {}\nS3: {} bucket {} prefix {}/\nCPUs: {}\n\n",
        r.rounds.len(),
        r.server_bin,
        r.s3_endpoint,
        r.s3_bucket,
        r.s3_prefix,
        r.placement
            .as_deref()
            .unwrap_or("shared by the store, the benchmark client and the servers"),
    );
    out.push_str(&format!(
        "{:<6} {:<6} {:>9} {:>9} {:>7} {:>10} {:>10} {:>7}\n",
        "round", "first", "local in", "s3 in", "ratio", "local out", "s3 out", "ratio"
    ));
    for (i, round) in r.rounds.iter().enumerate() {
        out.push_str(&format!(
            "{:<6} {:<6} {:>8.2}s {:>8.2}s {:>6.2}x {:>9.2}s {:>9.2}s {:>6.2}x\n",
            i + 1,
            if round.s3_first { "s3" } else { "local" },
            round.local.ingest_seconds,
            round.s3.ingest_seconds,
            round.ingest_ratio,
            round.local.restore_seconds,
            round.s3.restore_seconds,
            round.restore_ratio,
        ));
    }
    let (i, o) = (&r.ingest_ratio, &r.restore_ratio);
    out.push_str(&format!(
        "\nS3/local time, median of the rounds: ingest {:.2}x (goal <= 1.20x; lowest {:.2}x, \
         highest {:.2}x), restore {:.2}x (lowest {:.2}x, highest {:.2}x)\n\n",
        i.median, i.min, i.max, o.median, o.min, o.max
    ));
    for (phase, q) in [
        ("ingest", &r.s3_ingest_requests),
        ("restore", &r.s3_restore_requests),
    ] {
        let c = &q.counts;
        out.push_str(&format!(
            "S3 {phase}: {:.1} requests/GiB (PUT {:.1}/GiB, GET {:.1}/GiB); \
             bytes up/image byte {:.3}, down/image byte {:.3}\n  \
             counts: get {} put {} post {} head {} delete {} list {}; up {} B, down {} B\n",
            q.requests_per_gib,
            q.puts_per_gib,
            q.gets_per_gib,
            q.bytes_up_per_byte,
            q.bytes_down_per_byte,
            c.get,
            c.put,
            c.post,
            c.head,
            c.delete,
            c.list,
            c.uploaded,
            c.downloaded,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_gib_figures_and_table() {
        let counts = RequestCounts {
            get: 0,
            put: 256,
            post: 0,
            head: 2,
            delete: 0,
            list: 2,
            uploaded: 700 << 20,
            downloaded: 0,
        };
        let q = RequestFigures::new(counts, 1 << 30);
        assert_eq!(q.puts_per_gib, 256.0);
        assert_eq!(q.requests_per_gib, 260.0);
        assert!((q.bytes_up_per_byte - 700.0 / 1024.0).abs() < 1e-9);
        let f = BackendFigures {
            ingest_seconds: 2.0,
            ingest_mb_per_s: 500.0,
            restore_seconds: 1.0,
            restore_mb_per_s: 1000.0,
        };
        let round = |ratio: f64| Round {
            local: f.clone(),
            s3: f.clone(),
            s3_first: false,
            ingest_ratio: ratio,
            restore_ratio: 1.0,
        };
        let rounds = vec![round(1.3), round(1.1), round(1.0)];
        let report = S3IngestReport {
            image_bytes: 1 << 30,
            server_bin: "srv".into(),
            s3_endpoint: "http://127.0.0.1:7480".into(),
            s3_bucket: "b".into(),
            s3_prefix: "t/x".into(),
            placement: None,
            ingest_ratio: RatioSummary::of(rounds.iter().map(|r| r.ingest_ratio)),
            restore_ratio: RatioSummary::of(rounds.iter().map(|r| r.restore_ratio)),
            rounds,
            s3_ingest_requests: q.clone(),
            s3_restore_requests: q,
        };
        let text = render(&report);
        assert!(
            text.contains("ingest 1.10x (goal <= 1.20x; lowest 1.00x, highest 1.30x)"),
            "{text}"
        );
        assert!(text.contains("260.0 requests/GiB"), "{text}");
        assert!(text.contains("PUT 256.0/GiB"), "{text}");
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        let odd = RatioSummary::of([1.4, 1.0, 1.2].into_iter());
        assert_eq!((odd.median, odd.min, odd.max), (1.2, 1.0, 1.4));
        let even = RatioSummary::of([1.0, 1.4, 1.2, 1.1].into_iter());
        assert!((even.median - 1.15).abs() < 1e-12);
        assert!(RatioSummary::of(std::iter::empty()).median.is_nan());
    }
}
