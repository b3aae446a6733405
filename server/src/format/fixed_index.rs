//! Fixed index `.fidx` (docs/formats.md#fixed-index, #index-checksum): block images split into
//! equal-size chunks.

use super::digest::{Digest, Sha256};
use super::index_header::INDEX_HEADER_LEN;
use super::FormatError;

/// Chunk size the server always uses when it creates a `.fidx`.
pub const FIXED_CHUNK_SIZE: u64 = 4 * 1024 * 1024;
/// sha256("Proxmox Backup fixed sized chunk index v1.0")[..8]
pub const FIXED_INDEX_MAGIC: [u8; 8] = [47, 127, 65, 237, 145, 253, 15, 205];

const KIND: &str = "fixed index";

/// A parsed fixed index. Entry *i* covers bytes [i·chunk_size, min((i+1)·chunk_size, size)).
#[derive(Clone, Debug, PartialEq)]
pub struct FixedIndex {
    pub uuid: [u8; 16],
    pub ctime: i64,
    pub size: u64,
    pub chunk_size: u64,
    pub digests: Vec<Digest>,
}

fn err(msg: String) -> FormatError {
    FormatError::Index { kind: KIND, msg }
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

impl FixedIndex {
    /// Parse and validate: magic, power-of-two chunk size, size > 0 and exact file length
    /// 4096 + 32·ceil(size/chunk_size). The header csum is not trusted (see [`Self::csum`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < INDEX_HEADER_LEN {
            return Err(err(format!(
                "file length {} is shorter than the {INDEX_HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        if bytes[..8] != FIXED_INDEX_MAGIC {
            return Err(FormatError::IndexMagic {
                kind: KIND,
                magic: hex::encode(&bytes[..8]),
            });
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&bytes[8..24]);
        let ctime = le_u64(bytes, 24) as i64;
        let size = le_u64(bytes, 64);
        let chunk_size = le_u64(bytes, 72);
        if !chunk_size.is_power_of_two() {
            return Err(err(format!(
                "chunk size {chunk_size} is not a power of two"
            )));
        }
        if size == 0 {
            return Err(err(
                "image size is 0 (an index needs at least one chunk)".into()
            ));
        }
        let n = size.div_ceil(chunk_size);
        let expected = n
            .checked_mul(32)
            .and_then(|e| e.checked_add(INDEX_HEADER_LEN as u64));
        if expected != Some(bytes.len() as u64) {
            return Err(err(format!(
                "file length {} does not match 4096 + 32*N (N = {n} for size {size}, chunk size {chunk_size})",
                bytes.len()
            )));
        }
        let digests = bytes[INDEX_HEADER_LEN..]
            .chunks_exact(32)
            .map(|c| {
                let mut d = [0u8; 32];
                d.copy_from_slice(c);
                d
            })
            .collect();
        Ok(Self {
            uuid,
            ctime,
            size,
            chunk_size,
            digests,
        })
    }

    /// Serialise to the on-disk form (header with recomputed csum, then digests).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; INDEX_HEADER_LEN];
        out[..8].copy_from_slice(&FIXED_INDEX_MAGIC);
        out[8..24].copy_from_slice(&self.uuid);
        out[24..32].copy_from_slice(&self.ctime.to_le_bytes());
        out[32..64].copy_from_slice(&self.csum());
        out[64..72].copy_from_slice(&self.size.to_le_bytes());
        out[72..80].copy_from_slice(&self.chunk_size.to_le_bytes());
        out.reserve(self.digests.len() * 32);
        for d in &self.digests {
            out.extend_from_slice(d);
        }
        out
    }

    /// index_csum = SHA-256(digest₀ ‖ digest₁ ‖ …), recomputed from the entries.
    pub fn csum(&self) -> Digest {
        let mut h = Sha256::new();
        for d in &self.digests {
            h.update(d);
        }
        h.finish()
    }

    /// Byte length of chunk `i` (only the last may be short); 0 if `i` is past the end.
    pub fn chunk_len(&self, i: usize) -> u64 {
        let start = (i as u64).saturating_mul(self.chunk_size);
        if start >= self.size {
            return 0;
        }
        (self.size - start).min(self.chunk_size)
    }

    /// Number of digests.
    pub fn chunk_count(&self) -> usize {
        self.digests.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::{digest_to_hex, sha256};

    fn sample() -> FixedIndex {
        FixedIndex {
            uuid: [0xab; 16],
            ctime: 1_700_000_000,
            size: FIXED_CHUNK_SIZE + 5,
            chunk_size: FIXED_CHUNK_SIZE,
            digests: vec![sha256(&vec![0u8; 4 * 1024 * 1024]), sha256(b"hello")],
        }
    }

    #[test]
    fn magic_is_label_hash() {
        assert_eq!(
            sha256(b"Proxmox Backup fixed sized chunk index v1.0")[..8],
            FIXED_INDEX_MAGIC
        );
    }

    #[test]
    fn csum_vector_and_round_trip() {
        let f = sample();
        assert_eq!(
            digest_to_hex(&f.csum()),
            "1d77917af4c67365bbe8f81698b464912c59b4261bbe4ee013b7243f2ab57ef1"
        );
        let b = f.to_bytes();
        assert_eq!(b.len(), 4096 + 64);
        assert_eq!(sha256(&b[4096..]), f.csum());
        let p = FixedIndex::parse(&b).unwrap();
        assert_eq!(p, f);
        assert_eq!(p.chunk_count(), 2);
        assert_eq!(p.chunk_len(0), FIXED_CHUNK_SIZE);
        assert_eq!(p.chunk_len(1), 5);
        assert_eq!(p.chunk_len(2), 0);
        assert_eq!(p.chunk_len(usize::MAX), 0);
    }

    #[test]
    fn rejects_bad_files() {
        let good = sample().to_bytes();

        let err = FixedIndex::parse(&good[..good.len() - 1]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("fixed index: file length 4159 does not match 4096 + 32*N"),
            "{err}"
        );
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 32]);
        assert!(FixedIndex::parse(&longer).is_err());
        assert!(FixedIndex::parse(&good[..100]).is_err());

        let mut b = good.clone();
        b[72..80].copy_from_slice(&3_000_000u64.to_le_bytes());
        let err = FixedIndex::parse(&b).unwrap_err();
        assert!(err.to_string().contains("not a power of two"), "{err}");
        b[72..80].copy_from_slice(&0u64.to_le_bytes());
        assert!(FixedIndex::parse(&b).is_err());

        let mut b = good.clone();
        b[0] ^= 1;
        assert!(matches!(
            FixedIndex::parse(&b),
            Err(FormatError::IndexMagic { .. })
        ));

        // size 0, and a size whose entry count overflows, are rejected without panicking
        let mut b = good.clone();
        b[64..72].copy_from_slice(&0u64.to_le_bytes());
        assert!(FixedIndex::parse(&b).is_err());
        b[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
        b[72..80].copy_from_slice(&1u64.to_le_bytes());
        assert!(FixedIndex::parse(&b).is_err());
    }
}
