//! Chunk upload pipeline of one index writer, shaped like the stock client
//! (server/docs/protocol.md#client-call-sequences A): new chunks are uploaded concurrently (many H2
//! streams in flight), consecutive known chunks are merged into appends of up to 64 entries, and
//! every append (`PUT *_index`) is sent strictly sequentially, a new chunk's append only after its
//! upload succeeded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Method;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::crypto::CryptConfig;
use crate::error::{ClientError, Result};
use crate::h2session::H2Session;
use crate::wire::{self, Digest};

/// Largest number of known chunks merged into one append.
pub const MAX_APPEND_BATCH: usize = 64;
/// Bound on queued append items (and so on chunk uploads in flight).
const QUEUE_DEPTH: usize = 32;

/// Session-wide set of chunks the server already knows (uploaded or from `previous`).
pub type KnownChunks = Arc<Mutex<HashSet<Digest>>>;

enum AppendItem {
    Known(Vec<(Digest, u64)>),
    New {
        digest: Digest,
        offset: u64,
        upload: JoinHandle<Result<()>>,
    },
}

/// Counters of one archive upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub chunk_count: usize,
    pub chunks_uploaded: usize,
    pub chunks_reused: usize,
    /// Chunks referenced by digest without being chunked from data (metadata change
    /// detection reusing the previous payload archive's chunks); also counted in
    /// `chunk_count`.
    pub chunks_injected: usize,
    /// Encoded bytes sent in chunk upload bodies.
    pub bytes_sent: u64,
    /// Number of `PUT *_index` calls.
    pub appends: usize,
}

pub(crate) struct Pipeline {
    h2: Arc<H2Session>,
    kind: &'static str,
    wid: u64,
    known: KnownChunks,
    key: Option<CryptConfig>,
    encrypt: bool,
    compress: bool,
    tx: Option<mpsc::Sender<AppendItem>>,
    task: Option<JoinHandle<Result<usize>>>,
    pending_known: Vec<(Digest, u64)>,
    stats: PipelineStats,
}

impl Pipeline {
    /// `kind` is `dynamic` or `fixed`; `key` with `encrypt` selects encrypted chunks.
    pub(crate) fn new(
        h2: Arc<H2Session>,
        kind: &'static str,
        wid: u64,
        known: KnownChunks,
        key: Option<CryptConfig>,
        encrypt: bool,
        compress: bool,
    ) -> Pipeline {
        let (tx, mut rx) = mpsc::channel::<AppendItem>(QUEUE_DEPTH);
        let h2c = h2.clone();
        let path = format!("{kind}_index");
        let task = tokio::spawn(async move {
            let mut appends = 0usize;
            while let Some(item) = rx.recv().await {
                let list = match item {
                    AppendItem::Known(list) => list,
                    AppendItem::New {
                        digest,
                        offset,
                        upload,
                    } => {
                        upload.await.map_err(|e| {
                            ClientError::Protocol(format!("chunk upload task failed: {e}"))
                        })??;
                        vec![(digest, offset)]
                    }
                };
                let body = json!({
                    "wid": wid,
                    "digest-list": list.iter().map(|(d, _)| wire::hex(d)).collect::<Vec<_>>(),
                    "offset-list": list.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
                });
                h2c.call_json_body(Method::PUT, &path, &body).await?;
                appends += 1;
            }
            Ok(appends)
        });
        Pipeline {
            h2,
            kind,
            wid,
            known,
            key,
            encrypt,
            compress,
            tx: Some(tx),
            task: Some(task),
            pending_known: Vec::new(),
            stats: PipelineStats::default(),
        }
    }

    /// Digest of a chunk as this writer computes it (keyed when encrypting).
    pub(crate) fn digest_of(&self, data: &[u8]) -> Digest {
        match (&self.key, self.encrypt) {
            (Some(k), true) => k.compute_digest(data),
            _ => wire::sha256(data),
        }
    }

    /// Adds the chunk starting at stream `offset`; uploads it if the server does not know it.
    pub(crate) async fn push_chunk(&mut self, data: &[u8], offset: u64) -> Result<Digest> {
        let digest = self.digest_of(data);
        self.stats.chunk_count += 1;
        let is_new = self
            .known
            .lock()
            .map(|mut k| k.insert(digest))
            .map_err(|_| ClientError::Protocol("known-chunk set poisoned".into()))?;
        if !is_new {
            self.stats.chunks_reused += 1;
            self.pending_known.push((digest, offset));
            if self.pending_known.len() >= MAX_APPEND_BATCH {
                self.flush_known().await?;
            }
            return Ok(digest);
        }
        self.flush_known().await?;
        let encoded = match (&self.key, self.encrypt) {
            (Some(k), true) => k.encrypt_blob(data, self.compress)?,
            _ => wire::encode_plain_blob(data, self.compress),
        };
        self.stats.chunks_uploaded += 1;
        self.stats.bytes_sent += encoded.len() as u64;
        let params = json!({
            "wid": self.wid,
            "digest": wire::hex(&digest),
            "size": data.len(),
            "encoded-size": encoded.len(),
        });
        let h2 = self.h2.clone();
        let path = format!("{}_chunk", self.kind);
        let upload = tokio::spawn(async move {
            h2.upload(&path, Some(&params), Bytes::from(encoded))
                .await
                .map(|_| ())
        });
        self.send(AppendItem::New {
            digest,
            offset,
            upload,
        })
        .await?;
        Ok(digest)
    }

    /// Appends a chunk the server already knows (it was registered by `GET previous`) at
    /// stream `offset` by digest only, never uploading it.
    pub(crate) async fn push_known_chunk(&mut self, digest: Digest, offset: u64) -> Result<()> {
        let known = self
            .known
            .lock()
            .map(|k| k.contains(&digest))
            .map_err(|_| ClientError::Protocol("known-chunk set poisoned".into()))?;
        if !known {
            return Err(ClientError::Input(format!(
                "chunk {} cannot be reused: the server was never told about it in this session",
                wire::hex(&digest)
            )));
        }
        self.stats.chunk_count += 1;
        self.stats.chunks_injected += 1;
        self.pending_known.push((digest, offset));
        if self.pending_known.len() >= MAX_APPEND_BATCH {
            self.flush_known().await?;
        }
        Ok(())
    }

    async fn flush_known(&mut self) -> Result<()> {
        if self.pending_known.is_empty() {
            return Ok(());
        }
        let list = std::mem::take(&mut self.pending_known);
        self.send(AppendItem::Known(list)).await
    }

    async fn send(&mut self, item: AppendItem) -> Result<()> {
        let failed = match &self.tx {
            Some(tx) => tx.send(item).await.is_err(),
            None => true,
        };
        if failed {
            // the append task ended early: report its error
            return Err(self.join().await.err().unwrap_or_else(|| {
                ClientError::Protocol("append queue closed unexpectedly".into())
            }));
        }
        Ok(())
    }

    async fn join(&mut self) -> Result<usize> {
        self.tx = None;
        match self.task.take() {
            Some(t) => t
                .await
                .map_err(|e| ClientError::Protocol(format!("append task failed: {e}")))?,
            None => Err(ClientError::Protocol("append task already finished".into())),
        }
    }

    /// Flushes, waits for every upload and append, and returns the counters.
    pub(crate) async fn finish(mut self) -> Result<PipelineStats> {
        self.flush_known().await?;
        self.stats.appends = self.join().await?;
        Ok(self.stats.clone())
    }
}
