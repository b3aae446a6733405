//! Pure PBS on-disk/wire formats: blobs, digests, indexes, manifests, names, pxar archives and
//! their catalogs.
//!
//! Everything in this layer works on byte slices and values only (no I/O), so it can be
//! fuzzed and unit-tested in isolation and shared by the datastore, protocol and API layers.

pub mod blob;
pub mod catalog;
pub mod digest;
pub mod dynamic_index;
pub mod fixed_index;
pub mod group_filter;
pub mod index;
pub mod index_header;
pub mod manifest;
pub mod names;
pub mod pxar;

pub use digest::{digest_to_hex, parse_digest_hex, sha256, Digest, Sha256};

/// A size in binary units with `decimals` places (`1.50 KiB`); plain bytes below 1 KiB.
pub fn human_bytes(bytes: u64, decimals: usize) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.decimals$} {}", UNITS[unit]),
    }
}

/// The single error type of the format layer. Messages name the object and what failed.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("blob has unknown magic {0}")]
    UnknownMagic(String),
    #[error(
        "blob uses the removed legacy 'authenticated' (signed) format (magic {0}); not supported"
    )]
    LegacySignedBlob(String),
    #[error("blob too short: {len} bytes, {kind} header needs {min}")]
    BlobTooShort {
        kind: &'static str,
        len: usize,
        min: usize,
    },
    #[error("blob CRC mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})")]
    BlobCrcMismatch { stored: u32, computed: u32 },
    #[error("cannot decode encrypted blob")]
    EncryptedBlob,
    #[error("decoded blob exceeds limit of {limit} bytes")]
    DecodedTooLarge { limit: usize },
    #[error("blob zstd decompression failed: {0}")]
    Zstd(String),
    #[error("chunk body length {actual} does not match encoded-size {expected}")]
    ChunkEncodedSize { expected: u64, actual: u64 },
    #[error("chunk digest mismatch (announced {expected}, computed {computed})")]
    ChunkDigestMismatch { expected: String, computed: String },
    #[error("chunk {digest}: decoded size {actual} does not match announced size {expected}")]
    ChunkSizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("{kind}: wrong magic {magic}")]
    IndexMagic { kind: &'static str, magic: String },
    #[error("{kind}: {msg}")]
    Index { kind: &'static str, msg: String },
    #[error("invalid digest '{0}': expected 64 lowercase hex characters")]
    InvalidDigest(String),
    #[error("invalid {what} '{name}': {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("invalid backup time {value}: {reason}")]
    InvalidTime { value: String, reason: String },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("canonical JSON: {0}")]
    CanonicalJson(String),
}
