//! Client-side encoders/decoders of the PBS file formats (server/docs/formats.md#datablob,
//! #index-files, #manifest).
//!
//! Written independently of the server's `format` module on purpose: a test client that
//! shared the server's codec would hide symmetric bugs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ClientError, Result};

pub type Digest = [u8; 32];

pub const MAGIC_PLAIN: [u8; 8] = [0x42, 0xab, 0x38, 0x07, 0xbe, 0x83, 0x70, 0xa1];
pub const MAGIC_ZSTD: [u8; 8] = [0x31, 0xb9, 0x58, 0x42, 0x6f, 0xb6, 0xa3, 0x7f];
pub const MAGIC_ENC: [u8; 8] = [0x7b, 0x67, 0x85, 0xbe, 0x22, 0x2d, 0x4c, 0xf0];
pub const MAGIC_ENC_ZSTD: [u8; 8] = [0xe6, 0x59, 0x1b, 0xbf, 0x0b, 0xbf, 0xd8, 0x0b];
pub const MAGIC_FIDX: [u8; 8] = [0x2f, 0x7f, 0x41, 0xed, 0x91, 0xfd, 0x0f, 0xcd];
pub const MAGIC_DIDX: [u8; 8] = [0x1c, 0x91, 0x4e, 0xa5, 0x19, 0xba, 0xb3, 0xcd];
/// Largest decoded chunk the protocol allows.
pub const MAX_CHUNK: usize = 16 * 1024 * 1024;
/// Largest decoded blob the client encoder handles.
pub const MAX_BLOB: usize = 128 * 1024 * 1024;

pub fn sha256(data: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn hex(d: &[u8]) -> String {
    ::hex::encode(d)
}

pub fn parse_digest(s: &str) -> Result<Digest> {
    let v = ::hex::decode(s).map_err(|e| ClientError::Format(format!("digest '{s}': {e}")))?;
    v.try_into()
        .map_err(|_| ClientError::Format(format!("digest '{s}' is not 32 bytes")))
}

/// zstd level 1, used only when the result is not longer than the input
/// (server/docs/formats.md#compression).
pub fn maybe_compress(data: &[u8]) -> Option<Vec<u8>> {
    let c = zstd::bulk::compress(data, 1).ok()?;
    (c.len() <= data.len()).then_some(c)
}

/// Encodes an unencrypted blob (compressed if `compress` and it helps).
pub fn encode_plain_blob(data: &[u8], compress: bool) -> Vec<u8> {
    let (magic, payload) = match compress.then(|| maybe_compress(data)).flatten() {
        Some(c) => (MAGIC_ZSTD, c),
        None => (MAGIC_PLAIN, data.to_vec()),
    };
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Which of the four blob kinds a byte string claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Plain,
    Zstd,
    Encrypted,
    EncryptedZstd,
}

impl BlobKind {
    pub fn of(raw: &[u8]) -> Result<BlobKind> {
        let magic = raw.get(..8).ok_or_else(|| {
            ClientError::Format(format!("blob of {} bytes has no magic", raw.len()))
        })?;
        let kind = match <[u8; 8]>::try_from(magic).unwrap_or_default() {
            MAGIC_PLAIN => BlobKind::Plain,
            MAGIC_ZSTD => BlobKind::Zstd,
            MAGIC_ENC => BlobKind::Encrypted,
            MAGIC_ENC_ZSTD => BlobKind::EncryptedZstd,
            _ => {
                return Err(ClientError::Format(format!(
                    "unknown blob magic {}",
                    hex(magic)
                )))
            }
        };
        if raw.len() < kind.header_len() {
            return Err(ClientError::Format(format!(
                "blob of {} bytes shorter than its header",
                raw.len()
            )));
        }
        Ok(kind)
    }

    pub fn is_encrypted(self) -> bool {
        matches!(self, BlobKind::Encrypted | BlobKind::EncryptedZstd)
    }

    pub fn is_compressed(self) -> bool {
        matches!(self, BlobKind::Zstd | BlobKind::EncryptedZstd)
    }

    pub fn header_len(self) -> usize {
        if self.is_encrypted() {
            44
        } else {
            12
        }
    }
}

/// Checks the CRC32 stored at bytes 8..12 against everything after the header.
pub fn verify_blob_crc(raw: &[u8]) -> Result<BlobKind> {
    let kind = BlobKind::of(raw)?;
    let stored = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
    let computed = crc32fast::hash(&raw[kind.header_len()..]);
    if stored != computed {
        return Err(ClientError::Verify(format!(
            "blob CRC mismatch (stored {stored:08x}, computed {computed:08x})"
        )));
    }
    Ok(kind)
}

pub(crate) fn zstd_decode(payload: &[u8], max: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut dec = zstd::stream::read::Decoder::new(payload)
        .map_err(|e| ClientError::Format(format!("zstd: {e}")))?;
    let n = std::io::copy(&mut std::io::Read::take(&mut dec, max as u64 + 1), &mut out)
        .map_err(|e| ClientError::Format(format!("zstd decode: {e}")))?;
    if n as usize > max {
        return Err(ClientError::Format(format!(
            "decoded blob exceeds {max} bytes"
        )));
    }
    Ok(out)
}

/// Decodes an unencrypted blob (CRC checked first). Encrypted blobs need `CryptConfig`.
pub fn decode_plain_blob(raw: &[u8], max: usize) -> Result<Vec<u8>> {
    let kind = verify_blob_crc(raw)?;
    match kind {
        BlobKind::Plain => Ok(raw[12..].to_vec()),
        BlobKind::Zstd => zstd_decode(&raw[12..], max),
        _ => Err(ClientError::Crypto(
            "blob is encrypted but no key was given".into(),
        )),
    }
}

/// A parsed fixed or dynamic index, reduced to what restore needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntries {
    pub fixed: bool,
    /// (digest, start offset, length) per chunk in order.
    pub chunks: Vec<(Digest, u64, u64)>,
    /// Content size (fixed header size, or the last dynamic end).
    pub size: u64,
    /// Recomputed index checksum (server/docs/formats.md#index-checksum) - never the header field.
    pub csum: Digest,
}

/// Parses a `.fidx`/`.didx` with the reader's validation rules (server/docs/formats.md#fixed-index,
/// #dynamic-index).
pub fn parse_index(name: &str, bytes: &[u8]) -> Result<IndexEntries> {
    let bad = |m: String| ClientError::Verify(format!("index {name}: {m}"));
    if bytes.len() < 4096 {
        return Err(bad(format!(
            "only {} bytes, header needs 4096",
            bytes.len()
        )));
    }
    let le = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or_default());
    let body = &bytes[4096..];
    let csum = sha256(body);
    match <[u8; 8]>::try_from(&bytes[..8]).unwrap_or_default() {
        MAGIC_FIDX => {
            let size = le(64);
            let cs = le(72);
            if cs == 0 || !cs.is_power_of_two() {
                return Err(bad(format!("chunk size {cs} is not a power of two")));
            }
            let n = size.div_ceil(cs);
            if body.len() as u64 != n * 32 {
                return Err(bad(format!(
                    "{} entry bytes, expected {} for size {size}",
                    body.len(),
                    n * 32
                )));
            }
            let chunks = body
                .chunks_exact(32)
                .enumerate()
                .map(|(i, d)| {
                    let start = i as u64 * cs;
                    let digest: Digest = d.try_into().unwrap_or_default();
                    (digest, start, cs.min(size - start))
                })
                .collect();
            Ok(IndexEntries {
                fixed: true,
                chunks,
                size,
                csum,
            })
        }
        MAGIC_DIDX => {
            if body.len() % 40 != 0 {
                return Err(bad(format!(
                    "{} entry bytes is not a multiple of 40",
                    body.len()
                )));
            }
            let mut start = 0u64;
            let mut chunks = Vec::with_capacity(body.len() / 40);
            for e in body.chunks_exact(40) {
                let end = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
                if end <= start {
                    return Err(bad(format!("end offset {end} not after {start}")));
                }
                chunks.push((e[8..40].try_into().unwrap_or_default(), start, end - start));
                start = end;
            }
            Ok(IndexEntries {
                fixed: false,
                chunks,
                size: start,
                csum,
            })
        }
        other => Err(bad(format!("wrong magic {}", hex(&other)))),
    }
}

/// Index checksum of a dynamic index from its (end, digest) entries.
pub fn dynamic_csum(entries: &[(u64, Digest)]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (end, d) in entries {
        ctx.update(&end.to_le_bytes());
        ctx.update(d);
    }
    ctx.finish().as_ref().try_into().unwrap_or_default()
}

/// Index checksum of a fixed index from its digests.
pub fn fixed_csum(digests: &[Digest]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for d in digests {
        ctx.update(d);
    }
    ctx.finish().as_ref().try_into().unwrap_or_default()
}

/// Manifest file entry (server/docs/formats.md#manifest-schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub filename: String,
    #[serde(rename = "crypt-mode", default = "default_crypt")]
    pub crypt_mode: String,
    pub size: u64,
    pub csum: String,
}

fn default_crypt() -> String {
    "none".to_string()
}

/// The manifest `index.json.blob` (server/docs/formats.md#manifest-schema), kept as close to the
/// JSON as possible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "backup-type")]
    pub backup_type: String,
    #[serde(rename = "backup-id")]
    pub backup_id: String,
    #[serde(rename = "backup-time")]
    pub backup_time: i64,
    pub files: Vec<ManifestFile>,
    #[serde(default)]
    pub unprotected: Value,
    #[serde(default)]
    pub signature: Option<String>,
}

impl Manifest {
    pub fn file(&self, name: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.filename == name)
    }

    /// Canonical JSON of the signed part (server/docs/formats.md#manifest-signature): sorted keys,
    /// no whitespace, no nulls.
    pub fn canonical_signed_part(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_value(self).map_err(|e| ClientError::json("manifest", e))?;
        if let Some(o) = v.as_object_mut() {
            o.remove("unprotected");
            o.remove("signature");
        }
        fn has_null(v: &Value) -> bool {
            match v {
                Value::Null => true,
                Value::Array(a) => a.iter().any(has_null),
                Value::Object(o) => o.values().any(has_null),
                _ => false,
            }
        }
        if has_null(&v) {
            return Err(ClientError::Format(
                "manifest signed part contains null".into(),
            ));
        }
        // serde_json's Map is a BTreeMap here: keys come out sorted byte-wise.
        serde_json::to_vec(&v).map_err(|e| ClientError::json("manifest", e))
    }

    /// Pretty JSON wrapped in a compressed, unencrypted blob (as the client uploads it).
    pub fn to_blob(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| ClientError::json("manifest", e))?;
        Ok(encode_plain_blob(&json, true))
    }

    pub fn from_blob(raw: &[u8]) -> Result<Manifest> {
        let json = decode_plain_blob(raw, MAX_BLOB)?;
        serde_json::from_slice(&json).map_err(|e| ClientError::json("manifest index.json.blob", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_blob_vector() {
        let b = encode_plain_blob(b"hello", false);
        assert_eq!(hex(&b), "42ab3807be8370a186a6103668656c6c6f");
        assert_eq!(decode_plain_blob(&b, 100).unwrap(), b"hello");
        let z = encode_plain_blob(&vec![7u8; 100_000], true);
        assert_eq!(BlobKind::of(&z).unwrap(), BlobKind::Zstd);
        assert_eq!(decode_plain_blob(&z, 200_000).unwrap(), vec![7u8; 100_000]);
        let mut broken = z.clone();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        assert!(decode_plain_blob(&broken, 200_000).is_err());
    }

    #[test]
    fn index_csum_vectors() {
        let d1 = sha256(&vec![0u8; 4 << 20]);
        let d2 = sha256(b"hello");
        assert_eq!(
            hex(&fixed_csum(&[d1, d2])),
            "1d77917af4c67365bbe8f81698b464912c59b4261bbe4ee013b7243f2ab57ef1"
        );
        assert_eq!(
            hex(&dynamic_csum(&[(4194304, d1), (4194309, d2)])),
            "31bed408200cb47158b7da1bfb1982cd9501fe45a35e0dc0f8c36df08c0d65f2"
        );
        let mut didx = vec![0u8; 4096];
        didx[..8].copy_from_slice(&MAGIC_DIDX);
        for (end, d) in [(4194304u64, d1), (4194309, d2)] {
            didx.extend_from_slice(&end.to_le_bytes());
            didx.extend_from_slice(&d);
        }
        let idx = parse_index("x.didx", &didx).unwrap();
        assert_eq!(
            (idx.size, idx.chunks[1].1, idx.chunks[1].2),
            (4194309, 4194304, 5)
        );
        assert_eq!(
            hex(&idx.csum),
            "31bed408200cb47158b7da1bfb1982cd9501fe45a35e0dc0f8c36df08c0d65f2"
        );
    }

    #[test]
    fn canonical_manifest_text() {
        let m = Manifest {
            backup_type: "host".into(),
            backup_id: "elsa".into(),
            backup_time: 1593179765,
            files: vec![
                ManifestFile {
                    filename: "test1.img.fidx".into(),
                    crypt_mode: "encrypt".into(),
                    size: 200,
                    csum: hex(&[1; 32]),
                },
                ManifestFile {
                    filename: "abc.blob".into(),
                    crypt_mode: "none".into(),
                    size: 200,
                    csum: hex(&[2; 32]),
                },
            ],
            unprotected: serde_json::json!({"key-fingerprint": "x"}),
            signature: None,
        };
        let text = String::from_utf8(m.canonical_signed_part().unwrap()).unwrap();
        let expected = format!(
            "{{\"backup-id\":\"elsa\",\"backup-time\":1593179765,\"backup-type\":\"host\",\"files\":[{{\"crypt-mode\":\"encrypt\",\"csum\":\"{}\",\"filename\":\"test1.img.fidx\",\"size\":200}},{{\"crypt-mode\":\"none\",\"csum\":\"{}\",\"filename\":\"abc.blob\",\"size\":200}}]}}",
            hex(&[1; 32]),
            hex(&[2; 32])
        );
        assert_eq!(text, expected);
        let back = Manifest::from_blob(&m.to_blob().unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
