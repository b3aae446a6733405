//! VM disk backups and restores the way Proxmox VE runs them through QEMU's backup library
//! (libproxmox-backup-qemu) and `pbs-restore`, on the wire:
//!
//! 1. upgrade with `backup-type=vm`, `debug=false`; then only `GET previous?archive-name=
//!    index.json.blob` (no `previous_backup_time`); any error means "no previous backup";
//! 2. per drive: `GET previous?archive-name=<drive>.img.fidx` when there is a previous
//!    manifest (errors ignored; an index matching the manifest makes its chunks known),
//!    `POST fixed_index` with `size` and, for a dirty-bitmap incremental run, `reuse-csum`;
//!    then always `POST fixed_chunk` of the all-zero 4 MiB chunk;
//! 3. the configuration blobs (`qemu-server.conf`, `fw.conf`);
//! 4. per written 4 MiB block: all-zero blocks are appended as the zero chunk, known chunks
//!    are appended by digest, others uploaded (a chunk becomes known only once its upload
//!    answered, so identical blocks in flight are uploaded twice); appends (`PUT
//!    fixed_index`) in batches of 128 entries, in write order;
//! 5. `POST fixed_close` with `chunk-count` = entries appended in this session and `size` =
//!    bytes written in this session, `csum` over the whole index;
//! 6. `rsa-encrypted.key.blob` when a master key is configured, `index.json.blob`, `finish`.
//!
//! Restore (`pbs-restore`): one reader session, manifest, index, then every non-zero chunk
//! fetched with many requests in flight at once; zero chunks are written as zeros.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use http::Method;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backup::BackupSession;
use crate::backup_options::{ArchiveStats, BackupParams, BackupSummary, Crypt};
use crate::chunker::FIXED_CHUNK_SIZE;
use crate::crypto::CryptConfig;
use crate::error::{ClientError, Result};
use crate::h2session::H2Session;
use crate::http::PbsClient;
use crate::master_key::{MasterPublicKey, ENCRYPTED_KEY_BLOB_NAME};
use crate::pipeline::PipelineStats;
use crate::reader::{ReaderParams, ReaderSession};
use crate::wire::{self, Digest, Manifest};

/// Entries per `PUT fixed_index` of the library's upload queue.
pub const APPEND_BATCH: usize = 128;
/// Pending block writes per drive (the library's queue depth).
const QUEUE_DEPTH: usize = 100;

/// What the VM backup job is given.
pub struct QemuBackupJob<'a> {
    pub store: &'a str,
    pub ns: Option<&'a str>,
    pub vmid: &'a str,
    pub time: i64,
    pub key: Option<CryptConfig>,
    pub master_key: Option<MasterPublicKey>,
    /// `(name, content)`: `qemu-server.conf`, optional `fw.conf`.
    pub configs: Vec<(&'a str, &'a [u8])>,
    pub drives: Vec<Drive<'a>>,
}

/// One disk of the VM.
pub struct Drive<'a> {
    /// QEMU drive name, e.g. `drive-scsi0`.
    pub name: &'a str,
    /// The whole disk as it is now.
    pub data: &'a [u8],
    /// Dirty-bitmap incremental run: the 4 MiB blocks written since the last backup and the
    /// index checksum that backup ended with. `None`: a full backup (every block written).
    pub incremental: Option<Incremental>,
}

/// The dirty bitmap and the checksum the library remembers from the last run.
#[derive(Debug, Clone)]
pub struct Incremental {
    pub dirty_blocks: Vec<usize>,
    pub previous_csum: Digest,
}

/// What one drive's upload did.
#[derive(Debug, Clone, Default)]
pub struct DriveReport {
    pub archive: String,
    pub wid: u64,
    pub csum: Digest,
    /// `chunk-count` and `size` sent with `fixed_close`.
    pub chunk_count: u64,
    pub bytes_written: u64,
    pub uploaded: usize,
    pub zero_writes: usize,
    pub known_writes: usize,
    /// Entry count of every `PUT fixed_index`, in order.
    pub append_batches: Vec<usize>,
    /// The previous index was downloaded and matched the previous manifest.
    pub used_previous: bool,
}

/// What the whole backup job did.
#[derive(Debug, Clone)]
pub struct QemuBackupReport {
    pub summary: BackupSummary,
    pub drives: Vec<DriveReport>,
    /// The in-session requests in the order they were issued (`METHOD path?query`; chunk
    /// uploads as `POST fixed_chunk` with their digest).
    pub calls: Vec<String>,
    pub had_previous_manifest: bool,
}

/// Digest and encoded bytes of the all-zero chunk of `size` bytes.
pub fn zero_chunk(key: Option<&CryptConfig>, size: usize) -> Result<(Digest, Vec<u8>)> {
    let zeros = vec![0u8; size];
    Ok(match key {
        Some(k) => (k.compute_digest(&zeros), k.encrypt_blob(&zeros, true)?),
        None => (wire::sha256(&zeros), wire::encode_plain_blob(&zeros, true)),
    })
}

type CallLog = Arc<Mutex<Vec<String>>>;

fn log(calls: &CallLog, entry: String) {
    if let Ok(mut c) = calls.lock() {
        c.push(entry);
    }
}

/// Runs the backup job of one VM.
pub async fn qemu_backup(client: &PbsClient, job: QemuBackupJob<'_>) -> Result<QemuBackupReport> {
    let mut params = BackupParams::new(job.store, "vm", job.vmid, job.time);
    params.ns = job.ns.map(str::to_string);
    params.debug = false;
    if let Some(k) = &job.key {
        params.crypt = Crypt::Encrypt(k.clone());
    }
    let crypt_mode = params.crypt.mode_str();
    let mut session = BackupSession::start_raw(client, params).await?;
    let calls: CallLog = Arc::new(Mutex::new(Vec::new()));

    log(&calls, "GET previous?archive-name=index.json.blob".into());
    let previous = match session.download_previous("index.json.blob").await {
        Ok(raw) => Manifest::from_blob(&raw).ok(),
        Err(_) => None,
    };
    let known: Arc<Mutex<HashSet<Digest>>> = Arc::new(Mutex::new(HashSet::new()));
    let (zero_digest, zero_encoded) = zero_chunk(job.key.as_ref(), FIXED_CHUNK_SIZE)?;

    // register every image
    let mut registered = Vec::new();
    for drive in &job.drives {
        let archive = format!("{}.img.fidx", drive.name);
        let mut report = DriveReport {
            archive: archive.clone(),
            ..DriveReport::default()
        };
        let previous_index = match &previous {
            Some(m) => {
                log(&calls, format!("GET previous?archive-name={archive}"));
                previous_fixed_index(&session, m, &archive).await
            }
            None => None,
        };
        if let Some(idx) = &previous_index {
            report.used_previous = true;
            if let Ok(mut k) = known.lock() {
                k.extend(idx.chunks.iter().map(|(d, _, _)| *d));
            }
        }
        let size = drive.data.len() as u64;
        let mut param = json!({ "archive-name": archive, "size": size });
        let mut index = vec![[0u8; 32]; drive.data.len().div_ceil(FIXED_CHUNK_SIZE)];
        if let Some(inc) = &drive.incremental {
            param["reuse-csum"] = wire::hex(&inc.previous_csum).into();
            let idx = previous_index.as_ref().ok_or_else(|| {
                ClientError::Input("no previous backup found, cannot do incremental backup".into())
            })?;
            if idx.chunks.len() != index.len() {
                return Err(ClientError::Input(format!(
                    "previous backup has different size than current state, cannot do incremental backup (drive: {archive})"
                )));
            }
            if idx.csum != inc.previous_csum {
                return Err(ClientError::Input(format!(
                    "previous backup checksum doesn't match session cache, incremental backup would be out of sync (drive: {archive})"
                )));
            }
            index = idx.chunks.iter().map(|(d, _, _)| *d).collect();
        }
        log(
            &calls,
            format!("POST fixed_index?{}", crate::params::encode_params(&param)),
        );
        let wid = session
            .h2()
            .call(Method::POST, "fixed_index", Some(&param))
            .await?
            .as_u64()
            .ok_or_else(|| ClientError::Protocol("fixed_index: wid is not an integer".into()))?;
        report.wid = wid;
        // the library always uploads the zero chunk right after creating the writer
        log(
            &calls,
            format!("POST fixed_chunk digest={} (zero)", wire::hex(&zero_digest)),
        );
        let zparams = json!({
            "wid": wid,
            "digest": wire::hex(&zero_digest),
            "size": FIXED_CHUNK_SIZE,
            "encoded-size": zero_encoded.len(),
        });
        session
            .h2()
            .upload(
                "fixed_chunk",
                Some(&zparams),
                Bytes::from(zero_encoded.clone()),
            )
            .await?;
        registered.push((report, index));
    }

    for (name, data) in &job.configs {
        log(&calls, format!("POST blob?file-name={name}.blob"));
        session.upload_blob(name, data).await?;
    }

    let mut drive_reports = Vec::new();
    for (drive, (mut report, index)) in job.drives.iter().zip(registered) {
        let queue = DriveQueue::start(
            session.h2_shared(),
            report.wid,
            index,
            known.clone(),
            calls.clone(),
        );
        write_drive(
            &session.h2_shared(),
            &queue,
            drive,
            job.key.as_ref(),
            &zero_digest,
            &known,
            &calls,
            &mut report,
        )
        .await?;
        let result = queue.finish().await?;
        report.csum = result.csum;
        report.chunk_count = result.chunk_count;
        report.bytes_written = result.bytes_written;
        report.append_batches = result.batches;
        let close = json!({
            "wid": report.wid,
            "chunk-count": result.chunk_count,
            "size": result.bytes_written,
            "csum": wire::hex(&result.csum),
        });
        log(
            &calls,
            format!("POST fixed_close?{}", crate::params::encode_params(&close)),
        );
        session
            .h2()
            .call(Method::POST, "fixed_close", Some(&close))
            .await?;
        session.record_archive(
            ArchiveStats {
                name: report.archive.clone(),
                wid: Some(report.wid),
                size: drive.data.len() as u64,
                csum: wire::hex(&result.csum),
                used_previous: report.used_previous,
                chunks: PipelineStats {
                    chunk_count: result.chunk_count as usize,
                    chunks_uploaded: report.uploaded,
                    chunks_reused: report.known_writes + report.zero_writes,
                    chunks_injected: 0,
                    bytes_sent: 0,
                    appends: report.append_batches.len(),
                },
            },
            crypt_mode,
        );
        drive_reports.push(report);
    }

    if let (Some(master), Some(key)) = (&job.master_key, &job.key) {
        log(
            &calls,
            format!("POST blob?file-name={ENCRYPTED_KEY_BLOB_NAME}"),
        );
        let blob = master.encrypted_key_blob(key, job.time)?;
        session
            .upload_blob_raw(ENCRYPTED_KEY_BLOB_NAME, blob, crypt_mode)
            .await?;
    }
    log(&calls, "POST blob?file-name=index.json.blob".into());
    log(&calls, "POST finish".into());
    let summary = session.finish().await?;
    let calls = calls.lock().map(|c| c.clone()).unwrap_or_default();
    Ok(QemuBackupReport {
        summary,
        drives: drive_reports,
        calls,
        had_previous_manifest: previous.is_some(),
    })
}

/// `GET previous` of a drive's index; used only when it matches the previous manifest.
async fn previous_fixed_index(
    session: &BackupSession,
    manifest: &Manifest,
    archive: &str,
) -> Option<wire::IndexEntries> {
    let entry = manifest.file(archive)?;
    let raw = session.download_previous(archive).await.ok()?;
    let idx = wire::parse_index(archive, &raw).ok()?;
    (idx.fixed && wire::hex(&idx.csum) == entry.csum && idx.size == entry.size).then_some(idx)
}

/// QEMU's block writes of one drive: every block, or only the dirty ones.
#[allow(clippy::too_many_arguments)]
async fn write_drive(
    h2: &Arc<H2Session>,
    queue: &DriveQueue,
    drive: &Drive<'_>,
    key: Option<&CryptConfig>,
    zero_digest: &Digest,
    known: &Arc<Mutex<HashSet<Digest>>>,
    calls: &CallLog,
    report: &mut DriveReport,
) -> Result<()> {
    let blocks: Vec<usize> = match &drive.incremental {
        Some(inc) => inc.dirty_blocks.clone(),
        None => (0..drive.data.len().div_ceil(FIXED_CHUNK_SIZE)).collect(),
    };
    for block in blocks {
        let start = block * FIXED_CHUNK_SIZE;
        let end = (start + FIXED_CHUNK_SIZE).min(drive.data.len());
        let data = drive.data.get(start..end).ok_or_else(|| {
            ClientError::Input(format!("{}: block {block} is beyond the disk", drive.name))
        })?;
        let offset = start as u64;
        let size = data.len() as u64;
        // QEMU hands over full all-zero clusters without data
        if data.len() == FIXED_CHUNK_SIZE && data.iter().all(|b| *b == 0) {
            report.zero_writes += 1;
            queue.push(Write::Known(*zero_digest, offset, size)).await?;
            continue;
        }
        let digest = match key {
            Some(k) => k.compute_digest(data),
            None => wire::sha256(data),
        };
        let is_known = known.lock().map(|k| k.contains(&digest)).unwrap_or(false);
        if is_known {
            report.known_writes += 1;
            queue.push(Write::Known(digest, offset, size)).await?;
            continue;
        }
        let encoded = match key {
            Some(k) => k.encrypt_blob(data, true)?,
            None => wire::encode_plain_blob(data, true),
        };
        report.uploaded += 1;
        let params = json!({
            "wid": report.wid,
            "digest": wire::hex(&digest),
            "size": size,
            "encoded-size": encoded.len(),
        });
        log(
            calls,
            format!("POST fixed_chunk digest={}", wire::hex(&digest)),
        );
        let h2 = h2.clone();
        let upload = tokio::spawn(async move {
            h2.upload("fixed_chunk", Some(&params), Bytes::from(encoded))
                .await
                .map(|_| ())
        });
        queue
            .push(Write::Upload(digest, offset, size, upload))
            .await?;
    }
    Ok(())
}

enum Write {
    Known(Digest, u64, u64),
    Upload(Digest, u64, u64, JoinHandle<Result<()>>),
}

struct QueueResult {
    csum: Digest,
    chunk_count: u64,
    bytes_written: u64,
    batches: Vec<usize>,
}

/// The library's per-drive upload queue: awaits writes in order, appends in batches.
struct DriveQueue {
    tx: mpsc::Sender<Write>,
    task: JoinHandle<Result<QueueResult>>,
}

impl DriveQueue {
    fn start(
        h2: Arc<H2Session>,
        wid: u64,
        mut index: Vec<Digest>,
        known: Arc<Mutex<HashSet<Digest>>>,
        calls: CallLog,
    ) -> DriveQueue {
        let (tx, mut rx) = mpsc::channel::<Write>(QUEUE_DEPTH);
        let task = tokio::spawn(async move {
            let mut digests: Vec<String> = Vec::new();
            let mut offsets: Vec<u64> = Vec::new();
            let mut result = QueueResult {
                csum: [0; 32],
                chunk_count: 0,
                bytes_written: 0,
                batches: Vec::new(),
            };
            while let Some(write) = rx.recv().await {
                let (digest, offset, size) = match write {
                    Write::Known(d, o, s) => (d, o, s),
                    Write::Upload(d, o, s, upload) => {
                        upload.await.map_err(|e| {
                            ClientError::Protocol(format!("chunk upload task failed: {e}"))
                        })??;
                        if let Ok(mut k) = known.lock() {
                            k.insert(d);
                        }
                        (d, o, s)
                    }
                };
                let pos = (offset / FIXED_CHUNK_SIZE as u64) as usize;
                let slot = index.get_mut(pos).ok_or_else(|| {
                    ClientError::Input(format!("write at offset {offset} beyond the index"))
                })?;
                *slot = digest;
                result.chunk_count += 1;
                result.bytes_written += size;
                digests.push(wire::hex(&digest));
                offsets.push(offset);
                if digests.len() >= APPEND_BATCH {
                    append(&h2, wid, &mut digests, &mut offsets, &calls, &mut result).await?;
                }
            }
            if !digests.is_empty() {
                append(&h2, wid, &mut digests, &mut offsets, &calls, &mut result).await?;
            }
            result.csum = wire::fixed_csum(&index);
            Ok(result)
        });
        DriveQueue { tx, task }
    }

    async fn push(&self, write: Write) -> Result<()> {
        self.tx
            .send(write)
            .await
            .map_err(|_| ClientError::Protocol("upload queue ended early".into()))
    }

    async fn finish(self) -> Result<QueueResult> {
        drop(self.tx);
        self.task
            .await
            .map_err(|e| ClientError::Protocol(format!("upload queue task failed: {e}")))?
    }
}

async fn append(
    h2: &H2Session,
    wid: u64,
    digests: &mut Vec<String>,
    offsets: &mut Vec<u64>,
    calls: &CallLog,
    result: &mut QueueResult,
) -> Result<()> {
    let body = json!({ "wid": wid, "digest-list": digests, "offset-list": offsets });
    log(
        calls,
        format!("PUT fixed_index ({} entries)", digests.len()),
    );
    result.batches.push(digests.len());
    digests.clear();
    offsets.clear();
    h2.call_json_body(Method::PUT, "fixed_index", &body)
        .await
        .map(|_| ())
}

/// What `pbs-restore` read.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub image: Vec<u8>,
    pub fetched_chunks: usize,
    pub zero_chunks: usize,
    /// Most chunk requests that were in flight at the same time.
    pub max_in_flight: usize,
}

/// `pbs-restore <snapshot> <drive>.img.fidx <target>`: `concurrency` chunk downloads at once
/// on one reader session.
pub async fn pbs_restore(
    client: &PbsClient,
    params: ReaderParams,
    key: Option<CryptConfig>,
    archive: &str,
    concurrency: usize,
) -> Result<RestoreReport> {
    let reader = ReaderSession::open(client, params, key.clone()).await?;
    let manifest = reader.manifest().await?;
    let entry = manifest
        .file(archive)
        .ok_or_else(|| ClientError::Verify(format!("{archive} not in the manifest")))?
        .clone();
    let raw = reader.download(archive).await?;
    let idx = wire::parse_index(archive, &raw)?;
    if !idx.fixed || wire::hex(&idx.csum) != entry.csum || idx.size != entry.size {
        return Err(ClientError::Verify(format!(
            "{archive}: index does not match the manifest"
        )));
    }
    let encrypted = entry.crypt_mode == "encrypt";
    let (zero_digest, _) = zero_chunk(key.as_ref(), FIXED_CHUNK_SIZE)?;
    let wanted: Vec<Digest> = idx
        .chunks
        .iter()
        .map(|(d, _, _)| *d)
        .filter(|d| d != &zero_digest)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let in_flight = AtomicUsize::new(0);
    let max_in_flight = AtomicUsize::new(0);
    let fetched: HashMap<Digest, Vec<u8>> = stream::iter(wanted)
        .map(|digest| {
            let reader = &reader;
            let in_flight = &in_flight;
            let max_in_flight = &max_in_flight;
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_in_flight.fetch_max(now, Ordering::SeqCst);
                let data = reader.fetch_checked_chunk(&digest, encrypted).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                data.map(|d| (digest, d))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut image = vec![0u8; idx.size as usize];
    let mut zero_chunks = 0;
    for (digest, start, len) in &idx.chunks {
        if digest == &zero_digest {
            zero_chunks += 1;
            continue;
        }
        let data = &fetched[digest];
        if data.len() as u64 != *len {
            return Err(ClientError::Verify(format!(
                "chunk {} has {} bytes, index says {len}",
                wire::hex(digest),
                data.len()
            )));
        }
        image[*start as usize..(*start + *len) as usize].copy_from_slice(data);
    }
    Ok(RestoreReport {
        image,
        fetched_chunks: fetched.len(),
        zero_chunks,
        max_in_flight: max_in_flight.load(Ordering::SeqCst),
    })
}
