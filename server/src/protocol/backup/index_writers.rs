//! In-memory index writers of a backup session (docs/protocol.md#session-state, #backup-endpoints,
//! docs/formats.md#index-checksum).
//!
//! A writer collects the entries the client appends with `PUT {fixed,dynamic}_index` and, at
//! close, checks the client's chunk count, size and csum against its own state before it
//! produces the final `.fidx`/`.didx` bytes. The bytes are built in memory because the
//! datastore stores whole immutable objects (docs/design.md#object-storage-backends). Pure code: no
//! I/O.
//!
//! Memory: a writer holds one entry per distinct appended position (plus, for `reuse-csum`,
//! the previous index's entries); the session charges them to its budget (`budget.rs`).

use std::collections::BTreeMap;

use crate::format::dynamic_index::{DynamicEntry, DynamicIndex};
use crate::format::fixed_index::{FixedIndex, FIXED_CHUNK_SIZE};
use crate::format::Digest;

use crate::protocol::error::ProtocolError;

/// Largest number of entries one index writer accepts. Bounds session memory against a client
/// that appends tiny known chunks forever; 2^26 fixed entries of 4 MiB are a 256 TiB image.
pub const MAX_INDEX_ENTRIES: u64 = 1 << 26;

/// Random uuid and creation time written into an index header (informational only).
#[derive(Clone, Copy, Debug)]
pub struct IndexHeaderInfo {
    pub uuid: [u8; 16],
    pub ctime: i64,
}

impl IndexHeaderInfo {
    /// A fresh random uuid and the current time.
    pub fn now() -> Self {
        Self {
            uuid: rand::random(),
            ctime: chrono::Utc::now().timestamp(),
        }
    }
}

fn invalid(msg: String) -> ProtocolError {
    ProtocolError::Invalid(msg)
}

/// Writer of a `.didx`: entries must arrive in stream order.
#[derive(Debug)]
pub struct DynamicWriter {
    name: String,
    header: IndexHeaderInfo,
    entries: Vec<DynamicEntry>,
    /// Running end offset of the stream (sum of appended chunk sizes).
    offset: u64,
    chunk_count: u64,
}

impl DynamicWriter {
    pub fn new(name: String, header: IndexHeaderInfo) -> Self {
        Self {
            name,
            header,
            entries: Vec::new(),
            offset: 0,
            chunk_count: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Entries this writer holds in memory.
    pub fn entries(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Appends one known chunk; `offset` is the chunk's start and must equal the running offset.
    pub fn append(&mut self, digest: Digest, offset: u64, size: u64) -> Result<(), ProtocolError> {
        if offset != self.offset {
            return Err(invalid(format!(
                "dynamic writer '{}' append chunk failed - got strange chunk offset ({} != {})",
                self.name, offset, self.offset
            )));
        }
        if self.entries.len() as u64 >= MAX_INDEX_ENTRIES {
            return Err(invalid(format!(
                "dynamic writer '{}' append chunk failed - more than {MAX_INDEX_ENTRIES} entries",
                self.name
            )));
        }
        let end = offset.checked_add(size).ok_or_else(|| {
            invalid(format!(
                "dynamic writer '{}' append chunk failed - offset overflow",
                self.name
            ))
        })?;
        self.entries.push(DynamicEntry { end, digest });
        self.offset = end;
        self.chunk_count += 1;
        Ok(())
    }

    /// Checks the client's totals and returns the finished index file bytes.
    pub fn close(
        &self,
        chunk_count: u64,
        size: u64,
        csum: &Digest,
    ) -> Result<Vec<u8>, ProtocolError> {
        if self.chunk_count != chunk_count {
            return Err(invalid(format!(
                "dynamic writer '{}' close failed - unexpected chunk count ({} != {})",
                self.name, self.chunk_count, chunk_count
            )));
        }
        if self.offset != size {
            return Err(invalid(format!(
                "dynamic writer '{}' close failed - unexpected file size ({} != {})",
                self.name, self.offset, size
            )));
        }
        let index = DynamicIndex {
            uuid: self.header.uuid,
            ctime: self.header.ctime,
            entries: self.entries.clone(),
        };
        if &index.csum() != csum {
            return Err(invalid(format!(
                "dynamic writer '{}' close failed - got unexpected checksum",
                self.name
            )));
        }
        Ok(index.to_bytes())
    }
}

/// Writer of a `.fidx`: fixed 4 MiB chunks, appended in any order by offset.
///
/// Entries are kept sparsely (by chunk index) until close, so memory follows the number of
/// entries appended, never the offsets or the declared size a client sends. An incremental
/// writer starts from the previous index's digests (a list exactly as long as that index).
#[derive(Debug)]
pub struct FixedWriter {
    name: String,
    header: IndexHeaderInfo,
    chunk_size: u64,
    /// Image size: declared at creation, or fixed by the short end chunk when it was not.
    size: Option<u64>,
    /// Incremental writers: the previous index's digests, overwritten in place by appends.
    base: Vec<Digest>,
    /// Non-incremental writers: appended entries by chunk index.
    appended: BTreeMap<u64, Digest>,
    /// Created with `reuse-csum`: digests were copied from the previous index.
    incremental: bool,
    chunk_count: u64,
    small_chunk_count: u64,
}

impl FixedWriter {
    /// A new writer; `size` is the declared image size (optional since PBS 4.1.5).
    pub fn new(
        name: String,
        size: Option<u64>,
        header: IndexHeaderInfo,
    ) -> Result<Self, ProtocolError> {
        if let Some(size) = size {
            check_image_size(&name, size)?;
        }
        Ok(Self {
            name,
            header,
            chunk_size: FIXED_CHUNK_SIZE,
            size,
            base: Vec::new(),
            appended: BTreeMap::new(),
            incremental: false,
            chunk_count: 0,
            small_chunk_count: 0,
        })
    }

    /// An incremental writer (`reuse-csum`) starting from the previous index's digests; the new
    /// image must have the same number of chunks.
    pub fn incremental(
        name: String,
        size: u64,
        previous: Vec<Digest>,
        header: IndexHeaderInfo,
    ) -> Result<Self, ProtocolError> {
        check_image_size(&name, size)?;
        let length = size.div_ceil(FIXED_CHUNK_SIZE);
        if length != previous.len() as u64 {
            return Err(invalid(format!(
                "cannot reuse index - index length differs ({} != {})",
                length,
                previous.len()
            )));
        }
        Ok(Self {
            name,
            header,
            chunk_size: FIXED_CHUNK_SIZE,
            size: Some(size),
            base: previous,
            appended: BTreeMap::new(),
            incremental: true,
            chunk_count: 0,
            small_chunk_count: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Entries this writer holds in memory (copied from the previous index or appended).
    pub fn entries(&self) -> u64 {
        (self.base.len() + self.appended.len()) as u64
    }

    /// Upload-time check of a chunk for this writer: no chunk larger than the chunk size and at
    /// most one shorter (end) chunk.
    pub fn register_upload(&mut self, size: u64) -> Result<(), ProtocolError> {
        if size > self.chunk_size {
            return Err(invalid(format!(
                "fixed writer '{}' - got large chunk ({} > {})",
                self.name, size, self.chunk_size
            )));
        }
        if size < self.chunk_size {
            if self.small_chunk_count >= 1 {
                return Err(invalid(format!(
                    "fixed writer '{}' - detected multiple end chunks (chunk size too small)",
                    self.name
                )));
            }
            self.small_chunk_count += 1;
        }
        Ok(())
    }

    /// One past the highest chunk index appended so far (non-incremental writers).
    fn appended_end(&self) -> u64 {
        self.appended.last_key_value().map_or(0, |(idx, _)| idx + 1)
    }

    /// Places one known chunk at `offset` (a multiple of the chunk size); entries may arrive in
    /// any order and overwrite earlier ones. Returns whether a new entry was stored (an
    /// overwrite stores none).
    pub fn append(
        &mut self,
        digest: Digest,
        offset: u64,
        size: u64,
    ) -> Result<bool, ProtocolError> {
        let cs = self.chunk_size;
        if offset % cs != 0 {
            return Err(invalid(format!(
                "fixed writer '{}' - got unaligned chunk offset {} (chunk size {})",
                self.name, offset, cs
            )));
        }
        let end = offset.checked_add(size).ok_or_else(|| {
            invalid(format!(
                "fixed writer '{}' - chunk offset overflow",
                self.name
            ))
        })?;
        let wrong_size = || {
            invalid(format!(
                "fixed writer '{}' - got chunk with wrong size {} at offset {} (chunk size {})",
                self.name, size, offset, cs
            ))
        };
        if size == 0 || size > cs {
            return Err(wrong_size());
        }
        let idx = offset / cs;
        match self.size {
            Some(total) => {
                if end > total {
                    return Err(invalid(format!(
                        "fixed writer '{}' - chunk at offset {} with size {} exceeds image size {}",
                        self.name, offset, size, total
                    )));
                }
                if size != cs && end != total {
                    return Err(wrong_size());
                }
            }
            None => {
                if size < cs {
                    // The short end chunk fixes the image size of an undeclared-size writer.
                    if self.appended_end() > idx + 1 {
                        return Err(invalid(format!(
                            "fixed writer '{}' - end chunk at offset {} precedes appended chunks",
                            self.name, offset
                        )));
                    }
                    check_image_size(&self.name, end)?;
                    self.size = Some(end);
                } else {
                    check_image_size(&self.name, end)?;
                }
            }
        }
        let stored_new = if self.incremental {
            // The image size equals the previous index's, so `idx` is inside it.
            self.base[idx as usize] = digest;
            false
        } else {
            self.appended.insert(idx, digest).is_none()
        };
        self.chunk_count += 1;
        Ok(stored_new)
    }

    /// Checks the client's totals and returns the finished index file bytes. Incremental
    /// writers do not check the size (QEMU sends the bytes it wrote) and count only appended
    /// (changed) chunks.
    pub fn close(
        &self,
        chunk_count: u64,
        size: u64,
        csum: &Digest,
    ) -> Result<Vec<u8>, ProtocolError> {
        if self.chunk_count != chunk_count {
            return Err(invalid(format!(
                "fixed writer '{}' close failed - received wrong number of chunk ({} != {})",
                self.name, self.chunk_count, chunk_count
            )));
        }
        let cs = self.chunk_size;
        let final_size = match self.size {
            Some(size) => size,
            None => self.appended_end().saturating_mul(cs),
        };
        let length = final_size.div_ceil(cs);
        if !self.incremental {
            if chunk_count != length {
                return Err(invalid(format!(
                    "fixed writer '{}' close failed - unexpected chunk count ({} != {})",
                    self.name, length, chunk_count
                )));
            }
            if size != final_size {
                return Err(invalid(format!(
                    "fixed writer '{}' close failed - unexpected file size ({} != {})",
                    self.name, final_size, size
                )));
            }
        }
        if final_size == 0 {
            return Err(invalid(format!(
                "fixed writer '{}' close failed - index is empty",
                self.name
            )));
        }
        let digests = match self.incremental {
            true => self.base.clone(),
            false => {
                // Keys are distinct and ascending: the first key that differs from its
                // position is the first missing entry. Nothing is allocated before this check
                // passed, so the list below is as long as what was appended.
                let missing = self
                    .appended
                    .keys()
                    .zip(0u64..)
                    .find(|(key, pos)| *key != pos)
                    .map(|(_, pos)| pos)
                    .or_else(|| {
                        let len = self.appended.len() as u64;
                        (len < length).then_some(len)
                    });
                if let Some(i) = missing {
                    return Err(invalid(format!(
                        "fixed writer '{}' close failed - missing chunk at index {}",
                        self.name, i
                    )));
                }
                self.appended.values().copied().collect()
            }
        };
        let index = FixedIndex {
            uuid: self.header.uuid,
            ctime: self.header.ctime,
            size: final_size,
            chunk_size: cs,
            digests,
        };
        if &index.csum() != csum {
            return Err(invalid(format!(
                "fixed writer '{}' close failed - got unexpected checksum",
                self.name
            )));
        }
        Ok(index.to_bytes())
    }
}

fn check_image_size(name: &str, size: u64) -> Result<(), ProtocolError> {
    if size.div_ceil(FIXED_CHUNK_SIZE) > MAX_INDEX_ENTRIES {
        return Err(invalid(format!(
            "fixed writer '{name}' - image size {size} exceeds the supported maximum of {} bytes",
            MAX_INDEX_ENTRIES * FIXED_CHUNK_SIZE
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::sha256;

    const CS: u64 = FIXED_CHUNK_SIZE;

    fn hdr() -> IndexHeaderInfo {
        IndexHeaderInfo {
            uuid: [7; 16],
            ctime: 1_700_000_000,
        }
    }

    fn d(n: u8) -> Digest {
        sha256(&[n])
    }

    fn fixed_csum(ds: &[Digest]) -> Digest {
        let mut all = Vec::new();
        for x in ds {
            all.extend_from_slice(x);
        }
        sha256(&all)
    }

    #[test]
    fn dynamic_offsets_must_be_contiguous() {
        let mut w = DynamicWriter::new("a.didx".into(), hdr());
        w.append(d(1), 0, 10).unwrap();
        let err = w.append(d(2), 5, 10).unwrap_err().to_string();
        assert!(err.contains("got strange chunk offset (5 != 10)"), "{err}");
        w.append(d(2), 10, 7).unwrap();
        let mut expect = Vec::new();
        expect.extend_from_slice(&10u64.to_le_bytes());
        expect.extend_from_slice(&d(1));
        expect.extend_from_slice(&17u64.to_le_bytes());
        expect.extend_from_slice(&d(2));
        let csum = sha256(&expect);
        assert!(w
            .close(3, 17, &csum)
            .unwrap_err()
            .to_string()
            .contains("unexpected chunk count"));
        assert!(w
            .close(2, 16, &csum)
            .unwrap_err()
            .to_string()
            .contains("unexpected file size"));
        assert!(w
            .close(2, 17, &d(9))
            .unwrap_err()
            .to_string()
            .contains("got unexpected checksum"));
        let bytes = w.close(2, 17, &csum).unwrap();
        let parsed = DynamicIndex::parse(&bytes).unwrap();
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.csum(), csum);
        assert_eq!(parsed.uuid, [7; 16]);
    }

    #[test]
    fn fixed_upload_allows_one_short_chunk() {
        let mut w = FixedWriter::new("a.fidx".into(), Some(2 * CS), hdr()).unwrap();
        w.register_upload(CS).unwrap();
        assert!(w
            .register_upload(CS + 1)
            .unwrap_err()
            .to_string()
            .contains("got large chunk"));
        w.register_upload(5).unwrap();
        let err = w.register_upload(6).unwrap_err().to_string();
        assert!(err.contains("detected multiple end chunks"), "{err}");
    }

    #[test]
    fn fixed_append_rules_with_declared_size() {
        let size = 2 * CS + 5;
        let mut w = FixedWriter::new("a.fidx".into(), Some(size), hdr()).unwrap();
        assert!(w
            .append(d(1), 1, CS)
            .unwrap_err()
            .to_string()
            .contains("unaligned"));
        assert!(w
            .append(d(1), 0, 5)
            .unwrap_err()
            .to_string()
            .contains("wrong size"));
        assert!(w
            .append(d(1), 2 * CS, CS)
            .unwrap_err()
            .to_string()
            .contains("exceeds image size"));
        // out of order is fine
        w.append(d(3), 2 * CS, 5).unwrap();
        w.append(d(1), 0, CS).unwrap();
        let ds = [d(1), d(2), d(3)];
        // missing middle entry: count check fires first
        assert!(w
            .close(2, size, &fixed_csum(&ds))
            .unwrap_err()
            .to_string()
            .contains("unexpected chunk count"));
        w.append(d(2), CS, CS).unwrap();
        assert!(w
            .close(2, size, &fixed_csum(&ds))
            .unwrap_err()
            .to_string()
            .contains("wrong number of chunk"));
        assert!(w
            .close(3, size - 1, &fixed_csum(&ds))
            .unwrap_err()
            .to_string()
            .contains("unexpected file size"));
        assert!(w
            .close(3, size, &d(0))
            .unwrap_err()
            .to_string()
            .contains("got unexpected checksum"));
        let bytes = w.close(3, size, &fixed_csum(&ds)).unwrap();
        let idx = FixedIndex::parse(&bytes).unwrap();
        assert_eq!(idx.size, size);
        assert_eq!(idx.chunk_size, CS);
        assert_eq!(idx.digests, ds.to_vec());
    }

    #[test]
    fn fixed_duplicate_offset_leaves_hole() {
        let mut w = FixedWriter::new("a.fidx".into(), Some(2 * CS), hdr()).unwrap();
        w.append(d(1), 0, CS).unwrap();
        w.append(d(1), 0, CS).unwrap();
        let err = w.close(2, 2 * CS, &d(0)).unwrap_err().to_string();
        assert!(err.contains("missing chunk at index 1"), "{err}");
    }

    #[test]
    fn fixed_without_size_grows_until_short_chunk() {
        let mut w = FixedWriter::new("p.img.fidx".into(), None, hdr()).unwrap();
        w.append(d(1), 0, CS).unwrap();
        w.append(d(2), CS, CS).unwrap();
        w.append(d(3), 2 * CS, 100).unwrap();
        assert!(w
            .append(d(4), 3 * CS, CS)
            .unwrap_err()
            .to_string()
            .contains("exceeds image size"));
        let ds = [d(1), d(2), d(3)];
        let bytes = w.close(3, 2 * CS + 100, &fixed_csum(&ds)).unwrap();
        assert_eq!(FixedIndex::parse(&bytes).unwrap().size, 2 * CS + 100);

        let mut w = FixedWriter::new("q.img.fidx".into(), None, hdr()).unwrap();
        w.append(d(1), 0, CS).unwrap();
        let bytes = w.close(1, CS, &fixed_csum(&[d(1)])).unwrap();
        assert_eq!(FixedIndex::parse(&bytes).unwrap().size, CS);

        let w = FixedWriter::new("e.img.fidx".into(), None, hdr()).unwrap();
        assert!(w
            .close(0, 0, &fixed_csum(&[]))
            .unwrap_err()
            .to_string()
            .contains("index is empty"));
    }

    #[test]
    fn fixed_incremental_counts_only_changes_and_ignores_size() {
        let old = vec![d(1), d(2), d(3)];
        assert!(
            FixedWriter::incremental("a.fidx".into(), 4 * CS, old.clone(), hdr())
                .unwrap_err()
                .to_string()
                .contains("index length differs")
        );
        let mut w = FixedWriter::incremental("a.fidx".into(), 3 * CS, old, hdr()).unwrap();
        w.append(d(9), CS, CS).unwrap();
        let ds = [d(1), d(9), d(3)];
        // QEMU sends the bytes it wrote as size
        let bytes = w.close(1, CS, &fixed_csum(&ds)).unwrap();
        assert_eq!(FixedIndex::parse(&bytes).unwrap().digests, ds.to_vec());
        assert!(w.close(3, 3 * CS, &fixed_csum(&ds)).is_err());
    }

    #[test]
    fn far_offsets_cost_one_entry_each() {
        // The hostile probe: one known chunk appended at the last possible position.
        let last = (MAX_INDEX_ENTRIES - 1) * CS;
        let mut w = FixedWriter::new("p.img.fidx".into(), None, hdr()).unwrap();
        assert!(w.append(d(1), last, CS).unwrap());
        assert_eq!(w.entries(), 1);
        assert!(w
            .append(d(1), last + CS, CS)
            .unwrap_err()
            .to_string()
            .contains("exceeds the supported maximum"));
        // Closing reports the first hole without building the index.
        let err = w.close(1, last + CS, &d(0)).unwrap_err().to_string();
        assert!(err.contains("unexpected chunk count"), "{err}");

        let mut w =
            FixedWriter::new("q.img.fidx".into(), Some(MAX_INDEX_ENTRIES * CS), hdr()).unwrap();
        assert!(w.append(d(1), last, CS).unwrap());
        assert!(
            !w.append(d(2), last, CS).unwrap(),
            "overwrite stores nothing new"
        );
        assert_eq!(w.entries(), 1);
    }

    #[test]
    fn sparse_close_names_the_first_hole() {
        let mut w = FixedWriter::new("a.fidx".into(), Some(3 * CS), hdr()).unwrap();
        w.append(d(1), 0, CS).unwrap();
        w.append(d(3), 2 * CS, CS).unwrap();
        w.append(d(3), 2 * CS, CS).unwrap();
        let err = w.close(3, 3 * CS, &d(0)).unwrap_err().to_string();
        assert!(err.contains("missing chunk at index 1"), "{err}");
        let mut w = FixedWriter::new("b.fidx".into(), Some(2 * CS), hdr()).unwrap();
        w.append(d(1), 0, CS).unwrap();
        w.append(d(1), 0, CS).unwrap();
        let err = w.close(2, 2 * CS, &d(0)).unwrap_err().to_string();
        assert!(err.contains("missing chunk at index 1"), "{err}");
    }

    #[test]
    fn incremental_writer_holds_the_previous_entries_only() {
        let old = vec![d(1), d(2)];
        let mut w = FixedWriter::incremental("a.fidx".into(), 2 * CS, old, hdr()).unwrap();
        assert_eq!(w.entries(), 2);
        assert!(!w.append(d(5), 0, CS).unwrap());
        assert!(!w.append(d(6), 0, CS).unwrap());
        assert_eq!(w.entries(), 2);
        let ds = [d(6), d(2)];
        let bytes = w.close(2, 2 * CS, &fixed_csum(&ds)).unwrap();
        assert_eq!(FixedIndex::parse(&bytes).unwrap().digests, ds.to_vec());
    }

    #[test]
    fn huge_declared_size_is_refused() {
        assert!(FixedWriter::new("a.fidx".into(), Some(u64::MAX), hdr()).is_err());
    }
}
