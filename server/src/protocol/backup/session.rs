//! The pure state machine of one backup session (protocol.md §4.2): writer ids, writers,
//! file counter, chunk upload statistics, the uploaded manifest and the Active → Finishing →
//! Finished phases. Handlers keep it behind a `std::sync::Mutex` and never hold that lock
//! across an `.await`; the known-chunk map lives in the datastore's backup lease.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::index_writers::{DynamicWriter, FixedWriter, IndexHeaderInfo};
use crate::format::Digest;
use crate::protocol::error::ProtocolError;

/// Writer ids are limited to 1..=256 by every endpoint's schema (shared by both kinds).
pub const MAX_WID: u64 = 256;

/// Name of the manifest blob, which is kept in memory until `finish`.
pub const MANIFEST_BLOB_NAME: &str = "index.json.blob";

/// Which of the two index kinds an endpoint addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterKind {
    Fixed,
    Dynamic,
}

impl WriterKind {
    pub fn label(self) -> &'static str {
        match self {
            WriterKind::Fixed => "fixed",
            WriterKind::Dynamic => "dynamic",
        }
    }
}

/// Chunk upload statistics summed over the session (manifest `chunk_upload_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadStats {
    pub count: u64,
    pub size: u64,
    pub compressed_size: u64,
    pub duplicates: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Active,
    Finishing,
    Finished,
}

#[derive(Debug)]
enum Writer {
    Fixed(FixedWriter),
    Dynamic(DynamicWriter),
    /// Closed writers stay known so later calls get a clear error (PBS 4.x behaviour).
    Closed(WriterKind),
}

/// What `finish` needs once the state checks passed.
#[derive(Debug)]
pub struct FinishInput {
    pub manifest: Option<Bytes>,
    pub stats: UploadStats,
}

/// Session state without any I/O.
#[derive(Debug)]
pub struct SessionState {
    phase: Phase,
    last_wid: u64,
    writers: BTreeMap<u64, Writer>,
    file_counter: u64,
    stats: UploadStats,
    manifest: Option<Bytes>,
}

impl Default for SessionState {
    fn default() -> Self {
        Self::new()
    }
}

fn invalid(msg: String) -> ProtocolError {
    ProtocolError::Invalid(msg)
}

impl SessionState {
    pub fn new() -> Self {
        Self {
            phase: Phase::Active,
            last_wid: 0,
            writers: BTreeMap::new(),
            file_counter: 0,
            stats: UploadStats::default(),
            manifest: None,
        }
    }

    /// Every mutating call fails once `finish` started.
    pub fn ensure_active(&self) -> Result<(), ProtocolError> {
        match self.phase {
            Phase::Active => Ok(()),
            _ => Err(invalid("backup already marked as finished.".into())),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Number of files (closed indexes and uploaded blobs) so far.
    pub fn file_counter(&self) -> u64 {
        self.file_counter
    }

    pub fn stats(&self) -> UploadStats {
        self.stats
    }

    fn next_wid(&mut self) -> Result<u64, ProtocolError> {
        if self.last_wid >= MAX_WID {
            return Err(invalid(format!(
                "too many index writers in this session (limit {MAX_WID})"
            )));
        }
        self.last_wid += 1;
        Ok(self.last_wid)
    }

    /// Registers a new dynamic writer and returns its wid.
    pub fn create_dynamic(&mut self, name: String) -> Result<u64, ProtocolError> {
        self.ensure_active()?;
        let wid = self.next_wid()?;
        let writer = DynamicWriter::new(name, IndexHeaderInfo::now());
        self.writers.insert(wid, Writer::Dynamic(writer));
        Ok(wid)
    }

    /// Registers a new fixed writer (built by the caller) and returns its wid.
    pub fn create_fixed(&mut self, writer: FixedWriter) -> Result<u64, ProtocolError> {
        self.ensure_active()?;
        let wid = self.next_wid()?;
        self.writers.insert(wid, Writer::Fixed(writer));
        Ok(wid)
    }

    fn not_registered(kind: WriterKind, wid: u64) -> ProtocolError {
        invalid(format!("{} writer '{}' not registered", kind.label(), wid))
    }

    fn closed(kind: WriterKind, wid: u64) -> ProtocolError {
        invalid(format!(
            "{} writer '{}' is already closed",
            kind.label(),
            wid
        ))
    }

    /// Access to an open writer of `kind` with id `wid`.
    fn writer_mut(&mut self, kind: WriterKind, wid: u64) -> Result<&mut Writer, ProtocolError> {
        match self.writers.get_mut(&wid) {
            Some(Writer::Closed(k)) if *k == kind => Err(Self::closed(kind, wid)),
            Some(w @ Writer::Fixed(_)) if kind == WriterKind::Fixed => Ok(w),
            Some(w @ Writer::Dynamic(_)) if kind == WriterKind::Dynamic => Ok(w),
            _ => Err(Self::not_registered(kind, wid)),
        }
    }

    /// Records an uploaded (already stored) chunk for writer `wid`: the writer must exist and be
    /// open, fixed writers apply their chunk-size rules; then the statistics are updated. The
    /// caller marks the digest known only when this succeeded.
    pub fn register_chunk(
        &mut self,
        kind: WriterKind,
        wid: u64,
        size: u64,
        encoded_size: u64,
        duplicate: bool,
    ) -> Result<(), ProtocolError> {
        self.ensure_active()?;
        if let Writer::Fixed(w) = self.writer_mut(kind, wid)? {
            w.register_upload(size)?;
        }
        self.stats.count += 1;
        self.stats.size += size;
        self.stats.compressed_size += encoded_size;
        if duplicate {
            self.stats.duplicates += 1;
        }
        Ok(())
    }

    /// Appends `(digest, offset)` pairs in order; `known` gives the size of a known digest.
    /// Stops at the first failing entry (the client aborts the session then anyway).
    pub fn append(
        &mut self,
        kind: WriterKind,
        wid: u64,
        digests: &[Digest],
        offsets: &[u64],
        known: impl Fn(&Digest) -> Option<u64>,
    ) -> Result<(), ProtocolError> {
        self.ensure_active()?;
        if offsets.len() != digests.len() {
            return Err(invalid(format!(
                "offset list has wrong length ({} != {})",
                offsets.len(),
                digests.len()
            )));
        }
        let writer = self.writer_mut(kind, wid)?;
        for (digest, &offset) in digests.iter().zip(offsets) {
            let size = known(digest).ok_or_else(|| {
                invalid(format!(
                    "no such chunk {}",
                    crate::format::digest_to_hex(digest)
                ))
            })?;
            match writer {
                Writer::Fixed(w) => w.append(*digest, offset, size)?,
                Writer::Dynamic(w) => w.append(*digest, offset, size)?,
                Writer::Closed(_) => return Err(Self::closed(kind, wid)),
            }
        }
        Ok(())
    }

    /// Checks the close parameters and, when they match, marks the writer closed, counts the
    /// file and returns `(archive name, index bytes)` for the caller to store.
    pub fn close(
        &mut self,
        kind: WriterKind,
        wid: u64,
        chunk_count: u64,
        size: u64,
        csum: &Digest,
    ) -> Result<(String, Vec<u8>), ProtocolError> {
        self.ensure_active()?;
        let (name, bytes) = match self.writer_mut(kind, wid)? {
            Writer::Fixed(w) => (w.name().to_string(), w.close(chunk_count, size, csum)?),
            Writer::Dynamic(w) => (w.name().to_string(), w.close(chunk_count, size, csum)?),
            Writer::Closed(_) => return Err(Self::closed(kind, wid)),
        };
        self.writers.insert(wid, Writer::Closed(kind));
        self.file_counter += 1;
        Ok((name, bytes))
    }

    /// Counts an uploaded blob; the manifest's bytes are kept for `finish`.
    pub fn add_blob(&mut self, name: &str, bytes: Option<Bytes>) -> Result<(), ProtocolError> {
        self.ensure_active()?;
        if name == MANIFEST_BLOB_NAME {
            self.manifest = bytes;
        }
        self.file_counter += 1;
        Ok(())
    }

    /// First half of `finish`: phase, open writers and file count checks; moves to Finishing.
    pub fn begin_finish(&mut self) -> Result<FinishInput, ProtocolError> {
        self.ensure_active()?;
        if self
            .writers
            .values()
            .any(|w| !matches!(w, Writer::Closed(_)))
        {
            return Err(invalid(
                "found open index writer - unable to finish backup".into(),
            ));
        }
        if self.file_counter == 0 {
            return Err(invalid(
                "backup does not contain valid files (file count == 0)".into(),
            ));
        }
        self.phase = Phase::Finishing;
        Ok(FinishInput {
            manifest: self.manifest.clone(),
            stats: self.stats,
        })
    }

    /// A `finish` that failed after [`Self::begin_finish`] leaves the session Active again.
    pub fn cancel_finish(&mut self) {
        if self.phase == Phase::Finishing {
            self.phase = Phase::Active;
        }
    }

    /// Second half of `finish`: the snapshot is committed.
    pub fn mark_finished(&mut self) {
        self.phase = Phase::Finished;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::fixed_index::FIXED_CHUNK_SIZE;
    use crate::format::sha256;

    fn d(n: u8) -> Digest {
        sha256(&[n])
    }

    fn didx_csum(entries: &[(u64, Digest)]) -> Digest {
        let mut buf = Vec::new();
        for (end, dg) in entries {
            buf.extend_from_slice(&end.to_le_bytes());
            buf.extend_from_slice(dg);
        }
        sha256(&buf)
    }

    #[test]
    fn wids_are_shared_and_bounded() {
        let mut s = SessionState::new();
        assert_eq!(s.create_dynamic("a.didx".into()).unwrap(), 1);
        let f = FixedWriter::new("b.fidx".into(), Some(1), IndexHeaderInfo::now()).unwrap();
        assert_eq!(s.create_fixed(f).unwrap(), 2);
        for _ in 3..=MAX_WID {
            s.create_dynamic("x.didx".into()).unwrap();
        }
        assert!(s.create_dynamic("y.didx".into()).is_err());
    }

    #[test]
    fn chunk_registration_checks_writer_kind_and_counts_stats() {
        let mut s = SessionState::new();
        let wid = s.create_dynamic("a.didx".into()).unwrap();
        let err = s
            .register_chunk(WriterKind::Fixed, wid, 10, 22, false)
            .unwrap_err();
        assert_eq!(err.to_string(), "fixed writer '1' not registered");
        assert!(s
            .register_chunk(WriterKind::Dynamic, 9, 10, 22, false)
            .is_err());
        s.register_chunk(WriterKind::Dynamic, wid, 10, 22, false)
            .unwrap();
        s.register_chunk(WriterKind::Dynamic, wid, 5, 17, true)
            .unwrap();
        assert_eq!(
            s.stats(),
            UploadStats {
                count: 2,
                size: 15,
                compressed_size: 39,
                duplicates: 1
            }
        );
    }

    #[test]
    fn append_requires_known_chunks_and_equal_lists() {
        let mut s = SessionState::new();
        let wid = s.create_dynamic("a.didx".into()).unwrap();
        let known = |dg: &Digest| (dg == &d(1)).then_some(10u64);
        let err = s
            .append(WriterKind::Dynamic, wid, &[d(1)], &[0, 10], known)
            .unwrap_err();
        assert_eq!(err.to_string(), "offset list has wrong length (2 != 1)");
        let err = s
            .append(WriterKind::Dynamic, wid, &[d(2)], &[0], known)
            .unwrap_err();
        assert!(err.to_string().starts_with("no such chunk "));
        s.append(WriterKind::Dynamic, wid, &[d(1), d(1)], &[0, 10], known)
            .unwrap();
        let csum = didx_csum(&[(10, d(1)), (20, d(1))]);
        let (name, bytes) = s.close(WriterKind::Dynamic, wid, 2, 20, &csum).unwrap();
        assert_eq!(name, "a.didx");
        assert!(bytes.len() == 4096 + 80);
        assert_eq!(s.file_counter(), 1);
        // closed writers reject everything
        let err = s
            .append(WriterKind::Dynamic, wid, &[d(1)], &[20], known)
            .unwrap_err();
        assert_eq!(err.to_string(), "dynamic writer '1' is already closed");
        assert!(s
            .register_chunk(WriterKind::Dynamic, wid, 1, 13, false)
            .is_err());
        assert!(s.close(WriterKind::Dynamic, wid, 2, 20, &csum).is_err());
    }

    #[test]
    fn fixed_writer_small_chunk_rule_via_session() {
        let mut s = SessionState::new();
        let f = FixedWriter::new("d.img.fidx".into(), Some(5), IndexHeaderInfo::now()).unwrap();
        let wid = s.create_fixed(f).unwrap();
        s.register_chunk(WriterKind::Fixed, wid, 5, 17, false)
            .unwrap();
        let err = s
            .register_chunk(WriterKind::Fixed, wid, 3, 15, false)
            .unwrap_err();
        assert!(err.to_string().contains("detected multiple end chunks"));
        let err = s
            .register_chunk(WriterKind::Fixed, wid, FIXED_CHUNK_SIZE + 1, 15, false)
            .unwrap_err();
        assert!(err.to_string().contains("got large chunk"));
        // failed registrations are not counted
        assert_eq!(s.stats().count, 1);
    }

    #[test]
    fn finish_rules() {
        let mut s = SessionState::new();
        assert_eq!(
            s.begin_finish().unwrap_err().to_string(),
            "backup does not contain valid files (file count == 0)"
        );
        let wid = s.create_dynamic("a.didx".into()).unwrap();
        s.add_blob("qemu-server.conf.blob", None).unwrap();
        assert_eq!(
            s.begin_finish().unwrap_err().to_string(),
            "found open index writer - unable to finish backup"
        );
        let known = |_: &Digest| Some(4u64);
        s.append(WriterKind::Dynamic, wid, &[d(3)], &[0], known)
            .unwrap();
        s.close(WriterKind::Dynamic, wid, 1, 4, &didx_csum(&[(4, d(3))]))
            .unwrap();
        s.add_blob(MANIFEST_BLOB_NAME, Some(Bytes::from_static(b"m")))
            .unwrap();
        let input = s.begin_finish().unwrap();
        assert_eq!(input.manifest.as_deref(), Some(&b"m"[..]));
        assert!(!s.is_finished());
        assert_eq!(
            s.create_dynamic("b.didx".into()).unwrap_err().to_string(),
            "backup already marked as finished."
        );
        assert!(s.begin_finish().is_err());
        s.cancel_finish();
        assert!(s.ensure_active().is_ok());
        assert!(s.begin_finish().is_ok());
        s.mark_finished();
        s.cancel_finish();
        assert!(s.is_finished());
        assert!(s.add_blob("x.blob", None).is_err());
    }
}
