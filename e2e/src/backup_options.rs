//! What a backup run is told (snapshot coordinates, encryption, chunking) and what it
//! reports back, kept apart from the session logic in `backup.rs`.

use crate::chunker;
use crate::crypto::CryptConfig;
use crate::pipeline::PipelineStats;
use crate::wire::Manifest;

/// Encryption mode of a backup run (one key for the whole run, like the stock client).
#[derive(Debug, Clone, Default)]
pub enum Crypt {
    #[default]
    None,
    Encrypt(CryptConfig),
    SignOnly(CryptConfig),
}

impl Crypt {
    pub fn key(&self) -> Option<&CryptConfig> {
        match self {
            Crypt::None => None,
            Crypt::Encrypt(k) | Crypt::SignOnly(k) => Some(k),
        }
    }

    /// Manifest `crypt-mode` string.
    pub fn mode_str(&self) -> &'static str {
        match self {
            Crypt::None => "none",
            Crypt::Encrypt(_) => "encrypt",
            Crypt::SignOnly(_) => "sign-only",
        }
    }

    pub(crate) fn encrypting(&self) -> bool {
        matches!(self, Crypt::Encrypt(_))
    }
}

/// Snapshot coordinates and session flags of the upgrade (server/docs/protocol.md#session-upgrade).
#[derive(Debug, Clone)]
pub struct BackupParams {
    pub store: String,
    /// Namespace path `a/b`; `None` or empty = root (then `ns` is not sent).
    pub ns: Option<String>,
    pub backup_type: String,
    pub backup_id: String,
    pub backup_time: i64,
    /// Sent as `debug=…`; the stock client sends `true`.
    pub debug: bool,
    pub benchmark: bool,
    /// Sent only when true (PBS ≥ 4.0).
    pub no_cache: bool,
    pub crypt: Crypt,
}

impl BackupParams {
    pub fn new(store: &str, backup_type: &str, backup_id: &str, backup_time: i64) -> BackupParams {
        BackupParams {
            store: store.to_string(),
            ns: None,
            backup_type: backup_type.to_string(),
            backup_id: backup_id.to_string(),
            backup_time,
            debug: true,
            benchmark: false,
            no_cache: false,
            crypt: Crypt::None,
        }
    }

    /// The upgrade query string as the stock client sends it: keys sorted, `benchmark` and
    /// `debug` always, `no-cache` only when set, `ns` only below the root.
    pub fn upgrade_query(&self) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        ser.append_pair("backup-id", &self.backup_id)
            .append_pair("backup-time", &self.backup_time.to_string())
            .append_pair("backup-type", &self.backup_type)
            .append_pair("benchmark", if self.benchmark { "true" } else { "false" })
            .append_pair("debug", if self.debug { "true" } else { "false" });
        if self.no_cache {
            ser.append_pair("no-cache", "true");
        }
        if let Some(ns) = self.ns.as_deref().filter(|n| !n.is_empty()) {
            ser.append_pair("ns", ns);
        }
        ser.append_pair("store", &self.store);
        ser.finish()
    }
}

/// Per-archive upload options.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Average dynamic chunk size (power of two, 64 KiB..4 MiB); min = avg/4, max = avg*4.
    pub avg_chunk_size: usize,
    /// Fixed chunk size for images (the server only accepts 4 MiB).
    pub fixed_chunk_size: usize,
    /// zstd-compress chunks when it helps (stock client: yes).
    pub compress: bool,
    /// Send `size` on `POST fixed_index` (false = FIFO mode of PBS ≥ 4.1.5).
    pub send_image_size: bool,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            avg_chunk_size: chunker::ARCHIVE_AVG,
            fixed_chunk_size: chunker::FIXED_CHUNK_SIZE,
            compress: true,
            send_image_size: true,
        }
    }
}

/// Result of one uploaded archive or blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Server file name (`x.pxar.didx`, `x.img.fidx`, `x.conf.blob`).
    pub name: String,
    pub wid: Option<u64>,
    /// Manifest size (content bytes for indexes, encoded length for blobs).
    pub size: u64,
    /// Manifest csum (hex).
    pub csum: String,
    /// Whether the previous snapshot's index was downloaded and accepted.
    pub used_previous: bool,
    pub chunks: PipelineStats,
}

/// What `finish` produced.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub manifest: Manifest,
    pub archives: Vec<ArchiveStats>,
}
