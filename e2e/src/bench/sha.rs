//! `pbs-bench sha256`: SHA-256 throughput of `ring`, the `sha2` crate and the product's own
//! `pbs_cloud_server::format::sha256`, over the same buffer in one run.
//!
//! Hashing is done per 4 MiB chunk (the fixed chunk size) because that is what the client and
//! server hash. The implementations are interleaved round by round and the best round of each
//! is kept, so a noisy neighbour slows all of them alike instead of one.

use std::hint::black_box;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;
use sha2::Digest as _;

use super::{bench_data, mb_per_s, timed};

const CHUNK: usize = 4 * 1024 * 1024;

/// One SHA-256 implementation under test.
struct Impl {
    name: &'static str,
    hash: fn(&[u8]) -> [u8; 32],
}

fn ring_sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn sha2_sha256(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

fn product_sha256(data: &[u8]) -> [u8; 32] {
    pbs_cloud_server::format::sha256(data)
}

const IMPLS: [Impl; 3] = [
    Impl {
        name: "ring::digest",
        hash: ring_sha256,
    },
    Impl {
        name: "sha2 crate",
        hash: sha2_sha256,
    },
    Impl {
        name: "pbs_cloud_server::format::sha256",
        hash: product_sha256,
    },
];

/// Throughput of one implementation (best round).
#[derive(Debug, Clone, Serialize)]
pub struct ShaResult {
    pub name: String,
    pub mb_per_s: f64,
    pub best_seconds: f64,
}

/// Result of the SHA-256 benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct ShaReport {
    pub buffer_bytes: u64,
    pub rounds: usize,
    pub cpu_model: Option<String>,
    pub cpu_sha_ni: Option<bool>,
    pub results: Vec<ShaResult>,
    /// ring MB/s divided by sha2 MB/s.
    pub ratio_ring_vs_sha2: f64,
    /// Product path MB/s divided by sha2 MB/s.
    pub ratio_product_vs_sha2: f64,
}

/// Hashes a `mib` MiB buffer `rounds` times with every implementation.
pub fn run(mib: usize, rounds: usize) -> Result<ShaReport> {
    if mib == 0 || rounds == 0 {
        bail!("sha256 benchmark needs --mib >= 1 and --rounds >= 1");
    }
    let data = bench_data(mib * 1024 * 1024, 1);
    check_agreement(&data)?;
    // warm-up: fault in the buffer and let the CPU clock settle
    for imp in &IMPLS {
        black_box(hash_all(imp, &data));
    }
    let mut best = [Duration::MAX; IMPLS.len()];
    for _ in 0..rounds {
        for (i, imp) in IMPLS.iter().enumerate() {
            let (_, took) = timed(|| black_box(hash_all(imp, black_box(&data))));
            best[i] = best[i].min(took);
        }
    }
    let results: Vec<ShaResult> = IMPLS
        .iter()
        .zip(best)
        .map(|(imp, took)| ShaResult {
            name: imp.name.to_string(),
            mb_per_s: mb_per_s(data.len() as u64, took),
            best_seconds: took.as_secs_f64(),
        })
        .collect();
    Ok(ShaReport {
        buffer_bytes: data.len() as u64,
        rounds,
        cpu_model: super::cpu_model(),
        cpu_sha_ni: super::cpu_has_sha_ni(),
        ratio_ring_vs_sha2: results[0].mb_per_s / results[1].mb_per_s,
        ratio_product_vs_sha2: results[2].mb_per_s / results[1].mb_per_s,
        results,
    })
}

/// XOR of all chunk digests, so the work cannot be optimised away.
fn hash_all(imp: &Impl, data: &[u8]) -> [u8; 32] {
    let mut acc = [0u8; 32];
    for chunk in data.chunks(CHUNK) {
        let d = (imp.hash)(chunk);
        for (a, b) in acc.iter_mut().zip(d) {
            *a ^= b;
        }
    }
    acc
}

/// All implementations must produce the same digests, or the comparison is meaningless.
fn check_agreement(data: &[u8]) -> Result<()> {
    let sample = &data[..data.len().min(CHUNK + 17)];
    let want = (IMPLS[0].hash)(sample);
    for imp in &IMPLS[1..] {
        if (imp.hash)(sample) != want {
            bail!("{} disagrees with {} on SHA-256", imp.name, IMPLS[0].name);
        }
    }
    Ok(())
}

/// Human-readable report.
pub fn render(r: &ShaReport) -> String {
    let mut out = format!(
        "SHA-256 over {} MiB in 4 MiB chunks, best of {} rounds\nCPU: {} (sha_ni: {})\n\n",
        r.buffer_bytes / (1024 * 1024),
        r.rounds,
        r.cpu_model.as_deref().unwrap_or("unknown"),
        r.cpu_sha_ni
            .map_or("unknown", |b| if b { "yes" } else { "no" }),
    );
    out.push_str(&format!("{:<34} {:>10}\n", "implementation", "MB/s"));
    for res in &r.results {
        out.push_str(&format!("{:<34} {:>10.1}\n", res.name, res.mb_per_s));
    }
    out.push_str(&format!(
        "\nratio ring / sha2:    {:.2}x\nratio product / sha2: {:.2}x\n",
        r.ratio_ring_vs_sha2, r.ratio_product_vs_sha2
    ));
    out.push_str("(the product path wraps ring: their gap is the noise floor of this run)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implementations_agree_on_known_vector() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        for imp in &IMPLS {
            assert_eq!(hex::encode((imp.hash)(b"abc")), want, "{}", imp.name);
        }
    }

    #[test]
    fn small_run_reports_every_implementation() {
        let r = run(1, 1).unwrap();
        assert_eq!(r.results.len(), 3);
        assert!(r.results.iter().all(|x| x.mb_per_s > 0.0));
        assert!(r.ratio_ring_vs_sha2 > 0.0);
        assert!(run(0, 1).is_err());
    }
}
