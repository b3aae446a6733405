//! The 4096-byte header that both index kinds (`.fidx`, `.didx`) start with. Bytes 0..8 hold
//! the kind's magic, 8..24 the UUID, 24..32 the creation time (i64 LE), 32..64 the index
//! checksum; a fixed index adds its image size and chunk size at 64..80; the rest is zero.

use super::digest::Digest;

/// Length of the header in front of the entries of either index kind.
pub const INDEX_HEADER_LEN: usize = 4096;

/// The index_csum stored in a header (bytes 32..64). Informational only: readers must
/// recompute it from the entries and never trust this field.
pub fn stored_header_csum(bytes: &[u8]) -> Option<Digest> {
    let s = bytes.get(32..64)?;
    let mut d = [0u8; 32];
    d.copy_from_slice(s);
    Some(d)
}
