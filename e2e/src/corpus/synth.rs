//! Stand-in data for the binary bodies the corpus only summarises. Every recorded chunk gets
//! deterministic data of its recorded plain size, encoded as the same blob kind (plain,
//! compressed, encrypted, encrypted and compressed) and, where the kind allows, with the
//! recorded encoded size; the replay then uses our digest wherever the recording used theirs.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use serde_json::Value;

use super::ReplayError;
use crate::crypto::CryptConfig;
use crate::wire::{self, BlobKind, Digest};

/// The encryption key of the replay (fixed, so runs are reproducible).
const REPLAY_KEY: [u8; 32] = *b"pbs-cloud corpus replay key 0001";
/// Random bytes every synthesised payload starts with, so two recorded chunks never get the
/// same stand-in (only a recorded all-zero chunk gets zeros).
const MIN_RANDOM: usize = 32;

/// Blob kind named by the corpus' `magic` field.
pub fn kind_of_magic(magic: &str) -> Option<BlobKind> {
    Some(match magic {
        "blob-uncompressed" => BlobKind::Plain,
        "blob-compressed" => BlobKind::Zstd,
        "blob-encrypted" => BlobKind::Encrypted,
        "blob-encrypted-compressed" => BlobKind::EncryptedZstd,
        _ => return None,
    })
}

/// The corpus' name of a blob kind.
pub fn magic_of_kind(kind: BlobKind) -> &'static str {
    match kind {
        BlobKind::Plain => "blob-uncompressed",
        BlobKind::Zstd => "blob-compressed",
        BlobKind::Encrypted => "blob-encrypted",
        BlobKind::EncryptedZstd => "blob-encrypted-compressed",
    }
}

/// The corpus' name of the magic at the start of `bytes` (blobs and indexes).
pub fn magic_name(bytes: &[u8]) -> Option<&'static str> {
    let m: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(match m {
        wire::MAGIC_PLAIN => "blob-uncompressed",
        wire::MAGIC_ZSTD => "blob-compressed",
        wire::MAGIC_ENC => "blob-encrypted",
        wire::MAGIC_ENC_ZSTD => "blob-encrypted-compressed",
        wire::MAGIC_FIDX => "fixed-index",
        wire::MAGIC_DIDX => "dynamic-index",
        _ => return None,
    })
}

/// What a recorded chunk looked like.
#[derive(Debug, Clone, Copy)]
pub struct ChunkSpec {
    /// Plain (decoded) size.
    pub size: u64,
    pub kind: BlobKind,
    /// Recorded encoded size (reached exactly for uncompressed kinds, approximately else).
    pub encoded_hint: u64,
}

/// Our stand-in for one recorded chunk.
#[derive(Debug, Clone)]
pub struct OurChunk {
    pub digest: Digest,
    pub hex: String,
    pub size: u64,
    pub encoded: Bytes,
}

/// Generates and remembers stand-in chunks and blobs.
pub struct Synth {
    key: CryptConfig,
    chunks: HashMap<String, Arc<OurChunk>>,
}

impl Default for Synth {
    fn default() -> Self {
        Self::new()
    }
}

fn seed_of(hex_text: &str) -> u64 {
    let digits: String = hex_text
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    u64::from_str_radix(&digits, 16).unwrap_or(0x5eed)
}

/// `size` bytes: `random` seeded bytes followed by zeros.
fn shaped(seed: u64, size: usize, random: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    let random = random.min(size);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    rng.fill_bytes(&mut data[..random]);
    data
}

fn zstd_len(data: &[u8]) -> usize {
    zstd::bulk::compress(data, 1)
        .map(|c| c.len())
        .unwrap_or(data.len())
}

/// Data of `size` bytes whose zstd (level 1) output is close to `target` bytes.
fn compressible(seed: u64, size: usize, target: usize) -> Vec<u8> {
    let floor = MIN_RANDOM.min(size);
    let mut random = target.saturating_sub(24).clamp(floor, size.max(floor));
    let mut data = shaped(seed, size, random);
    // zstd output grows about linearly with the random part: a few corrections land close
    for _ in 0..3 {
        let got = zstd_len(&data);
        if got == target {
            break;
        }
        let next = (random as i64 + target as i64 - got as i64).clamp(floor as i64, size as i64);
        if next as usize == random {
            break;
        }
        random = next as usize;
        data = shaped(seed, size, random);
    }
    data
}

impl Synth {
    pub fn new() -> Synth {
        Synth {
            key: CryptConfig::new(REPLAY_KEY),
            chunks: HashMap::new(),
        }
    }

    /// The replay's encryption key (digests of encrypted chunks, manifest signatures).
    pub fn key(&self) -> &CryptConfig {
        &self.key
    }

    /// Our stand-in for the recorded chunk `recorded` (created on first use).
    pub fn chunk(&mut self, recorded: &str, spec: ChunkSpec) -> Result<Arc<OurChunk>, ReplayError> {
        if let Some(c) = self.chunks.get(recorded) {
            return Ok(c.clone());
        }
        let size = spec.size as usize;
        let zeros = vec![0u8; size];
        let plain = if wire::hex(&wire::sha256(&zeros)) == recorded {
            // the recorded chunk is all zeros: so is ours (and it has the same digest)
            zeros
        } else {
            let seed = seed_of(recorded);
            let header = spec.kind.header_len();
            if spec.kind.is_compressed() {
                let target = (spec.encoded_hint as usize).saturating_sub(header);
                compressible(seed, size, target)
            } else {
                shaped(seed, size, size)
            }
        };
        let (digest, encoded) = self.encode(&plain, spec.kind, seed_of(recorded))?;
        let ours = Arc::new(OurChunk {
            hex: wire::hex(&digest),
            digest,
            size: spec.size,
            encoded: Bytes::from(encoded),
        });
        self.chunks.insert(recorded.to_string(), ours.clone());
        Ok(ours)
    }

    /// The stand-in made earlier for `recorded`.
    pub fn known(&self, recorded: &str) -> Option<Arc<OurChunk>> {
        self.chunks.get(recorded).cloned()
    }

    /// Encodes `plain` as `kind`; returns the digest the client would compute.
    fn encode(
        &self,
        plain: &[u8],
        kind: BlobKind,
        seed: u64,
    ) -> Result<(Digest, Vec<u8>), ReplayError> {
        let encoded = match kind {
            BlobKind::Plain => wire::encode_plain_blob(plain, false),
            BlobKind::Zstd => {
                let c = zstd::bulk::compress(plain, 1)
                    .map_err(|e| ReplayError::Synth(format!("zstd: {e}")))?;
                let mut out = Vec::with_capacity(12 + c.len());
                out.extend_from_slice(&wire::MAGIC_ZSTD);
                out.extend_from_slice(&crc32fast::hash(&c).to_le_bytes());
                out.extend_from_slice(&c);
                out
            }
            BlobKind::Encrypted | BlobKind::EncryptedZstd => {
                let mut iv = [0u8; 16];
                rand::rngs::StdRng::seed_from_u64(seed ^ 0x1f).fill_bytes(&mut iv);
                self.key
                    .encrypt_blob_with_iv(plain, kind == BlobKind::EncryptedZstd, iv)
                    .map_err(|e| ReplayError::Synth(format!("encrypt: {e}")))?
            }
        };
        let digest = if kind.is_encrypted() {
            self.key.compute_digest(plain)
        } else {
            wire::sha256(plain)
        };
        Ok((digest, encoded))
    }

    /// A stand-in blob (not a chunk) of the recorded kind and about the recorded length,
    /// e.g. an uploaded client log. `seed` is the recorded sha256.
    pub fn blob(&self, seed: &str, kind: BlobKind, len: u64) -> Result<Vec<u8>, ReplayError> {
        let header = kind.header_len();
        let payload = (len as usize).saturating_sub(header);
        let plain = if kind.is_compressed() {
            compressible(seed_of(seed), (payload * 3).max(64), payload)
        } else {
            shaped(seed_of(seed), payload, payload)
        };
        Ok(self.encode(&plain, kind, seed_of(seed))?.1)
    }

    /// Re-signs a manifest with the replay key, as the client does (HMAC of the canonical
    /// JSON without `unprotected` and `signature`).
    pub fn sign_manifest(&self, manifest: &Value) -> Result<String, ReplayError> {
        let mut signed = manifest.clone();
        if let Some(o) = signed.as_object_mut() {
            o.remove("unprotected");
            o.remove("signature");
        }
        // serde_json's map is sorted here: keys come out in canonical order
        let text = serde_json::to_vec(&signed)
            .map_err(|e| ReplayError::Synth(format!("manifest: {e}")))?;
        Ok(self.key.hmac_hex(&text))
    }

    /// Encodes a manifest as the client uploads it: pretty JSON in a blob of `kind`.
    pub fn manifest_blob(&self, manifest: &Value, kind: BlobKind) -> Result<Vec<u8>, ReplayError> {
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|e| ReplayError::Synth(format!("manifest: {e}")))?;
        Ok(wire::encode_plain_blob(&json, kind == BlobKind::Zstd))
    }
}

/// The bytes of a binary body the corpus kept whole (base64).
pub(super) fn base64_decode(b64: &str) -> Result<Vec<u8>, ReplayError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ReplayError::Synth(format!("base64 in the corpus: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_follow_the_recording() {
        let mut s = Synth::new();
        let plain = s
            .chunk(
                "dc54e4e0bac56a2683e37afebe8d43c2e44143f10e2e6de340d9eb270c9cadc3",
                ChunkSpec {
                    size: 1000,
                    kind: BlobKind::Plain,
                    encoded_hint: 1012,
                },
            )
            .unwrap();
        assert_eq!(plain.encoded.len(), 1012);
        let zero_digest = wire::hex(&wire::sha256(&vec![0u8; 4 << 20]));
        let zeros = s
            .chunk(
                &zero_digest,
                ChunkSpec {
                    size: 4 << 20,
                    kind: BlobKind::Zstd,
                    encoded_hint: 158,
                },
            )
            .unwrap();
        assert_eq!(zeros.hex, zero_digest);
        let z = s
            .chunk(
                "f1045e639ddb8f3eb5e75a4db4ab88feb458971fb49076f034287288d26bd239",
                ChunkSpec {
                    size: 804_792,
                    kind: BlobKind::Zstd,
                    encoded_hint: 319_933,
                },
            )
            .unwrap();
        let diff = z.encoded.len() as i64 - 319_933;
        assert!(
            diff.abs() < 512,
            "compressed stand-in is {} bytes",
            z.encoded.len()
        );
        assert_eq!(
            wire::decode_plain_blob(&z.encoded, 1 << 24).unwrap().len(),
            804_792
        );
        let enc = s
            .chunk(
                "754359e5a22cacdda3b14e320ff6ec53663d4511292b5a4ae22b90b19493e7ee",
                ChunkSpec {
                    size: 500,
                    kind: BlobKind::Encrypted,
                    encoded_hint: 544,
                },
            )
            .unwrap();
        assert_eq!(enc.encoded.len(), 544);
        assert_eq!(BlobKind::of(&enc.encoded).unwrap(), BlobKind::Encrypted);
        // same recording, same stand-in
        let again = s
            .chunk(
                "754359e5a22cacdda3b14e320ff6ec53663d4511292b5a4ae22b90b19493e7ee",
                ChunkSpec {
                    size: 1,
                    kind: BlobKind::Plain,
                    encoded_hint: 0,
                },
            )
            .unwrap();
        assert_eq!(again.hex, enc.hex);
    }
}
