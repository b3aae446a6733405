//! Dynamic index `.didx` (docs/formats.md#dynamic-index, #index-checksum): variable-size chunks of
//! a stream.

use super::digest::{Digest, Sha256};
use super::index_header::INDEX_HEADER_LEN;
use super::FormatError;

/// sha256("Proxmox Backup dynamic sized chunk index v1.0")[..8]
pub const DYNAMIC_INDEX_MAGIC: [u8; 8] = [28, 145, 78, 165, 25, 186, 179, 205];
/// On-disk entry size: end offset (u64 LE) ‖ digest.
pub const DYNAMIC_ENTRY_LEN: usize = 40;

const KIND: &str = "dynamic index";

/// One chunk: its exclusive end offset in the stream and its digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DynamicEntry {
    pub end: u64,
    pub digest: Digest,
}

/// A parsed dynamic index. Chunk *i* covers [end(i−1), end(i)), end(−1) = 0.
#[derive(Clone, Debug, PartialEq)]
pub struct DynamicIndex {
    pub uuid: [u8; 16],
    pub ctime: i64,
    pub entries: Vec<DynamicEntry>,
}

fn err(msg: String) -> FormatError {
    FormatError::Index { kind: KIND, msg }
}

impl DynamicIndex {
    /// Parse and validate: magic, (length − 4096) a multiple of 40, ends strictly increasing
    /// from 0 (so no zero-length chunks). The header csum is not trusted.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < INDEX_HEADER_LEN {
            return Err(err(format!(
                "file length {} is shorter than the {INDEX_HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        if bytes[..8] != DYNAMIC_INDEX_MAGIC {
            return Err(FormatError::IndexMagic {
                kind: KIND,
                magic: hex::encode(&bytes[..8]),
            });
        }
        let body = &bytes[INDEX_HEADER_LEN..];
        if body.len() % DYNAMIC_ENTRY_LEN != 0 {
            return Err(err(format!(
                "file length {} does not match 4096 + 40*N",
                bytes.len()
            )));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&bytes[8..24]);
        let mut ct = [0u8; 8];
        ct.copy_from_slice(&bytes[24..32]);
        let ctime = i64::from_le_bytes(ct);

        let mut entries = Vec::with_capacity(body.len() / DYNAMIC_ENTRY_LEN);
        let mut prev = 0u64;
        for (i, e) in body.chunks_exact(DYNAMIC_ENTRY_LEN).enumerate() {
            let mut endb = [0u8; 8];
            endb.copy_from_slice(&e[..8]);
            let end = u64::from_le_bytes(endb);
            if end <= prev {
                return Err(err(format!(
                    "entry {i}: end offset {end} is not greater than previous end {prev}"
                )));
            }
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&e[8..]);
            entries.push(DynamicEntry { end, digest });
            prev = end;
        }
        Ok(Self {
            uuid,
            ctime,
            entries,
        })
    }

    /// Serialise to the on-disk form (header with recomputed csum, then entries).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; INDEX_HEADER_LEN];
        out[..8].copy_from_slice(&DYNAMIC_INDEX_MAGIC);
        out[8..24].copy_from_slice(&self.uuid);
        out[24..32].copy_from_slice(&self.ctime.to_le_bytes());
        out[32..64].copy_from_slice(&self.csum());
        out.reserve(self.entries.len() * DYNAMIC_ENTRY_LEN);
        for e in &self.entries {
            out.extend_from_slice(&e.end.to_le_bytes());
            out.extend_from_slice(&e.digest);
        }
        out
    }

    /// index_csum = SHA-256(end₀ LE ‖ digest₀ ‖ end₁ LE ‖ digest₁ ‖ …).
    pub fn csum(&self) -> Digest {
        let mut h = Sha256::new();
        for e in &self.entries {
            h.update(&e.end.to_le_bytes());
            h.update(&e.digest);
        }
        h.finish()
    }

    /// Total stream size: the last end offset, or 0 for an empty index.
    pub fn size(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.end)
    }

    /// Byte length of chunk `i`; 0 if `i` is past the end.
    pub fn chunk_len(&self, i: usize) -> u64 {
        let Some(e) = self.entries.get(i) else {
            return 0;
        };
        let start = if i == 0 { 0 } else { self.entries[i - 1].end };
        e.end.saturating_sub(start)
    }

    /// Number of entries.
    pub fn chunk_count(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::{digest_to_hex, sha256};

    fn sample() -> DynamicIndex {
        DynamicIndex {
            uuid: [7; 16],
            ctime: 1_600_000_000,
            entries: vec![
                DynamicEntry {
                    end: 4_194_304,
                    digest: sha256(&vec![0u8; 4 * 1024 * 1024]),
                },
                DynamicEntry {
                    end: 4_194_309,
                    digest: sha256(b"hello"),
                },
            ],
        }
    }

    #[test]
    fn magic_is_label_hash() {
        assert_eq!(
            sha256(b"Proxmox Backup dynamic sized chunk index v1.0")[..8],
            DYNAMIC_INDEX_MAGIC
        );
    }

    #[test]
    fn csum_vector_and_round_trip() {
        let d = sample();
        assert_eq!(
            digest_to_hex(&d.csum()),
            "31bed408200cb47158b7da1bfb1982cd9501fe45a35e0dc0f8c36df08c0d65f2"
        );
        let b = d.to_bytes();
        assert_eq!(b.len(), 4096 + 80);
        assert_eq!(sha256(&b[4096..]), d.csum());
        let p = DynamicIndex::parse(&b).unwrap();
        assert_eq!(p, d);
        assert_eq!(p.size(), 4_194_309);
        assert_eq!(p.chunk_len(0), 4_194_304);
        assert_eq!(p.chunk_len(1), 5);
        assert_eq!(p.chunk_len(2), 0);
        assert_eq!(p.chunk_count(), 2);

        let empty = DynamicIndex {
            uuid: [0; 16],
            ctime: 0,
            entries: vec![],
        };
        let eb = empty.to_bytes();
        assert_eq!(eb.len(), 4096);
        let pe = DynamicIndex::parse(&eb).unwrap();
        assert_eq!(pe.size(), 0);
        assert_eq!(pe.csum(), sha256(b""));
    }

    #[test]
    fn rejects_bad_files() {
        let good = sample().to_bytes();
        let err = DynamicIndex::parse(&good[..good.len() - 1]).unwrap_err();
        assert!(err.to_string().contains("4096 + 40*N"), "{err}");
        assert!(DynamicIndex::parse(&good[..4000]).is_err());

        let mut b = good.clone();
        b[0] ^= 0xff;
        assert!(matches!(
            DynamicIndex::parse(&b),
            Err(FormatError::IndexMagic { .. })
        ));

        // equal ends
        let mut b = good.clone();
        b[4096 + 40..4096 + 48].copy_from_slice(&4_194_304u64.to_le_bytes());
        assert!(DynamicIndex::parse(&b).is_err());
        // decreasing ends
        b[4096 + 40..4096 + 48].copy_from_slice(&100u64.to_le_bytes());
        let err = DynamicIndex::parse(&b).unwrap_err();
        assert!(
            err.to_string().contains("not greater than previous"),
            "{err}"
        );
        // zero-length first chunk
        let mut b = good.clone();
        b[4096..4104].copy_from_slice(&0u64.to_le_bytes());
        assert!(DynamicIndex::parse(&b).is_err());
    }
}
