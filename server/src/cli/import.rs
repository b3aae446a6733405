//! `pbs-cloud-server import`: copy a datastore directory in PBS's local layout into a
//! configured datastore (usually on S3), resumable and verified.
//!
//! * The source is only read. The target is opened as a [`Datastore`] under a holder id of
//!   its own, so the import refuses to run while a server writes the datastore, and chunks go
//!   through the normal deduplicating insert (only-if-absent, known-chunk set updated).
//! * Every chunk is checked before it is copied: blob CRC, and for plain chunks the digest
//!   recomputed from the decoded data. Chunks the target already knows are not read at all.
//! * Per snapshot: blobs CRC-checked, indexes parsed and every referenced chunk required to be
//!   present; then its files are copied and the manifest last, so a snapshot appears in the
//!   target only complete. Snapshots without a manifest (unfinished) are not copied.
//! * Resumable: objects already in the target with the same size are skipped.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::StreamExt;

use crate::backend::{Backend, LocalBackend, ObjectMeta, PutOptions};
use crate::datastore::layout::{
    self, is_index_name, parse_chunk_key, ChunkKey, MANIFEST, NOTES, NS_MARKER, OWNER, PROTECTED,
};
use crate::datastore::Datastore;
use crate::format::blob::{BlobView, MAX_CHUNK_SIZE};
use crate::format::index::{index_kind_of, AnyIndex};
use crate::format::names::{parse_backup_time, BackupType};
use crate::format::{digest_to_hex, sha256, Digest};

use super::Location;

/// Chunks read, verified and written at the same time.
const CHUNK_CONCURRENCY: usize = 16;
/// Interval of progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Command line of `import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Datastore directory in PBS's layout (`.chunks/`, `[ns/…/]<type>/<id>/<time>/`).
    #[arg(long)]
    pub from: PathBuf,
    /// Configuration file naming the target datastore.
    #[arg(long = "to-config", env = "PBS_CLOUD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (for datastores without an explicit path).
    #[arg(long, env = "PBS_CLOUD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Target datastore name; default: the only configured one.
    #[arg(long)]
    pub store: Option<String>,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImportSummary {
    pub chunks_copied: u64,
    pub chunks_present: u64,
    pub chunk_bytes_copied: u64,
    pub files_copied: u64,
    pub files_present: u64,
    pub snapshots_imported: u64,
    /// Snapshots without a manifest in the source (backup in progress or aborted).
    pub snapshots_unfinished: u64,
    /// Snapshots refused by verification (reasons logged), never made visible.
    pub snapshots_failed: u64,
    /// Chunks that failed verification (not copied).
    pub chunks_corrupt: u64,
    /// Source objects that are not part of the layout (locks, GC status, leases, temp files).
    pub objects_ignored: u64,
}

/// Runs the `import` command.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(import_cli(&args))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).context("encode import summary")?
    );
    if summary.snapshots_failed > 0 || summary.chunks_corrupt > 0 {
        bail!(
            "import finished with {} snapshot(s) refused and {} corrupt chunk(s); see the log",
            summary.snapshots_failed,
            summary.chunks_corrupt
        );
    }
    Ok(())
}

async fn import_cli(args: &ImportArgs) -> anyhow::Result<ImportSummary> {
    let location = Location {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
    };
    let source = open_source(&args.from)?;
    let entry = super::config_apply::open_offline(
        &location,
        args.store.as_deref(),
        &super::serve::offline_holder("import"),
    )
    .await?;
    let target = entry.store;
    tracing::info!(
        "importing {} into datastore '{}'",
        args.from.display(),
        entry.name
    );
    let result = import(&source, &target).await;
    let closed = target.close().await;
    let summary = result?;
    closed.context("closing the target datastore (known-chunk journal, lease)")?;
    Ok(summary)
}

/// Opens a source directory that must already exist (never creates one).
fn open_source(path: &Path) -> anyhow::Result<LocalBackend> {
    if !path.join(".chunks").is_dir() {
        bail!(
            "{} is not a datastore directory (no .chunks/ inside)",
            path.display()
        );
    }
    Ok(LocalBackend::open(path)?)
}

/// One snapshot of the source: its files by name.
#[derive(Default)]
struct SourceSnapshot {
    files: BTreeMap<String, u64>,
}

/// The source's objects sorted by role.
#[derive(Default)]
struct SourceLayout {
    chunks: Vec<(Digest, String)>,
    /// Namespace markers and group files (owner, notes): copied before snapshots.
    group_files: Vec<ObjectMeta>,
    /// Snapshot prefix (`…/<type>/<id>/<time>/`) → files.
    snapshots: BTreeMap<String, SourceSnapshot>,
    ignored: u64,
}

fn classify(objects: Vec<ObjectMeta>) -> SourceLayout {
    let mut out = SourceLayout::default();
    for obj in objects {
        if obj.key.starts_with(layout::CHUNK_PREFIX) {
            match parse_chunk_key(&obj.key) {
                Some(ChunkKey::Chunk(d)) => out.chunks.push((d, obj.key)),
                _ => out.ignored += 1,
            }
            continue;
        }
        let mut parts: Vec<&str> = obj.key.split('/').collect();
        // strip `ns/<name>` pairs
        let mut ns_len = 0;
        while parts.len() > ns_len + 2 && parts[ns_len] == "ns" {
            ns_len += 2;
        }
        let rest = parts.split_off(ns_len);
        let ns_ok = parts
            .chunks(2)
            .all(|p| crate::format::names::is_safe_id(p[1]));
        let typed = |t: &str| t.parse::<BackupType>().is_ok();
        match rest.as_slice() {
            [marker] if *marker == NS_MARKER && ns_len > 0 && ns_ok => out.group_files.push(obj),
            [t, _, f] if ns_ok && typed(t) && (*f == OWNER || *f == NOTES) => {
                out.group_files.push(obj)
            }
            [t, _, time, f]
                if ns_ok
                    && typed(t)
                    && parse_backup_time(time).is_ok()
                    && (layout::is_snapshot_file_name(f) || *f == PROTECTED) =>
            {
                let name = (*f).to_string();
                let prefix = obj.key[..obj.key.len() - name.len()].to_string();
                out.snapshots
                    .entry(prefix)
                    .or_default()
                    .files
                    .insert(name, obj.size);
            }
            _ => out.ignored += 1,
        }
    }
    out
}

#[derive(Default)]
struct Counters {
    copied: AtomicU64,
    present: AtomicU64,
    bytes: AtomicU64,
    corrupt: AtomicU64,
}

/// Copies and verifies everything from `source` into `target`.
pub async fn import(source: &LocalBackend, target: &Datastore) -> anyhow::Result<ImportSummary> {
    let listed = source.list("", None).await?;
    let src = classify(listed.objects);
    let mut summary = ImportSummary {
        objects_ignored: src.ignored,
        ..ImportSummary::default()
    };
    tracing::info!(
        "source: {} chunks, {} snapshots, {} group/namespace files",
        src.chunks.len(),
        src.snapshots.len(),
        src.group_files.len()
    );
    let available = copy_chunks(source, target, &src.chunks, &mut summary).await?;

    for obj in &src.group_files {
        copy_file(source, target, &obj.key, obj.size, &mut summary).await?;
    }
    for (prefix, snap) in &src.snapshots {
        if !snap.files.contains_key(MANIFEST) {
            tracing::warn!("{prefix}: no manifest in the source (unfinished backup); skipped");
            summary.snapshots_unfinished += 1;
            continue;
        }
        if let Err(why) = verify_snapshot(source, prefix, snap, &available).await {
            tracing::error!("{prefix}: not imported: {why:#}");
            summary.snapshots_failed += 1;
            continue;
        }
        for (name, size) in snap.files.iter().filter(|(n, _)| *n != MANIFEST) {
            copy_file(
                source,
                target,
                &format!("{prefix}{name}"),
                *size,
                &mut summary,
            )
            .await?;
        }
        crate::fault::pause_at_async("import-snapshot", prefix).await;
        let manifest = format!("{prefix}{MANIFEST}");
        copy_file(
            source,
            target,
            &manifest,
            snap.files[MANIFEST],
            &mut summary,
        )
        .await?;
        summary.snapshots_imported += 1;
    }
    tracing::info!(
        "import done: {} chunks copied ({} MB), {} already present; {} snapshots imported, \
         {} unfinished, {} refused",
        summary.chunks_copied,
        summary.chunk_bytes_copied / 1_000_000,
        summary.chunks_present,
        summary.snapshots_imported,
        summary.snapshots_unfinished,
        summary.snapshots_failed
    );
    Ok(summary)
}

/// Copies all chunks (bounded concurrency); returns the digests present in the target
/// afterwards (copied, already there, or already known).
async fn copy_chunks(
    source: &LocalBackend,
    target: &Datastore,
    chunks: &[(Digest, String)],
    summary: &mut ImportSummary,
) -> anyhow::Result<HashSet<Digest>> {
    let counters = Arc::new(Counters::default());
    let total = chunks.len();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut available = HashSet::with_capacity(total);
    let mut results = futures::stream::iter(chunks.iter())
        .map(|(digest, key)| {
            let counters = counters.clone();
            async move {
                let ok = copy_chunk(source, target, digest, key, &counters).await?;
                anyhow::Ok((*digest, ok))
            }
        })
        .buffer_unordered(CHUNK_CONCURRENCY);
    let mut done = 0usize;
    while let Some(result) = results.next().await {
        let (digest, ok) = result?;
        if ok {
            available.insert(digest);
        }
        done += 1;
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            let bytes = counters.bytes.load(Ordering::Relaxed);
            tracing::info!(
                "chunks {done}/{total}: {} copied, {} present, {:.1} MB/s",
                counters.copied.load(Ordering::Relaxed),
                counters.present.load(Ordering::Relaxed),
                bytes as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-3)
            );
        }
    }
    summary.chunks_copied = counters.copied.load(Ordering::Relaxed);
    summary.chunks_present = counters.present.load(Ordering::Relaxed);
    summary.chunk_bytes_copied = counters.bytes.load(Ordering::Relaxed);
    summary.chunks_corrupt = counters.corrupt.load(Ordering::Relaxed);
    Ok(available)
}

/// Verifies and inserts one chunk; `Ok(false)` when it failed verification.
async fn copy_chunk(
    source: &LocalBackend,
    target: &Datastore,
    digest: &Digest,
    key: &str,
    counters: &Counters,
) -> anyhow::Result<bool> {
    if target.chunks().is_known(digest) {
        counters.present.fetch_add(1, Ordering::Relaxed);
        return Ok(true);
    }
    let raw = source
        .get(key)
        .await
        .with_context(|| format!("reading source chunk {key}"))?;
    let expected = *digest;
    let checked = tokio::task::spawn_blocking(move || {
        let verdict = verify_chunk(&raw, &expected);
        (raw, verdict)
    })
    .await
    .context("chunk verification task failed")?;
    let (raw, encrypted) = match checked {
        (raw, Ok(encrypted)) => (raw, encrypted),
        (_, Err(why)) => {
            tracing::error!("source chunk {key} is corrupt: {why}; not copied");
            counters.corrupt.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
    };
    let len = raw.len() as u64;
    let outcome = target
        .insert_chunk(digest, raw, encrypted)
        .await
        .with_context(|| format!("storing chunk {}", digest_to_hex(digest)))?;
    if outcome.duplicate {
        counters.present.fetch_add(1, Ordering::Relaxed);
    } else {
        counters.copied.fetch_add(1, Ordering::Relaxed);
        counters.bytes.fetch_add(len, Ordering::Relaxed);
    }
    Ok(true)
}

/// CRC of the blob, and for plain chunks the digest of the decoded data; returns whether the
/// chunk is encrypted.
fn verify_chunk(raw: &[u8], digest: &Digest) -> Result<bool, String> {
    let view = BlobView::parse(raw).map_err(|e| e.to_string())?;
    view.verify_crc().map_err(|e| e.to_string())?;
    if view.kind().is_encrypted() {
        return Ok(true);
    }
    let plain = view
        .decode(MAX_CHUNK_SIZE as usize)
        .map_err(|e| e.to_string())?;
    let computed = sha256(&plain);
    if &computed != digest {
        return Err(format!(
            "digest mismatch (data hashes to {})",
            digest_to_hex(&computed)
        ));
    }
    Ok(false)
}

/// Blobs must pass their CRC check; indexes must parse and reference only available chunks.
async fn verify_snapshot(
    source: &LocalBackend,
    prefix: &str,
    snap: &SourceSnapshot,
    available: &HashSet<Digest>,
) -> anyhow::Result<()> {
    for name in snap.files.keys() {
        let key = format!("{prefix}{name}");
        if name.ends_with(".blob") {
            let data = source.get(&key).await?;
            let view = BlobView::parse(&data).with_context(|| format!("{name}: not a blob"))?;
            view.verify_crc().with_context(|| name.clone())?;
        } else if let Some(kind) = index_kind_of(name).filter(|_| is_index_name(name)) {
            let data = source.get(&key).await?;
            let index = AnyIndex::parse(kind, &data).with_context(|| name.clone())?;
            if let Some((missing, _)) = index.chunks().iter().find(|(d, _)| !available.contains(d))
            {
                bail!(
                    "{name} references chunk {} which is missing or corrupt in the source",
                    digest_to_hex(missing)
                );
            }
        }
    }
    Ok(())
}

/// Copies one non-chunk object unless the target has it with the same size.
async fn copy_file(
    source: &LocalBackend,
    target: &Datastore,
    key: &str,
    size: u64,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    let backend = target.backend();
    if let Some(meta) = backend.head(key).await? {
        if meta.size == size {
            summary.files_present += 1;
            return Ok(());
        }
    }
    let data: Bytes = source
        .get(key)
        .await
        .with_context(|| format!("reading source object {key}"))?;
    backend
        .put(key, data, PutOptions::default())
        .await
        .with_context(|| format!("writing {key} to the target"))?;
    summary.files_copied += 1;
    Ok(())
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
