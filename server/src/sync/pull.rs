//! The pull job (docs/design.md#sync): copy the snapshots of a remote datastore (a namespace
//! subtree of it) into a local datastore, like PBS's pull sync.
//!
//! * Namespaces: the remote `remote_ns` subtree (to `max_depth`) maps onto the local `ns`
//!   subtree; missing local namespaces are created.
//! * Groups: those passing the group filters, several at once (`worker_threads`). A local
//!   group owned by someone other than the job's owner is refused, never written.
//! * Snapshots: only those newer than the group's newest local snapshot (and, with
//!   `transfer_last`, among the newest N); in-progress remote snapshots are skipped. The newest
//!   local one is re-checked by its manifest alone.
//! * A snapshot is written through a [`BackupLease`] like a client's backup: files first, then
//!   the remote's manifest unchanged (its signature stays valid), which makes it appear. Only
//!   chunks the local store lacks are downloaded; each is checked (CRC, and for plain chunks
//!   digest and size) before it is stored. A job cut off mid-way leaves no partial snapshot,
//!   and its next run downloads none of the chunks already stored.
//! * `remove_vanished`: local snapshots, groups (owned by the job's owner, in the filters'
//!   scope) and namespaces that vanished on the remote are removed; protected and
//!   retention-locked snapshots stay, and so do their groups and namespaces.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::job::{
    add, check_abort, get, group_query, log_summary, ns_query, parse_group, parse_namespaces,
    progress, rate, remap, store_path, AbortCheck, LogSink,
};
use super::{RemoteClient, RemoteReader, SyncError, SyncParams};
use crate::datastore::{BackupLease, Datastore, DatastoreError};
use crate::format::blob::check_uploaded_chunk;
use crate::format::group_filter::group_selected;
use crate::format::index::{index_kind_of, AnyIndex};
use crate::format::manifest::{CryptMode, Manifest};
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace};
use crate::format::{digest_to_hex, human_bytes, sha256, Digest};

/// Chunks downloaded at the same time within one archive.
const CHUNK_PARALLEL: usize = 8;
const MANIFEST: &str = "index.json.blob";
const CLIENT_LOG: &str = "client.log.blob";

/// What a run did (the job history's summary).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PullSummary {
    pub namespaces: u64,
    pub groups: u64,
    pub snapshots_pulled: u64,
    /// Newest local snapshots re-checked and found unchanged.
    pub snapshots_unchanged: u64,
    /// Snapshots left out by `transfer_last`, `verified_only`, `encrypted_only` or because
    /// they are in progress on the remote.
    pub snapshots_skipped: u64,
    pub chunks_pulled: u64,
    pub bytes_pulled: u64,
    /// Chunks the indexes named that the local store already had.
    pub chunks_present: u64,
    pub removed_snapshots: u64,
    pub removed_groups: u64,
    pub removed_namespaces: u64,
    /// Vanished snapshots kept because they are protected or retention-locked.
    pub kept_snapshots: u64,
    /// Groups or namespaces that failed; the log says why.
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    snapshots_pulled: AtomicU64,
    snapshots_unchanged: AtomicU64,
    snapshots_skipped: AtomicU64,
    chunks_pulled: AtomicU64,
    bytes_pulled: AtomicU64,
    chunks_present: AtomicU64,
    removed_snapshots: AtomicU64,
    removed_groups: AtomicU64,
    removed_namespaces: AtomicU64,
    kept_snapshots: AtomicU64,
}

/// Runs the pull job once. Errors of single groups and namespaces are logged and counted in
/// [`PullSummary::errors`]; an error that stops the whole run (login, listing) is returned.
pub async fn run(
    ds: Arc<Datastore>,
    params: SyncParams,
    log: LogSink,
    aborted: AbortCheck,
) -> Result<PullSummary, SyncError> {
    let started = Instant::now();
    log(format!(
        "sync datastore '{}' from '{}/{}'",
        ds.name(),
        params.remote.name,
        params.remote_store
    ));
    let client = RemoteClient::connect(&params.remote, params.rate_in, params.rate_out).await?;
    let job = Puller {
        ds,
        params,
        client,
        log: log.clone(),
        aborted,
        counters: Counters::default(),
    };
    let params = &job.params;
    let ds = &job.ds;
    let remote_namespaces = job.remote_namespaces().await?;
    let mut summary = PullSummary::default();
    let mut local_namespaces = BTreeSet::new();
    for remote_ns in &remote_namespaces {
        check_abort(&job.aborted)?;
        log("----".to_string());
        let local_ns = remap(remote_ns, &params.remote_ns, &params.ns)?;
        log(format!(
            "Syncing datastore '{}', namespace '{}' into datastore '{}', namespace '{}'",
            params.remote_store,
            remote_ns.display_path(),
            ds.name(),
            local_ns.display_path()
        ));
        local_namespaces.insert(local_ns.clone());
        summary.namespaces += 1;
        match job.pull_namespace(remote_ns, &local_ns).await {
            Ok((groups, errors)) => {
                summary.groups += groups;
                summary.errors += errors;
            }
            Err(SyncError::Aborted) => return Err(SyncError::Aborted),
            Err(e) => {
                log(format!(
                    "sync namespace '{}' failed - {e}",
                    remote_ns.display_path()
                ));
                summary.errors += 1;
            }
        }
    }
    if params.remove_vanished {
        summary.errors += job.remove_vanished_namespaces(&local_namespaces).await?;
    }
    let c = &job.counters;
    summary.snapshots_pulled = get(&c.snapshots_pulled);
    summary.snapshots_unchanged = get(&c.snapshots_unchanged);
    summary.snapshots_skipped = get(&c.snapshots_skipped);
    summary.chunks_pulled = get(&c.chunks_pulled);
    summary.bytes_pulled = get(&c.bytes_pulled);
    summary.chunks_present = get(&c.chunks_present);
    summary.removed_snapshots = get(&c.removed_snapshots);
    summary.removed_groups = get(&c.removed_groups);
    summary.removed_namespaces = get(&c.removed_namespaces);
    summary.kept_snapshots = get(&c.kept_snapshots);
    let removed = (
        summary.removed_snapshots,
        summary.removed_groups,
        summary.removed_namespaces,
    );
    log_summary(
        &log,
        "pulled",
        (summary.bytes_pulled, summary.chunks_pulled),
        started,
        params.remove_vanished.then_some(removed),
    );
    Ok(summary)
}

/// One remote snapshot as the remote lists it.
#[derive(Clone, Debug)]
struct RemoteSnapshot {
    dir: BackupDir,
    /// No `size`: the remote has no manifest yet.
    in_progress: bool,
    verified: bool,
}

struct Puller {
    ds: Arc<Datastore>,
    params: SyncParams,
    client: RemoteClient,
    log: LogSink,
    aborted: AbortCheck,
    counters: Counters,
}

impl Puller {
    /// The remote namespaces to pull, parents before children.
    async fn remote_namespaces(&self) -> Result<Vec<BackupNamespace>, SyncError> {
        let p = &self.params;
        let mut query = Vec::new();
        if !p.remote_ns.is_root() {
            query.push(("parent", p.remote_ns.display_path()));
        }
        if let Some(depth) = p.max_depth {
            query.push(("max-depth", depth.to_string()));
        }
        let listed = self
            .client
            .get_json(&store_path(&self.params.remote_store, "namespace"), &query)
            .await?;
        let mut out: Vec<BackupNamespace> = parse_namespaces(&listed)?
            .into_iter()
            .filter(|ns| {
                let depth = ns.depth().saturating_sub(p.remote_ns.depth());
                ns.components().starts_with(p.remote_ns.components())
                    && p.max_depth.is_none_or(|max| depth <= max)
            })
            .collect();
        out.sort_by(|a, b| a.components().cmp(b.components()));
        out.dedup();
        Ok(out)
    }

    /// Creates `ns` and any missing parent.
    async fn ensure_namespace(&self, ns: &BackupNamespace) -> Result<(), SyncError> {
        let tree = self.ds.tree();
        let mut current = BackupNamespace::root();
        for name in ns.components() {
            let child = current.child(name).map_err(|source| SyncError::Format {
                object: format!("namespace '{}'", ns.display_path()),
                source,
            })?;
            if !tree.namespace_exists(&child).await? {
                match tree.create_namespace(&current, name).await {
                    Ok(_) | Err(DatastoreError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                (self.log)(format!("created namespace '{}'", child.display_path()));
            }
            current = child;
        }
        Ok(())
    }

    /// Pulls the selected groups of one namespace; (groups, errors).
    async fn pull_namespace(
        &self,
        remote_ns: &BackupNamespace,
        local_ns: &BackupNamespace,
    ) -> Result<(u64, u64), SyncError> {
        self.ensure_namespace(local_ns).await?;
        let listed = self
            .client
            .get_json(
                &store_path(&self.params.remote_store, "groups"),
                &ns_query(remote_ns),
            )
            .await?;
        let mut remote_groups = BTreeSet::new();
        for item in listed.as_array().into_iter().flatten() {
            match parse_group(item) {
                Some(group) => {
                    remote_groups.insert(group);
                }
                None => (self.log)(format!(
                    "ignoring a remote group entry that does not parse: {item}"
                )),
            }
        }
        let selected: Vec<BackupGroup> = remote_groups
            .iter()
            .filter(|g| group_selected(&self.params.filters, g))
            .cloned()
            .collect();
        (self.log)(format!(
            "Found {} groups to sync (out of {} total)",
            selected.len(),
            remote_groups.len()
        ));
        let workers = self.params.worker_threads.max(1);
        let group_count = selected.len() as u64;
        let results: Vec<(String, Result<(), SyncError>)> = futures::stream::iter(selected)
            .map(|group| self.pull_group_labelled(remote_ns, local_ns, group))
            .buffer_unordered(workers)
            .collect()
            .await;
        let mut errors = 0;
        for (label, result) in results {
            match result {
                Ok(()) => {}
                Err(SyncError::Aborted) => return Err(SyncError::Aborted),
                Err(e) => {
                    (self.log)(format!("[{label}]: sync group failed - {e}"));
                    errors += 1;
                }
            }
        }
        if self.params.remove_vanished {
            errors += self
                .remove_vanished_groups(local_ns, &remote_groups)
                .await?;
        }
        Ok((group_count, errors))
    }

    /// Refuses a local group another owner holds.
    async fn check_owner(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<(), SyncError> {
        let owner = self.ds.tree().group_owner(ns, group).await?;
        match owner {
            Some(owner) if owner != self.params.owner => Err(SyncError::Refused(format!(
                "owner check failed ({owner} != {})",
                self.params.owner
            ))),
            _ => Ok(()),
        }
    }

    async fn remote_snapshots(
        &self,
        remote_ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<Vec<RemoteSnapshot>, SyncError> {
        let query = group_query(remote_ns, group);
        let listed = self
            .client
            .get_json(&store_path(&self.params.remote_store, "snapshots"), &query)
            .await?;
        let mut out = Vec::new();
        for item in listed.as_array().into_iter().flatten() {
            let Some(time) = item["backup-time"].as_i64() else {
                continue;
            };
            let Ok(dir) = BackupDir::new(group.clone(), time) else {
                continue;
            };
            out.push(RemoteSnapshot {
                dir,
                in_progress: item.get("size").is_none_or(Value::is_null),
                verified: item["verification"]["state"].as_str() == Some("ok"),
            });
        }
        out.sort_by_key(|s| s.dir.time);
        Ok(out)
    }

    async fn pull_group_labelled(
        &self,
        remote_ns: &BackupNamespace,
        local_ns: &BackupNamespace,
        group: BackupGroup,
    ) -> (String, Result<(), SyncError>) {
        (
            group.path(),
            self.pull_group(remote_ns, local_ns, &group).await,
        )
    }

    async fn pull_group(
        &self,
        remote_ns: &BackupNamespace,
        local_ns: &BackupNamespace,
        group: &BackupGroup,
    ) -> Result<(), SyncError> {
        let label = group.path();
        let say = |line: String| (self.log)(format!("[{label}]: {line}"));
        self.check_owner(local_ns, group).await?;
        let remote = self.remote_snapshots(remote_ns, group).await?;
        let local = self.ds.tree().list_snapshots(local_ns, group).await?;
        let last_local = local.iter().rev().find(|s| s.finished).map(|s| s.dir.time);

        let mut candidates = Vec::new();
        for snap in &remote {
            if snap.in_progress {
                say(format!(
                    "skipping snapshot {} - in-progress backup",
                    snap.dir.time_string()
                ));
                add(&self.counters.snapshots_skipped, 1);
            } else if self.params.verified_only && !snap.verified {
                add(&self.counters.snapshots_skipped, 1);
            } else {
                candidates.push(snap);
            }
        }
        // transfer-last keeps the newest N, and always the newest local one for its re-check.
        let keep_from = self
            .params
            .transfer_last
            .map_or(0, |n| candidates.len().saturating_sub(n as usize));
        let total = candidates.len();
        for (i, snap) in candidates.iter().enumerate() {
            check_abort(&self.aborted)?;
            let time = snap.dir.time;
            if last_local.is_some_and(|last| time < last) {
                continue;
            }
            if last_local == Some(time) {
                say(format!("re-sync snapshot {}", snap.dir.time_string()));
                self.recheck_snapshot(remote_ns, local_ns, &snap.dir, &say)
                    .await?;
            } else if i < keep_from {
                add(&self.counters.snapshots_skipped, 1);
                continue;
            } else {
                self.pull_snapshot(remote_ns, local_ns, &snap.dir, &say)
                    .await?;
            }
            say(progress(i + 1, total));
        }
        if self.params.remove_vanished {
            let on_remote: HashSet<i64> = remote.iter().map(|s| s.dir.time).collect();
            for snap in local.iter().filter(|s| !on_remote.contains(&s.dir.time)) {
                let path = snap.dir.path();
                if snap.protected {
                    say(format!("kept vanished snapshot {path} - it is protected"));
                    add(&self.counters.kept_snapshots, 1);
                    continue;
                }
                match self
                    .ds
                    .tree()
                    .remove_snapshot(local_ns, &snap.dir, false)
                    .await
                {
                    Ok(()) => {
                        say(format!("delete vanished snapshot {path}"));
                        add(&self.counters.removed_snapshots, 1);
                    }
                    Err(e @ (DatastoreError::Protected(_) | DatastoreError::Locked(_))) => {
                        say(format!("kept vanished snapshot {path} - {e}"));
                        add(&self.counters.kept_snapshots, 1);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// The newest local snapshot again: only its manifest is downloaded and compared.
    async fn recheck_snapshot(
        &self,
        remote_ns: &BackupNamespace,
        local_ns: &BackupNamespace,
        dir: &BackupDir,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<(), SyncError> {
        let reader = self
            .client
            .reader(&self.params.remote_store, remote_ns, dir)
            .await?;
        let remote = reader.download(MANIFEST).await?;
        let local = self
            .ds
            .tree()
            .read_snapshot_file(local_ns, dir, MANIFEST)
            .await?;
        if remote == local {
            say(format!("{}: no data changes", dir.time_string()));
            add(&self.counters.snapshots_unchanged, 1);
            return Ok(());
        }
        let parse = |raw: &[u8], side: &str| {
            Manifest::from_blob(raw).map_err(|source| SyncError::Format {
                object: format!("{side} manifest of {}", dir.path()),
                source,
            })
        };
        let (remote, local) = (parse(&remote, "remote")?, parse(&local, "local")?);
        if remote.files != local.files {
            // The same snapshot with other files: never overwritten, left for a human.
            say(format!(
                "{}: the remote's files differ from the local copy; the local copy is kept",
                dir.time_string()
            ));
            return Ok(());
        }
        // Notes or the verify state changed there: the unprotected part (outside the
        // signature) follows the remote, as PBS's re-sync does.
        self.ds
            .tree()
            .update_manifest(local_ns, dir, |m| m.unprotected = remote.unprotected)
            .await?;
        say(format!(
            "{}: notes and verify state updated from the remote",
            dir.time_string()
        ));
        Ok(())
    }

    async fn pull_snapshot(
        &self,
        remote_ns: &BackupNamespace,
        local_ns: &BackupNamespace,
        dir: &BackupDir,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<(), SyncError> {
        let time = dir.time_string();
        let reader = self
            .client
            .reader(&self.params.remote_store, remote_ns, dir)
            .await?;
        let manifest_raw = reader.download(MANIFEST).await?;
        let manifest = Manifest::from_blob(&manifest_raw).map_err(|source| SyncError::Format {
            object: format!("manifest of remote snapshot {}", dir.path()),
            source,
        })?;
        if self.params.encrypted_only
            && !manifest
                .files
                .iter()
                .all(|f| f.crypt_mode == CryptMode::Encrypt)
        {
            say(format!("{time}: skipped - not encrypted (encrypted-only)"));
            add(&self.counters.snapshots_skipped, 1);
            return Ok(());
        }
        say(format!("{time}: start sync"));
        let lease = self
            .ds
            .start_backup(local_ns, &dir.group, dir.time, &self.params.owner)
            .await?;
        if lease.owner() != self.params.owner {
            return Err(SyncError::Refused(format!(
                "owner check failed ({} != {})",
                lease.owner(),
                self.params.owner
            )));
        }
        for file in &manifest.files {
            check_abort(&self.aborted)?;
            let name = &file.filename;
            say(format!("{time}/{name}: sync archive"));
            let raw = reader.download(name).await?;
            let object = || format!("{name} of remote snapshot {}", dir.path());
            match index_kind_of(name) {
                Some(kind) => {
                    let index =
                        AnyIndex::parse(kind, &raw).map_err(|source| SyncError::Format {
                            object: object(),
                            source,
                        })?;
                    check_csum(&digest_to_hex(&index.csum()), &file.csum, &object())?;
                    let started = Instant::now();
                    let bytes = self.pull_chunks(&reader, &lease, &index).await?;
                    say(format!(
                        "{time}/{name}: downloaded {} ({}/s)",
                        human_bytes(bytes, 2),
                        human_bytes(rate(bytes, started), 2)
                    ));
                }
                None => check_csum(&digest_to_hex(&sha256(&raw)), &file.csum, &object())?,
            }
            lease.write_file(name, raw).await?;
        }
        match reader.download(CLIENT_LOG).await {
            Ok(log) => {
                lease.write_file(CLIENT_LOG, log).await?;
                say(format!(
                    "Snapshot {}: got backup log file {CLIENT_LOG}",
                    dir.path()
                ));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        lease.commit(manifest_raw).await?;
        add(&self.counters.snapshots_pulled, 1);
        say(format!("{time}: sync done"));
        Ok(())
    }

    /// Downloads, checks and stores the chunks of `index` the local store lacks; the bytes
    /// downloaded. Every chunk is registered with the lease first, so GC keeps it.
    async fn pull_chunks(
        &self,
        reader: &RemoteReader,
        lease: &BackupLease,
        index: &AnyIndex,
    ) -> Result<u64, SyncError> {
        let mut seen = HashSet::new();
        let unique: Vec<(Digest, u64)> = index
            .chunks()
            .into_iter()
            .filter(|(digest, _)| seen.insert(*digest))
            .collect();
        let mut downloads = futures::stream::iter(unique)
            .map(|(digest, size)| self.pull_chunk(reader, lease, digest, size))
            .buffer_unordered(CHUNK_PARALLEL);
        let mut downloaded = 0;
        while let Some(bytes) = downloads.next().await {
            downloaded += bytes?;
        }
        Ok(downloaded)
    }

    /// One chunk of an index: registered with the lease, then downloaded, checked and stored
    /// unless the local store has it; the bytes downloaded.
    async fn pull_chunk(
        &self,
        reader: &RemoteReader,
        lease: &BackupLease,
        digest: Digest,
        size: u64,
    ) -> Result<u64, SyncError> {
        check_abort(&self.aborted)?;
        lease.register_chunk(&digest, size);
        let chunks = self.ds.chunks();
        if chunks.is_stored_for_lease(&digest).await? {
            add(&self.counters.chunks_present, 1);
            return Ok(0);
        }
        let raw = reader.chunk(&digest).await?;
        let len = raw.len() as u64;
        let (raw, encrypted) = check_chunk(raw, digest, size).await?;
        self.ds.insert_chunk(&digest, raw, encrypted).await?;
        add(&self.counters.chunks_pulled, 1);
        add(&self.counters.bytes_pulled, len);
        Ok(len)
    }

    /// Removes local groups of `local_ns` that are gone on the remote, are in the filters'
    /// scope and belong to the job's owner; the errors.
    async fn remove_vanished_groups(
        &self,
        local_ns: &BackupNamespace,
        remote_groups: &BTreeSet<BackupGroup>,
    ) -> Result<u64, SyncError> {
        let mut errors = 0;
        for group in self.ds.tree().list_groups(local_ns).await? {
            if remote_groups.contains(&group) || !group_selected(&self.params.filters, &group) {
                continue;
            }
            let owner = self.ds.tree().group_owner(local_ns, &group).await?;
            if owner.as_deref() != Some(self.params.owner.as_str()) {
                continue;
            }
            let label = group.path();
            match self.ds.tree().remove_group(local_ns, &group).await {
                Ok(stats) => {
                    add(&self.counters.removed_snapshots, stats.removed_snapshots);
                    add(&self.counters.kept_snapshots, stats.protected_snapshots);
                    if stats.protected_snapshots == 0 {
                        (self.log)(format!("delete vanished group '{label}'"));
                        add(&self.counters.removed_groups, 1);
                    } else {
                        (self.log)(format!(
                            "kept vanished group '{label}' - {} protected or locked snapshots remain",
                            stats.protected_snapshots
                        ));
                    }
                }
                Err(e) => {
                    (self.log)(format!("removing vanished group '{label}' failed - {e}"));
                    errors += 1;
                }
            }
        }
        Ok(errors)
    }

    /// Removes local namespaces below `ns` (within `max_depth`) that no remote namespace maps
    /// to, deepest first; the errors.
    async fn remove_vanished_namespaces(
        &self,
        synced: &BTreeSet<BackupNamespace>,
    ) -> Result<u64, SyncError> {
        let p = &self.params;
        let tree = self.ds.tree();
        if !tree.namespace_exists(&p.ns).await? {
            return Ok(0);
        }
        let mut local = tree.list_namespaces(&p.ns, p.max_depth).await?;
        local.retain(|ns| !synced.contains(ns) && *ns != p.ns);
        local.sort_by_key(|ns| std::cmp::Reverse(ns.depth()));
        let mut errors = 0;
        for ns in local {
            let path = ns.display_path();
            match tree.delete_namespace(&ns, true).await {
                Ok(stats) if stats.protected_snapshots == 0 => {
                    (self.log)(format!("delete vanished namespace '{path}'"));
                    add(&self.counters.removed_namespaces, 1);
                    add(&self.counters.removed_snapshots, stats.removed_snapshots);
                }
                Ok(stats) => {
                    (self.log)(format!(
                        "kept vanished namespace '{path}' - {} protected or locked snapshots remain",
                        stats.protected_snapshots
                    ));
                    add(&self.counters.removed_snapshots, stats.removed_snapshots);
                    add(&self.counters.kept_snapshots, stats.protected_snapshots);
                }
                Err(e) => {
                    (self.log)(format!("removing vanished namespace '{path}' failed - {e}"));
                    errors += 1;
                }
            }
        }
        Ok(errors)
    }
}

fn check_csum(actual: &str, listed: &str, object: &str) -> Result<(), SyncError> {
    match actual.eq_ignore_ascii_case(listed) {
        true => Ok(()),
        false => Err(SyncError::Refused(format!(
            "{object}: checksum {actual} does not match the manifest's {listed}"
        ))),
    }
}

/// The checks of an uploaded chunk (docs/formats.md#chunk-upload-checks) on a downloaded
/// one, off the async threads; the chunk and whether it is encrypted.
async fn check_chunk(raw: Bytes, digest: Digest, size: u64) -> Result<(Bytes, bool), SyncError> {
    tokio::task::spawn_blocking(move || {
        let mut raw = Vec::from(raw);
        let len = raw.len() as u64;
        let checked = check_uploaded_chunk(&mut raw, len, &digest, size).map_err(|source| {
            SyncError::Format {
                object: format!("remote chunk {}", digest_to_hex(&digest)),
                source,
            }
        })?;
        Ok((Bytes::from(raw), checked.kind.is_encrypted()))
    })
    .await
    .map_err(|e| SyncError::Refused(format!("chunk check task failed: {e}")))?
}
