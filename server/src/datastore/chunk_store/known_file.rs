//! The base of the known-chunk set on local disk (docs/design.md#known-chunk-set): a byte copy of
//! `.chunks/.index` (magic + sorted 32-byte digests) followed by a trailer naming the object it
//! copies, memory-mapped. The set then costs page cache the kernel can drop instead of heap, and
//! a restart maps the file again instead of downloading the index.
//!
//! The file is never trusted: opening it re-reads it whole, checks the magic, the order of the
//! digests and the SHA-256 recorded in the trailer, and the caller compares the trailer's
//! [`Origin`] with the object in the store. Files are written under a temporary name and
//! renamed into place, never changed in place, so a mapping stays valid while it is used.

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use memmap2::Mmap;
use tempfile::TempPath;

use crate::backend::Backend;
use crate::format::{Digest, Sha256};

use super::super::DatastoreError;

/// Magic of `.chunks/.index` (the persisted object and the start of the local file).
pub const INDEX_MAGIC: &[u8; 8] = b"PBSCKIX1";
/// Magic of the local file's trailer.
const TRAILER_MAGIC: &[u8; 8] = b"PBSCKLC1";
/// Trailer: magic, SHA-256 of the object bytes, object size, modified seconds and nanoseconds.
const TRAILER_LEN: usize = 8 + 32 + 8 + 8 + 4 + 4;
/// Lookups first pick the run of digests sharing the first two bytes (256 KiB per file), so a
/// lookup touches one or two pages of the mapping instead of a binary search's twenty.
const FANOUT: usize = 1 << 16;
const IO_BUF: usize = 1 << 20;

/// Runs file work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DatastoreError> + Send + 'static,
) -> Result<T, DatastoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DatastoreError::Internal(format!("known-chunk file task failed: {e}")))?
}

/// Which `.chunks/.index` object a local file copies: its size and modified time as the store
/// reports them. Every rewrite of the object changes the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub size: u64,
    pub modified: SystemTime,
}

/// A sealed, mapped digest file.
pub struct DigestFile {
    map: Arc<Mmap>,
    count: usize,
    /// `fanout[p]..fanout[p + 1]`: positions of the digests whose first two bytes are `p`.
    fanout: Box<[u32]>,
    origin: Origin,
    path: PathBuf,
    /// Set when the file lives in the temp dir: removed when the set lets go of it.
    _temp: Option<TempPath>,
}

impl fmt::Debug for DigestFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestFile")
            .field("path", &self.path)
            .field("count", &self.count)
            .finish()
    }
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> DatastoreError {
    DatastoreError::Internal(format!(
        "{what} the known-chunk file '{}' failed: {e}",
        path.display()
    ))
}

fn invalid(path: &Path, reason: &str) -> DatastoreError {
    DatastoreError::Internal(format!(
        "'{}' is not a valid known-chunk file: {reason}",
        path.display()
    ))
}

/// Counts of digests per two-byte prefix, turned into start positions by [`finish_fanout`].
fn new_fanout() -> Vec<u32> {
    vec![0u32; FANOUT + 1]
}

fn finish_fanout(mut counts: Vec<u32>) -> Box<[u32]> {
    let mut total = 0u32;
    for slot in counts.iter_mut() {
        let n = *slot;
        *slot = total;
        total += n;
    }
    // `counts[FANOUT]` was 0, so the last slot now holds the total.
    counts.into_boxed_slice()
}

fn prefix(d: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([d[0], d[1]]))
}

fn mtime_parts(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

/// Keeps the mapping alive for as long as an upload holds its bytes.
struct SharedMap(Arc<Mmap>);

impl AsRef<[u8]> for SharedMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Streams sorted digests into a new file in `dir`.
pub struct DigestFileWriter {
    out: BufWriter<File>,
    temp: TempPath,
    hash: Sha256,
    count: usize,
    last: Option<Digest>,
    fanout: Vec<u32>,
}

impl DigestFileWriter {
    pub fn new(dir: &Path) -> Result<Self, DatastoreError> {
        let (file, temp) = tempfile::Builder::new()
            .prefix(".known-")
            .tempfile_in(dir)
            .map_err(|e| io_error(dir, "creating a temp file for", e))?
            .into_parts();
        let mut w = DigestFileWriter {
            out: BufWriter::with_capacity(IO_BUF, file),
            temp,
            hash: Sha256::new(),
            count: 0,
            last: None,
            fanout: new_fanout(),
        };
        w.write(INDEX_MAGIC)?;
        Ok(w)
    }

    fn write(&mut self, data: &[u8]) -> Result<(), DatastoreError> {
        self.hash.update(data);
        self.out
            .write_all(data)
            .map_err(|e| io_error(&self.temp, "writing", e))
    }

    /// Append the next digest; it must sort after the previous one.
    pub fn push(&mut self, d: &Digest) -> Result<(), DatastoreError> {
        if self.last.is_some_and(|last| last >= *d) {
            return Err(invalid(&self.temp, "digests out of order or repeated"));
        }
        if self.count >= u32::MAX as usize {
            return Err(invalid(&self.temp, "too many digests"));
        }
        self.write(d)?;
        self.fanout[prefix(d)] += 1;
        self.count += 1;
        self.last = Some(*d);
        Ok(())
    }

    /// The digests as written, mapped, ready for upload and then [`Unsealed::seal`].
    pub fn finish(self) -> Result<Unsealed, DatastoreError> {
        let path = self.temp.to_path_buf();
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_error(&path, "writing", e.into_error()))?;
        // SAFETY: the file is ours (a fresh temp file) and is only ever appended to (the
        // trailer, past the mapped length) and renamed, never changed in place.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io_error(&path, "mapping", e))?;
        Ok(Unsealed {
            file,
            temp: self.temp,
            map: Arc::new(map),
            count: self.count,
            fanout: finish_fanout(self.fanout),
            sha256: self.hash.finish(),
        })
    }

    /// Copy a `.chunks/.index` object (whole in `data`) into a new file.
    pub fn from_index(dir: &Path, key: &str, data: &[u8]) -> Result<Unsealed, DatastoreError> {
        let body = data.strip_prefix(INDEX_MAGIC.as_slice()).ok_or_else(|| {
            DatastoreError::Internal(format!("'{key}' is not a known-chunk index"))
        })?;
        let mut w = DigestFileWriter::new(dir)?;
        w.push_index_part(key, body)?;
        w.finish()
    }

    /// Append a piece of a stored index's digests (the bytes after its magic, a whole number
    /// of digests), checking that they stay sorted: a download in pieces never holds more
    /// than one piece.
    pub fn push_index_part(&mut self, key: &str, part: &[u8]) -> Result<(), DatastoreError> {
        if part.len() % 32 != 0 {
            return Err(DatastoreError::Internal(format!(
                "'{key}' is not a known-chunk index (a piece of {} bytes)",
                part.len()
            )));
        }
        for c in part.chunks_exact(32) {
            let mut d = [0u8; 32];
            d.copy_from_slice(c);
            self.push(&d)
                .map_err(|_| DatastoreError::Internal(format!("'{key}' is not sorted")))?;
        }
        Ok(())
    }

    /// Copy the stored index `key` (`size` bytes, as its HEAD said) into a new file in `dir`,
    /// `piece` bytes of digests per ranged read: memory holds one piece, whatever the number
    /// of chunks (the whole object is 320 MB at ten million).
    pub async fn download(
        backend: &dyn Backend,
        key: &str,
        size: u64,
        piece: u64,
        dir: &Path,
    ) -> Result<Unsealed, DatastoreError> {
        let magic = INDEX_MAGIC.len() as u64;
        let not_an_index =
            || DatastoreError::Internal(format!("'{key}' is not a known-chunk index"));
        if size < magic || (size - magic) % 32 != 0 {
            return Err(not_an_index());
        }
        let dir = dir.to_path_buf();
        let mut writer = blocking(move || DigestFileWriter::new(&dir)).await?;
        let piece = (piece / 32).max(1) * 32;
        let mut offset = 0;
        while offset < size {
            // The first range also carries the magic.
            let head = if offset == 0 { magic } else { 0 };
            let want = (head + piece).min(size - offset);
            let part = backend.get_range(key, offset, want).await?;
            if part.len() as u64 != want {
                return Err(DatastoreError::Internal(format!(
                    "'{key}' ended at {} bytes while {size} were expected",
                    offset + part.len() as u64
                )));
            }
            if part[..head as usize] != INDEX_MAGIC[..head as usize] {
                return Err(not_an_index());
            }
            offset += want;
            let digests = part.slice(head as usize..);
            let name = key.to_string();
            writer = blocking(move || {
                writer.push_index_part(&name, &digests)?;
                Ok(writer)
            })
            .await?;
        }
        blocking(move || writer.finish()).await
    }

    /// Streaming merge: `base` plus `added` minus `removed` (both sorted) into a new file.
    pub fn merge(
        dir: &Path,
        base: Option<&DigestFile>,
        added: &[Digest],
        removed: &[Digest],
    ) -> Result<Unsealed, DatastoreError> {
        let mut w = DigestFileWriter::new(dir)?;
        let mut from_base = base.into_iter().flat_map(|b| b.iter()).peekable();
        let mut from_added = added.iter().copied().peekable();
        let mut gone = removed.iter().peekable();
        loop {
            let next = match (from_base.peek().copied(), from_added.peek().copied()) {
                (None, None) => break,
                (Some(_), None) => from_base.next(),
                (None, Some(_)) => from_added.next(),
                (Some(b), Some(a)) => match b.cmp(&a) {
                    std::cmp::Ordering::Less => from_base.next(),
                    std::cmp::Ordering::Greater => from_added.next(),
                    std::cmp::Ordering::Equal => {
                        from_added.next();
                        from_base.next()
                    }
                },
            };
            let Some(d) = next else { break };
            while gone.next_if(|r| **r < d).is_some() {}
            if gone.peek().is_some_and(|r| **r == d) {
                continue;
            }
            w.push(&d)?;
        }
        w.finish()
    }
}

/// A written file whose object is not yet stored: its trailer comes once the store has
/// answered where the copy came from.
pub struct Unsealed {
    file: File,
    temp: TempPath,
    map: Arc<Mmap>,
    count: usize,
    fanout: Box<[u32]>,
    sha256: Digest,
}

impl Unsealed {
    /// The `.chunks/.index` object, backed by the mapping (no copy on the heap).
    pub fn object(&self) -> Bytes {
        Bytes::from_owner(SharedMap(self.map.clone()))
    }

    /// SHA-256 of [`Self::object`].
    pub fn sha256(&self) -> Digest {
        self.sha256
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Write the trailer naming `origin` and move the file to `dest`; without `dest` it stays
    /// in the temp dir and is removed when dropped.
    pub fn seal(
        mut self,
        origin: Origin,
        dest: Option<&Path>,
    ) -> Result<DigestFile, DatastoreError> {
        let path = self.temp.to_path_buf();
        let (secs, nanos) = mtime_parts(origin.modified);
        let mut trailer = Vec::with_capacity(TRAILER_LEN);
        trailer.extend_from_slice(TRAILER_MAGIC);
        trailer.extend_from_slice(&self.sha256);
        trailer.extend_from_slice(&origin.size.to_le_bytes());
        trailer.extend_from_slice(&secs.to_le_bytes());
        trailer.extend_from_slice(&nanos.to_le_bytes());
        trailer.extend_from_slice(&[0u8; 4]);
        self.file
            .seek(SeekFrom::End(0))
            .and_then(|_| self.file.write_all(&trailer))
            .and_then(|_| self.file.sync_all())
            .map_err(|e| io_error(&path, "sealing", e))?;
        let (path, temp) = match dest {
            Some(dest) => {
                self.temp
                    .persist(dest)
                    .map_err(|e| io_error(dest, "renaming into place", e.error))?;
                (dest.to_path_buf(), None)
            }
            None => (path, Some(self.temp)),
        };
        Ok(DigestFile {
            map: self.map,
            count: self.count,
            fanout: self.fanout,
            origin,
            path,
            _temp: temp,
        })
    }
}

impl DigestFile {
    /// Open and check a file written by [`Unsealed::seal`]: `Ok(None)` when it does not exist,
    /// an error naming the defect when it is short, damaged or out of order.
    pub fn open(path: &Path) -> Result<Option<Self>, DatastoreError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path, "opening", e)),
        };
        let len = file
            .metadata()
            .map_err(|e| io_error(path, "reading", e))?
            .len();
        let body_len = len
            .checked_sub(TRAILER_LEN as u64)
            .filter(|b| *b >= INDEX_MAGIC.len() as u64 && (b - 8) % 32 == 0)
            .ok_or_else(|| invalid(path, &format!("{len} bytes")))?;
        let count = usize::try_from((body_len - 8) / 32)
            .ok()
            .filter(|c| *c <= u32::MAX as usize)
            .ok_or_else(|| invalid(path, "too many digests"))?;
        // Read (not map) for the check, so that it costs page cache but no resident memory.
        let mut hash = Sha256::new();
        let mut fanout = new_fanout();
        let mut buf = vec![0u8; IO_BUF];
        let mut head = [0u8; 8];
        file.read_exact(&mut head)
            .map_err(|e| io_error(path, "reading", e))?;
        if &head != INDEX_MAGIC {
            return Err(invalid(path, "wrong magic"));
        }
        hash.update(&head);
        let mut last: Option<Digest> = None;
        let mut left = body_len - 8;
        while left > 0 {
            let n = left.min(IO_BUF as u64) as usize;
            file.read_exact(&mut buf[..n])
                .map_err(|e| io_error(path, "reading", e))?;
            hash.update(&buf[..n]);
            for c in buf[..n].chunks_exact(32) {
                if last.is_some_and(|l| l.as_slice() >= c) {
                    return Err(invalid(path, "digests out of order"));
                }
                let mut d = [0u8; 32];
                d.copy_from_slice(c);
                fanout[prefix(&d)] += 1;
                last = Some(d);
            }
            left -= n as u64;
        }
        let mut trailer = [0u8; TRAILER_LEN];
        file.read_exact(&mut trailer)
            .map_err(|e| io_error(path, "reading", e))?;
        if &trailer[..8] != TRAILER_MAGIC {
            return Err(invalid(path, "wrong trailer"));
        }
        if trailer[8..40] != hash.finish() {
            return Err(invalid(path, "checksum mismatch"));
        }
        let field =
            |at: usize| u64::from_le_bytes(trailer[at..at + 8].try_into().unwrap_or([0; 8]));
        let size = field(40);
        let secs = field(48);
        let nanos = u32::from_le_bytes(trailer[56..60].try_into().unwrap_or([0; 4]));
        if size != body_len {
            return Err(invalid(path, "size in the trailer does not match"));
        }
        // SAFETY: files are replaced by rename, never changed in place (module documentation).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io_error(path, "mapping", e))?;
        Ok(Some(DigestFile {
            map: Arc::new(map),
            count,
            fanout: finish_fanout(fanout),
            origin: Origin {
                size,
                modified: UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999)),
            },
            path: path.to_path_buf(),
            _temp: None,
        }))
    }

    fn at(&self, i: usize) -> &[u8] {
        let start = INDEX_MAGIC.len() + i * 32;
        &self.map[start..start + 32]
    }

    /// Binary search within the digests sharing `d`'s first two bytes.
    pub fn contains(&self, d: &Digest) -> bool {
        let p = prefix(d);
        let (mut lo, mut hi) = (self.fanout[p] as usize, self.fanout[p + 1] as usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.at(mid).cmp(d.as_slice()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// The digests in order.
    pub fn iter(&self) -> impl Iterator<Item = Digest> + '_ {
        (0..self.count).map(|i| {
            let mut d = [0u8; 32];
            d.copy_from_slice(self.at(i));
            d
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `.chunks/.index` object this file copies.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u32) -> Digest {
        let mut d = [0u8; 32];
        // spread over the two-byte prefixes, and several per prefix
        d[..4].copy_from_slice(&(n.wrapping_mul(0x9E37_79B9) >> 1).to_be_bytes());
        d[31] = n as u8;
        d
    }

    fn sorted(ns: impl Iterator<Item = u32>) -> Vec<Digest> {
        let mut v: Vec<Digest> = ns.map(d).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The origin of a copy of `u` (its size must match).
    fn origin(u: &Unsealed, modified: SystemTime) -> Origin {
        Origin {
            size: u.object().len() as u64,
            modified,
        }
    }

    #[test]
    fn merge_adds_removes_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("s.known");
        let base = DigestFileWriter::merge(dir.path(), None, &sorted(0..1000), &[]).unwrap();
        let modified = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        let first = origin(&base, modified);
        let base = base.seal(first, None).unwrap();
        assert_eq!(base.len(), 1000);
        let merged = DigestFileWriter::merge(
            dir.path(),
            Some(&base),
            &sorted(900..1200),
            &sorted((0..100).chain(1150..1160)),
        )
        .unwrap();
        let object = merged.object();
        assert_eq!(&object[..8], INDEX_MAGIC);
        assert_eq!(crate::format::sha256(&object), merged.sha256());
        let origin = origin(&merged, modified);
        let merged = merged.seal(origin, Some(&dest)).unwrap();
        assert_eq!(merged.len(), 1200 - 100 - 10);
        let reopened = DigestFile::open(&dest).unwrap().unwrap();
        assert_eq!(reopened.origin(), origin);
        for n in 0..1300 {
            let expect = (100..1200).contains(&n) && !(1150..1160).contains(&n);
            assert_eq!(merged.contains(&d(n)), expect, "{n}");
            assert_eq!(reopened.contains(&d(n)), expect, "{n}");
        }
        assert!(reopened
            .iter()
            .zip(reopened.iter().skip(1))
            .all(|(a, b)| a < b));
        // a file left in the temp dir goes away with the set
        let temp = base.path().to_path_buf();
        drop(base);
        assert!(!temp.exists());
    }

    #[test]
    fn short_damaged_or_unsorted_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("s.known");
        let w = DigestFileWriter::merge(dir.path(), None, &sorted(0..100), &[]).unwrap();
        let first = origin(&w, UNIX_EPOCH);
        w.seal(first, Some(&dest)).unwrap();
        let good = std::fs::read(&dest).unwrap();
        assert!(DigestFile::open(&dir.path().join("missing"))
            .unwrap()
            .is_none());

        std::fs::write(&dest, &good[..good.len() - 1]).unwrap();
        assert!(DigestFile::open(&dest).is_err());
        std::fs::write(&dest, &good[..good.len() - 32]).unwrap();
        assert!(DigestFile::open(&dest).is_err());
        let mut flipped = good.clone();
        flipped[8 + 32 * 50 + 7] ^= 1;
        std::fs::write(&dest, &flipped).unwrap();
        assert!(DigestFile::open(&dest).is_err());
        std::fs::write(&dest, &good).unwrap();
        assert!(DigestFile::open(&dest).unwrap().is_some());

        let mut index = INDEX_MAGIC.to_vec();
        index.extend_from_slice(&d(1).max(d(2)));
        index.extend_from_slice(&d(1).min(d(2)));
        assert!(DigestFileWriter::from_index(dir.path(), "k", &index).is_err());
        assert!(DigestFileWriter::from_index(dir.path(), "k", b"PBSCKIX1abc").is_err());
        let ok = DigestFileWriter::from_index(dir.path(), "k", &good[..good.len() - TRAILER_LEN]);
        assert_eq!(ok.unwrap().len(), 100);
    }
}
