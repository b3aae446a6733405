//! The pure state machine of one backup session (docs/protocol.md#session-state): writer ids,
//! writers, file counter, chunk upload statistics, the uploaded manifest and the Active → Finishing
//! → Finished phases. Handlers keep it behind a `std::sync::Mutex` and never hold that lock across
//! an `.await`; the known-chunk map lives in the datastore's backup lease.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::budget::{EntryCharge, SessionBudget, WriterSlot};
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
    Fixed(FixedWriter, Held),
    Dynamic(DynamicWriter, Held),
    /// Closed writers stay known so later calls get a clear error (PBS 4.x behaviour).
    Closed(WriterKind),
}

/// The budget an open writer holds: its writer slot and its entries.
#[derive(Debug)]
pub struct Held {
    _slot: WriterSlot,
    entries: EntryCharge,
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
    budget: SessionBudget,
    phase: Phase,
    last_wid: u64,
    writers: BTreeMap<u64, Writer>,
    file_counter: u64,
    stats: UploadStats,
    /// Per writer, for the upload statistics the task log shows at close.
    writer_stats: BTreeMap<u64, UploadStats>,
    manifest: Option<Bytes>,
}

fn invalid(msg: String) -> ProtocolError {
    ProtocolError::Invalid(msg)
}

impl SessionState {
    pub fn new(budget: SessionBudget) -> Self {
        Self {
            budget,
            phase: Phase::Active,
            last_wid: 0,
            writers: BTreeMap::new(),
            file_counter: 0,
            stats: UploadStats::default(),
            writer_stats: BTreeMap::new(),
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

    fn check_wid_left(&self) -> Result<(), ProtocolError> {
        if self.last_wid >= MAX_WID {
            return Err(invalid(format!(
                "too many index writers in this session (limit {MAX_WID})"
            )));
        }
        Ok(())
    }

    fn next_wid(&mut self) -> Result<u64, ProtocolError> {
        self.check_wid_left()?;
        self.last_wid += 1;
        Ok(self.last_wid)
    }

    /// The budget this session charges.
    pub fn budget(&self) -> &SessionBudget {
        &self.budget
    }

    /// A writer slot and `entries` entries for a new writer.
    fn hold(&self, entries: u64) -> Result<Held, ProtocolError> {
        let slot = self.budget.writer()?;
        let entries = self.budget.entries(entries)?;
        Ok(Held {
            _slot: slot,
            entries,
        })
    }

    /// Registers a new dynamic writer and returns its wid.
    pub fn create_dynamic(&mut self, name: String) -> Result<u64, ProtocolError> {
        self.ensure_active()?;
        self.check_wid_left()?;
        let held = self.hold(0)?;
        let wid = self.next_wid()?;
        let writer = DynamicWriter::new(name, IndexHeaderInfo::now());
        self.writers.insert(wid, Writer::Dynamic(writer, held));
        Ok(wid)
    }

    /// Registers a new fixed writer (built by the caller) and returns its wid. An incremental
    /// writer's copied entries are charged here.
    pub fn create_fixed(&mut self, writer: FixedWriter) -> Result<u64, ProtocolError> {
        self.ensure_active()?;
        self.check_wid_left()?;
        let held = self.hold(writer.entries())?;
        let wid = self.next_wid()?;
        self.writers.insert(wid, Writer::Fixed(writer, held));
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
            Some(w @ Writer::Fixed(..)) if kind == WriterKind::Fixed => Ok(w),
            Some(w @ Writer::Dynamic(..)) if kind == WriterKind::Dynamic => Ok(w),
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
        if let Writer::Fixed(w, _) = self.writer_mut(kind, wid)? {
            w.register_upload(size)?;
        }
        for stats in [&mut self.stats, self.writer_stats.entry(wid).or_default()] {
            stats.count += 1;
            stats.size += size;
            stats.compressed_size += encoded_size;
            if duplicate {
                stats.duplicates += 1;
            }
        }
        Ok(())
    }

    /// Upload statistics of writer `wid` (zero when nothing was uploaded through it).
    pub fn writer_stats(&self, wid: u64) -> UploadStats {
        self.writer_stats.get(&wid).copied().unwrap_or_default()
    }

    /// Appends `(digest, offset)` pairs in order; `known` gives the size of a known digest.
    /// Stops at the first failing entry (the client aborts the session then anyway). Entries
    /// for the whole list are reserved from the budget first; what the writer did not store
    /// (overwrites, a failed entry) is given back.
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
        self.writer_mut(kind, wid)?;
        let mut reserved = self.budget.entries(digests.len() as u64)?;
        let writer = self.writer_mut(kind, wid)?;
        for (digest, &offset) in digests.iter().zip(offsets) {
            let size = known(digest).ok_or_else(|| {
                invalid(format!(
                    "no such chunk {}",
                    crate::format::digest_to_hex(digest)
                ))
            })?;
            let (stored_new, held) = match writer {
                Writer::Fixed(w, held) => (w.append(*digest, offset, size)?, held),
                Writer::Dynamic(w, held) => {
                    w.append(*digest, offset, size)?;
                    (true, held)
                }
                Writer::Closed(_) => return Err(Self::closed(kind, wid)),
            };
            if stored_new {
                held.entries.take_from(&mut reserved, 1);
            }
        }
        Ok(())
    }

    /// Checks the close parameters and, when they match, marks the writer closed, counts the
    /// file and returns `(archive name, index bytes, budget)` for the caller to store; the
    /// caller drops the budget once the bytes are stored.
    pub fn close(
        &mut self,
        kind: WriterKind,
        wid: u64,
        chunk_count: u64,
        size: u64,
        csum: &Digest,
    ) -> Result<(String, Vec<u8>, Held), ProtocolError> {
        self.ensure_active()?;
        let (name, bytes) = match self.writer_mut(kind, wid)? {
            Writer::Fixed(w, _) => (w.name().to_string(), w.close(chunk_count, size, csum)?),
            Writer::Dynamic(w, _) => (w.name().to_string(), w.close(chunk_count, size, csum)?),
            Writer::Closed(_) => return Err(Self::closed(kind, wid)),
        };
        let held = match self.writers.insert(wid, Writer::Closed(kind)) {
            Some(Writer::Fixed(_, held) | Writer::Dynamic(_, held)) => held,
            _ => return Err(Self::closed(kind, wid)),
        };
        self.file_counter += 1;
        Ok((name, bytes, held))
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
    use crate::protocol::backup::budget::UploadBudget;

    fn new_state() -> SessionState {
        SessionState::new(UploadBudget::default().session("t"))
    }

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
        let mut s = new_state();
        assert_eq!(s.create_dynamic("a.didx".into()).unwrap(), 1);
        let f = FixedWriter::new("b.fidx".into(), Some(1), IndexHeaderInfo::now()).unwrap();
        assert_eq!(s.create_fixed(f).unwrap(), 2);
        for _ in 3..=MAX_WID {
            s.create_dynamic("x.didx".into()).unwrap();
        }
        assert!(s.create_dynamic("y.didx".into()).is_err());
    }

    #[test]
    fn writers_and_entries_are_charged_until_close() {
        use crate::protocol::backup::budget::UploadLimits;
        let budget = UploadBudget::new(UploadLimits {
            writers_per_tenant: 2,
            entries_per_session: 3,
            ..UploadLimits::default()
        });
        let mut s = SessionState::new(budget.session("t"));
        let a = s.create_dynamic("a.didx".into()).unwrap();
        let f = FixedWriter::new(
            "b.fidx".into(),
            Some(4 * FIXED_CHUNK_SIZE),
            IndexHeaderInfo::now(),
        )
        .unwrap();
        let b = s.create_fixed(f).unwrap();
        let err = s.create_dynamic("c.didx".into()).unwrap_err().to_string();
        assert!(
            err.contains("open index writer budget of tenant 't'"),
            "{err}"
        );
        assert_eq!(budget.server_usage().writers, 2);

        let known = |_: &Digest| Some(FIXED_CHUNK_SIZE);
        let cs = FIXED_CHUNK_SIZE;
        // Overwrites cost nothing; a list that does not fit is refused before anything moves.
        s.append(WriterKind::Fixed, b, &[d(1), d(1)], &[0, 0], known)
            .unwrap();
        assert_eq!(budget.server_usage().entries, 1);
        let err = s
            .append(
                WriterKind::Fixed,
                b,
                &[d(1); 3],
                &[cs, 2 * cs, 3 * cs],
                known,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("index entry budget of this backup session"),
            "{err}"
        );
        s.append(WriterKind::Dynamic, a, &[d(1), d(1)], &[0, cs], known)
            .unwrap();
        assert_eq!(budget.server_usage().entries, 3);

        let csum = didx_csum(&[(cs, d(1)), (2 * cs, d(1))]);
        let (_, _, held) = s.close(WriterKind::Dynamic, a, 2, 2 * cs, &csum).unwrap();
        assert_eq!(budget.server_usage().entries, 3, "held until stored");
        drop(held);
        assert_eq!(budget.server_usage().entries, 1);
        assert_eq!(budget.server_usage().writers, 1);
        drop(s);
        assert_eq!(budget.server_usage(), Default::default());
    }

    #[test]
    fn chunk_registration_checks_writer_kind_and_counts_stats() {
        let mut s = new_state();
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
        assert_eq!(s.writer_stats(wid), s.stats());
        assert_eq!(s.writer_stats(7), UploadStats::default());
    }

    #[test]
    fn append_requires_known_chunks_and_equal_lists() {
        let mut s = new_state();
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
        let (name, bytes, _held) = s.close(WriterKind::Dynamic, wid, 2, 20, &csum).unwrap();
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
        let mut s = new_state();
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
        let mut s = new_state();
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
