//! CPU placement for `s3-ingest --store-cpus`: the S3 store's processes get CPUs of their own,
//! and the benchmark (the client) and the servers it starts get the others.
//!
//! On a two-core test machine the store (Ceph RGW and its OSD) burns as much CPU per byte as
//! our server does, and on shared cores that time is added to every S3 figure. A real
//! deployment's store runs on other machines. Pinning the store apart models that while the
//! client and server keep the same CPUs for both backends, so the S3/local ratio compares our
//! two backends and not the store's CPU bill. The original placement of every store thread is
//! put back when the placement is dropped.

use std::collections::BTreeSet;
use std::fs;

use anyhow::{bail, Context, Result};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Process names (`/proc/<pid>/comm`) of the S3 servers this project tests with.
pub const DEFAULT_STORE_PROCESSES: &[&str] = &[
    "radosgw", "ceph-osd", "ceph-mon", "ceph-mgr", "garage", "s3s-fs",
];

/// An applied placement; dropping it restores the store threads' previous CPU sets.
pub struct StorePlacement {
    saved: Vec<(Pid, CpuSet)>,
    description: String,
}

impl StorePlacement {
    /// Pins every thread of every process named in `store_processes` to `store_cpus`, and the
    /// calling thread to the remaining online CPUs. Call it before starting the async runtime
    /// and the servers: threads and child processes inherit the caller's CPU set.
    pub fn apply(store_cpus: &[usize], store_processes: &[&str]) -> Result<StorePlacement> {
        let online = sched_getaffinity(Pid::from_raw(0)).context("read this process's CPU set")?;
        let available: BTreeSet<usize> = (0..CpuSet::count())
            .filter(|&c| online.is_set(c).unwrap_or(false))
            .collect();
        let store: BTreeSet<usize> = store_cpus.iter().copied().collect();
        if store.is_empty() {
            bail!("--store-cpus names no CPU");
        }
        if let Some(c) = store.iter().find(|c| !available.contains(c)) {
            bail!("--store-cpus: CPU {c} is not available here (available: {available:?})");
        }
        let ours: BTreeSet<usize> = available.difference(&store).copied().collect();
        if ours.is_empty() {
            bail!("--store-cpus {store:?} leaves no CPU for the benchmark and the servers");
        }

        let pids = find_processes(store_processes)?;
        if pids.is_empty() {
            bail!(
                "--store-cpus: no S3 store process found (looked for {}); the store must run \
                 on this machine, e.g. `eval \"$(e2e/s3/start-ceph-rgw.sh)\"`",
                store_processes.join(", ")
            );
        }
        let store_set = cpu_set(&store)?;
        let mut placement = StorePlacement {
            saved: Vec::new(),
            description: String::new(),
        };
        let mut names = BTreeSet::new();
        for (pid, name) in &pids {
            for tid in threads(*pid) {
                // A thread that ended meanwhile is not an error.
                let Ok(previous) = sched_getaffinity(tid) else {
                    continue;
                };
                if sched_setaffinity(tid, &store_set).is_ok() {
                    placement.saved.push((tid, previous));
                }
            }
            names.insert(name.clone());
        }
        sched_setaffinity(Pid::from_raw(0), &cpu_set(&ours)?)
            .context("pin the benchmark to the CPUs left for it")?;
        placement.description = format!(
            "store ({}: {} processes, {} threads) on CPU {}; benchmark client and servers on \
             CPU {}",
            names.into_iter().collect::<Vec<_>>().join(", "),
            pids.len(),
            placement.saved.len(),
            list(&store),
            list(&ours),
        );
        Ok(placement)
    }

    /// One line for the report.
    pub fn describe(&self) -> &str {
        &self.description
    }
}

impl Drop for StorePlacement {
    fn drop(&mut self) {
        for (tid, previous) in &self.saved {
            // Threads that ended since have nothing to restore.
            let _ = sched_setaffinity(*tid, previous);
        }
    }
}

fn cpu_set(cpus: &BTreeSet<usize>) -> Result<CpuSet> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c)
            .with_context(|| format!("CPU {c} is out of range"))?;
    }
    Ok(set)
}

fn list(cpus: &BTreeSet<usize>) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a CPU list such as `1`, `1,3` or `2-3`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("'{s}' in CPU list '{text}' is not a CPU number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    bail!("CPU range '{part}' in '{text}' runs backwards");
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(number(part)?),
        }
    }
    if cpus.is_empty() {
        bail!("CPU list '{text}' is empty");
    }
    Ok(cpus)
}

/// `(pid, name)` of the processes whose `comm` is one of `names`.
fn find_processes(names: &[&str]) -> Result<Vec<(Pid, String)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").context("list /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(comm) = fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        if names.contains(&comm) {
            found.push((Pid::from_raw(pid), comm.to_string()));
        }
    }
    Ok(found)
}

/// Thread ids of a process (empty if it ended).
fn threads(pid: Pid) -> Vec<Pid> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .map(Pid::from_raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert_eq!(parse_cpu_list("0, 2-3").unwrap(), vec![0, 2, 3]);
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("one").is_err());
    }

    #[test]
    fn refuses_placements_that_cannot_work() {
        let err = StorePlacement::apply(&[100_000], &["radosgw"])
            .err()
            .expect("an impossible CPU must be refused");
        assert!(err.to_string().contains("CPU 100000"), "{err:#}");
        let err = StorePlacement::apply(&[0], &["no-such-process-name"])
            .err()
            .expect("a missing store must be refused");
        let text = format!("{err:#}");
        assert!(
            text.contains("no S3 store process found") || text.contains("leaves no CPU"),
            "{text}"
        );
    }
}
