//! Resume records (docs/design.md#push-resume): the chunks a backup session had uploaded when it
//! ended without `finish`, kept so that the same user's next session of the same group can
//! reference them instead of sending them again.
//!
//! The PBS protocol has no way for a client to learn which chunks a server holds beyond the
//! previous snapshot's indexes, so a cut backup normally re-sends everything it had sent. Our
//! sync push asks our own server for the record through the backup session's
//! `resumable_chunks` call (docs/protocol.md#resumable-chunks); stock clients never ask, and
//! a record they leave is overwritten by the group's next aborted session.
//!
//! * Key: `.resume/<sha256 of "<ns prefix><type>/<id>\n<auth id>">.didx`. Only the user who
//!   uploaded the chunks, in the same group, finds the record, so it reveals nothing another
//!   user could not already prove (no oracle over the datastore's chunks).
//! * Content: a dynamic index (docs/formats.md#dynamic-index) whose entries are the chunks with
//!   their sizes, in digest order; the header's time is the abort's.
//! * Taken on read: the reading session carries the chunks forward and writes a new record if
//!   it is cut too. Chunks named by a record are not kept by GC; a reader registers them with
//!   its lease and uses only those still stored.

use crate::backend::PutOptions;
use crate::format::dynamic_index::{DynamicEntry, DynamicIndex};
use crate::format::names::{BackupGroup, BackupNamespace};
use crate::format::{digest_to_hex, sha256, Digest};

use super::{layout, Datastore, DatastoreError};

/// Prefix of every resume record.
pub const RESUME_PREFIX: &str = ".resume/";

/// The record key of `auth_id`'s aborted session of `group`.
fn record_key(ns: &BackupNamespace, group: &BackupGroup, auth_id: &str) -> String {
    let owner = format!("{}{}\n{auth_id}", layout::ns_prefix(ns), group.path());
    format!(
        "{RESUME_PREFIX}{}.didx",
        digest_to_hex(&sha256(owner.as_bytes()))
    )
}

/// The record's bytes: `chunks` (digest, decoded size) deduplicated, in digest order; empty
/// chunks (which no index can hold) left out.
pub(crate) fn encode_record(mut chunks: Vec<(Digest, u64)>, aborted_at: i64) -> Vec<u8> {
    chunks.sort_unstable();
    chunks.dedup_by_key(|(digest, _)| *digest);
    let mut end = 0u64;
    let entries = chunks
        .into_iter()
        .filter(|(_, size)| *size > 0)
        .map(|(digest, size)| {
            end += size;
            DynamicEntry { end, digest }
        })
        .collect();
    DynamicIndex {
        uuid: [0; 16],
        ctime: aborted_at,
        entries,
    }
    .to_bytes()
}

/// The chunks of a record's bytes.
pub(crate) fn decode_record(
    bytes: &[u8],
) -> Result<Vec<(Digest, u64)>, crate::format::FormatError> {
    let index = DynamicIndex::parse(bytes)?;
    Ok((0..index.chunk_count())
        .map(|i| (index.entries[i].digest, index.chunk_len(i)))
        .collect())
}

impl Datastore {
    /// Keeps the chunks `auth_id`'s aborted session of `group` uploaded (replacing an older
    /// record of the same group and user).
    pub(crate) async fn write_resume_record(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        auth_id: &str,
        chunks: Vec<(Digest, u64)>,
    ) -> Result<(), DatastoreError> {
        let key = record_key(ns, group, auth_id);
        let bytes = encode_record(chunks, chrono::Utc::now().timestamp());
        self.backend
            .put(&key, bytes.into(), PutOptions::default())
            .await?;
        Ok(())
    }

    /// Takes (reads and deletes) the record of `auth_id`'s last aborted session of `group`;
    /// empty when there is none.
    pub(crate) async fn take_resume_record(
        &self,
        ns: &BackupNamespace,
        group: &BackupGroup,
        auth_id: &str,
    ) -> Result<Vec<(Digest, u64)>, DatastoreError> {
        let key = record_key(ns, group, auth_id);
        let bytes = match self.backend.get(&key).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let chunks = decode_record(&bytes).map_err(|source| DatastoreError::Corrupt {
            object: key.clone(),
            source,
        })?;
        // Left behind, the record is only taken again (its chunks re-checked then).
        if let Err(e) = self.backend.delete(&key).await {
            tracing::warn!(
                "datastore '{}': removing taken resume record {key}: {e}",
                self.name()
            );
        }
        Ok(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::names::BackupType;

    #[test]
    fn a_record_round_trips_sorted_and_deduplicated() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let bytes = encode_record(vec![(b, 7), (a, 5), (b, 7), ([3u8; 32], 0)], 1_700_000_000);
        assert_eq!(decode_record(&bytes).unwrap(), vec![(a, 5), (b, 7)]);
        assert_eq!(DynamicIndex::parse(&bytes).unwrap().ctime, 1_700_000_000);
        assert_eq!(
            decode_record(&encode_record(Vec::new(), 0)).unwrap(),
            vec![]
        );
    }

    #[test]
    fn the_key_depends_on_namespace_group_and_user() {
        let root = BackupNamespace::root();
        let ns = root.child("a").unwrap();
        let web = BackupGroup::new(BackupType::Host, "web").unwrap();
        let db = BackupGroup::new(BackupType::Host, "db").unwrap();
        let key = record_key(&root, &web, "pusher@pbs");
        assert!(
            key.starts_with(RESUME_PREFIX) && key.ends_with(".didx"),
            "{key}"
        );
        assert_eq!(key, record_key(&root, &web, "pusher@pbs"));
        for other in [
            record_key(&ns, &web, "pusher@pbs"),
            record_key(&root, &db, "pusher@pbs"),
            record_key(&root, &web, "pusher@pbs!token"),
        ] {
            assert_ne!(key, other);
        }
    }
}
