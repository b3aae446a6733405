//! A backup session on a remote (docs/protocol.md#backup-session), as a push sync writes one:
//! stored blobs and chunks are sent as they are, indexes are rebuilt on the remote from their
//! digest lists, and chunks of the remote's previous snapshot are referenced, not sent.

use std::collections::HashSet;

use bytes::Bytes;
use http::Method;
use serde_json::json;

use super::session::{with_query, H2Session, FORM, JSON, OCTETS};
use super::SyncError;
use crate::format::index::{AnyIndex, IndexKind};
use crate::format::{digest_to_hex, Digest};

/// Index entries per `PUT *_index` (the stock client sends up to 64).
const APPEND_BATCH: usize = 64;

/// One open backup session.
pub struct RemoteWriter {
    session: H2Session,
}

/// An index being written: its writer id and kind.
pub struct IndexWriter {
    wid: u64,
    kind: IndexKind,
}

impl IndexWriter {
    fn prefix(&self) -> &'static str {
        match self.kind {
            IndexKind::Fixed => "fixed",
            IndexKind::Dynamic => "dynamic",
        }
    }
}

impl RemoteWriter {
    pub(super) fn new(session: H2Session) -> Self {
        RemoteWriter { session }
    }

    /// A file of the remote group's previous snapshot (`index.json.blob` or an index); its
    /// chunks become known to this session, so appends may name them without sending them.
    pub async fn previous(&self, archive_name: &str) -> Result<Bytes, SyncError> {
        let path = with_query("previous", &[("archive-name", archive_name.to_string())]);
        self.session
            .request(Method::GET, &path, FORM, Bytes::new(), archive_name)
            .await
    }

    /// Our server's extension (docs/protocol.md#resumable-chunks): the chunks this user's
    /// last session of the group uploaded before it was cut, still stored on the remote; they
    /// become known to this session like a previous index's. Only for a remote that is this
    /// server: a stock PBS has no such call.
    pub async fn resumable_chunks(&self) -> Result<Vec<Digest>, SyncError> {
        let raw = self
            .session
            .request(
                Method::GET,
                "resumable_chunks",
                FORM,
                Bytes::new(),
                "resumable chunks",
            )
            .await?;
        if raw.len() % 32 != 0 {
            return Err(SyncError::Refused(format!(
                "resumable chunks: {} bytes is no list of 32-byte digests",
                raw.len()
            )));
        }
        Ok(raw
            .chunks_exact(32)
            .map(|d| d.try_into().expect("32 bytes"))
            .collect())
    }

    /// `POST blob`: a stored blob as it is.
    pub async fn blob(&self, file_name: &str, raw: Bytes) -> Result<(), SyncError> {
        let path = with_query(
            "blob",
            &[
                ("file-name", file_name.to_string()),
                ("encoded-size", raw.len().to_string()),
            ],
        );
        self.session
            .call(Method::POST, &path, OCTETS, raw, file_name)
            .await?;
        Ok(())
    }

    /// Opens `archive_name` for the kind and size of `index`.
    pub async fn open_index(
        &self,
        archive_name: &str,
        index: &AnyIndex,
    ) -> Result<IndexWriter, SyncError> {
        let kind = index.kind();
        let mut query = vec![("archive-name", archive_name.to_string())];
        let path = match kind {
            IndexKind::Fixed => {
                query.push(("size", index.size().to_string()));
                "fixed_index"
            }
            IndexKind::Dynamic => "dynamic_index",
        };
        let wid = self
            .session
            .call(
                Method::POST,
                &with_query(path, &query),
                FORM,
                Bytes::new(),
                archive_name,
            )
            .await?;
        let wid = wid.as_u64().ok_or_else(|| {
            SyncError::Refused(format!("{archive_name}: writer id is not a number: {wid}"))
        })?;
        Ok(IndexWriter { wid, kind })
    }

    /// Sends one stored chunk.
    pub async fn chunk(
        &self,
        writer: &IndexWriter,
        digest: &Digest,
        size: u64,
        raw: Bytes,
    ) -> Result<(), SyncError> {
        let hex = digest_to_hex(digest);
        let path = with_query(
            &format!("{}_chunk", writer.prefix()),
            &[
                ("wid", writer.wid.to_string()),
                ("digest", hex.clone()),
                ("size", size.to_string()),
                ("encoded-size", raw.len().to_string()),
            ],
        );
        self.session
            .call(Method::POST, &path, OCTETS, raw, &format!("chunk {hex}"))
            .await?;
        Ok(())
    }

    /// Appends every entry of `index` in order (its chunks must be known to the session) and
    /// closes the writer with the index's count, size and checksum.
    pub async fn append_and_close(
        &self,
        writer: &IndexWriter,
        index: &AnyIndex,
        archive_name: &str,
    ) -> Result<(), SyncError> {
        let entries = index.chunks();
        let mut offset = 0u64;
        let mut with_offsets = Vec::with_capacity(entries.len());
        for (digest, len) in &entries {
            with_offsets.push((digest, offset));
            offset += len;
        }
        let append = format!("{}_index", writer.prefix());
        for batch in with_offsets.chunks(APPEND_BATCH) {
            let body = json!({
                "wid": writer.wid,
                "digest-list": batch.iter().map(|(d, _)| digest_to_hex(d)).collect::<Vec<_>>(),
                "offset-list": batch.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
            });
            self.session
                .call(
                    Method::PUT,
                    &append,
                    JSON,
                    Bytes::from(body.to_string()),
                    archive_name,
                )
                .await?;
        }
        let close = with_query(
            &format!("{}_close", writer.prefix()),
            &[
                ("wid", writer.wid.to_string()),
                ("chunk-count", entries.len().to_string()),
                ("size", index.size().to_string()),
                ("csum", digest_to_hex(&index.csum())),
            ],
        );
        self.session
            .call(Method::POST, &close, FORM, Bytes::new(), archive_name)
            .await?;
        Ok(())
    }

    /// `POST finish`: the remote checks the manifest uploaded last and makes the snapshot
    /// appear.
    pub async fn finish(&self) -> Result<(), SyncError> {
        self.session
            .call(Method::POST, "finish", FORM, Bytes::new(), "finish")
            .await?;
        Ok(())
    }
}

/// The digests of a previous index the remote sent; unknown kinds are an error.
pub fn index_digests(
    kind: IndexKind,
    raw: &[u8],
    name: &str,
) -> Result<HashSet<Digest>, SyncError> {
    let index = AnyIndex::parse(kind, raw).map_err(|source| SyncError::Format {
        object: format!("previous {name} on the remote"),
        source,
    })?;
    Ok(index.chunks().into_iter().map(|(d, _)| d).collect())
}
