//! The goodbye table that closes every directory: one 24-byte record (name hash, backward
//! offset to the child's FILENAME, child size) per child, laid out as an implicit binary search
//! tree over the hashes, then a tail record pointing back to the directory's ENTRY.

use std::hash::Hasher;

use siphasher::sip::SipHasher24;

use super::error::PxarError;
use super::header::{htype, le_u64, HEADER_LEN};
use super::source::{read_exact, read_header, ReadAt};

/// Length of one goodbye record.
pub const GOODBYE_ITEM_LEN: u64 = 24;
/// SipHash keys of pxar (the first 128 bits of SHA-1("PROXMOX ARCHIVE FORMAT")).
const HASH_KEY_0: u64 = 0x83ac3f1cfbb450db;
const HASH_KEY_1: u64 = 0xaa4f1b6879369fbd;
/// Records read per batch when a table is scanned.
const BATCH: u64 = 4096;

/// SipHash-2-4 of a name's raw bytes with the pxar key: the goodbye lookup hash.
pub fn hash_filename(name: &[u8]) -> u64 {
    let mut h = SipHasher24::new_with_keys(HASH_KEY_0, HASH_KEY_1);
    h.write(name);
    h.finish()
}

/// One goodbye record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoodbyeItem {
    pub hash: u64,
    /// Goodbye start minus the child's FILENAME start (a backward distance).
    pub offset: u64,
    /// Bytes from the child's FILENAME to the child's end (not reliable for files of `.mpxar`).
    pub size: u64,
}

impl GoodbyeItem {
    pub fn parse(b: &[u8]) -> Self {
        Self {
            hash: le_u64(&b[0..8]),
            offset: le_u64(&b[8..16]),
            size: le_u64(&b[16..24]),
        }
    }

    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&self.hash.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b
    }
}

/// A located goodbye table of the directory that ends at `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GoodbyeTable {
    /// Offset of the GOODBYE item header.
    pub start: u64,
    /// Offset the tail record points back to (the directory's ENTRY; 0 for the root).
    pub entry_start: u64,
    /// Number of child records (without the tail).
    pub count: u64,
}

impl GoodbyeTable {
    /// Locates the table from the directory's end: the tail record is the last 24 bytes.
    /// Everything must lie within [`lower`, `end`).
    pub(crate) async fn locate<S: ReadAt + ?Sized>(
        src: &S,
        lower: u64,
        end: u64,
    ) -> Result<Self, PxarError> {
        let bad = |msg: String| PxarError::malformed("pxar goodbye table", msg);
        if end < lower + HEADER_LEN + GOODBYE_ITEM_LEN {
            return Err(bad(format!(
                "directory ending at {end} is too short for a goodbye table"
            )));
        }
        let tail = GoodbyeItem::parse(
            &read_exact(
                src,
                end - GOODBYE_ITEM_LEN,
                GOODBYE_ITEM_LEN,
                "pxar goodbye",
            )
            .await?,
        );
        if tail.hash != htype::GOODBYE_TAIL_MARKER {
            return Err(bad(format!(
                "no goodbye tail marker before offset {end} (found {:016x})",
                tail.hash
            )));
        }
        let start = end
            .checked_sub(tail.size)
            .filter(|s| *s >= lower)
            .ok_or_else(|| {
                bad(format!(
                    "tail size {} before offset {end} is too large",
                    tail.size
                ))
            })?;
        let entry_start = start
            .checked_sub(tail.offset)
            .filter(|s| *s >= lower)
            .ok_or_else(|| {
                bad(format!(
                    "tail offset {} of the table at {start} points before the directory",
                    tail.offset
                ))
            })?;
        let header = read_header(src, start, end).await?;
        if header.htype != htype::GOODBYE || header.full_size != tail.size {
            return Err(bad(format!(
                "at offset {start}: expected a GOODBYE item of {} bytes, found {} of {}",
                tail.size,
                htype::name(header.htype),
                header.full_size
            )));
        }
        let records = header.content_size();
        if records % GOODBYE_ITEM_LEN != 0 {
            return Err(bad(format!(
                "at offset {start}: body of {records} bytes is not a multiple of 24"
            )));
        }
        Ok(Self {
            start,
            entry_start,
            count: records / GOODBYE_ITEM_LEN - 1,
        })
    }

    /// Records `first..first+n` (bounded batch).
    pub(crate) async fn records<S: ReadAt + ?Sized>(
        &self,
        src: &S,
        first: u64,
        n: u64,
    ) -> Result<Vec<GoodbyeItem>, PxarError> {
        let n = n.min(self.count.saturating_sub(first));
        let at = self.start + HEADER_LEN + first * GOODBYE_ITEM_LEN;
        let bytes = read_exact(src, at, n * GOODBYE_ITEM_LEN, "pxar goodbye").await?;
        Ok(bytes
            .chunks_exact(GOODBYE_ITEM_LEN as usize)
            .map(GoodbyeItem::parse)
            .collect())
    }

    /// Every record, read in bounded batches; `visit` returns false to stop early.
    pub(crate) async fn for_each<S, F>(&self, src: &S, mut visit: F) -> Result<(), PxarError>
    where
        S: ReadAt + ?Sized,
        F: FnMut(GoodbyeItem) -> bool,
    {
        let mut first = 0;
        while first < self.count {
            for item in self.records(src, first, BATCH).await? {
                if !visit(item) {
                    return Ok(());
                }
            }
            first += BATCH;
        }
        Ok(())
    }

    /// Records whose hash equals `hash`, found by descending the binary search tree; equal
    /// hashes may sit in both subtrees, so those are searched too (at most `max` results).
    pub(crate) async fn search<S: ReadAt + ?Sized>(
        &self,
        src: &S,
        hash: u64,
        max: usize,
    ) -> Result<Vec<GoodbyeItem>, PxarError> {
        let mut found = Vec::new();
        let mut stack = vec![0u64];
        while let Some(i) = stack.pop() {
            if i >= self.count {
                continue;
            }
            let item = self.records(src, i, 1).await?[0];
            if hash < item.hash {
                stack.push(2 * i + 1);
            } else if hash > item.hash {
                stack.push(2 * i + 2);
            } else {
                found.push(item);
                if found.len() > max {
                    return Err(PxarError::limit(
                        "pxar goodbye table",
                        format!(
                            "more than {max} names share one hash in the table at {}",
                            self.start
                        ),
                    ));
                }
                stack.push(2 * i + 1);
                stack.push(2 * i + 2);
            }
        }
        Ok(found)
    }
}
