//! A walk over a directory subtree in archive stream order (the order directory archives and
//! restores want). It reads the stream front to back and never trusts goodbye offsets, so
//! every step moves forward: the cost is linear in the bytes walked and the nesting depth is
//! capped.

use super::accessor::Archive;
use super::entry::{decode_entry, decode_filename, Entry, EntryKind, FileData};
use super::error::PxarError;
use super::goodbye::{GoodbyeItem, GOODBYE_ITEM_LEN};
use super::header::{htype, HEADER_LEN};
use super::source::{read_exact, read_header, ReadAt};

/// Deepest directory nesting a walk follows (a path of one-letter names at PATH_MAX).
pub const MAX_DEPTH: usize = 2048;

/// One step of a walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkEvent {
    /// A directory begins; its children follow until the matching `Exit`.
    Enter(Entry),
    /// A non-directory entry (hardlinks as they are; see [`Archive::follow_hardlink`]).
    Leaf(Entry),
    /// A directory ended; its goodbye table was checked.
    Exit(Entry),
}

struct Frame {
    entry: Entry,
    /// Next item to read.
    pos: u64,
    /// Nothing of this directory may reach past this offset.
    limit: u64,
    /// The exact end when the caller knew it (the walk's start directory).
    known_end: Option<u64>,
}

/// Walks the subtree of one directory entry.
pub struct Walker<'a, S> {
    archive: &'a Archive<S>,
    stack: Vec<Frame>,
    pending_start: Option<Entry>,
    /// Names from the walk's start directory (exclusive) down to the last event's entry.
    names: Vec<Vec<u8>>,
    /// The last event named a leaf or a closed directory: its name goes before the next step.
    pop_name: bool,
    /// End of the last payload reference seen; references must not go back or overlap, so
    /// a walk reads each payload byte at most once.
    payload_end: u64,
}

impl<'a, S: ReadAt> Walker<'a, S> {
    /// Starts a walk at a directory entry obtained from [`Archive::root`], a listing or a lookup.
    pub fn new(archive: &'a Archive<S>, dir: Entry) -> Result<Self, PxarError> {
        let EntryKind::Directory { content_start, end } = dir.kind else {
            return Err(PxarError::NotADirectory(dir.kind.name()));
        };
        let frame = Frame {
            entry: dir.clone(),
            pos: content_start,
            limit: end,
            known_end: Some(end),
        };
        Ok(Self {
            archive,
            stack: vec![frame],
            pending_start: Some(dir),
            names: Vec::new(),
            pop_name: false,
            payload_end: 0,
        })
    }

    /// Path components of the entry the last event named, relative to the start directory
    /// (empty for the start directory itself).
    pub fn path(&self) -> &[Vec<u8>] {
        &self.names
    }

    /// The next event, or `None` when the start directory was closed.
    pub async fn next(&mut self) -> Result<Option<WalkEvent>, PxarError> {
        if let Some(start) = self.pending_start.take() {
            return Ok(Some(WalkEvent::Enter(start)));
        }
        let src = self.archive.meta_source();
        let Some(top) = self.stack.last() else {
            return Ok(None);
        };
        if std::mem::take(&mut self.pop_name) {
            self.names.pop();
        }
        let (pos, limit) = (top.pos, top.limit);
        let header = read_header(src, pos, limit).await?;
        match header.htype {
            htype::FILENAME => {
                let (name, start) = decode_filename(src, pos, limit).await?;
                let (metadata, kind, end) = decode_entry(src, start, limit, Some(pos)).await?;
                let mut entry = Entry {
                    name: name.clone(),
                    filename_start: Some(pos),
                    start,
                    end,
                    metadata,
                    kind,
                };
                self.names.push(name);
                if let EntryKind::Directory { content_start, .. } = entry.kind {
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(PxarError::limit(
                            "pxar walk",
                            format!("directories nest deeper than {MAX_DEPTH} levels"),
                        ));
                    }
                    self.stack.push(Frame {
                        entry: entry.clone(),
                        pos: content_start,
                        limit,
                        known_end: None,
                    });
                    entry.kind = EntryKind::Directory {
                        content_start,
                        end: 0,
                    };
                    return Ok(Some(WalkEvent::Enter(entry)));
                }
                if let EntryKind::File {
                    size,
                    data: FileData::PayloadRef { offset },
                } = entry.kind
                {
                    if offset < self.payload_end {
                        return Err(PxarError::malformed(
                            "pxar payload reference",
                            format!(
                                "at offset {start}: payload offset {offset} goes back before {}",
                                self.payload_end
                            ),
                        ));
                    }
                    self.payload_end = offset.saturating_add(HEADER_LEN).saturating_add(size);
                }
                if let Some(top) = self.stack.last_mut() {
                    top.pos = end;
                }
                self.pop_name = true;
                Ok(Some(WalkEvent::Leaf(entry)))
            }
            htype::GOODBYE => {
                let end = pos + header.full_size;
                let frame = self.stack.pop().expect("stack checked above");
                check_goodbye(src, pos, header.full_size, &frame).await?;
                if frame.known_end.is_some_and(|known| known != end) {
                    return Err(PxarError::malformed(
                        "pxar goodbye table",
                        format!(
                            "directory at {} ends at {end}, expected {}",
                            frame.entry.start,
                            frame.known_end.unwrap_or(0)
                        ),
                    ));
                }
                if let Some(parent) = self.stack.last_mut() {
                    parent.pos = end;
                }
                let mut entry = frame.entry;
                entry.end = end;
                if let EntryKind::Directory { content_start, .. } = entry.kind {
                    entry.kind = EntryKind::Directory { content_start, end };
                }
                self.pop_name = !self.stack.is_empty();
                Ok(Some(WalkEvent::Exit(entry)))
            }
            other => Err(PxarError::malformed(
                "pxar directory",
                format!(
                    "at offset {pos}: expected FILENAME or GOODBYE, found {} item",
                    htype::name(other)
                ),
            )),
        }
    }
}

/// The tail record must point back to the directory's entry and repeat the table size.
async fn check_goodbye<S: ReadAt + ?Sized>(
    src: &S,
    pos: u64,
    full_size: u64,
    frame: &Frame,
) -> Result<(), PxarError> {
    let bad = |msg: String| PxarError::malformed("pxar goodbye table", msg);
    let body = full_size - HEADER_LEN;
    if body < GOODBYE_ITEM_LEN || body % GOODBYE_ITEM_LEN != 0 {
        return Err(bad(format!("at offset {pos}: body of {body} bytes")));
    }
    let tail_at = pos + full_size - GOODBYE_ITEM_LEN;
    let tail =
        GoodbyeItem::parse(&read_exact(src, tail_at, GOODBYE_ITEM_LEN, "pxar goodbye").await?);
    let points_to = pos.checked_sub(tail.offset);
    let root = frame.entry.filename_start.is_none();
    let target_ok = points_to == Some(frame.entry.start) || (root && points_to == Some(0));
    if tail.hash != htype::GOODBYE_TAIL_MARKER || tail.size != full_size || !target_ok {
        return Err(bad(format!(
            "at offset {pos}: tail record does not close the directory at {}",
            frame.entry.start
        )));
    }
    Ok(())
}
