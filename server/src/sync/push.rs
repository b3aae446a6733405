//! The push job (docs/design.md#sync): copy local snapshots to a remote PBS-compatible server,
//! the calls a pushing PBS 4.2 makes (corpus `s4-push-sync`; docs/protocol.md#push-sync).
//!
//! * Namespaces: the local `ns` subtree (to `max_depth`) maps onto the remote `remote_ns`
//!   subtree; missing remote namespaces are created (`POST …/namespace`).
//! * Groups: those passing the filters, `worker_threads` at a time. A remote group owned by
//!   another auth id than the remote user is not written (PBS's owner rule).
//! * Snapshots: local finished ones newer than the remote group's newest (and with
//!   `transfer_last` among the newest N). Each goes in one backup session: the remote's
//!   previous manifest first, and each previous index right before the same archive is
//!   written, so its chunks are referenced, not sent; blobs and chunks travel as stored;
//!   indexes are rebuilt remotely from their digest lists and must match the local
//!   checksums; the local manifest goes last, unchanged. PBS's request order, exactly
//!   (`e2e/tests/sync_corpus.rs`).
//! * `remove_vanished`: remote snapshots, groups and namespaces gone locally are deleted;
//!   snapshots protected on the remote are left alone without a request, and the remote
//!   refuses what its retention locks hold.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::job::{
    add, check_abort, get, group_query, log_summary, ns_query, parse_group, parse_namespaces,
    progress, rate, remap, store_path, AbortCheck, LogSink,
};
use super::writer::{index_digests, IndexWriter};
use super::{RemoteClient, RemoteWriter, SyncError, SyncParams};
use crate::datastore::{Datastore, ReaderLease};
use crate::format::group_filter::group_selected;
use crate::format::index::{index_kind_of, AnyIndex};
use crate::format::manifest::{CryptMode, Manifest};
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace};
use crate::format::{human_bytes, Digest};

/// Chunks sent at the same time within one archive.
const CHUNK_PARALLEL: usize = 8;
const MANIFEST: &str = "index.json.blob";
const CLIENT_LOG: &str = "client.log.blob";

/// What a push run did (the job history's summary).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PushSummary {
    pub namespaces: u64,
    pub groups: u64,
    pub snapshots_pushed: u64,
    pub snapshots_skipped: u64,
    pub chunks_pushed: u64,
    pub bytes_pushed: u64,
    /// Chunks the remote already had from its previous snapshot (referenced, not sent).
    pub chunks_reused: u64,
    /// Chunks the remote kept from an interrupted push of the same snapshot (referenced,
    /// not sent again; only a remote that is this server keeps them).
    pub chunks_resumed: u64,
    pub removed_snapshots: u64,
    pub removed_groups: u64,
    pub removed_namespaces: u64,
    /// Vanished remote snapshots left alone because they are protected there.
    pub kept_snapshots: u64,
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    snapshots_pushed: AtomicU64,
    snapshots_skipped: AtomicU64,
    chunks_pushed: AtomicU64,
    bytes_pushed: AtomicU64,
    chunks_reused: AtomicU64,
    chunks_resumed: AtomicU64,
    removed_snapshots: AtomicU64,
    removed_groups: AtomicU64,
    removed_namespaces: AtomicU64,
    kept_snapshots: AtomicU64,
}

/// A remote group as the remote lists it.
struct RemoteGroup {
    owner: Option<String>,
}

/// A remote snapshot as the remote lists it.
struct RemoteSnapshot {
    time: i64,
    protected: bool,
}

/// Runs the push job once; errors of single groups and namespaces are logged and counted.
pub async fn run(
    ds: Arc<Datastore>,
    params: SyncParams,
    log: LogSink,
    aborted: AbortCheck,
) -> Result<PushSummary, SyncError> {
    let started = Instant::now();
    log(format!(
        "push datastore '{}' to '{}/{}'",
        ds.name(),
        params.remote.name,
        params.remote_store
    ));
    let client = RemoteClient::connect(&params.remote, params.rate_in, params.rate_out).await?;
    let version = client.get_json("/api2/json/version", &[]).await?;
    log(format!(
        "remote '{}' runs version {}",
        params.remote.name,
        version["version"].as_str().unwrap_or("?")
    ));
    // A pushing PBS 4.2 asks a target of 3.2.11 or later to keep protected snapshots when it
    // removes a vanished group or namespace (`error-on-protected=false`), and older ones not
    // at all (corpus `s4-push-sync` against 3.2.4).
    let deletes_keep_protected = remote_version(&version) >= (3, 2, 11);
    if !deletes_keep_protected && params.remove_vanished {
        log("Older api version on remote detected, deletion statistics might be incomplete".into());
    }
    // Our own server keeps the chunks of a cut session for the next one (`resumable_chunks`).
    let resumable = version["repoid"]
        .as_str()
        .is_some_and(|id| id.starts_with("pbs-cloud-server"));
    let job = Pusher {
        ds,
        params,
        client,
        resumable,
        deletes_keep_protected,
        log: log.clone(),
        aborted,
        counters: Counters::default(),
    };
    let mut summary = PushSummary::default();
    let local_namespaces = job
        .ds
        .tree()
        .list_namespaces(&job.params.ns, job.params.max_depth)
        .await?;
    let mut remote_namespaces = job.remote_namespaces().await?;
    let mut pushed_to = BTreeSet::new();
    for local_ns in &local_namespaces {
        check_abort(&job.aborted)?;
        log("----".to_string());
        let remote_ns = remap(local_ns, &job.params.ns, &job.params.remote_ns)?;
        log(format!(
            "Syncing datastore '{}', namespace '{}' into datastore '{}', namespace '{}'",
            job.ds.name(),
            local_ns.display_path(),
            job.params.remote_store,
            remote_ns.display_path()
        ));
        summary.namespaces += 1;
        pushed_to.insert(remote_ns.clone());
        let result = async {
            job.ensure_remote_namespace(&remote_ns, &mut remote_namespaces)
                .await?;
            job.push_namespace(local_ns, &remote_ns).await
        }
        .await;
        match result {
            Ok((groups, errors)) => {
                summary.groups += groups;
                summary.errors += errors;
            }
            Err(SyncError::Aborted) => return Err(SyncError::Aborted),
            Err(e) => {
                log(format!(
                    "sync namespace '{}' failed - {e}",
                    local_ns.display_path()
                ));
                summary.errors += 1;
            }
        }
    }
    if job.params.remove_vanished {
        summary.errors += job
            .remove_vanished_namespaces(&remote_namespaces, &pushed_to)
            .await;
    }
    let c = &job.counters;
    summary.snapshots_pushed = get(&c.snapshots_pushed);
    summary.snapshots_skipped = get(&c.snapshots_skipped);
    summary.chunks_pushed = get(&c.chunks_pushed);
    summary.bytes_pushed = get(&c.bytes_pushed);
    summary.chunks_reused = get(&c.chunks_reused);
    summary.chunks_resumed = get(&c.chunks_resumed);
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
        "pushed",
        (summary.bytes_pushed, summary.chunks_pushed),
        started,
        job.params.remove_vanished.then_some(removed),
    );
    Ok(summary)
}

struct Pusher {
    ds: Arc<Datastore>,
    params: SyncParams,
    client: RemoteClient,
    /// Whether the remote answers `resumable_chunks` (it is this server).
    resumable: bool,
    /// Whether group and namespace removals ask the remote to keep protected snapshots
    /// (`error-on-protected=false`, remote 3.2.11 or later).
    deletes_keep_protected: bool,
    log: LogSink,
    aborted: AbortCheck,
    counters: Counters,
}

impl Pusher {
    /// Every namespace of the remote store (a pusher asks without a query).
    async fn remote_namespaces(&self) -> Result<BTreeSet<BackupNamespace>, SyncError> {
        let listed = self
            .client
            .get_json(&store_path(&self.params.remote_store, "namespace"), &[])
            .await?;
        Ok(parse_namespaces(&listed)?.into_iter().collect())
    }

    /// Creates `ns` and its missing parents on the remote.
    async fn ensure_remote_namespace(
        &self,
        ns: &BackupNamespace,
        existing: &mut BTreeSet<BackupNamespace>,
    ) -> Result<(), SyncError> {
        let mut current = BackupNamespace::root();
        for name in ns.components() {
            let child = current.child(name).map_err(|source| SyncError::Format {
                object: format!("remote namespace '{}'", ns.display_path()),
                source,
            })?;
            if !existing.contains(&child) {
                let mut body = json!({ "name": name });
                if !current.is_root() {
                    body["parent"] = current.display_path().into();
                }
                self.client
                    .post_json(&store_path(&self.params.remote_store, "namespace"), &body)
                    .await?;
                (self.log)(format!(
                    "created remote namespace '{}'",
                    child.display_path()
                ));
                existing.insert(child.clone());
            }
            current = child;
        }
        Ok(())
    }

    async fn remote_groups(
        &self,
        remote_ns: &BackupNamespace,
    ) -> Result<BTreeMap<BackupGroup, RemoteGroup>, SyncError> {
        let listed = self
            .client
            .get_json(
                &store_path(&self.params.remote_store, "groups"),
                &ns_query(remote_ns),
            )
            .await?;
        let mut out = BTreeMap::new();
        for item in listed.as_array().into_iter().flatten() {
            let Some(group) = parse_group(item) else {
                continue;
            };
            let owner = item["owner"].as_str().map(str::to_string);
            out.insert(group, RemoteGroup { owner });
        }
        Ok(out)
    }

    /// Pushes the selected groups of one namespace; (groups, errors).
    async fn push_namespace(
        &self,
        local_ns: &BackupNamespace,
        remote_ns: &BackupNamespace,
    ) -> Result<(u64, u64), SyncError> {
        let remote_groups = self.remote_groups(remote_ns).await?;
        let local_groups = self.ds.tree().list_groups(local_ns).await?;
        let selected: Vec<BackupGroup> = local_groups
            .iter()
            .filter(|g| group_selected(&self.params.filters, g))
            .cloned()
            .collect();
        (self.log)(format!(
            "Found {} groups to sync (out of {} total)",
            selected.len(),
            local_groups.len()
        ));
        let count = selected.len() as u64;
        let results: Vec<(String, Result<(), SyncError>)> = futures::stream::iter(selected)
            .map(|group| {
                let owner = remote_groups
                    .get(&group)
                    .map(|g| g.owner.clone().unwrap_or_default());
                self.push_group_labelled(local_ns, remote_ns, group, owner)
            })
            .buffer_unordered(self.params.worker_threads.max(1))
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
            let local: BTreeSet<&BackupGroup> = local_groups.iter().collect();
            for (group, info) in &remote_groups {
                if local.contains(group)
                    || !group_selected(&self.params.filters, group)
                    || info.owner.as_deref() != Some(self.params.remote.auth_id.as_str())
                {
                    continue;
                }
                let mut query = group_query(remote_ns, group);
                if self.deletes_keep_protected {
                    query.push(("error-on-protected", "false".to_string()));
                }
                match self
                    .client
                    .delete(&store_path(&self.params.remote_store, "groups"), &query)
                    .await
                {
                    Ok(stats) => {
                        add(
                            &self.counters.kept_snapshots,
                            stats["protected-snapshots"].as_u64().unwrap_or(0),
                        );
                        (self.log)(format!("delete vanished group '{}'", group.path()));
                        add(&self.counters.removed_groups, 1);
                    }
                    Err(e) => {
                        (self.log)(format!(
                            "removing vanished group '{}' failed - {e}",
                            group.path()
                        ));
                        errors += 1;
                    }
                }
            }
        }
        Ok((count, errors))
    }

    async fn push_group_labelled(
        &self,
        local_ns: &BackupNamespace,
        remote_ns: &BackupNamespace,
        group: BackupGroup,
        remote_owner: Option<String>,
    ) -> (String, Result<(), SyncError>) {
        let result = self
            .push_group(local_ns, remote_ns, &group, remote_owner)
            .await;
        (group.path(), result)
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
        let mut out: Vec<RemoteSnapshot> = listed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| {
                Some(RemoteSnapshot {
                    time: item["backup-time"].as_i64()?,
                    protected: item["protected"].as_bool().unwrap_or(false),
                })
            })
            .collect();
        out.sort_by_key(|s| s.time);
        Ok(out)
    }

    async fn push_group(
        &self,
        local_ns: &BackupNamespace,
        remote_ns: &BackupNamespace,
        group: &BackupGroup,
        remote_owner: Option<String>,
    ) -> Result<(), SyncError> {
        let label = group.path();
        let say = |line: String| (self.log)(format!("[{label}]: {line}"));
        if let Some(owner) = &remote_owner {
            if *owner != self.params.remote.auth_id {
                return Err(SyncError::Refused(format!(
                    "owner check failed ({} != {owner}): the remote group belongs to another user",
                    self.params.remote.auth_id
                )));
            }
        }
        // Listed even when the group is new there, as a pushing PBS does (corpus
        // `s4-push-sync`: an empty list).
        let remote = self.remote_snapshots(remote_ns, group).await?;
        let newest_remote = remote.last().map(|s| s.time);
        let mut local = Vec::new();
        for snap in self.ds.tree().list_snapshots(local_ns, group).await? {
            if !snap.finished {
                add(&self.counters.snapshots_skipped, 1);
                continue;
            }
            if self.params.verified_only || self.params.encrypted_only {
                let (manifest, _) = self.ds.tree().load_manifest(local_ns, &snap.dir).await?;
                let verified = manifest.verify_state().is_some_and(|v| v.state == "ok");
                let encrypted = manifest
                    .files
                    .iter()
                    .all(|f| f.crypt_mode == CryptMode::Encrypt);
                if (self.params.verified_only && !verified)
                    || (self.params.encrypted_only && !encrypted)
                {
                    add(&self.counters.snapshots_skipped, 1);
                    continue;
                }
            }
            local.push(snap.dir);
        }
        let keep_from = self
            .params
            .transfer_last
            .map_or(0, |n| local.len().saturating_sub(n as usize));
        let total = local.len();
        let mut has_previous = newest_remote.is_some();
        for (i, dir) in local.iter().enumerate() {
            check_abort(&self.aborted)?;
            if newest_remote.is_some_and(|newest| dir.time <= newest) {
                continue;
            }
            if i < keep_from {
                add(&self.counters.snapshots_skipped, 1);
                continue;
            }
            self.push_snapshot(local_ns, remote_ns, dir, has_previous, &say)
                .await?;
            has_previous = true;
            say(progress(i + 1, total));
        }
        if self.params.remove_vanished {
            let local_times: HashSet<i64> = local.iter().map(|d| d.time).collect();
            for snap in remote.iter().filter(|s| !local_times.contains(&s.time)) {
                let Ok(dir) = BackupDir::new(group.clone(), snap.time) else {
                    continue;
                };
                if snap.protected {
                    say(format!("Kept protected snapshot {}", dir.path()));
                    add(&self.counters.kept_snapshots, 1);
                    continue;
                }
                let mut query = group_query(remote_ns, group);
                query.push(("backup-time", snap.time.to_string()));
                self.client
                    .delete(&store_path(&self.params.remote_store, "snapshots"), &query)
                    .await?;
                say(format!("delete vanished snapshot {}", dir.path()));
                add(&self.counters.removed_snapshots, 1);
            }
        }
        Ok(())
    }

    async fn push_snapshot(
        &self,
        local_ns: &BackupNamespace,
        remote_ns: &BackupNamespace,
        dir: &BackupDir,
        has_previous: bool,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<(), SyncError> {
        let time = dir.time_string();
        say(format!("{time}: start sync"));
        let lease = self.ds.start_reader(local_ns, dir).await?;
        let manifest_raw = lease.read_file(MANIFEST).await?;
        let manifest = Manifest::from_blob(&manifest_raw).map_err(|source| SyncError::Format {
            object: format!("manifest of local snapshot {}", dir.path()),
            source,
        })?;
        let writer = self
            .client
            .writer(&self.params.remote_store, remote_ns, dir)
            .await?;
        // The remote's previous snapshot: chunks of its indexes need not be sent again. Each
        // index of it is fetched right before the same archive is written, as a pushing PBS
        // does (corpus `s4-push-sync`).
        let mut known: HashSet<Digest> = HashSet::new();
        let previous = match has_previous {
            true => writer
                .previous(MANIFEST)
                .await
                .ok()
                .and_then(|raw| Manifest::from_blob(&raw).ok()),
            false => None,
        };
        // Chunks an interrupted push of this snapshot left on the remote.
        let mut resumed: HashSet<Digest> = HashSet::new();
        if self.resumable {
            // An older version of our server answers 404: then nothing is resumed.
            match writer.resumable_chunks().await {
                Ok(digests) => resumed.extend(digests),
                Err(e) => say(format!("{time}: no resumable chunks - {e}")),
            }
            if !resumed.is_empty() {
                say(format!(
                    "{time}: the remote kept {} chunks of an interrupted push",
                    resumed.len()
                ));
            }
        }
        for file in &manifest.files {
            check_abort(&self.aborted)?;
            let name = &file.filename;
            say(format!("{time}/{name}: sync archive"));
            let raw = lease.read_file(name).await?;
            match index_kind_of(name) {
                Some(kind) => {
                    let index =
                        AnyIndex::parse(kind, &raw).map_err(|source| SyncError::Format {
                            object: format!("{name} of local snapshot {}", dir.path()),
                            source,
                        })?;
                    if previous.as_ref().is_some_and(|p| p.file(name).is_some()) {
                        let raw = writer.previous(name).await?;
                        known.extend(index_digests(kind, &raw, name)?);
                    }
                    let started = Instant::now();
                    let index_writer = writer.open_index(name, &index).await?;
                    let sent = self
                        .push_chunks(&lease, &writer, &index_writer, &index, &mut known, &resumed)
                        .await?;
                    writer.append_and_close(&index_writer, &index, name).await?;
                    say(format!(
                        "{time}/{name}: uploaded {} ({}/s)",
                        human_bytes(sent, 2),
                        human_bytes(rate(sent, started), 2)
                    ));
                }
                None => writer.blob(name, raw).await?,
            }
        }
        match lease.read_file(CLIENT_LOG).await {
            Ok(log) => writer.blob(CLIENT_LOG, log).await?,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        writer.blob(MANIFEST, manifest_raw).await?;
        writer.finish().await?;
        add(&self.counters.snapshots_pushed, 1);
        say(format!("{time}: sync done"));
        Ok(())
    }

    /// Sends the chunks of `index` the remote does not know yet (neither in `known` nor
    /// `resumed`); the bytes sent.
    async fn push_chunks(
        &self,
        lease: &ReaderLease,
        writer: &RemoteWriter,
        index_writer: &IndexWriter,
        index: &AnyIndex,
        known: &mut HashSet<Digest>,
        resumed: &HashSet<Digest>,
    ) -> Result<u64, SyncError> {
        let mut missing = Vec::new();
        for (digest, size) in index.chunks() {
            if !known.insert(digest) {
                add(&self.counters.chunks_reused, 1);
            } else if resumed.contains(&digest) {
                add(&self.counters.chunks_resumed, 1);
            } else {
                missing.push((digest, size));
            }
        }
        let mut uploads = futures::stream::iter(missing)
            .map(|(digest, size)| self.push_chunk(lease, writer, index_writer, digest, size))
            .buffer_unordered(CHUNK_PARALLEL);
        let mut sent = 0;
        while let Some(bytes) = uploads.next().await {
            sent += bytes?;
        }
        Ok(sent)
    }

    async fn push_chunk(
        &self,
        lease: &ReaderLease,
        writer: &RemoteWriter,
        index_writer: &IndexWriter,
        digest: Digest,
        size: u64,
    ) -> Result<u64, SyncError> {
        check_abort(&self.aborted)?;
        let raw: Bytes = lease.load_chunk(&digest).await?;
        let len = raw.len() as u64;
        writer.chunk(index_writer, &digest, size, raw).await?;
        add(&self.counters.chunks_pushed, 1);
        add(&self.counters.bytes_pushed, len);
        Ok(len)
    }

    /// Deletes remote namespaces below `remote_ns` (within `max_depth`) that no local
    /// namespace maps to, deepest first; the errors.
    async fn remove_vanished_namespaces(
        &self,
        remote: &BTreeSet<BackupNamespace>,
        pushed_to: &BTreeSet<BackupNamespace>,
    ) -> u64 {
        let base = &self.params.remote_ns;
        let mut vanished: Vec<&BackupNamespace> = remote
            .iter()
            .filter(|ns| {
                ns.components().starts_with(base.components())
                    && ns.depth() > base.depth()
                    && self
                        .params
                        .max_depth
                        .is_none_or(|max| ns.depth() - base.depth() <= max)
                    && !pushed_to.contains(*ns)
            })
            .collect();
        vanished.sort_by_key(|ns| std::cmp::Reverse(ns.depth()));
        let mut errors = 0;
        for ns in vanished {
            let mut query = vec![
                ("ns", ns.display_path()),
                ("delete-groups", "true".to_string()),
            ];
            if self.deletes_keep_protected {
                query.push(("error-on-protected", "false".to_string()));
            }
            match self
                .client
                .delete(&store_path(&self.params.remote_store, "namespace"), &query)
                .await
            {
                Ok(stats) => {
                    let kept = stats["protected-snapshots"].as_u64().unwrap_or(0);
                    add(
                        &self.counters.removed_snapshots,
                        stats["removed-snapshots"].as_u64().unwrap_or(0),
                    );
                    add(&self.counters.kept_snapshots, kept);
                    if kept == 0 {
                        (self.log)(format!("delete vanished namespace '{}'", ns.display_path()));
                        add(&self.counters.removed_namespaces, 1);
                    } else {
                        (self.log)(format!(
                            "kept vanished namespace '{}' - {kept} protected snapshots remain",
                            ns.display_path()
                        ));
                    }
                }
                Err(e) => {
                    (self.log)(format!(
                        "removing vanished namespace '{}' failed - {e}",
                        ns.display_path()
                    ));
                    errors += 1;
                }
            }
        }
        errors
    }
}

/// `(major, minor, release)` of a `GET version` answer (`version` "3.2", `release` "4").
fn remote_version(answer: &serde_json::Value) -> (u64, u64, u64) {
    let number = |s: Option<&str>| s.and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let mut parts = answer["version"].as_str().unwrap_or("").split('.');
    (
        number(parts.next()),
        number(parts.next()),
        number(answer["release"].as_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_versions_compare_like_pbs_releases() {
        let v = |version: &str, release: &str| {
            remote_version(&json!({ "version": version, "release": release }))
        };
        assert_eq!(v("3.2", "4"), (3, 2, 4));
        assert!(v("3.2", "4") < (3, 2, 11));
        assert!(v("3.2", "11") >= (3, 2, 11));
        assert!(v("4.2", "1") >= (3, 2, 11));
        assert_eq!(remote_version(&json!({})), (0, 0, 0));
    }
}
