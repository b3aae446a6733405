//! Figures of the machine (or pod) the server runs on, for `GET /nodes/{node}/status`, in the
//! shape PBS reports them. Everything is read from the process's own environment: `/proc`,
//! the cgroup v2 files of the process's cgroup when it has limits, `uname` and `statvfs("/")`.
//! Nothing is made up: where a container hides something, the figure says what the container
//! sees.
//!
//! * `memory`: with a cgroup memory limit, `total` is the limit, `used` the cgroup's usage and
//!   `free` what is left of the limit; without one, `/proc/meminfo` (`used` = total − available).
//! * `swap`: the cgroup swap limit and usage when set, else `/proc/meminfo`.
//! * `cpu`, `wait`: busy and iowait shares (0..1) over the last sampling window. With a cgroup
//!   CPU quota, `cpu` is the share of the quota the cgroup used; `wait` is always the kernel's
//!   (whole machine).
//! * `loadavg`, `uptime`, `cpuinfo`, `current-kernel`: what the kernel reports (the machine's,
//!   not the pod's); `root`: the filesystem at `/` as the process sees it.
//!
//! Samples are taken at most every [`MAX_AGE`], so several readers within that time see the
//! same figures (a monitoring scrape and an API read agree).

pub mod procfs;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long one sample is served before the next is taken.
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// The first CPU measurement needs two readings this far apart.
const FIRST_WINDOW: Duration = Duration::from_millis(250);

/// Where the kernel files are (tests point these at fixtures).
#[derive(Clone, Debug)]
pub struct HostPaths {
    pub proc: PathBuf,
    pub cgroup: PathBuf,
    pub firmware: PathBuf,
    /// Filesystem reported as `root`.
    pub root_fs: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            proc: "/proc".into(),
            cgroup: "/sys/fs/cgroup".into(),
            firmware: "/sys/firmware".into(),
            root_fs: "/".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub total: u64,
    pub used: u64,
    pub free: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Storage {
    pub total: u64,
    pub used: u64,
    pub avail: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Kernel {
    pub sysname: String,
    pub release: String,
    pub version: String,
    pub machine: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BootInfo {
    /// `efi` or `legacy-bios`.
    pub mode: String,
    pub secureboot: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuInfo {
    pub cpus: u64,
    pub model: String,
    pub sockets: u64,
}

/// PBS's `NodeStatus` without `info` (the API adds the certificate fingerprint).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeFigures {
    pub boot_info: BootInfo,
    pub cpu: f64,
    pub cpuinfo: CpuInfo,
    pub current_kernel: Kernel,
    pub kversion: String,
    pub loadavg: [f64; 3],
    pub memory: Counters,
    pub root: Storage,
    pub swap: Counters,
    pub uptime: u64,
    pub wait: f64,
}

/// CPU time counters at one moment.
#[derive(Clone, Copy, Debug)]
struct CpuSample {
    at: Instant,
    host: Option<procfs::CpuTimes>,
    /// µs of CPU the process's cgroup used, when it runs under a CPU quota.
    cgroup_usage: Option<u64>,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl HostPaths {
    /// The process's cgroup v2 directory (`0::/path` in `/proc/self/cgroup`), or the cgroup
    /// root when that is where a container mounts its own cgroup.
    fn cgroup_dir(&self) -> Option<PathBuf> {
        let own = read(&self.proc.join("self/cgroup")).and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(|p| self.cgroup.join(p.trim().trim_start_matches('/')))
        });
        [own, Some(self.cgroup.clone())]
            .into_iter()
            .flatten()
            .find(|dir| dir.join("memory.max").exists() || dir.join("cpu.max").exists())
    }

    fn cpu_quota(&self) -> Option<(PathBuf, f64)> {
        let dir = self.cgroup_dir()?;
        let cpus = procfs::parse_cpu_max(&read(&dir.join("cpu.max"))?)?;
        Some((dir, cpus))
    }

    fn cpu_sample(&self) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            host: read(&self.proc.join("stat")).and_then(|t| procfs::parse_proc_stat(&t)),
            cgroup_usage: self
                .cpu_quota()
                .and_then(|(dir, _)| read(&dir.join("cpu.stat")))
                .and_then(|t| procfs::parse_cpu_stat_usage(&t)),
        }
    }

    /// Busy and iowait shares between two samples.
    fn cpu_shares(&self, before: &CpuSample, after: &CpuSample) -> (f64, f64) {
        let (host_busy, wait) = match (&before.host, &after.host) {
            (Some(a), Some(b)) => procfs::cpu_shares(a, b),
            _ => (0.0, 0.0),
        };
        let quota = self.cpu_quota().map(|(_, cpus)| cpus);
        let busy = match (quota, before.cgroup_usage, after.cgroup_usage) {
            (Some(cpus), Some(a), Some(b)) => {
                let wall = after.at.duration_since(before.at).as_micros() as f64;
                if wall > 0.0 {
                    (b.saturating_sub(a) as f64 / (wall * cpus)).min(1.0)
                } else {
                    0.0
                }
            }
            _ => host_busy,
        };
        (busy, wait)
    }

    fn memory_and_swap(&self) -> (Counters, Counters) {
        let info = procfs::parse_meminfo(&read(&self.proc.join("meminfo")).unwrap_or_default());
        let cg = self.cgroup_dir();
        let limit = |file: &str| {
            cg.as_ref()
                .and_then(|d| read(&d.join(file)))
                .and_then(|t| procfs::parse_cgroup_limit(&t))
        };
        let memory = match (limit("memory.max"), limit("memory.current")) {
            (Some(total), Some(used)) => Counters {
                total,
                used,
                free: total.saturating_sub(used),
            },
            _ => Counters {
                total: info.total,
                used: info.total.saturating_sub(info.available),
                free: info.free,
            },
        };
        let swap = match (limit("memory.swap.max"), limit("memory.swap.current")) {
            (Some(total), Some(used)) => Counters {
                total,
                used,
                free: total.saturating_sub(used),
            },
            _ => Counters {
                total: info.swap_total,
                used: info.swap_total.saturating_sub(info.swap_free),
                free: info.swap_free,
            },
        };
        (memory, swap)
    }

    fn boot_info(&self) -> BootInfo {
        let efi = self.firmware.join("efi");
        if !efi.exists() {
            return BootInfo {
                mode: "legacy-bios".into(),
                secureboot: false,
            };
        }
        // The EFI variable holds 4 attribute bytes, then the value.
        let secureboot =
            std::fs::read(efi.join("efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"))
                .ok()
                .and_then(|v| v.get(4).copied())
                == Some(1);
        BootInfo {
            mode: "efi".into(),
            secureboot,
        }
    }

    fn root_storage(&self) -> Storage {
        match rustix::fs::statvfs(&self.root_fs) {
            Ok(st) => Storage {
                total: st.f_blocks.saturating_mul(st.f_frsize),
                used: st
                    .f_blocks
                    .saturating_sub(st.f_bfree)
                    .saturating_mul(st.f_frsize),
                avail: st.f_bavail.saturating_mul(st.f_frsize),
            },
            Err(_) => Storage::default(),
        }
    }

    /// Every figure, with the CPU shares measured between `before` and `after`.
    fn figures(&self, before: &CpuSample, after: &CpuSample) -> NodeFigures {
        let (cpu, wait) = self.cpu_shares(before, after);
        let (memory, swap) = self.memory_and_swap();
        let model = procfs::parse_cpuinfo(&read(&self.proc.join("cpuinfo")).unwrap_or_default());
        let uname = rustix::system::uname();
        let text = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
        let kernel = Kernel {
            sysname: text(uname.sysname()),
            release: text(uname.release()),
            version: text(uname.version()),
            machine: text(uname.machine()),
        };
        NodeFigures {
            boot_info: self.boot_info(),
            cpu,
            cpuinfo: CpuInfo {
                cpus: model.cpus,
                model: model.model,
                sockets: model.sockets,
            },
            kversion: format!("{} {} {}", kernel.sysname, kernel.release, kernel.version),
            current_kernel: kernel,
            loadavg: procfs::parse_loadavg(&read(&self.proc.join("loadavg")).unwrap_or_default()),
            memory,
            root: self.root_storage(),
            swap,
            uptime: procfs::parse_uptime(&read(&self.proc.join("uptime")).unwrap_or_default()),
            wait,
        }
    }
}

#[derive(Default)]
struct SamplerState {
    last: Option<(Instant, NodeFigures)>,
    cpu: Option<CpuSample>,
}

/// Takes samples on demand and serves each for [`MAX_AGE`].
pub struct Sampler {
    paths: HostPaths,
    state: tokio::sync::Mutex<SamplerState>,
}

impl Sampler {
    pub fn new(paths: HostPaths) -> Self {
        Self {
            paths,
            state: tokio::sync::Mutex::new(SamplerState::default()),
        }
    }

    /// The sampler of this process's host.
    pub fn global() -> &'static Sampler {
        static SAMPLER: OnceLock<Sampler> = OnceLock::new();
        SAMPLER.get_or_init(|| Sampler::new(HostPaths::default()))
    }

    /// The current figures (at most [`MAX_AGE`] old). The first call measures the CPU over a
    /// short window; later calls over the time since the previous sample.
    pub async fn figures(&self) -> NodeFigures {
        let mut state = self.state.lock().await;
        if let Some((at, figures)) = &state.last {
            if at.elapsed() < MAX_AGE {
                return figures.clone();
            }
        }
        let before = match state.cpu.take() {
            Some(sample) => sample,
            None => {
                let first = self.paths.cpu_sample();
                tokio::time::sleep(FIRST_WINDOW).await;
                first
            }
        };
        let after = self.paths.cpu_sample();
        let figures = self.paths.figures(&before, &after);
        state.cpu = Some(after);
        state.last = Some((Instant::now(), figures.clone()));
        figures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/proc` and cgroup tree: a pod limited to 1 GiB and 2 CPUs.
    fn fixture(dir: &Path, cgroup_limits: bool) -> HostPaths {
        let proc = dir.join("proc");
        std::fs::create_dir_all(proc.join("self")).unwrap();
        std::fs::write(proc.join("self/cgroup"), "0::/kubepods/pod1\n").unwrap();
        std::fs::write(
            proc.join("meminfo"),
            "MemTotal: 1000 kB\nMemFree: 300 kB\nMemAvailable: 600 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
        )
        .unwrap();
        std::fs::write(proc.join("stat"), "cpu  10 0 10 80 0 0 0 0 0 0\n").unwrap();
        std::fs::write(proc.join("loadavg"), "0.50 0.25 0.10 1/100 42\n").unwrap();
        std::fs::write(proc.join("uptime"), "123.9 456.0\n").unwrap();
        std::fs::write(
            proc.join("cpuinfo"),
            "processor : 0\nmodel name : Test CPU\nphysical id : 0\n",
        )
        .unwrap();
        let cg = dir.join("cgroup/kubepods/pod1");
        std::fs::create_dir_all(&cg).unwrap();
        if cgroup_limits {
            std::fs::write(cg.join("memory.max"), "1073741824\n").unwrap();
            std::fs::write(cg.join("memory.current"), "268435456\n").unwrap();
            std::fs::write(cg.join("cpu.max"), "200000 100000\n").unwrap();
            std::fs::write(cg.join("cpu.stat"), "usage_usec 1000\n").unwrap();
        }
        HostPaths {
            proc,
            cgroup: dir.join("cgroup"),
            firmware: dir.join("firmware"),
            root_fs: dir.to_path_buf(),
        }
    }

    #[test]
    fn figures_without_cgroup_limits_come_from_proc() {
        let dir = tempfile::tempdir().unwrap();
        let paths = fixture(dir.path(), false);
        let before = paths.cpu_sample();
        std::fs::write(paths.proc.join("stat"), "cpu  30 0 30 130 10 0 0 0 0 0\n").unwrap();
        let after = paths.cpu_sample();
        let f = paths.figures(&before, &after);
        assert_eq!(
            f.memory,
            Counters {
                total: 1000 * 1024,
                used: 400 * 1024,
                free: 300 * 1024
            }
        );
        assert_eq!(f.swap, Counters::default());
        // 100 ticks passed, 60 idle+iowait, 10 iowait.
        assert!((f.cpu - 0.4).abs() < 1e-9, "{}", f.cpu);
        assert!((f.wait - 0.1).abs() < 1e-9, "{}", f.wait);
        assert_eq!(f.loadavg, [0.5, 0.25, 0.1]);
        assert_eq!(f.uptime, 123);
        assert_eq!(f.cpuinfo.model, "Test CPU");
        assert_eq!(f.boot_info.mode, "legacy-bios");
        assert!(f.root.total > 0);
        assert!(f.kversion.starts_with(&f.current_kernel.sysname));
    }

    #[test]
    fn cgroup_limits_replace_machine_figures() {
        let dir = tempfile::tempdir().unwrap();
        let paths = fixture(dir.path(), true);
        let mut before = paths.cpu_sample();
        let cg = dir.path().join("cgroup/kubepods/pod1");
        std::fs::write(cg.join("cpu.stat"), "usage_usec 101000\n").unwrap();
        let mut after = paths.cpu_sample();
        // Pretend 100 ms passed: 0.1 s of CPU out of 2 CPUs × 0.1 s = 50 %.
        after.at = before.at + Duration::from_millis(100);
        before.cgroup_usage = Some(1000);
        let f = paths.figures(&before, &after);
        assert!((f.cpu - 0.5).abs() < 1e-6, "{}", f.cpu);
        assert_eq!(
            f.memory,
            Counters {
                total: 1 << 30,
                used: 1 << 28,
                free: (1 << 30) - (1 << 28)
            }
        );
    }

    #[tokio::test]
    async fn samples_are_served_for_max_age() {
        let dir = tempfile::tempdir().unwrap();
        let sampler = Sampler::new(fixture(dir.path(), false));
        let first = sampler.figures().await;
        std::fs::write(dir.path().join("proc/uptime"), "999.0 1.0\n").unwrap();
        assert_eq!(sampler.figures().await, first, "cached within MAX_AGE");
        assert_eq!(first.uptime, 123);
    }
}
