//! `pbs-bench`: benchmarks of pbs-cloud-server and its protocol test client.
//!
//! Build and run with the release profile:
//! `cargo build --release -p pbs-cloud-server -p pbs-cloud-e2e && target/release/pbs-bench …`.
//! Every benchmark measures a baseline in the same run and prints ratios, because the
//! machines are shared and absolute figures are noisy.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pbs_cloud_e2e::bench::{
    auth_cost, backup_restore, gc, known, lock, memory, placement, report, s3_ingest, sha, sync,
};

#[derive(Parser)]
#[command(
    name = "pbs-bench",
    about = "Benchmarks for pbs-cloud-server (release builds only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cost of one credential check by kind (failed logins of known and unknown users, wrong
    /// and cached token secrets) on the server's AuthService and its bounded hash pool.
    AuthCost {
        /// Rounds; each runs every kind once, interleaved.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// SHA-256 throughput: ring vs the sha2 crate vs the server's format::sha256.
    Sha256 {
        /// Buffer size in MiB (hashed in 4 MiB chunks).
        #[arg(long, default_value_t = 128)]
        mib: usize,
        /// Rounds per implementation; the best round counts.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Backup and restore throughput of the test client against a release server.
    BackupRestore {
        /// Image size in MiB.
        #[arg(long, default_value_t = 1024)]
        image_mib: usize,
        /// Independent runs, each on a fresh server; the table shows medians.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Server binary; default: pbs-cloud-server next to this binary.
        #[arg(long, env = "PBS_CLOUD_SERVER_BIN")]
        server_bin: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Server memory (VmRSS after each step, VmHWM peak, idle RSS) for backup, restore,
    /// backup, restore, GC of 1 GiB images; with `--parallel N`, N backups at once.
    Memory {
        /// Image size in MiB.
        #[arg(long, default_value_t = 1024)]
        image_mib: usize,
        /// Run N backups of different images at once instead of the sequence.
        #[arg(long)]
        parallel: Option<usize>,
        /// Seconds to watch the idle server after the work (VmRSS every 5 s).
        #[arg(long, default_value_t = 60)]
        idle_secs: u64,
        /// Server binary; default: pbs-cloud-server next to this binary.
        #[arg(long, env = "PBS_CLOUD_SERVER_BIN")]
        server_bin: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pull and push of an image between server processes (A → B → C) with the client's own
    /// backup and restore of it as the baseline; then an incremental round.
    Sync {
        /// Image size in MiB.
        #[arg(long, default_value_t = 1024)]
        image_mib: usize,
        /// Percentage of the image's chunks the second snapshot changes.
        #[arg(long, default_value_t = 1.0)]
        change_percent: f64,
        /// Server binary; default: pbs-cloud-server next to this binary.
        #[arg(long, env = "PBS_CLOUD_SERVER_BIN")]
        server_bin: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ingest and restore time on an S3 datastore vs the local one, and S3 requests per GiB.
    /// The S3 server comes from PBS_TEST_S3_* (`eval "$(e2e/s3/start-ceph-rgw.sh)"`).
    S3Ingest {
        /// Image size in MiB.
        #[arg(long, default_value_t = 512)]
        image_mib: usize,
        /// Server binary; default: pbs-cloud-server next to this binary.
        #[arg(long, env = "PBS_CLOUD_SERVER_BIN")]
        server_bin: Option<PathBuf>,
        /// Extra `key = value` lines for the `[datastore.s3]` table (repeatable), e.g.
        /// `--s3-option "max_concurrency = 64"`.
        #[arg(long = "s3-option")]
        s3_options: Vec<String>,
        /// Rounds, each with new data and the other backend first; ratios are the median.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// CPUs (e.g. `1`) for the S3 store's processes (radosgw, ceph-osd, ...); the
        /// benchmark and its servers get the others. Models a store on its own machine.
        #[arg(long)]
        store_cpus: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Object Lock requests per daily incremental backup under a retention lock, against
    /// the S3 Object Lock bucket (PBS_TEST_S3_LOCK_BUCKET), vs extending every chunk daily.
    LockExtension {
        #[arg(long, default_value_t = 1024)]
        image_mib: usize,
        #[arg(long, default_value_t = 4)]
        chunk_mib: usize,
        #[arg(long, default_value_t = 60)]
        days: u32,
        /// Chunks rewritten per day, in percent of the image.
        #[arg(long, default_value_t = 3.0)]
        change_percent: f64,
        #[arg(long, default_value_t = 30)]
        lock_days: u64,
        #[arg(long, default_value_t = 10)]
        generation_days: u64,
        /// `governance` (removed afterwards with bypass) or `compliance` (stays until due).
        #[arg(long, default_value = "governance")]
        mode: String,
        /// Keep the objects in the bucket.
        #[arg(long)]
        keep: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Known-chunk set at N synthetic digests: the old in-memory HashSet vs the memory-mapped
    /// local file (load time, lookups, RSS split into heap and page cache, peak), each variant
    /// in a child process of its own.
    Known {
        /// Set sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
        digests: Vec<u64>,
        /// Parent directory of the synthetic index and local files (640 MB at 10 M).
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One variant of `known`, run by it in a child process; prints JSON.
    #[command(hide = true)]
    KnownProbe {
        #[arg(long)]
        variant: String,
        #[arg(long)]
        digests: u64,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Garbage collection of a synthetic datastore of N small chunks (half referenced): mark
    /// and sweep times, S3 requests, and the index cache's effect on a second run. On the local
    /// backend a server process starts on the datastore first (start-up time, the usage
    /// recount a datastore without counters gets, peak RSS).
    Gc {
        /// Chunks to create.
        #[arg(long, default_value_t = 100_000)]
        chunks: usize,
        /// Server binary for the start-up step; default: pbs-cloud-server next to this binary.
        #[arg(long, env = "PBS_CLOUD_SERVER_BIN")]
        server_bin: Option<PathBuf>,
        /// `local` (a new directory under --dir) or `s3` (PBS_TEST_S3_*, a fresh prefix).
        #[arg(long, default_value = "local")]
        backend: String,
        /// Parent directory of the local datastore.
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        /// Writes in flight while creating the datastore.
        #[arg(long, default_value_t = 64)]
        parallelism: usize,
        /// Keep the datastore afterwards.
        #[arg(long)]
        keep: bool,
        /// Marked digests GC holds in memory before spilling to temporary files (server
        /// default: 1048576).
        #[arg(long)]
        mark_budget: Option<usize>,
        /// Only remove a datastore kept earlier (an S3 prefix such as `t/bench-gc-…`).
        #[arg(long)]
        remove_prefix: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pbs-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: pbs-bench is a debug build; figures are meaningless (use --release)");
    }
    match cli.command {
        Command::AuthCost { rounds, json } => {
            let r = block_on(auth_cost::run(rounds))??;
            print(json, &r, auth_cost::render)
        }
        Command::Gc {
            chunks,
            server_bin,
            backend,
            dir,
            parallelism,
            keep,
            mark_budget,
            remove_prefix,
            json,
        } => {
            if let Some(prefix) = remove_prefix {
                let target = s3_ingest::S3Target::from_env()?;
                let removed = block_on(gc::remove_s3_prefix(&target, &prefix))??;
                println!("removed {removed} objects under {prefix}/");
                return Ok(());
            }
            let target = match backend.as_str() {
                "local" => {
                    release_server_bin(server_bin)?;
                    gc::Target::Local(dir)
                }
                "s3" => gc::Target::S3(s3_ingest::S3Target::from_env()?),
                other => anyhow::bail!("--backend must be local or s3, not '{other}'"),
            };
            let opts = gc::Options {
                chunks,
                target,
                parallelism,
                keep,
                mark_budget,
            };
            let r = block_on(gc::run(&opts))??;
            print(json, &r, gc::render)
        }
        Command::Known { digests, dir, json } => {
            let exe = std::env::current_exe().context("find pbs-bench itself")?;
            let r = known::run(&exe, &dir, &digests)?;
            print(json, &r, known::render)
        }
        Command::KnownProbe {
            variant,
            digests,
            dir,
        } => {
            let r = known::probe(&variant, &dir, digests)?;
            print(true, &r, |_| String::new())
        }
        Command::Sha256 { mib, rounds, json } => {
            let r = sha::run(mib, rounds)?;
            print(json, &r, sha::render)
        }
        Command::BackupRestore {
            image_mib,
            runs,
            server_bin,
            json,
        } => {
            let server_bin = release_server_bin(server_bin)?;
            let opts = backup_restore::Options {
                image_mib,
                runs,
                server_bin,
            };
            let r = block_on(backup_restore::run(&opts))??;
            print(json, &r, report::render)
        }
        Command::Memory {
            image_mib,
            parallel,
            idle_secs,
            server_bin,
            json,
        } => {
            let server_bin = release_server_bin(server_bin)?;
            let opts = memory::Options {
                image_mib,
                parallel,
                idle_secs,
                server_bin,
            };
            let r = block_on(memory::run(&opts))??;
            print(json, &r, memory::render)
        }
        Command::Sync {
            image_mib,
            change_percent,
            server_bin,
            json,
        } => {
            let server_bin = release_server_bin(server_bin)?;
            let opts = sync::Options {
                image_mib,
                change_percent,
                server_bin,
            };
            let r = block_on(sync::run(&opts))??;
            print(json, &r, sync::render)
        }
        Command::S3Ingest {
            image_mib,
            server_bin,
            s3_options,
            rounds,
            store_cpus,
            json,
        } => {
            let server_bin = release_server_bin(server_bin)?;
            // Before the runtime and the servers start: they inherit this thread's CPU set.
            let placement = match store_cpus {
                Some(list) => Some(placement::StorePlacement::apply(
                    &placement::parse_cpu_list(&list)?,
                    placement::DEFAULT_STORE_PROCESSES,
                )?),
                None => None,
            };
            let opts = s3_ingest::Options {
                image_mib,
                server_bin,
                s3: s3_ingest::S3Target::from_env()?,
                s3_extra: s3_options.join("\n"),
                rounds,
                placement: placement.as_ref().map(|p| p.describe().to_string()),
            };
            let r = block_on(s3_ingest::run(&opts))??;
            print(json, &r, s3_ingest::render)
        }
        Command::LockExtension {
            image_mib,
            chunk_mib,
            days,
            change_percent,
            lock_days,
            generation_days,
            mode,
            keep,
            json,
        } => {
            let mode = pbs_cloud_server::backend::lock::LockMode::parse(&mode)
                .context("--mode must be governance or compliance")?;
            let mut s3 = s3_ingest::S3Target::from_env()?;
            s3.bucket = std::env::var("PBS_TEST_S3_LOCK_BUCKET").context(
                "PBS_TEST_S3_LOCK_BUCKET is not set; start the test S3 server with \
                 `eval \"$(e2e/s3/start-ceph-rgw.sh)\"`",
            )?;
            let opts = lock::Options {
                s3,
                image_mib,
                chunk_mib,
                days,
                change_percent,
                lock_days,
                generation_days,
                mode,
                keep,
            };
            let r = block_on(lock::run(&opts))??;
            print(json, &r, lock::render)
        }
    }
}

/// Runs `work` to completion on a new multi-threaded runtime (built per command, after any
/// CPU placement, which its threads inherit).
fn block_on<F: std::future::Future>(work: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("build tokio runtime")?;
    Ok(runtime.block_on(work))
}

/// The server binary (warning on debug builds), exported as `PBS_CLOUD_SERVER_BIN` for
/// [`pbs_cloud_e2e::TestServer`]; call before the runtime starts any thread.
fn release_server_bin(given: Option<PathBuf>) -> Result<PathBuf> {
    let server_bin = resolve_server_bin(given)?;
    if server_bin.components().any(|c| c.as_os_str() == "debug") {
        eprintln!(
            "warning: server binary {} looks like a debug build",
            server_bin.display()
        );
    }
    std::env::set_var("PBS_CLOUD_SERVER_BIN", &server_bin);
    Ok(server_bin)
}

/// `--server-bin`/`PBS_CLOUD_SERVER_BIN`, else the `pbs-cloud-server` built next to this
/// binary (same profile), else the workspace default of [`pbs_cloud_e2e::server`].
fn resolve_server_bin(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("pbs-cloud-server")))
        .filter(|p| p.is_file());
    match sibling {
        Some(p) => Ok(p),
        None => pbs_cloud_e2e::server::server_binary().context("find pbs-cloud-server"),
    }
}

fn print<T: serde::Serialize>(json: bool, value: &T, render: fn(&T) -> String) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).context("encode JSON report")?
        );
    } else {
        print!("{}", render(value));
    }
    Ok(())
}
