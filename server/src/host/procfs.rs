//! Parsers for the kernel files the node status reads (`/proc/...` and cgroup v2 files).
//! Pure functions over file contents, so they are tested without a particular machine.

use std::collections::BTreeSet;

/// Memory figures of `/proc/meminfo` (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// `/proc/meminfo` (values in kB).
pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut info = MemInfo::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let kib: u64 = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let bytes = kib.saturating_mul(1024);
        match key.trim() {
            "MemTotal" => info.total = bytes,
            "MemFree" => info.free = bytes,
            "MemAvailable" => info.available = bytes,
            "SwapTotal" => info.swap_total = bytes,
            "SwapFree" => info.swap_free = bytes,
            _ => {}
        }
    }
    info
}

/// The aggregate `cpu` line of `/proc/stat` (clock ticks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + idle + iowait + irq + softirq + steal.
    pub total: u64,
    /// idle + iowait.
    pub idle: u64,
    pub iowait: u64,
}

pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    if v.len() < 5 {
        return None;
    }
    Some(CpuTimes {
        total: v.iter().sum(),
        idle: v[3] + v[4],
        iowait: v[4],
    })
}

/// Busy and iowait shares (0..1) between two `/proc/stat` readings.
pub fn cpu_shares(before: &CpuTimes, after: &CpuTimes) -> (f64, f64) {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return (0.0, 0.0);
    }
    let idle = after.idle.saturating_sub(before.idle);
    let wait = after.iowait.saturating_sub(before.iowait);
    (
        total.saturating_sub(idle) as f64 / total as f64,
        wait as f64 / total as f64,
    )
}

/// The three averages of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (slot, field) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = field.parse().unwrap_or(0.0);
    }
    out
}

/// Seconds since boot from `/proc/uptime`.
pub fn parse_uptime(text: &str) -> u64 {
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// What `/proc/cpuinfo` says about the processors the kernel shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuModel {
    pub cpus: u64,
    pub model: String,
    pub sockets: u64,
}

pub fn parse_cpuinfo(text: &str) -> CpuModel {
    let mut cpus = 0;
    let mut model = None;
    let mut sockets = BTreeSet::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "processor" => cpus += 1,
            "model name" if model.is_none() => model = Some(value.to_string()),
            "physical id" => {
                sockets.insert(value.to_string());
            }
            _ => {}
        }
    }
    CpuModel {
        cpus,
        model: model.unwrap_or_else(|| "unknown".to_string()),
        sockets: (sockets.len() as u64).max(1),
    }
}

/// A cgroup v2 limit file (`memory.max`, `memory.swap.max`): a number, or `max` = none.
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `cpu.max` (`<quota> <period>` in µs, or `max <period>`): the CPUs the quota allows.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_whitespace();
    let quota: f64 = fields.next()?.parse().ok()?;
    let period: f64 = fields.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// `usage_usec` of `cpu.stat`.
pub fn parse_cpu_stat_usage(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24731408 kB\nMemFree:         3762488 kB\n\
                    MemAvailable:   22228900 kB\nBuffers: 1 kB\nSwapTotal:  1024 kB\n\
                    SwapFree:  512 kB\n";
        let m = parse_meminfo(text);
        assert_eq!(m.total, 24731408 * 1024);
        assert_eq!(m.free, 3762488 * 1024);
        assert_eq!(m.available, 22228900 * 1024);
        assert_eq!((m.swap_total, m.swap_free), (1024 * 1024, 512 * 1024));
    }

    #[test]
    fn proc_stat_and_shares() {
        let a = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                total: 1000,
                idle: 850,
                iowait: 50
            }
        );
        let b = parse_proc_stat("cpu  200 0 100 1600 100 0 0 0 0 0\n").unwrap();
        let (busy, wait) = cpu_shares(&a, &b);
        assert!((busy - 0.15).abs() < 1e-9, "{busy}");
        assert!((wait - 0.05).abs() < 1e-9, "{wait}");
        assert_eq!(cpu_shares(&a, &a), (0.0, 0.0));
        assert!(parse_proc_stat("intr 1 2").is_none());
    }

    #[test]
    fn loadavg_uptime_cpuinfo() {
        assert_eq!(
            parse_loadavg("0.67 1.60 2.11 3/456 7890\n"),
            [0.67, 1.6, 2.11]
        );
        assert_eq!(parse_uptime("6915.42 12000.01\n"), 6915);
        let info = parse_cpuinfo(
            "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nphysical id\t: 0\n\n\
             processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\nphysical id\t: 0\n",
        );
        assert_eq!(
            info,
            CpuModel {
                cpus: 2,
                model: "Intel(R) Xeon(R) Processor".into(),
                sockets: 1
            }
        );
        assert_eq!(parse_cpuinfo("processor : 0\n").sockets, 1);
    }

    #[test]
    fn cgroup_files() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(
            parse_cpu_stat_usage("usage_usec 123456\nuser_usec 1\n"),
            Some(123456)
        );
    }
}
