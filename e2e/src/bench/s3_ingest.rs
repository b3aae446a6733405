//! `pbs-bench s3-ingest`: the same image backed up to and restored from two release servers in
//! one run, one on the default local datastore and one on an S3 datastore (the test RGW under a
//! fresh prefix). Reports times, MB/s, the S3/local ratios, and the S3 requests per GiB taken
//! from the `s3-statistics` of the datastore status before and after each phase.

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

/// Everything `s3-ingest` measured.
#[derive(Debug, Clone, Serialize)]
pub struct S3IngestReport {
    pub image_bytes: u64,
    pub server_bin: String,
    pub s3_endpoint: String,
    pub s3_bucket: String,
    pub s3_prefix: String,
    pub local: BackendFigures,
    pub s3: BackendFigures,
    /// S3 time / local time (lower is better; the goal is <= 1.2).
    pub ingest_ratio: f64,
    pub restore_ratio: f64,
    pub s3_ingest_requests: RequestFigures,
    pub s3_restore_requests: RequestFigures,
}

/// Starts both servers, backs up and restores the image on each (interleaved, so slow phases
/// of the shared machine hit both), and removes the S3 prefix afterwards.
pub async fn run(opts: &Options) -> Result<S3IngestReport> {
    if opts.image_mib == 0 {
        bail!("s3-ingest needs --image-mib >= 1");
    }
    let data = bench_data(opts.image_mib * 1024 * 1024, 42);
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
    let result = measure(&local, &s3, &data).await;
    drop(s3);
    if let Err(e) = remove_prefix(&opts.s3, &prefix).await {
        eprintln!("warning: could not remove the benchmark prefix {prefix}: {e:#}");
    }
    let (local_fig, s3_fig, ingest, restore) = result?;
    let bytes = data.len() as u64;
    Ok(S3IngestReport {
        image_bytes: bytes,
        server_bin: opts.server_bin.display().to_string(),
        s3_endpoint: opts.s3.endpoint.clone(),
        s3_bucket: opts.s3.bucket.clone(),
        s3_prefix: prefix,
        ingest_ratio: s3_fig.ingest_seconds / local_fig.ingest_seconds,
        restore_ratio: s3_fig.restore_seconds / local_fig.restore_seconds,
        local: local_fig,
        s3: s3_fig,
        s3_ingest_requests: RequestFigures::new(ingest, bytes),
        s3_restore_requests: RequestFigures::new(restore, bytes),
    })
}

type Measured = (BackendFigures, BackendFigures, RequestCounts, RequestCounts);

async fn measure(local: &TestServer, s3: &TestServer, data: &[u8]) -> Result<Measured> {
    let lc = local.admin_client().await.context("log in (local)")?;
    let sc = s3.admin_client().await.context("log in (S3)")?;
    let (ls, ss) = (local.store().to_string(), s3.store().to_string());

    let before = s3_counts(&sc, &ss).await?;
    eprintln!("ingest (local)");
    let (_, local_ingest) = backup(&lc, &ls, "bench-img", T0, data, true).await?;
    eprintln!("  {:.2} s", local_ingest.as_secs_f64());
    eprintln!("ingest (S3)");
    let (_, s3_ingest) = backup(&sc, &ss, "bench-img", T0, data, true).await?;
    eprintln!("  {:.2} s", s3_ingest.as_secs_f64());
    let after_ingest = s3_counts(&sc, &ss).await?;

    eprintln!("restore (local)");
    let local_restore = restore(&lc, &ls, T0, data).await?;
    eprintln!("  {:.2} s", local_restore.as_secs_f64());
    eprintln!("restore (S3)");
    let s3_restore = restore(&sc, &ss, T0, data).await?;
    eprintln!("  {:.2} s", s3_restore.as_secs_f64());
    let after_restore = s3_counts(&sc, &ss).await?;

    let bytes = data.len() as u64;
    Ok((
        figures(bytes, local_ingest, local_restore),
        figures(bytes, s3_ingest, s3_restore),
        after_ingest.since(&before),
        after_restore.since(&after_ingest),
    ))
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
    let mut settings = S3Settings::new(
        &target.bucket,
        prefix,
        S3Credentials::Static {
            access_key_id: target.access_key.clone(),
            secret_access_key: target.secret_key.clone(),
        },
    );
    settings.endpoint = Some(target.endpoint.clone());
    settings.path_style = true;
    settings.conditional_writes = ConditionalWrites::On;
    let backend = S3Backend::connect(settings).await?;
    backend.delete_prefix("").await?;
    Ok(())
}

/// The table printed by default.
pub fn render(r: &S3IngestReport) -> String {
    let mib = r.image_bytes / (1024 * 1024);
    let mut out = format!(
        "s3-ingest: {mib} MiB image (half random / half text), fixed index, one run\n\
         server binary: {}\nS3: {} bucket {} prefix {}/\n\n",
        r.server_bin, r.s3_endpoint, r.s3_bucket, r.s3_prefix
    );
    out.push_str(&format!(
        "{:<10} {:>10} {:>10} {:>11} {:>11}\n",
        "backend", "ingest s", "ingest MB/s", "restore s", "restore MB/s"
    ));
    for (name, f) in [("local", &r.local), ("s3", &r.s3)] {
        out.push_str(&format!(
            "{:<10} {:>10.2} {:>10.1} {:>11.2} {:>11.1}\n",
            name, f.ingest_seconds, f.ingest_mb_per_s, f.restore_seconds, f.restore_mb_per_s
        ));
    }
    out.push_str(&format!(
        "\nS3/local time: ingest {:.2}x (goal <= 1.20x), restore {:.2}x\n\n",
        r.ingest_ratio, r.restore_ratio
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
        let report = S3IngestReport {
            image_bytes: 1 << 30,
            server_bin: "srv".into(),
            s3_endpoint: "http://127.0.0.1:7480".into(),
            s3_bucket: "b".into(),
            s3_prefix: "t/x".into(),
            local: f.clone(),
            s3: f,
            ingest_ratio: 1.1,
            restore_ratio: 1.0,
            s3_ingest_requests: q.clone(),
            s3_restore_requests: q,
        };
        let text = render(&report);
        assert!(text.contains("ingest 1.10x"), "{text}");
        assert!(text.contains("260.0 requests/GiB"), "{text}");
        assert!(text.contains("PUT 256.0/GiB"), "{text}");
    }
}
