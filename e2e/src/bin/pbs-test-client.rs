//! Command-line stand-in for `proxmox-backup-client` (humans and benchmarks).
//! Reads PBS_REPOSITORY, PBS_PASSWORD and PBS_FINGERPRINT like the stock client.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use pbs_cloud_e2e::backup::{BackupParams, BackupSession, Crypt, UploadOptions};
use pbs_cloud_e2e::reader::{server_name, ReaderParams, ReaderSession};
use pbs_cloud_e2e::timefmt::{epoch_to_rfc3339, parse_snapshot};
use pbs_cloud_e2e::{pxar, CryptConfig, PbsClient, Repository};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "pbs-test-client", about = "PBS protocol test client")]
struct Cli {
    /// Repository `[[auth-id@]host[:port]:]datastore`.
    #[arg(long, env = "PBS_REPOSITORY", global = true)]
    repository: Option<String>,
    #[arg(long, env = "PBS_PASSWORD", global = true, hide_env_values = true)]
    password: Option<String>,
    #[arg(long, env = "PBS_FINGERPRINT", global = true)]
    fingerprint: Option<String>,
    /// Namespace (`a/b`), omitted for root.
    #[arg(long, global = true)]
    ns: Option<String>,
    /// File holding a 32-byte encryption key as 64 hex characters.
    #[arg(long, global = true)]
    keyfile: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Encode a directory into pxar files without a server: `OUT.pxar` and `OUT.pcat1`
    /// (legacy), or `OUT.mpxar` and `OUT.ppxar` with `--split`.
    PxarEncode {
        dir: PathBuf,
        out: PathBuf,
        #[arg(long)]
        split: bool,
    },
    /// Back up `label.pxar:dir`, `label.img:file`, `label.conf:file` specs.
    Backup {
        specs: Vec<String>,
        #[arg(long, default_value = "host")]
        backup_type: String,
        #[arg(long)]
        backup_id: Option<String>,
        #[arg(long)]
        backup_time: Option<i64>,
        /// Average dynamic chunk size in KiB.
        #[arg(long, default_value_t = 4096)]
        chunk_size: usize,
        /// none | encrypt | sign-only (needs --keyfile unless none).
        #[arg(long, default_value = "none")]
        crypt_mode: String,
    },
    /// Restore `<type/id/time|type/id> <archive> <target|->`.
    Restore {
        snapshot: String,
        archive: String,
        target: String,
    },
    /// List backup groups.
    List,
    /// List snapshots (optionally of one group `type/id`).
    Snapshots { group: Option<String> },
    /// List files of a snapshot.
    Files { snapshot: String },
    Notes {
        #[command(subcommand)]
        op: NotesOp,
    },
    Protected {
        #[command(subcommand)]
        op: ProtectedOp,
    },
    /// Prune a group `type/id`.
    Prune {
        group: String,
        #[arg(long)]
        keep_last: Option<u64>,
        #[arg(long)]
        keep_hourly: Option<u64>,
        #[arg(long)]
        keep_daily: Option<u64>,
        #[arg(long)]
        keep_weekly: Option<u64>,
        #[arg(long)]
        keep_monthly: Option<u64>,
        #[arg(long)]
        keep_yearly: Option<u64>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Forget one snapshot.
    Forget { snapshot: String },
    /// Datastore usage.
    Status,
    /// Start garbage collection (prints the UPID).
    Gc,
    Namespace {
        #[command(subcommand)]
        op: NsOp,
    },
    /// Upload a log file as `client.log.blob` of a snapshot.
    UploadLog { snapshot: String, file: PathBuf },
}

#[derive(Subcommand)]
enum NotesOp {
    Show { snapshot: String },
    Update { snapshot: String, notes: String },
}

#[derive(Subcommand)]
enum ProtectedOp {
    Show { snapshot: String },
    Update { snapshot: String, protected: bool },
}

#[derive(Subcommand)]
enum NsOp {
    List,
    Create {
        name: String,
        #[arg(long, default_value = "")]
        parent: String,
    },
}

struct Ctx {
    repo: Repository,
    client: PbsClient,
    ns: Option<String>,
    key: Option<CryptConfig>,
}

impl Ctx {
    fn store_path(&self, rest: &str) -> String {
        format!("admin/datastore/{}/{rest}", self.repo.store)
    }

    fn snap_params(&self, snapshot: &str) -> Result<Value> {
        let (t, id, time) = parse_snapshot(snapshot)?;
        let mut v = json!({ "backup-type": t, "backup-id": id, "backup-time": time });
        if let Some(ns) = self.ns.as_ref().filter(|n| !n.is_empty()) {
            v["ns"] = json!(ns);
        }
        Ok(v)
    }

    fn ns_params(&self) -> Value {
        match self.ns.as_ref().filter(|n| !n.is_empty()) {
            Some(ns) => json!({ "ns": ns }),
            None => json!({}),
        }
    }
}

fn print(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

fn split_group(group: &str) -> Result<(String, String)> {
    group
        .split_once('/')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| anyhow!("invalid group '{group}', expected type/id"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::PxarEncode { dir, out, split } = &cli.cmd {
        return pxar_encode(dir, out, *split);
    }
    let repo = Repository::parse(
        cli.repository
            .as_deref()
            .context("PBS_REPOSITORY or --repository required")?,
    )?;
    let fp = cli
        .fingerprint
        .as_deref()
        .context("PBS_FINGERPRINT or --fingerprint required")?;
    let client = PbsClient::connect(&repo.host, repo.port, fp).await?;
    let password = cli.password.clone().context("PBS_PASSWORD required")?;
    let client = if repo.is_token() {
        client.with_token(&repo.auth_id, &password)
    } else {
        client.login(&repo.auth_id, &password).await?;
        client
    };
    let key = match &cli.keyfile {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("read key file {}", p.display()))?;
            let raw = hex::decode(text.trim()).context("key file must hold 64 hex characters")?;
            let arr: [u8; 32] = raw
                .try_into()
                .map_err(|_| anyhow!("key must be 32 bytes"))?;
            Some(CryptConfig::new(arr))
        }
        None => None,
    };
    let ctx = Ctx {
        repo,
        client,
        ns: cli.ns.clone(),
        key,
    };
    run(&ctx, cli.cmd).await
}

/// Writes the archive files of a directory (for inspecting the encoder's output).
fn pxar_encode(dir: &std::path::Path, out: &std::path::Path, split: bool) -> Result<()> {
    let enc = pxar::encode_tree(dir, pxar::EncodeOptions { split }, None)?;
    let with = |ext: &str| {
        let mut p = out.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    if split {
        let payload = enc
            .payload
            .as_ref()
            .and_then(|p| p.data_only())
            .context("payload stream")?;
        std::fs::write(with(".mpxar"), &enc.archive)?;
        std::fs::write(with(".ppxar"), payload)?;
    } else {
        let mut w = pxar::CatalogWriter::default();
        let mut catalog = w.start();
        catalog.extend(w.add_archive("root.pxar.didx", &enc.catalog));
        catalog.extend(w.finish());
        std::fs::write(with(".pxar"), &enc.archive)?;
        std::fs::write(with(".pcat1"), catalog)?;
    }
    Ok(())
}

async fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::PxarEncode { dir, out, split } => pxar_encode(&dir, &out, split),
        Cmd::Backup {
            specs,
            backup_type,
            backup_id,
            backup_time,
            chunk_size,
            crypt_mode,
        } => {
            backup(
                ctx,
                specs,
                backup_type,
                backup_id,
                backup_time,
                chunk_size,
                &crypt_mode,
            )
            .await
        }
        Cmd::Restore {
            snapshot,
            archive,
            target,
        } => restore(ctx, &snapshot, &archive, &target).await,
        Cmd::List => {
            print(
                &ctx.client
                    .get(&ctx.store_path("groups"), Some(&ctx.ns_params()))
                    .await?,
            );
            Ok(())
        }
        Cmd::Snapshots { group } => {
            let mut p = ctx.ns_params();
            if let Some(g) = group {
                let (t, id) = split_group(&g)?;
                p["backup-type"] = json!(t);
                p["backup-id"] = json!(id);
            }
            print(
                &ctx.client
                    .get(&ctx.store_path("snapshots"), Some(&p))
                    .await?,
            );
            Ok(())
        }
        Cmd::Files { snapshot } => {
            print(
                &ctx.client
                    .get(&ctx.store_path("files"), Some(&ctx.snap_params(&snapshot)?))
                    .await?,
            );
            Ok(())
        }
        Cmd::Notes { op } => {
            match op {
                NotesOp::Show { snapshot } => {
                    let v = ctx
                        .client
                        .get(&ctx.store_path("notes"), Some(&ctx.snap_params(&snapshot)?))
                        .await?;
                    println!("{}", v.as_str().unwrap_or_default());
                }
                NotesOp::Update { snapshot, notes } => {
                    let mut p = ctx.snap_params(&snapshot)?;
                    p["notes"] = json!(notes);
                    ctx.client.put(&ctx.store_path("notes"), Some(&p)).await?;
                }
            }
            Ok(())
        }
        Cmd::Protected { op } => {
            match op {
                ProtectedOp::Show { snapshot } => print(
                    &ctx.client
                        .get(
                            &ctx.store_path("protected"),
                            Some(&ctx.snap_params(&snapshot)?),
                        )
                        .await?,
                ),
                ProtectedOp::Update {
                    snapshot,
                    protected,
                } => {
                    let mut p = ctx.snap_params(&snapshot)?;
                    p["protected"] = json!(protected);
                    ctx.client
                        .put(&ctx.store_path("protected"), Some(&p))
                        .await?;
                }
            }
            Ok(())
        }
        Cmd::Prune {
            group,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            dry_run,
        } => {
            let (t, id) = split_group(&group)?;
            let mut p = ctx.ns_params();
            p["backup-type"] = json!(t);
            p["backup-id"] = json!(id);
            for (k, v) in [
                ("keep-last", keep_last),
                ("keep-hourly", keep_hourly),
                ("keep-daily", keep_daily),
                ("keep-weekly", keep_weekly),
                ("keep-monthly", keep_monthly),
                ("keep-yearly", keep_yearly),
            ] {
                if let Some(v) = v {
                    p[k] = json!(v);
                }
            }
            if dry_run {
                p["dry-run"] = json!(true);
            }
            print(&ctx.client.post(&ctx.store_path("prune"), Some(&p)).await?);
            Ok(())
        }
        Cmd::Forget { snapshot } => {
            ctx.client
                .delete(
                    &ctx.store_path("snapshots"),
                    Some(&ctx.snap_params(&snapshot)?),
                )
                .await?;
            Ok(())
        }
        Cmd::Status => {
            print(&ctx.client.get(&ctx.store_path("status"), None).await?);
            Ok(())
        }
        Cmd::Gc => {
            print(&ctx.client.post(&ctx.store_path("gc"), None).await?);
            Ok(())
        }
        Cmd::Namespace { op } => {
            match op {
                NsOp::List => print(&ctx.client.get(&ctx.store_path("namespace"), None).await?),
                NsOp::Create { name, parent } => {
                    let p = json!({ "name": name, "parent": parent });
                    print(
                        &ctx.client
                            .post(&ctx.store_path("namespace"), Some(&p))
                            .await?,
                    )
                }
            }
            Ok(())
        }
        Cmd::UploadLog { snapshot, file } => {
            let data = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let blob = match &ctx.key {
                Some(k) => k.encrypt_blob(&data, true)?,
                None => pbs_cloud_e2e::wire::encode_plain_blob(&data, true),
            };
            let p = ctx.snap_params(&snapshot)?;
            ctx.client
                .upload(&ctx.store_path("upload-backup-log"), Some(&p), blob)
                .await?;
            Ok(())
        }
    }
}

async fn backup(
    ctx: &Ctx,
    specs: Vec<String>,
    backup_type: String,
    backup_id: Option<String>,
    backup_time: Option<i64>,
    chunk_size_kib: usize,
    crypt_mode: &str,
) -> Result<()> {
    if specs.is_empty() {
        bail!("no backup specs given");
    }
    let id = match backup_id {
        Some(id) => id,
        None => std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into()),
    };
    let time = match backup_time {
        Some(t) => t,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64,
    };
    let mut params = BackupParams::new(&ctx.repo.store, &backup_type, &id, time);
    params.ns = ctx.ns.clone();
    params.crypt = match (crypt_mode, &ctx.key) {
        ("none", _) => Crypt::None,
        ("encrypt", Some(k)) => Crypt::Encrypt(k.clone()),
        ("sign-only", Some(k)) => Crypt::SignOnly(k.clone()),
        (m, _) => bail!("crypt mode '{m}' needs --keyfile (modes: none, encrypt, sign-only)"),
    };
    let opts = UploadOptions {
        avg_chunk_size: chunk_size_kib * 1024,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let mut session = BackupSession::start(&ctx.client, params).await?;
    for spec in &specs {
        let (label, path) = spec
            .split_once(':')
            .ok_or_else(|| anyhow!("invalid spec '{spec}', expected label.ext:path"))?;
        let stats = if label.ends_with(".pxar") {
            session
                .upload_pxar_dir(label, std::path::Path::new(path), &opts)
                .await?
        } else if label.ends_with(".img") {
            let data = std::fs::read(path).with_context(|| format!("read {path}"))?;
            session.upload_fixed_image(label, &data, &opts).await?
        } else {
            let data = std::fs::read(path).with_context(|| format!("read {path}"))?;
            session.upload_blob(label, &data).await?
        };
        eprintln!(
            "{}: {} bytes, {} chunks ({} uploaded, {} reused), {} bytes sent",
            stats.name,
            stats.size,
            stats.chunks.chunk_count,
            stats.chunks.chunks_uploaded,
            stats.chunks.chunks_reused,
            stats.chunks.bytes_sent
        );
    }
    session.finish().await?;
    eprintln!(
        "snapshot {backup_type}/{id}/{} done in {:.2?}",
        epoch_to_rfc3339(time),
        started.elapsed()
    );
    Ok(())
}

async fn restore(ctx: &Ctx, snapshot: &str, archive: &str, target: &str) -> Result<()> {
    let (t, id, time) = if snapshot.matches('/').count() == 1 {
        let (t, id) = split_group(snapshot)?;
        let mut p = ctx.ns_params();
        p["backup-type"] = json!(t);
        p["backup-id"] = json!(id);
        let list = ctx
            .client
            .get(&ctx.store_path("snapshots"), Some(&p))
            .await?;
        let newest = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["backup-time"].as_i64())
            .max()
            .ok_or_else(|| anyhow!("group {snapshot} has no snapshots"))?;
        (t, id, newest)
    } else {
        parse_snapshot(snapshot)?
    };
    let mut params = ReaderParams::new(&ctx.repo.store, &t, &id, time);
    params.ns = ctx.ns.clone();
    let reader = ReaderSession::open(&ctx.client, params, ctx.key.clone()).await?;
    let name = server_name(archive);
    if name == "index.json.blob" {
        let m = reader.manifest().await?;
        let text = serde_json::to_string_pretty(&m)?;
        return write_out(target, text.as_bytes());
    }
    if name.ends_with(".pxar.didx") || name.ends_with(".mpxar.didx") {
        if target == "-" {
            bail!("pxar archives restore into a directory");
        }
        reader
            .restore_pxar_dir(&name, std::path::Path::new(target))
            .await?;
        return Ok(());
    }
    let data = reader.restore_archive(&name).await?;
    write_out(target, &data)
}

fn write_out(target: &str, data: &[u8]) -> Result<()> {
    if target == "-" {
        use std::io::Write;
        std::io::stdout().write_all(data)?;
        Ok(())
    } else {
        std::fs::write(target, data).with_context(|| format!("write {target}"))
    }
}
