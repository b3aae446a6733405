//! Benchmarks run by the `pbs-bench` binary.
//!
//! The machines these run on are shared and noisy, so every benchmark measures the thing under
//! test and a baseline in the same run and reports the ratio; absolute MB/s are context only.

pub mod auth_cost;
pub mod backup_restore;
pub mod gc;
pub mod known;
pub mod lock;
pub mod memory;
pub mod placement;
pub mod report;
pub mod s3_ingest;
pub mod sha;
pub mod sync;

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};

/// Size of the alternating random / text blocks in [`bench_data`]: well below the 4 MiB chunk
/// size, so every chunk is about half compressible.
const DATA_BLOCK: usize = 32 * 1024;

/// Deterministic benchmark data: alternating 32 KiB blocks of pseudo-random bytes and of
/// log-like text, so zstd finds real work on every chunk but cannot shrink it to nothing.
pub fn bench_data(len: usize, seed: u64) -> Vec<u8> {
    use std::fmt::Write;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len);
    let mut text = String::with_capacity(DATA_BLOCK + 256);
    // The text depends on the seed too, so runs with different seeds share no chunk.
    let mut line = (seed % 1000) * 10_000_000;
    while out.len() < len {
        let start = out.len();
        let n = DATA_BLOCK.min(len - start);
        if (start / DATA_BLOCK) % 2 == 0 {
            out.resize(start + n, 0);
            rng.fill_bytes(&mut out[start..]);
        } else {
            text.clear();
            while text.len() < n {
                // writing to a String cannot fail
                let _ = writeln!(
                    text,
                    "{line:010} INFO worker-{} stored chunk {:016x} in datastore store1",
                    line % 7,
                    line.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                );
                line += 1;
            }
            out.extend_from_slice(&text.as_bytes()[..n]);
        }
    }
    out
}

/// Runs `f` once and returns its result with the wall time it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

/// Throughput in MB/s (10^6 bytes per second).
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return f64::INFINITY;
    }
    bytes as f64 / 1e6 / secs
}

/// Whether this CPU advertises the SHA extensions (`sha_ni` in `/proc/cpuinfo`).
pub fn cpu_has_sha_ni() -> Option<bool> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = info.lines().find(|l| l.starts_with("flags"))?;
    Some(flags.split_whitespace().any(|f| f == "sha_ni"))
}

/// CPU model name from `/proc/cpuinfo`, for the report header.
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// Peak resident set size (`VmHWM`, KiB) of a process, from `/proc/<pid>/status`.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Current resident set size (`VmRSS`, KiB) of a process, from `/proc/<pid>/status`.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Resets the peak resident set size (`VmHWM`) of this process to its current RSS, so a later
/// [`vm_hwm_kib`] gives the peak of what ran in between (`/proc/self/clear_refs`, Linux 4.0+).
pub fn reset_own_peak_rss() -> std::io::Result<()> {
    std::fs::write("/proc/self/clear_refs", b"5")
}

/// Peaks of this process's anonymous and file-backed resident memory (`RssAnon`, and
/// `RssFile` + `RssShmem`), sampled every 20 ms on a thread of its own. `VmHWM` only gives
/// their sum at its peak; the split tells heap from mapped files (the known-chunk index),
/// which the kernel can drop under pressure.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl RssSampler {
    pub fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let pid = std::process::id();
            let (mut anon, mut file) = (0, 0);
            loop {
                anon = anon.max(status_kib(pid, "RssAnon:").unwrap_or(0));
                let mapped = status_kib(pid, "RssFile:").unwrap_or(0)
                    + status_kib(pid, "RssShmem:").unwrap_or(0);
                file = file.max(mapped);
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return (anon, file);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        RssSampler { stop, thread }
    }

    /// (peak anonymous, peak file-backed) resident memory in KiB.
    pub fn stop(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// File system type and mount point holding `path` (longest matching entry of
/// `/proc/self/mounts`), e.g. `ext4 on /`.
pub fn filesystem_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _device = f.next()?;
            let mount = f.next()?.replace("\\040", " ");
            let fstype = f.next()?;
            path.starts_with(&mount)
                .then(|| (mount.len(), format!("{fstype} on {mount}")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, desc)| desc)
}

/// Median of a non-empty list (mean of the middle two for even lengths); NaN when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_data_is_deterministic_and_half_compressible() {
        let a = bench_data(1 << 20, 7);
        assert_eq!(a.len(), 1 << 20);
        assert_eq!(a, bench_data(1 << 20, 7));
        assert_ne!(a, bench_data(1 << 20, 8));
        let compressed = zstd::bulk::compress(&a, 1).unwrap();
        let ratio = compressed.len() as f64 / a.len() as f64;
        assert!(ratio > 0.5 && ratio < 0.8, "compression ratio {ratio}");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn throughput_in_decimal_megabytes() {
        assert_eq!(mb_per_s(2_000_000, Duration::from_secs(2)), 1.0);
    }
}
