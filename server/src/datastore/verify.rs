//! Verify (docs/formats.md#verify): check the snapshots of a datastore and record the result in
//! each manifest's `unprotected.verify_state` (`{"state":"ok"|"failed","upid":...}`).
//!
//! Per snapshot: a shared snapshot lock (a snapshot being removed is skipped and counts OK),
//! the manifest, the `ignore-verified` / `outdated-after` filter, then every listed file: blobs
//! by CRC, length and SHA-256, indexes by their recomputed csum and size and then chunk by
//! chunk (see `chunk_store/verify.rs`). A chunk's verdict is shared by all snapshots of one run.

use std::collections::{HashMap, HashSet};

use crate::format::blob::{BlobView, MAX_BLOB_SIZE};
use crate::format::index::{index_kind_of, AnyIndex};
use crate::format::manifest::{CryptMode, FileInfo, Manifest, VerifyState};
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace};
use crate::format::{digest_to_hex, sha256, Digest};

use super::chunk_store::{ChunkCheck, ChunkVerdict};
use super::layout::{snapshot_label, snapshot_prefix};
use super::{Datastore, DatastoreError};

/// What a verify run checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Cheap (existence and stored checksums) or deep (download and re-hash).
    pub level: ChunkCheck,
    /// Deep only: check this percentage of the chunks deeply (a random sample), the rest
    /// cheaply. `None` or 100 = all.
    pub sample_percent: Option<u8>,
    /// Skip snapshots that already carry a verify state (PBS `ignore-verified`).
    pub ignore_verified: bool,
    /// With `ignore_verified`: verify again when the last verify is older than this many days.
    pub outdated_after_days: Option<u64>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            level: ChunkCheck::Deep,
            sample_percent: None,
            ignore_verified: false,
            outdated_after_days: None,
        }
    }
}

/// Figures of a verify run (also the job-history summary).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VerifySummary {
    pub snapshots_ok: u64,
    pub snapshots_skipped: u64,
    /// Labels of failed snapshots (`[ns/]type/id/time`).
    pub snapshots_failed: Vec<String>,
    /// Distinct chunks checked.
    pub chunks_checked: u64,
    /// Of these, checked deeply.
    pub chunks_deep: u64,
    /// Digests (hex) of chunks that were missing.
    pub chunks_missing: Vec<String>,
    /// Digests (hex) of chunks found corrupt (moved to `.bad`).
    pub chunks_corrupt: Vec<String>,
    /// Chunks that could not be read (transient errors; nothing moved).
    pub chunks_unreadable: u64,
    /// Cheap checks that could only see that the chunk exists (no stored checksum).
    pub chunks_present_only: u64,
}

/// Start time encoded in a UPID (6th field, hex), for `outdated-after`.
fn upid_starttime(upid: &str) -> Option<i64> {
    let field = upid.split(':').nth(5)?;
    i64::from_str_radix(field, 16).ok()
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// PBS's filter: whether a snapshot with this verify state is due.
pub fn verify_due(state: Option<&VerifyState>, opts: &VerifyOptions, now: i64) -> bool {
    if !opts.ignore_verified {
        return true;
    }
    let Some(state) = state else {
        return true;
    };
    match opts.outdated_after_days {
        None => false,
        Some(days) => match upid_starttime(&state.upid) {
            Some(start) => now - start > (days as i64).saturating_mul(86_400),
            None => true,
        },
    }
}

/// Per-run state: verdicts shared across snapshots, and the summary.
struct Run<'a> {
    opts: &'a VerifyOptions,
    verdicts: HashMap<Digest, bool>,
    summary: VerifySummary,
    dropped: bool,
    log: &'a (dyn Fn(String) + Send + Sync),
}

impl Datastore {
    /// Finished snapshots under `ns` (down to `max_depth` levels), optionally of one group or
    /// one backup time, in namespace, group and time order.
    pub async fn verify_targets(
        &self,
        ns: &BackupNamespace,
        max_depth: Option<usize>,
        group: Option<&BackupGroup>,
        time: Option<i64>,
    ) -> Result<Vec<(BackupNamespace, BackupDir)>, DatastoreError> {
        let namespaces = match group {
            Some(_) => vec![ns.clone()],
            None => self.tree.list_namespaces(ns, max_depth).await?,
        };
        let mut out = Vec::new();
        for ns in namespaces {
            let groups = match group {
                Some(g) => vec![g.clone()],
                None => self.tree.list_groups(&ns).await?,
            };
            for g in groups {
                for snap in self.tree.list_snapshots(&ns, &g).await? {
                    if snap.finished && time.is_none_or(|t| t == snap.dir.time) {
                        out.push((ns.clone(), snap.dir));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Verify `targets` on behalf of task `upid`; progress goes to `log`, `aborted` is polled
    /// between snapshots. Each verified snapshot gets its verify state written.
    pub async fn verify(
        &self,
        targets: &[(BackupNamespace, BackupDir)],
        opts: &VerifyOptions,
        upid: &str,
        log: &(dyn Fn(String) + Send + Sync),
        aborted: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<VerifySummary, DatastoreError> {
        let mut run = Run {
            opts,
            verdicts: HashMap::new(),
            summary: VerifySummary::default(),
            dropped: false,
            log,
        };
        for (ns, dir) in targets {
            if aborted() {
                return Err(DatastoreError::Internal("verify aborted".into()));
            }
            self.verify_one(&mut run, ns, dir, upid).await?;
        }
        if run.dropped {
            self.chunks.persist_known_after_removal().await?;
        }
        let s = &run.summary;
        log(format!(
            "verified {} snapshots ({} failed, {} skipped), {} chunks ({} deep): {} missing, {} corrupt, {} unreadable",
            s.snapshots_ok + s.snapshots_failed.len() as u64,
            s.snapshots_failed.len(),
            s.snapshots_skipped,
            s.chunks_checked,
            s.chunks_deep,
            s.chunks_missing.len(),
            s.chunks_corrupt.len(),
            s.chunks_unreadable
        ));
        Ok(run.summary)
    }

    async fn verify_one(
        &self,
        run: &mut Run<'_>,
        ns: &BackupNamespace,
        dir: &BackupDir,
        upid: &str,
    ) -> Result<(), DatastoreError> {
        let label = snapshot_label(ns, dir);
        let Some(_shared) = self.locks.try_shared(&snapshot_prefix(ns, dir)?) else {
            (run.log)(format!(
                "SKIPPED: verify {label} - could not acquire snapshot lock"
            ));
            run.summary.snapshots_ok += 1;
            return Ok(());
        };
        let manifest = match self.tree.load_manifest(ns, dir).await {
            Ok((m, _)) => m,
            Err(e) if e.is_not_found() => {
                (run.log)(format!("SKIPPED: {label} (removed)"));
                run.summary.snapshots_skipped += 1;
                return Ok(());
            }
            Err(e) => {
                (run.log)(format!("verify {label} failed: {e}"));
                run.summary.snapshots_failed.push(label);
                return Ok(());
            }
        };
        if !verify_due(manifest.verify_state().as_ref(), run.opts, now_unix()) {
            (run.log)(format!("SKIPPED: {label} (recently verified)"));
            run.summary.snapshots_skipped += 1;
            return Ok(());
        }
        (run.log)(format!("verify {label}"));
        let mut errors = 0u64;
        for file in &manifest.files {
            if let Err(msg) = self.verify_file(run, ns, dir, file).await {
                (run.log)(format!("  check {}: {msg}", file.filename));
                errors += 1;
            }
        }
        let state = match errors {
            0 => "ok",
            _ => "failed",
        };
        let verify_state = VerifyState {
            state: state.to_string(),
            upid: upid.to_string(),
        };
        match self
            .tree
            .update_manifest(ns, dir, |m: &mut Manifest| {
                m.set_verify_state(&verify_state)
            })
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        match errors {
            0 => run.summary.snapshots_ok += 1,
            _ => {
                (run.log)(format!("verify {label}: failed ({errors} errors)"));
                run.summary.snapshots_failed.push(label);
            }
        }
        Ok(())
    }

    /// One manifest entry; `Err` carries the message for the task log.
    async fn verify_file(
        &self,
        run: &mut Run<'_>,
        ns: &BackupNamespace,
        dir: &BackupDir,
        file: &FileInfo,
    ) -> Result<(), String> {
        let raw = self
            .tree
            .read_snapshot_file(ns, dir, &file.filename)
            .await
            .map_err(|e| e.to_string())?;
        let Some(kind) = index_kind_of(&file.filename) else {
            return verify_blob(file, &raw);
        };
        let index = AnyIndex::parse(kind, &raw).map_err(|e| format!("unreadable index: {e}"))?;
        if digest_to_hex(&index.csum()) != file.csum || index.size() != file.size {
            return Err("index checksum or size differs from the manifest".to_string());
        }
        let encrypted = file.crypt_mode == CryptMode::Encrypt;
        let mut seen: HashSet<Digest> = HashSet::new();
        let mut failed = 0u64;
        for (digest, len) in index.chunks() {
            if !seen.insert(digest) {
                continue;
            }
            if !self.verify_chunk(run, &digest, encrypted, len).await {
                failed += 1;
            }
        }
        match failed {
            0 => Ok(()),
            n => Err(format!("{n} bad chunks")),
        }
    }

    /// Check a chunk once per run; true when good.
    async fn verify_chunk(
        &self,
        run: &mut Run<'_>,
        digest: &Digest,
        encrypted: bool,
        len: u64,
    ) -> bool {
        if let Some(good) = run.verdicts.get(digest) {
            return *good;
        }
        let level = match (run.opts.level, run.opts.sample_percent) {
            (ChunkCheck::Deep, Some(p)) if p < 100 => match rand::random::<u8>() % 100 < p {
                true => ChunkCheck::Deep,
                false => ChunkCheck::Cheap,
            },
            (level, _) => level,
        };
        run.summary.chunks_checked += 1;
        if level == ChunkCheck::Deep {
            run.summary.chunks_deep += 1;
        }
        let hex = digest_to_hex(digest);
        let verdict = self.chunks.check(digest, level, encrypted, Some(len)).await;
        let good = match verdict {
            ChunkVerdict::Ok => true,
            ChunkVerdict::Present => {
                run.summary.chunks_present_only += 1;
                true
            }
            ChunkVerdict::Unreadable(e) => {
                (run.log)(format!("  can't verify chunk {hex}: {e}"));
                run.summary.chunks_unreadable += 1;
                // Not remembered: a later snapshot may read it fine.
                return false;
            }
            ChunkVerdict::Missing => {
                (run.log)(format!("  chunk {hex} is missing"));
                run.summary.chunks_missing.push(hex.clone());
                false
            }
            ChunkVerdict::Corrupt(reason) => {
                (run.log)(format!("  chunk {hex} is corrupt: {reason}"));
                run.summary.chunks_corrupt.push(hex.clone());
                false
            }
        };
        if !good {
            run.dropped = true;
            match self.mark_chunk_bad(digest).await {
                Ok(Some(key)) => (run.log)(format!("  moved chunk {hex} to {key}")),
                Ok(None) => {}
                Err(e) => (run.log)(format!("  unable to move chunk {hex} aside: {e}")),
            }
        }
        run.verdicts.insert(*digest, good);
        good
    }
}

/// Blob files: CRC, raw length and SHA-256 as listed; plain ones must decode. The blob's own
/// magic decides whether it can be decoded, not the manifest's crypt mode: clients list
/// `rsa-encrypted.key.blob` with the backup's crypt mode (`encrypt`) but store it as a plain
/// blob, and PBS's verify accepts that.
fn verify_blob(file: &FileInfo, raw: &[u8]) -> Result<(), String> {
    let view = BlobView::parse(raw).map_err(|e| format!("not a valid blob: {e}"))?;
    view.verify_crc()
        .map_err(|e| format!("CRC check failed: {e}"))?;
    if raw.len() as u64 != file.size {
        return Err(format!(
            "size {} differs from the manifest's {}",
            raw.len(),
            file.size
        ));
    }
    if digest_to_hex(&sha256(raw)) != file.csum {
        return Err("checksum differs from the manifest".to_string());
    }
    if view.kind().is_encrypted() {
        return Ok(());
    }
    view.decode(MAX_BLOB_SIZE)
        .map(|_| ())
        .map_err(|e| format!("cannot decode: {e}"))
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
