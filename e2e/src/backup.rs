//! Backup session (`proxmox-backup-protocol-v1`) doing what the stock client does
//! (server/docs/protocol.md#client-call-sequences A): upgrade, previous snapshot lookup, blobs,
//! dynamic and fixed archives with known-chunk reuse, the catalog for pxar archives, manifest and
//! finish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

pub use crate::backup_options::{ArchiveStats, BackupParams, BackupSummary, Crypt, UploadOptions};
use crate::chunker::{self, Chunker};
use crate::error::{ClientError, Result};
use crate::h2session::H2Session;
use crate::http::PbsClient;
use crate::pipeline::{KnownChunks, Pipeline, PipelineStats};
use crate::pxar::CatalogWriter;
use crate::wire::{self, Manifest, ManifestFile};

mod pxar_dir;
pub use pxar_dir::{PxarMode, PxarStats, ReuseStats};

/// Upgrade protocol id of backup sessions.
pub const BACKUP_PROTOCOL: &str = "proxmox-backup-protocol-v1";
pub const CATALOG_NAME: &str = "catalog.pcat1.didx";

struct DynWriter {
    name: String,
    wid: u64,
    pipeline: Pipeline,
    chunker: Chunker,
    buf: Vec<u8>,
    offset: u64,
    entries: Vec<(u64, wire::Digest)>,
    used_previous: bool,
}

impl DynWriter {
    async fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = self.chunker.scan(data);
            if n == 0 {
                self.buf.extend_from_slice(data);
                break;
            }
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            let chunk = std::mem::take(&mut self.buf);
            self.emit(&chunk).await?;
        }
        Ok(())
    }

    /// Ends the current chunk here (even if short) and appends chunks the server already
    /// knows (from the previous snapshot's index) by digest, without uploading them.
    async fn inject(&mut self, chunks: &[(wire::Digest, u64)]) -> Result<()> {
        self.cut().await?;
        for (digest, len) in chunks {
            self.pipeline.push_known_chunk(*digest, self.offset).await?;
            self.offset += len;
            self.entries.push((self.offset, *digest));
        }
        Ok(())
    }

    /// Ends the current chunk at this point.
    async fn cut(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.emit(&chunk).await?;
        }
        self.chunker.reset();
        Ok(())
    }

    async fn emit(&mut self, chunk: &[u8]) -> Result<()> {
        let digest = self.pipeline.push_chunk(chunk, self.offset).await?;
        self.offset += chunk.len() as u64;
        self.entries.push((self.offset, digest));
        Ok(())
    }

    async fn close(mut self, h2: &H2Session) -> Result<ArchiveStats> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.emit(&chunk).await?;
        }
        let chunks = self.pipeline.finish().await?;
        let csum = wire::hex(&wire::dynamic_csum(&self.entries));
        let params = json!({
            "wid": self.wid,
            "chunk-count": self.entries.len(),
            "size": self.offset,
            "csum": csum,
        });
        h2.call(Method::POST, "dynamic_close", Some(&params))
            .await?;
        Ok(ArchiveStats {
            name: self.name,
            wid: Some(self.wid),
            size: self.offset,
            csum,
            used_previous: self.used_previous,
            chunks,
        })
    }
}

/// An open backup session. Dropping it without [`finish`](Self::finish) aborts the
/// connection, which must make the server discard the snapshot
/// (server/docs/protocol.md#session-end).
pub struct BackupSession {
    h2: Arc<H2Session>,
    params: BackupParams,
    known: KnownChunks,
    /// `GET previous_backup_time` calls so far (metadata mode asks a second time).
    previous_time_calls: AtomicUsize,
    previous_manifest: Option<Manifest>,
    files: Vec<ManifestFile>,
    archives: Vec<ArchiveStats>,
    catalog: Option<DynWriter>,
    catalog_writer: CatalogWriter,
}

impl BackupSession {
    /// Upgrade, then `GET previous_backup_time` and (if any) the previous manifest.
    pub async fn start(client: &PbsClient, params: BackupParams) -> Result<BackupSession> {
        let mut s = BackupSession::start_raw(client, params).await?;
        // the stock client falls back to trying `previous` if this call fails
        let prev_time = s.previous_backup_time().await.unwrap_or(Some(0));
        if prev_time.is_some() {
            if let Ok(raw) = s.download_previous("index.json.blob").await {
                if let Ok(m) = Manifest::from_blob(&raw) {
                    let theirs = m.unprotected.get("key-fingerprint").and_then(Value::as_str);
                    let ours = s.params.crypt.key().map(|k| k.fingerprint_hex());
                    if theirs == ours.as_deref() {
                        s.previous_manifest = Some(m);
                    }
                }
            }
        }
        Ok(s)
    }

    /// Only the upgrade (no previous lookups): for tests driving the protocol by hand.
    pub async fn start_raw(client: &PbsClient, params: BackupParams) -> Result<BackupSession> {
        let h2 = client
            .upgrade(
                crate::http::BACKUP_PATH,
                &params.upgrade_query(),
                BACKUP_PROTOCOL,
            )
            .await?;
        Ok(BackupSession {
            h2: Arc::new(h2),
            params,
            known: Arc::new(Mutex::new(Default::default())),
            previous_time_calls: AtomicUsize::new(0),
            previous_manifest: None,
            files: Vec::new(),
            archives: Vec::new(),
            catalog: None,
            catalog_writer: CatalogWriter::default(),
        })
    }

    pub fn params(&self) -> &BackupParams {
        &self.params
    }

    /// The HTTP/2 connection, for hand-made in-session requests.
    pub fn h2(&self) -> &H2Session {
        &self.h2
    }

    /// The HTTP/2 connection as a shared handle, for requests sent from spawned tasks.
    pub fn h2_shared(&self) -> Arc<H2Session> {
        self.h2.clone()
    }

    /// Previous manifest accepted at start (None: no previous or key mismatch).
    pub fn previous_manifest(&self) -> Option<&Manifest> {
        self.previous_manifest.as_ref()
    }

    /// Number of chunks known to be on the server in this session.
    pub fn known_chunk_count(&self) -> usize {
        self.known.lock().map(|k| k.len()).unwrap_or(0)
    }

    /// `GET previous_backup_time`: epoch of the previous finished snapshot, or None.
    pub async fn previous_backup_time(&self) -> Result<Option<i64>> {
        self.previous_time_calls.fetch_add(1, Ordering::Relaxed);
        let v = self
            .h2
            .call(Method::GET, "previous_backup_time", None)
            .await?;
        Ok(v.as_i64())
    }

    /// How often this session asked `GET previous_backup_time`.
    pub fn previous_time_calls(&self) -> usize {
        self.previous_time_calls.load(Ordering::Relaxed)
    }

    /// `GET previous?archive-name=NAME` (raw bytes).
    pub async fn download_previous(&self, name: &str) -> Result<Bytes> {
        self.h2
            .download("previous", Some(&json!({ "archive-name": name })))
            .await
    }

    /// Escape hatch: any in-session request, returns status and body without judging.
    pub async fn raw_request(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes)> {
        let r = self
            .h2
            .request(method, path_and_query, content_type, Bytes::from(body))
            .await?;
        Ok((r.status, r.body))
    }

    /// Digest and encoded chunk as this session would upload it (for raw tests).
    pub fn encode_chunk(&self, data: &[u8]) -> Result<(wire::Digest, Vec<u8>)> {
        match &self.params.crypt {
            Crypt::Encrypt(k) => Ok((k.compute_digest(data), k.encrypt_blob(data, true)?)),
            _ => Ok((wire::sha256(data), wire::encode_plain_blob(data, true))),
        }
    }

    /// Encodes `data` as the stock client does for `X.conf`/`X.log` (compressed, encrypted
    /// when encrypting) and uploads it as `NAME.blob`.
    pub async fn upload_blob(&mut self, name: &str, data: &[u8]) -> Result<ArchiveStats> {
        let encoded = match &self.params.crypt {
            Crypt::Encrypt(k) => k.encrypt_blob(data, true)?,
            _ => wire::encode_plain_blob(data, true),
        };
        let mode = self.params.crypt.mode_str();
        self.upload_blob_raw(name, encoded, mode).await
    }

    /// Uploads already encoded blob bytes unchanged and lists them in the manifest.
    pub async fn upload_blob_raw(
        &mut self,
        name: &str,
        encoded: Vec<u8>,
        crypt_mode: &str,
    ) -> Result<ArchiveStats> {
        let name = with_ext(name, ".blob");
        let params = json!({ "file-name": name, "encoded-size": encoded.len() });
        let stats = ArchiveStats {
            name: name.clone(),
            wid: None,
            size: encoded.len() as u64,
            csum: wire::hex(&wire::sha256(&encoded)),
            used_previous: false,
            chunks: PipelineStats::default(),
        };
        self.h2
            .upload("blob", Some(&params), Bytes::from(encoded))
            .await?;
        self.record(stats.clone(), crypt_mode);
        Ok(stats)
    }

    /// Uploads raw bytes as a dynamic archive (`NAME` gets `.didx`). Not a catalog entry:
    /// only [`upload_pxar_dir`](Self::upload_pxar_dir) knows the files of an archive.
    pub async fn upload_dynamic_archive(
        &mut self,
        name: &str,
        data: &[u8],
        opts: &UploadOptions,
    ) -> Result<ArchiveStats> {
        let name = with_ext(name, ".didx");
        self.upload_dynamic_inner(&name, data, opts, None).await
    }

    async fn upload_dynamic_inner(
        &mut self,
        name: &str,
        data: &[u8],
        opts: &UploadOptions,
        catalog: Option<Vec<u8>>,
    ) -> Result<ArchiveStats> {
        if catalog.is_some() && self.catalog.is_none() {
            let w = self
                .open_dynamic(CATALOG_NAME, chunker::CATALOG_AVG, true)
                .await?;
            self.catalog = Some(w);
        }
        let mut w = self
            .open_dynamic(name, opts.avg_chunk_size, opts.compress)
            .await?;
        w.feed(data).await?;
        let stats = self.close_recorded(w).await?;
        if let (Some(bytes), Some(cat)) = (catalog, self.catalog.as_mut()) {
            cat.feed(&bytes).await?;
        }
        Ok(stats)
    }

    /// Closes a writer and lists its archive in the manifest.
    async fn close_recorded(&mut self, writer: DynWriter) -> Result<ArchiveStats> {
        let stats = writer.close(&self.h2).await?;
        let mode = self.params.crypt.mode_str();
        self.record(stats.clone(), mode);
        Ok(stats)
    }

    async fn open_dynamic(&mut self, name: &str, avg: usize, compress: bool) -> Result<DynWriter> {
        let used_previous = self.load_previous_index(name).await;
        let wid = self
            .open_writer("dynamic_index", json!({ "archive-name": name }))
            .await?;
        Ok(DynWriter {
            name: name.to_string(),
            wid,
            pipeline: self.pipeline("dynamic", wid, compress),
            chunker: Chunker::new(avg),
            buf: Vec::new(),
            offset: 0,
            entries: Vec::new(),
            used_previous,
        })
    }

    /// Closes the catalog now (it is otherwise closed by [`finish`](Self::finish)); the
    /// stock client does this before it uploads `rsa-encrypted.key.blob`.
    pub async fn close_catalog(&mut self) -> Result<()> {
        if let Some(mut cat) = self.catalog.take() {
            cat.feed(&self.catalog_writer.finish()).await?;
            self.close_recorded(cat).await?;
        }
        Ok(())
    }

    /// Lists a file written by hand-made requests (e.g. a fixed index) in the manifest.
    pub fn record_archive(&mut self, stats: ArchiveStats, crypt_mode: &str) {
        self.record(stats, crypt_mode);
    }

    /// Uploads an image as `NAME.fidx` (`NAME` usually ends in `.img`).
    pub async fn upload_fixed_image(
        &mut self,
        name: &str,
        data: &[u8],
        opts: &UploadOptions,
    ) -> Result<ArchiveStats> {
        let name = with_ext(name, ".fidx");
        let used_previous = self.load_previous_index(&name).await;
        let mut params = json!({ "archive-name": name });
        if opts.send_image_size {
            params["size"] = json!(data.len());
        }
        let wid = self.open_writer("fixed_index", params).await?;
        let mut pipeline = self.pipeline("fixed", wid, opts.compress);
        let mut digests = Vec::new();
        let mut offset = 0u64;
        for len in chunker::fixed_split(data.len(), opts.fixed_chunk_size) {
            let chunk = &data[offset as usize..offset as usize + len];
            digests.push(pipeline.push_chunk(chunk, offset).await?);
            offset += len as u64;
        }
        let chunks = pipeline.finish().await?;
        let csum = wire::hex(&wire::fixed_csum(&digests));
        let close =
            json!({ "wid": wid, "chunk-count": digests.len(), "size": data.len(), "csum": csum });
        self.h2
            .call(Method::POST, "fixed_close", Some(&close))
            .await?;
        let stats = ArchiveStats {
            name,
            wid: Some(wid),
            size: data.len() as u64,
            csum,
            used_previous,
            chunks,
        };
        let mode = self.params.crypt.mode_str();
        self.record(stats.clone(), mode);
        Ok(stats)
    }

    fn pipeline(&self, kind: &'static str, wid: u64, compress: bool) -> Pipeline {
        Pipeline::new(
            self.h2.clone(),
            kind,
            wid,
            self.known.clone(),
            self.params.crypt.key().cloned(),
            self.params.crypt.encrypting(),
            compress,
        )
    }

    async fn open_writer(&self, path: &str, params: Value) -> Result<u64> {
        let v = self.h2.call(Method::POST, path, Some(&params)).await?;
        v.as_u64().ok_or_else(|| {
            ClientError::Protocol(format!("POST {path}: wid is not an integer: {v}"))
        })
    }

    /// If the previous manifest lists `name`, fetch its index with
    /// [`previous_index`](Self::previous_index). Errors are ignored like the stock client
    /// does; returns whether the index was accepted.
    async fn load_previous_index(&self, name: &str) -> bool {
        let listed = self
            .previous_manifest
            .as_ref()
            .is_some_and(|m| m.file(name).is_some());
        listed && self.previous_index(name).await.is_ok()
    }

    /// `GET previous?archive-name=NAME`, checked against the previous manifest's entry
    /// (csum and size); its chunks become known to this session, like on the server.
    async fn previous_index(&self, name: &str) -> Result<wire::IndexEntries> {
        let entry = self
            .previous_manifest
            .as_ref()
            .and_then(|m| m.file(name))
            .cloned()
            .ok_or_else(|| ClientError::Verify(format!("{name} not in the previous manifest")))?;
        let raw = self.download_previous(name).await?;
        let idx = wire::parse_index(name, &raw)?;
        if wire::hex(&idx.csum) != entry.csum || idx.size != entry.size {
            return Err(ClientError::Verify(format!(
                "previous {name}: csum {} / size {} differ from its manifest entry {} / {}",
                wire::hex(&idx.csum),
                idx.size,
                entry.csum,
                entry.size
            )));
        }
        self.known
            .lock()
            .map_err(|_| ClientError::Protocol("known-chunk set poisoned".into()))?
            .extend(idx.chunks.iter().map(|(d, _, _)| *d));
        Ok(idx)
    }

    fn record(&mut self, stats: ArchiveStats, crypt_mode: &str) {
        self.files.retain(|f| f.filename != stats.name);
        self.files.push(ManifestFile {
            filename: stats.name.clone(),
            crypt_mode: crypt_mode.to_string(),
            size: stats.size,
            csum: stats.csum.clone(),
        });
        self.archives.push(stats);
    }

    /// The manifest as it would be uploaded now (signed when a key is set).
    pub fn build_manifest(&self) -> Result<Manifest> {
        let mut m = Manifest {
            backup_type: self.params.backup_type.clone(),
            backup_id: self.params.backup_id.clone(),
            backup_time: self.params.backup_time,
            files: self.files.clone(),
            unprotected: json!({}),
            signature: None,
        };
        if let Some(k) = self.params.crypt.key() {
            m.unprotected = json!({ "key-fingerprint": k.fingerprint_hex() });
            m.signature = Some(k.hmac_hex(&m.canonical_signed_part()?));
        }
        Ok(m)
    }

    /// Closes the catalog, uploads `index.json.blob`, sends `POST finish` and drops the
    /// connection.
    pub async fn finish(mut self) -> Result<BackupSummary> {
        self.close_catalog().await?;
        let manifest = self.build_manifest()?;
        let blob = manifest.to_blob()?;
        let params = json!({ "file-name": "index.json.blob", "encoded-size": blob.len() });
        self.h2
            .upload("blob", Some(&params), Bytes::from(blob))
            .await?;
        self.h2.call(Method::POST, "finish", None).await?;
        Ok(BackupSummary {
            manifest,
            archives: self.archives,
        })
    }

    /// Drops the connection without finishing (the server must discard the snapshot).
    pub fn abort(self) {}
}

/// Appends `ext` unless the name already ends with it.
pub fn with_ext(name: &str, ext: &str) -> String {
    if name.ends_with(ext) {
        name.to_string()
    } else {
        format!("{name}{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_query_spelling() {
        let mut p = BackupParams::new("store1", "host", "elsa", 1700000000);
        assert_eq!(
            p.upgrade_query(),
            "backup-id=elsa&backup-time=1700000000&backup-type=host&benchmark=false&debug=true&store=store1"
        );
        p.ns = Some("a/b".into());
        p.no_cache = true;
        assert!(p
            .upgrade_query()
            .ends_with("&debug=true&no-cache=true&ns=a%2Fb&store=store1"));
        assert_eq!(with_ext("root.pxar", ".didx"), "root.pxar.didx");
        assert_eq!(with_ext("x.blob", ".blob"), "x.blob");
    }
}
