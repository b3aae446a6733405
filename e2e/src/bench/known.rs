//! `pbs-bench known`: memory and load time of the known-chunk set at N synthetic digests, the
//! old in-memory `HashSet` against the memory-mapped local file
//! (server/docs/design.md#known-chunk-set), each measured in a fresh child process so that
//! `VmRSS`/`VmHWM` belong to that variant alone.
//!
//! The parent writes a synthetic `.chunks/.index` object (magic + N sorted digests, streamed)
//! and the sealed local copy the server keeps, then runs the child (`pbs-bench known-probe`)
//! once per variant:
//! * `hashset`: the code before the change: read the index object whole, decode it and collect
//!   a `HashSet<[u8; 32]>` (what `GET .chunks/.index` + load did);
//! * `mapped-warm`: a restart with a valid local file: check and map it;
//! * `mapped-cold`: first open as it was: copy the index object (whole in memory, as the
//!   backend's GET returns it) into a new local file, then map it;
//! * `mapped-ranged`: first open as the server does it now: read the object through the
//!   local backend's `get_range` in 8 MiB pieces into the new local file, then map it.
//!
//! Each child then looks up 1 M digests (half present) and reports the lookup rate, `VmRSS`
//! split into anonymous (heap) and file-backed (page cache of the mapping, which the kernel
//! can drop) memory, and `VmHWM`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use pbs_cloud_server::datastore::{DigestFile, DigestFileOrigin, DigestFileWriter};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"PBSCKIX1";
const LOOKUPS: u64 = 1_000_000;

/// The variants, in the order they run.
pub const VARIANTS: [&str; 4] = ["hashset", "mapped-warm", "mapped-cold", "mapped-ranged"];

/// Bytes per ranged read in `mapped-ranged` (the server's piece size).
const PIECE: u64 = 8 * 1024 * 1024;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Digest `i` of `n`: the first 8 bytes spread `i` evenly over the key space (so the digests
/// come out sorted, like real SHA-256 digests once sorted), the rest pseudo-random.
fn digest(i: u64, n: u64) -> [u8; 32] {
    let mut d = [0u8; 32];
    let lead = ((u128::from(i) << 64) / u128::from(n.max(1))) as u64;
    d[..8].copy_from_slice(&lead.to_be_bytes());
    for (k, part) in d[8..].chunks_exact_mut(8).enumerate() {
        part.copy_from_slice(&splitmix(i * 4 + k as u64).to_le_bytes());
    }
    d
}

/// Query `q`: even ones present, odd ones absent.
fn query(q: u64, n: u64) -> [u8; 32] {
    let i = splitmix(q ^ 0x5555) % n.max(1);
    let mut d = digest(i, n);
    if q % 2 == 1 {
        d[31] ^= 0xFF;
    }
    d
}

/// One variant at one size, as the child measured it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub variant: String,
    pub digests: u64,
    pub load_seconds: f64,
    pub lookups_per_second: f64,
    /// Lookups that found their digest (half of them should).
    pub hits: u64,
    /// `VmRSS` of the child before loading (KiB).
    pub start_rss_kib: u64,
    /// After loading and the lookups (KiB).
    pub rss_kib: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    /// `VmHWM` (KiB).
    pub peak_kib: u64,
}

/// Everything one `known` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct KnownReport {
    pub dir: String,
    /// Seconds to stream-write the sealed local file, per size (what a merge costs).
    pub write_seconds: Vec<(u64, f64)>,
    pub probes: Vec<Probe>,
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn index_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("index-{n}"))
}

fn local_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("local-{n}.known"))
}

/// Writes the index object and the sealed local copy for `n` digests; returns the seconds
/// the local copy took.
fn prepare(dir: &Path, n: u64) -> Result<f64> {
    let path = index_path(dir, n);
    let file =
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(MAGIC)?;
    for i in 0..n {
        out.write_all(&digest(i, n))?;
    }
    out.flush()?;
    drop(out);
    let start = Instant::now();
    let mut w = DigestFileWriter::new(dir)?;
    for i in 0..n {
        w.push(&digest(i, n))?;
    }
    let unsealed = w.finish()?;
    let origin = DigestFileOrigin {
        size: std::fs::metadata(&path)?.len(),
        modified: UNIX_EPOCH,
    };
    unsealed.seal(origin, Some(&local_path(dir, n)))?;
    Ok(start.elapsed().as_secs_f64())
}

/// The index object copied into a new local file and mapped by the server's own ranged
/// download ([`DigestFileWriter::download`]), [`PIECE`] bytes per read from the local backend.
fn ranged_copy(dir: &Path, n: u64) -> Result<DigestFile> {
    let backend = pbs_cloud_server::backend::LocalBackend::open(dir)?;
    let size = std::fs::metadata(index_path(dir, n))?.len();
    let key = format!("index-{n}");
    let download = DigestFileWriter::download(&backend, &key, size, PIECE, dir);
    let unsealed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(download)?;
    let origin = DigestFileOrigin {
        size,
        modified: UNIX_EPOCH,
    };
    Ok(unsealed.seal(origin, None)?)
}

/// A loaded set's membership test.
type Lookup = Box<dyn Fn(&[u8; 32]) -> bool>;

/// The child: load one variant, look up, measure.
pub fn probe(variant: &str, dir: &Path, n: u64) -> Result<Probe> {
    let start_rss_kib = status_kib("VmRSS:");
    let start = Instant::now();
    let lookup: Lookup = match variant {
        "hashset" => {
            let data = std::fs::read(index_path(dir, n))?;
            let body = data.strip_prefix(MAGIC.as_slice()).context("magic")?;
            let decoded: Vec<[u8; 32]> = body
                .chunks_exact(32)
                .map(|c| c.try_into().unwrap_or([0; 32]))
                .collect();
            drop(data);
            let set: std::collections::HashSet<[u8; 32]> = decoded.into_iter().collect();
            Box::new(move |d| set.contains(d))
        }
        "mapped-warm" => {
            let file = DigestFile::open(&local_path(dir, n))?.context("local file missing")?;
            Box::new(move |d| file.contains(d))
        }
        "mapped-cold" => {
            let data = std::fs::read(index_path(dir, n))?;
            let unsealed = DigestFileWriter::from_index(dir, "index", &data)?;
            drop(data);
            let origin = DigestFileOrigin {
                size: unsealed.object().len() as u64,
                modified: UNIX_EPOCH,
            };
            let file = unsealed.seal(origin, None)?;
            Box::new(move |d| file.contains(d))
        }
        "mapped-ranged" => {
            let file = ranged_copy(dir, n)?;
            Box::new(move |d| file.contains(d))
        }
        other => bail!("unknown variant '{other}'"),
    };
    let load = start.elapsed();
    let start = Instant::now();
    let hits = (0..LOOKUPS).filter(|q| lookup(&query(*q, n))).count() as u64;
    let lookup_time = start.elapsed().max(Duration::from_nanos(1));
    Ok(Probe {
        variant: variant.to_string(),
        digests: n,
        load_seconds: load.as_secs_f64(),
        lookups_per_second: LOOKUPS as f64 / lookup_time.as_secs_f64(),
        hits,
        start_rss_kib,
        rss_kib: status_kib("VmRSS:"),
        rss_anon_kib: status_kib("RssAnon:"),
        rss_file_kib: status_kib("RssFile:"),
        peak_kib: status_kib("VmHWM:"),
    })
}

/// Prepares the files in a new directory under `parent` and runs every variant per size in
/// a child process (`exe known-probe …`).
pub fn run(exe: &Path, parent: &Path, sizes: &[u64]) -> Result<KnownReport> {
    let dir = tempfile::Builder::new()
        .prefix("bench-known-")
        .tempdir_in(parent)
        .with_context(|| format!("create a directory in {}", parent.display()))?;
    let mut report = KnownReport {
        dir: dir.path().display().to_string(),
        write_seconds: Vec::new(),
        probes: Vec::new(),
    };
    for &n in sizes {
        eprintln!("known: writing {n} digests");
        report.write_seconds.push((n, prepare(dir.path(), n)?));
        for variant in VARIANTS {
            eprintln!("known: {variant} at {n}");
            let out = Command::new(exe)
                .args(["known-probe", "--variant", variant, "--digests"])
                .arg(n.to_string())
                .arg("--dir")
                .arg(dir.path())
                .output()
                .context("run the known-probe child")?;
            if !out.status.success() {
                bail!(
                    "known-probe {variant} {n} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let probe: Probe = serde_json::from_slice(&out.stdout).context("probe output")?;
            if probe.hits != LOOKUPS / 2 {
                bail!(
                    "{variant} at {n}: {} hits of {LOOKUPS}, expected half",
                    probe.hits
                );
            }
            report.probes.push(probe);
        }
        std::fs::remove_file(index_path(dir.path(), n))?;
        std::fs::remove_file(local_path(dir.path(), n))?;
    }
    Ok(report)
}

fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

/// The table printed by default.
pub fn render(r: &KnownReport) -> String {
    let mut out = format!(
        "known-chunk set: HashSet (before) vs memory-mapped local file (after)\n\
         files in {}; {LOOKUPS} lookups per variant, half present\n\n\
         {:>10} {:<12} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
        r.dir,
        "digests",
        "variant",
        "load s",
        "Mlookup/s",
        "RSS MiB",
        "anon MiB",
        "file MiB",
        "peak MiB"
    );
    for p in &r.probes {
        out.push_str(&format!(
            "{:>10} {:<12} {:>8.2} {:>10.2} {:>9} {:>9} {:>9} {:>9}\n",
            p.digests,
            p.variant,
            p.load_seconds,
            p.lookups_per_second / 1e6,
            mib(p.rss_kib.saturating_sub(p.start_rss_kib)),
            mib(p.rss_anon_kib),
            mib(p.rss_file_kib),
            mib(p.peak_kib)
        ));
    }
    out.push_str("\nRSS: growth over the child's start; anon/file/peak: absolute.\n");
    for (n, secs) in &r.write_seconds {
        out.push_str(&format!(
            "streaming write of the local file at {n} digests: {secs:.2} s\n"
        ));
    }
    for &n in r.write_seconds.iter().map(|(n, _)| n) {
        let find = |v: &str| r.probes.iter().find(|p| p.digests == n && p.variant == v);
        if let (Some(before), Some(after)) = (find("mapped-cold"), find("mapped-ranged")) {
            out.push_str(&format!(
                "at {n}: first open, ranged/whole: peak RSS {:.3}, load time {:.3}\n",
                after.peak_kib as f64 / before.peak_kib.max(1) as f64,
                after.load_seconds / before.load_seconds.max(1e-9)
            ));
        }
        if let (Some(before), Some(after)) = (find("hashset"), find("mapped-warm")) {
            out.push_str(&format!(
                "at {n}: peak RSS after/before {:.3}, anon RSS after/before {:.3}, load time \
                 after/before {:.3}\n",
                after.peak_kib as f64 / before.peak_kib.max(1) as f64,
                after.rss_anon_kib as f64 / before.rss_anon_kib.max(1) as f64,
                after.load_seconds / before.load_seconds.max(1e-9)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_digests_are_sorted_and_queries_half_present() {
        let n = 1000;
        assert!((1..n).all(|i| digest(i - 1, n) < digest(i, n)));
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path(), n).unwrap();
        for variant in VARIANTS {
            let p = probe(variant, dir.path(), n).unwrap();
            assert_eq!(p.hits, LOOKUPS / 2, "{variant}");
        }
    }
}
