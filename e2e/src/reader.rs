//! Reader session (`proxmox-backup-reader-protocol-v1`, server/docs/protocol.md#reader-session)
//! with the stock client's restore checks (server/docs/protocol.md#reader-endpoints): manifest
//! csum/size of blobs and indexes, chunk CRC, crypt mode of chunks, decoded digest and length.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use http::Method;
use serde_json::json;

use crate::crypto::CryptConfig;
use crate::error::{ClientError, Result};
use crate::h2session::H2Session;
use crate::http::PbsClient;
use crate::pxar;
use crate::wire::{self, BlobKind, Digest, Manifest};

pub const READER_PROTOCOL: &str = "proxmox-backup-reader-protocol-v1";
/// Parallel chunk downloads during restore.
const PARALLEL_CHUNKS: usize = 8;

/// Snapshot coordinates of a reader session.
#[derive(Debug, Clone)]
pub struct ReaderParams {
    pub store: String,
    pub ns: Option<String>,
    pub backup_type: String,
    pub backup_id: String,
    pub backup_time: i64,
    /// Sent as `debug=…` (stock client: `true`).
    pub debug: bool,
}

impl ReaderParams {
    pub fn new(store: &str, backup_type: &str, backup_id: &str, backup_time: i64) -> ReaderParams {
        ReaderParams {
            store: store.to_string(),
            ns: None,
            backup_type: backup_type.to_string(),
            backup_id: backup_id.to_string(),
            backup_time,
            debug: true,
        }
    }

    /// The upgrade query as the stock client sends it: keys sorted, `debug`, no `benchmark`.
    pub fn upgrade_query(&self) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        ser.append_pair("backup-id", &self.backup_id)
            .append_pair("backup-time", &self.backup_time.to_string())
            .append_pair("backup-type", &self.backup_type)
            .append_pair("debug", if self.debug { "true" } else { "false" });
        if let Some(ns) = self.ns.as_deref().filter(|n| !n.is_empty()) {
            ser.append_pair("ns", ns);
        }
        ser.append_pair("store", &self.store);
        ser.finish()
    }
}

/// An open reader session; drop it to close the connection.
pub struct ReaderSession {
    h2: Arc<H2Session>,
    params: ReaderParams,
    key: Option<CryptConfig>,
}

impl ReaderSession {
    /// Upgrades to a reader session; `key` is needed for encrypted archives and to check
    /// manifest signatures.
    pub async fn open(
        client: &PbsClient,
        params: ReaderParams,
        key: Option<CryptConfig>,
    ) -> Result<ReaderSession> {
        let h2 = client
            .upgrade(
                crate::http::READER_PATH,
                &params.upgrade_query(),
                READER_PROTOCOL,
            )
            .await?;
        Ok(ReaderSession {
            h2: Arc::new(h2),
            params,
            key,
        })
    }

    pub fn params(&self) -> &ReaderParams {
        &self.params
    }

    pub fn h2(&self) -> &H2Session {
        &self.h2
    }

    /// `GET download?file-name=NAME` (raw bytes; registers index chunks server-side).
    pub async fn download(&self, name: &str) -> Result<Bytes> {
        self.h2
            .download("download", Some(&json!({ "file-name": name })))
            .await
    }

    /// `GET chunk?digest=HEX` (raw encoded chunk as stored).
    pub async fn chunk(&self, digest: &Digest) -> Result<Bytes> {
        self.h2
            .download("chunk", Some(&json!({ "digest": wire::hex(digest) })))
            .await
    }

    /// `GET speedtest` (1 MiB of 'A').
    pub async fn speedtest(&self) -> Result<Bytes> {
        self.h2.download("speedtest", None).await
    }

    /// Escape hatch: any in-session request, status and body.
    pub async fn raw_request(&self, method: Method, path_and_query: &str) -> Result<(u16, Bytes)> {
        let r = self
            .h2
            .request(
                method,
                path_and_query,
                "application/x-www-form-urlencoded",
                Bytes::new(),
            )
            .await?;
        Ok((r.status, r.body))
    }

    /// Downloads and parses the manifest; checks the signature when it has one and a key
    /// is present, and refuses a key-fingerprinted manifest without key ("missing key").
    pub async fn manifest(&self) -> Result<Manifest> {
        let raw = self.download("index.json.blob").await?;
        let m = Manifest::from_blob(&raw)?;
        let fp = m
            .unprotected
            .get("key-fingerprint")
            .and_then(|v| v.as_str());
        match (&self.key, fp) {
            (None, Some(_)) => {
                return Err(ClientError::Crypto("manifest is keyed: missing key".into()))
            }
            (Some(k), Some(fp)) if fp != k.fingerprint_hex() => {
                return Err(ClientError::Crypto(format!(
                    "wrong key: manifest fingerprint {fp}, key {}",
                    k.fingerprint_hex()
                )))
            }
            _ => {}
        }
        if let (Some(k), Some(sig)) = (&self.key, &m.signature) {
            let expect = k.hmac_hex(&m.canonical_signed_part()?);
            if &expect != sig {
                return Err(ClientError::Verify("manifest signature mismatch".into()));
            }
        }
        Ok(m)
    }

    /// Restores one archive with all client checks; `name` may omit the server extension
    /// (`root.pxar`, `disk.img`, `qemu-server.conf`). Returns the decoded content.
    pub async fn restore_archive(&self, name: &str) -> Result<Vec<u8>> {
        let manifest = self.manifest().await?;
        self.restore_with_manifest(&manifest, name).await
    }

    /// Like [`restore_archive`](Self::restore_archive) with an already checked manifest.
    pub async fn restore_with_manifest(&self, manifest: &Manifest, name: &str) -> Result<Vec<u8>> {
        let name = server_name(name);
        let entry = manifest
            .file(&name)
            .ok_or_else(|| ClientError::Verify(format!("archive {name} not in manifest")))?
            .clone();
        let encrypted = entry.crypt_mode == "encrypt";
        let raw = self.download(&name).await?;
        if name.ends_with(".blob") {
            if raw.len() as u64 != entry.size || wire::hex(&wire::sha256(&raw)) != entry.csum {
                return Err(ClientError::Verify(format!(
                    "blob {name}: size/csum differ from manifest ({} bytes)",
                    raw.len()
                )));
            }
            return self.decode(&raw, wire::MAX_BLOB, &name);
        }
        let idx = wire::parse_index(&name, &raw)?;
        if wire::hex(&idx.csum) != entry.csum || idx.size != entry.size {
            return Err(ClientError::Verify(format!(
                "index {name}: csum {} / size {} differ from manifest {} / {}",
                wire::hex(&idx.csum),
                idx.size,
                entry.csum,
                entry.size
            )));
        }
        let mut out = vec![0u8; idx.size as usize];
        let pieces: Vec<(u64, Vec<u8>)> = stream::iter(idx.chunks.iter().cloned())
            .map(|(digest, start, len)| async move {
                let data = self.fetch_checked_chunk(&digest, encrypted).await?;
                if data.len() as u64 != len {
                    return Err(ClientError::Verify(format!(
                        "chunk {}: decoded {} bytes, index says {len}",
                        wire::hex(&digest),
                        data.len()
                    )));
                }
                Ok((start, data))
            })
            .buffer_unordered(PARALLEL_CHUNKS)
            .try_collect()
            .await?;
        for (start, data) in pieces {
            out[start as usize..start as usize + data.len()].copy_from_slice(&data);
        }
        Ok(out)
    }

    /// `restore <snap> LABEL.pxar <dir>`: restores a directory archive into `target` from
    /// the split pair `LABEL.mpxar.didx` + `LABEL.ppxar.didx` when the snapshot has it (data
    /// and metadata change detection), else from `LABEL.pxar.didx`. `label` may carry any of
    /// these extensions.
    pub async fn restore_pxar_dir(&self, label: &str, target: &Path) -> Result<()> {
        let manifest = self.manifest().await?;
        let name = server_name(label);
        let base = [".pxar.didx", ".mpxar.didx", ".ppxar.didx"]
            .iter()
            .find_map(|ext| name.strip_suffix(ext))
            .ok_or_else(|| ClientError::Input(format!("{label} is not a pxar archive")))?;
        let metadata_name = format!("{base}.mpxar.didx");
        if manifest.file(&metadata_name).is_some() {
            let metadata = self
                .restore_with_manifest(&manifest, &metadata_name)
                .await?;
            let payload_name = format!("{base}.ppxar.didx");
            let payload = self.restore_with_manifest(&manifest, &payload_name).await?;
            return pxar::extract(&metadata, Some(&payload), target);
        }
        let archive = self
            .restore_with_manifest(&manifest, &format!("{base}.pxar.didx"))
            .await?;
        pxar::extract(&archive, None, target)
    }

    /// Downloads one chunk and applies the client checks: CRC, crypt mode, decoded digest.
    /// The checks run on the blocking pool, so downloads and decoding overlap on all cores.
    pub async fn fetch_checked_chunk(&self, digest: &Digest, encrypted: bool) -> Result<Vec<u8>> {
        let raw = self.chunk(digest).await?;
        let key = self.key.clone();
        let digest = *digest;
        tokio::task::spawn_blocking(move || check_chunk(key.as_ref(), &raw, &digest, encrypted))
            .await
            .map_err(|e| ClientError::Verify(format!("chunk check task failed: {e}")))?
    }

    fn decode(&self, raw: &[u8], max: usize, what: &str) -> Result<Vec<u8>> {
        decode_with(self.key.as_ref(), raw, max, what)
    }
}

fn decode_with(key: Option<&CryptConfig>, raw: &[u8], max: usize, what: &str) -> Result<Vec<u8>> {
    let r = match key {
        Some(k) => k.decode_blob(raw, max),
        None => wire::decode_plain_blob(raw, max),
    };
    r.map_err(|e| ClientError::Verify(format!("{what}: {e}")))
}

/// The stock client's checks of a downloaded chunk: CRC, crypt mode, decoded digest.
fn check_chunk(
    key: Option<&CryptConfig>,
    raw: &[u8],
    digest: &Digest,
    encrypted: bool,
) -> Result<Vec<u8>> {
    let hexd = wire::hex(digest);
    let kind = wire::verify_blob_crc(raw)
        .map_err(|e| ClientError::Verify(format!("chunk {hexd}: {e}")))?;
    if kind.is_encrypted() != encrypted {
        return Err(ClientError::Verify(format!(
            "chunk {hexd}: crypt mode mismatch (chunk encrypted: {}, archive encrypted: {encrypted})",
            kind.is_encrypted()
        )));
    }
    let data = decode_with(key, raw, wire::MAX_CHUNK, &hexd)?;
    let computed = match (key, kind) {
        (Some(k), BlobKind::Encrypted | BlobKind::EncryptedZstd) => k.compute_digest(&data),
        _ => wire::sha256(&data),
    };
    if &computed != digest {
        return Err(ClientError::Verify(format!(
            "chunk {hexd}: decoded data hashes to {}",
            wire::hex(&computed)
        )));
    }
    Ok(data)
}

/// Maps a client archive name to the server file name (server/docs/protocol.md#restore-sequence /
/// server/docs/formats.md#archive-names).
pub fn server_name(name: &str) -> String {
    if name.ends_with(".didx") || name.ends_with(".fidx") || name.ends_with(".blob") {
        return name.to_string();
    }
    let ext = name.rsplit('.').next().unwrap_or("");
    match ext {
        "pxar" | "mpxar" | "ppxar" | "pcat1" => format!("{name}.didx"),
        "img" => format!("{name}.fidx"),
        _ => format!("{name}.blob"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(server_name("root.pxar"), "root.pxar.didx");
        assert_eq!(server_name("drive-scsi0.img"), "drive-scsi0.img.fidx");
        assert_eq!(server_name("qemu-server.conf"), "qemu-server.conf.blob");
        assert_eq!(server_name("index.json"), "index.json.blob");
        assert_eq!(server_name("x.img.fidx"), "x.img.fidx");
        let p = ReaderParams::new("s", "vm", "100", 5);
        assert_eq!(
            p.upgrade_query(),
            "backup-id=100&backup-time=5&backup-type=vm&debug=true&store=s"
        );
    }
}
