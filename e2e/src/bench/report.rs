//! Result types of `pbs-bench backup-restore` and their table rendering (JSON comes from
//! `serde`). Kept apart from the measuring code so the run logic stays short.

use serde::Serialize;

use super::median;

/// Whether a row is part of the local baseline or a measurement against the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseKind {
    Baseline,
    Server,
}

/// One measured phase of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub kind: PhaseKind,
    /// Logical (decoded) bytes processed.
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    /// This phase's MB/s divided by the baseline's MB/s of the same run.
    pub vs_baseline: f64,
    pub chunks_uploaded: Option<usize>,
    pub chunks_reused: Option<usize>,
    /// Encoded bytes sent in chunk upload bodies.
    pub bytes_sent: Option<u64>,
    /// Server `VmHWM` (KiB) right after this phase (it only grows).
    pub server_vm_hwm_kib: Option<u64>,
}

/// All phases of one run against one fresh server.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub run: usize,
    /// Throughput of the combined baseline (client CPU work then write+fsync).
    pub baseline_mb_per_s: f64,
    /// zstd-1 encoded size / input size of the benchmark data.
    pub compressed_ratio: f64,
    pub phases: Vec<Phase>,
    /// Server peak RSS (`VmHWM`, KiB) at the end of the run.
    pub server_peak_rss_kib: Option<u64>,
}

/// Everything `backup-restore` measured, with the context needed to read it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRestoreReport {
    pub image_bytes: u64,
    pub server_bin: String,
    pub temp_dir: String,
    pub filesystem: Option<String>,
    pub cpu_model: Option<String>,
    pub cpu_sha_ni: Option<bool>,
    pub cpus: usize,
    pub runs: Vec<Run>,
}

/// The table printed by default: per phase the median over runs of MB/s and of the
/// per-run ratio vs the baseline (ratios are always taken within one run).
pub fn render(r: &BackupRestoreReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "backup-restore: {} MiB image, {} run(s){}\n",
        r.image_bytes / (1024 * 1024),
        r.runs.len(),
        if r.runs.len() > 1 {
            " (medians shown)"
        } else {
            ""
        }
    ));
    out.push_str(&format!("server binary: {}\n", r.server_bin));
    out.push_str(&format!(
        "temp dir:      {} ({})\n",
        r.temp_dir,
        r.filesystem.as_deref().unwrap_or("filesystem unknown")
    ));
    out.push_str(&format!(
        "CPU:           {} x {} (sha_ni: {})\n",
        r.cpus,
        r.cpu_model.as_deref().unwrap_or("unknown"),
        r.cpu_sha_ni
            .map_or("unknown", |b| if b { "yes" } else { "no" })
    ));
    let Some(first) = r.runs.first() else {
        out.push_str("no runs\n");
        return out;
    };
    out.push_str(&format!(
        "data:          half random / half text, zstd-1 ratio {:.2}\n\n",
        first.compressed_ratio
    ));
    out.push_str(&format!(
        "{:<46} {:>8} {:>9} {:>9} {:>9} {:>8} {:>11}\n",
        "phase", "seconds", "MB/s", "x base", "uploaded", "reused", "server HWM"
    ));
    out.push_str(&format!("{}\n", "-".repeat(106)));
    for (i, phase) in first.phases.iter().enumerate() {
        let column =
            |f: fn(&Phase) -> f64| median(r.runs.iter().map(|run| f(&run.phases[i])).collect());
        let opt = |v: Option<usize>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
        // peak memory: the largest value any run saw after this phase
        let hwm = r
            .runs
            .iter()
            .filter_map(|run| run.phases[i].server_vm_hwm_kib)
            .max()
            .map_or_else(
                || "-".to_string(),
                |k| format!("{:.0} MiB", k as f64 / 1024.0),
            );
        out.push_str(&format!(
            "{:<46} {:>8.2} {:>9.1} {:>8.2}x {:>9} {:>8} {:>11}\n",
            phase.name,
            column(|p| p.seconds),
            column(|p| p.mb_per_s),
            column(|p| p.vs_baseline),
            opt(phase.chunks_uploaded),
            opt(phase.chunks_reused),
            hwm,
        ));
    }
    let peaks: Vec<f64> = r
        .runs
        .iter()
        .filter_map(|run| run.server_peak_rss_kib)
        .map(|k| k as f64 / 1024.0)
        .collect();
    let peak = peaks.iter().copied().fold(f64::NAN, f64::max);
    out.push_str(&format!(
        "\nserver peak RSS (VmHWM): {}\n",
        if peak.is_nan() {
            "unknown".to_string()
        } else {
            format!("{peak:.0} MiB")
        }
    ));
    out.push_str(
        "MB/s = 10^6 decoded bytes per second; x base = phase MB/s / baseline MB/s in the same run;\n\
         baseline = client CPU work (SHA-256 + zstd-1 per 4 MiB chunk) followed by write+fsync.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, mb: f64, hwm: Option<u64>) -> Phase {
        Phase {
            name: name.into(),
            kind: PhaseKind::Server,
            bytes: 1,
            seconds: 1.0,
            mb_per_s: mb,
            vs_baseline: mb / 100.0,
            chunks_uploaded: Some(3),
            chunks_reused: None,
            bytes_sent: None,
            server_vm_hwm_kib: hwm,
        }
    }

    #[test]
    fn table_shows_medians_and_peak() {
        let run = |n: usize, mb: f64, peak: u64| Run {
            run: n,
            baseline_mb_per_s: 100.0,
            compressed_ratio: 0.6,
            phases: vec![phase("full backup", mb, Some(peak))],
            server_peak_rss_kib: Some(peak),
        };
        let report = BackupRestoreReport {
            image_bytes: 8 << 20,
            server_bin: "srv".into(),
            temp_dir: "/tmp/x".into(),
            filesystem: Some("ext4 on /".into()),
            cpu_model: None,
            cpu_sha_ni: Some(true),
            cpus: 2,
            runs: vec![run(0, 50.0, 2048), run(1, 70.0, 4096), run(2, 60.0, 1024)],
        };
        let text = render(&report);
        assert!(text.contains("60.0"), "{text}");
        assert!(text.contains("0.60x"), "{text}");
        assert!(text.contains("server peak RSS (VmHWM): 4 MiB"), "{text}");
        assert!(text.contains("(medians shown)"), "{text}");
    }
}
