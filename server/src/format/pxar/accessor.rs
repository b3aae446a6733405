//! Random access to an archive: open it from its end, resolve paths through goodbye tables,
//! list directories, follow hardlinks and locate file contents (inline, or in the payload
//! archive of a split pair).

use bytes::Bytes;

use super::entry::{decode_entry, decode_filename, Entry, EntryKind, FileData, Metadata};
use super::error::PxarError;
use super::goodbye::{hash_filename, GoodbyeItem, GoodbyeTable};
use super::header::{htype, le_u64, HEADER_LEN};
use super::source::{read_body, read_exact, read_header, ReadAt};

/// Most path components one lookup resolves.
pub const MAX_LOOKUP_COMPONENTS: usize = 4096;
/// Most goodbye records with the searched hash that a lookup compares names for.
const MAX_HASH_COLLISIONS: usize = 64;

/// A pxar archive opened for random access: a unified `.pxar`, or a `.mpxar` with (for file
/// contents) its `.ppxar`.
pub struct Archive<S> {
    meta: S,
    payload: Option<S>,
    version: u64,
    root_start: u64,
}

/// A directory ready for listing and lookups.
#[derive(Clone, Debug)]
pub struct Directory {
    pub entry: Entry,
    table: GoodbyeTable,
    content_start: u64,
}

/// Where a regular file's bytes are: `size` bytes at `offset` of the metadata stream (unified
/// archives) or of the payload stream (split archives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadRange {
    pub in_payload: bool,
    pub offset: u64,
    pub size: u64,
}

impl<S: ReadAt> Archive<S> {
    /// Opens an archive: checks the version item, skips the prelude, and checks that the stream
    /// ends with the root directory's goodbye table. A `payload` stream (the `.ppxar`) is
    /// needed only to read file contents of a split archive; its start and tail markers are
    /// checked here.
    pub async fn open(meta: S, payload: Option<S>) -> Result<Self, PxarError> {
        let size = meta.size();
        let mut pos = 0;
        let mut version = 1;
        let first = read_header(&meta, 0, size).await?;
        if first.htype == htype::FORMAT_VERSION {
            let body = read_body(&meta, 0, &first).await?;
            if body.len() != 8 {
                return Err(PxarError::malformed(
                    "pxar format version",
                    format!("body of {} bytes, expected 8", body.len()),
                ));
            }
            version = le_u64(&body);
            if version != 1 && version != 2 {
                return Err(PxarError::malformed(
                    "pxar format version",
                    format!("unknown format version {version}"),
                ));
            }
            pos = first.full_size;
            let next = read_header(&meta, pos, size).await?;
            if next.htype == htype::PRELUDE {
                if version < 2 {
                    return Err(PxarError::malformed(
                        "pxar prelude",
                        "a prelude needs format version 2",
                    ));
                }
                pos += next.full_size;
            }
        }
        if let Some(p) = &payload {
            check_payload_markers(p).await?;
        }
        let archive = Self {
            meta,
            payload,
            version,
            root_start: pos,
        };
        archive.root().await?;
        Ok(archive)
    }

    /// 1 for unified archives, 2 for the metadata archive of a split pair.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The metadata (or unified) stream.
    pub fn meta_source(&self) -> &S {
        &self.meta
    }

    /// The payload stream of a split archive, when it was given.
    pub fn payload_source(&self) -> Option<&S> {
        self.payload.as_ref()
    }

    /// The root directory entry (spanning the whole stream).
    pub async fn root(&self) -> Result<Entry, PxarError> {
        let size = self.meta.size();
        let table = GoodbyeTable::locate(&self.meta, 0, size).await?;
        if table.entry_start != 0 && table.entry_start != self.root_start {
            return Err(PxarError::malformed(
                "pxar root directory",
                format!(
                    "root goodbye tail points to offset {}, not to the root entry",
                    table.entry_start
                ),
            ));
        }
        let (metadata, kind, _) =
            decode_entry(&self.meta, self.root_start, table.start, None).await?;
        let EntryKind::Directory { content_start, .. } = kind else {
            return Err(PxarError::malformed(
                "pxar root directory",
                format!("the root entry is a {}", kind.name()),
            ));
        };
        Ok(Entry {
            name: Vec::new(),
            filename_start: None,
            start: self.root_start,
            end: size,
            metadata,
            kind: EntryKind::Directory {
                content_start,
                end: size,
            },
        })
    }

    /// Opens a directory entry for listing and lookups.
    pub async fn open_dir(&self, entry: &Entry) -> Result<Directory, PxarError> {
        let EntryKind::Directory { content_start, end } = entry.kind else {
            return Err(PxarError::NotADirectory(entry.kind.name()));
        };
        let root = entry.filename_start.is_none();
        let lower = if root { 0 } else { entry.start };
        let table = GoodbyeTable::locate(&self.meta, lower, end).await?;
        let tail_ok = table.entry_start == entry.start || (root && table.entry_start == 0);
        if !tail_ok || table.start < content_start {
            return Err(PxarError::malformed(
                "pxar goodbye table",
                format!(
                    "table at {} does not belong to the directory entry at {}",
                    table.start, entry.start
                ),
            ));
        }
        Ok(Directory {
            entry: entry.clone(),
            table,
            content_start,
        })
    }

    /// Number of children of a directory.
    pub fn child_count(dir: &Directory) -> u64 {
        dir.table.count
    }

    /// Decodes the child a goodbye record points to.
    async fn child(&self, dir: &Directory, item: GoodbyeItem) -> Result<Entry, PxarError> {
        let limit = dir.table.start;
        let filename_start = limit
            .checked_sub(item.offset)
            .filter(|s| item.offset > 0 && *s >= dir.content_start)
            .ok_or_else(|| {
                PxarError::malformed(
                    "pxar goodbye table",
                    format!(
                        "record offset {} of the table at {limit} points outside its directory",
                        item.offset
                    ),
                )
            })?;
        let (name, start) = decode_filename(&self.meta, filename_start, limit).await?;
        let (metadata, mut kind, mut end) =
            decode_entry(&self.meta, start, limit, Some(filename_start)).await?;
        if let EntryKind::Directory {
            content_start,
            end: dir_end,
        } = &mut kind
        {
            end = filename_start
                .checked_add(item.size)
                .filter(|e| *e <= limit && *e > *content_start)
                .ok_or_else(|| {
                    PxarError::malformed(
                        "pxar goodbye table",
                        format!(
                            "directory record size {} at {filename_start} does not fit its parent",
                            item.size
                        ),
                    )
                })?;
            *dir_end = end;
        }
        Ok(Entry {
            name,
            filename_start: Some(filename_start),
            start,
            end,
            metadata,
            kind,
        })
    }

    /// The children of a directory, in goodbye-table (hash) order.
    pub async fn list(&self, dir: &Directory) -> Result<Vec<Entry>, PxarError> {
        let mut items = Vec::new();
        dir.table
            .for_each(&self.meta, |item| {
                items.push(item);
                true
            })
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let child = self.child(dir, item).await?;
            if hash_filename(&child.name) != item.hash {
                return Err(PxarError::malformed(
                    "pxar goodbye table",
                    format!(
                        "record hash does not match the name at {}",
                        child.filename_start.unwrap_or(0)
                    ),
                ));
            }
            out.push(child);
        }
        Ok(out)
    }

    /// The child called `name`, if any.
    pub async fn lookup_child(
        &self,
        dir: &Directory,
        name: &[u8],
    ) -> Result<Option<Entry>, PxarError> {
        let candidates = dir
            .table
            .search(&self.meta, hash_filename(name), MAX_HASH_COLLISIONS)
            .await?;
        for item in candidates {
            let filename_start = dir.table.start.saturating_sub(item.offset);
            if item.offset == 0 || filename_start < dir.content_start {
                continue;
            }
            let (found, _) = decode_filename(&self.meta, filename_start, dir.table.start).await?;
            if found == name {
                return self.child(dir, item).await.map(Some);
            }
        }
        Ok(None)
    }

    /// Resolves a path inside the archive. `/`, empty components and `.` are skipped, `..` is
    /// refused; a completely empty path names nothing. Symlinks are never followed.
    pub async fn lookup(&self, path: &[u8]) -> Result<Entry, PxarError> {
        let shown = || String::from_utf8_lossy(path).into_owned();
        if path.is_empty() {
            return Err(PxarError::NotFound(String::new()));
        }
        let components: Vec<&[u8]> = path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if components.iter().any(|c| *c == b"..") {
            return Err(PxarError::ParentDir);
        }
        if components.len() > MAX_LOOKUP_COMPONENTS {
            return Err(PxarError::limit(
                "pxar lookup",
                format!("path has more than {MAX_LOOKUP_COMPONENTS} components"),
            ));
        }
        let mut current = self.root().await?;
        for component in components {
            if !current.is_dir() {
                return Err(PxarError::NotFound(shown()));
            }
            let dir = self.open_dir(&current).await?;
            current = self
                .lookup_child(&dir, component)
                .await?
                .ok_or_else(|| PxarError::NotFound(shown()))?;
        }
        Ok(current)
    }

    /// The regular file a hardlink entry names (its metadata and contents are the link's).
    pub async fn follow_hardlink(&self, link: &Entry) -> Result<Entry, PxarError> {
        let EntryKind::Hardlink {
            target_filename_start,
            ..
        } = link.kind
        else {
            return Ok(link.clone());
        };
        let limit = link.filename_start.unwrap_or(0);
        let (name, start) = decode_filename(&self.meta, target_filename_start, limit).await?;
        let (metadata, kind, end) =
            decode_entry(&self.meta, start, limit, Some(target_filename_start)).await?;
        if !matches!(kind, EntryKind::File { .. }) {
            return Err(PxarError::malformed(
                "pxar hardlink",
                format!(
                    "hardlink at {} does not point to a regular file",
                    link.start
                ),
            ));
        }
        Ok(Entry {
            name,
            filename_start: Some(target_filename_start),
            start,
            end,
            metadata,
            kind,
        })
    }

    /// Where a regular file's bytes are. For split archives the PAYLOAD header at the
    /// referenced offset is checked (type, size, inside the payload stream) first.
    pub async fn payload_range(&self, entry: &Entry) -> Result<PayloadRange, PxarError> {
        let EntryKind::File { size, data } = entry.kind else {
            return Err(PxarError::malformed(
                "pxar file",
                format!(
                    "entry at {} is a {}, not a regular file",
                    entry.start,
                    entry.kind.name()
                ),
            ));
        };
        match data {
            FileData::Inline { offset } => Ok(PayloadRange {
                in_payload: false,
                offset,
                size,
            }),
            FileData::PayloadRef { offset } => {
                let payload = self.payload.as_ref().ok_or_else(|| {
                    PxarError::malformed(
                        "pxar payload reference",
                        "file contents are in a payload archive that was not opened",
                    )
                })?;
                check_payload_at(payload, offset, size).await?;
                Ok(PayloadRange {
                    in_payload: true,
                    offset: offset + HEADER_LEN,
                    size,
                })
            }
        }
    }

    /// Up to `len` bytes of a file's contents starting `at` bytes into the file.
    pub async fn read_file(
        &self,
        range: &PayloadRange,
        at: u64,
        len: usize,
    ) -> Result<Bytes, PxarError> {
        if at >= range.size {
            return Ok(Bytes::new());
        }
        let len = (len as u64).min(range.size - at);
        let src = match (range.in_payload, &self.payload) {
            (true, Some(p)) => p,
            (true, None) => {
                return Err(PxarError::malformed(
                    "pxar payload reference",
                    "payload archive not opened",
                ))
            }
            (false, _) => &self.meta,
        };
        src.read_at(range.offset + at, len as usize).await
    }

    /// Metadata of an entry, taken from the hardlink target for hardlinks.
    pub async fn effective_metadata(&self, entry: &Entry) -> Result<Metadata, PxarError> {
        match entry.kind {
            EntryKind::Hardlink { .. } => Ok(self.follow_hardlink(entry).await?.metadata),
            _ => Ok(entry.metadata.clone()),
        }
    }
}

/// A payload stream starts with PAYLOAD_START_MARKER and ends with PAYLOAD_TAIL_MARKER.
async fn check_payload_markers<S: ReadAt + ?Sized>(payload: &S) -> Result<(), PxarError> {
    let size = payload.size();
    let start = read_header(payload, 0, size).await?;
    if start.htype != htype::PAYLOAD_START_MARKER || start.full_size != HEADER_LEN {
        return Err(PxarError::malformed(
            "pxar payload archive",
            format!(
                "does not start with a payload start marker ({})",
                htype::name(start.htype)
            ),
        ));
    }
    if size < 2 * HEADER_LEN {
        return Err(PxarError::malformed(
            "pxar payload archive",
            "no tail marker",
        ));
    }
    let tail = read_header(payload, size - HEADER_LEN, size).await?;
    if tail.htype != htype::PAYLOAD_TAIL_MARKER || tail.full_size != HEADER_LEN {
        return Err(PxarError::malformed(
            "pxar payload archive",
            format!(
                "does not end with a payload tail marker ({})",
                htype::name(tail.htype)
            ),
        ));
    }
    Ok(())
}

/// The PAYLOAD header a payload reference points to must be there, with the referenced size.
async fn check_payload_at<S: ReadAt + ?Sized>(
    payload: &S,
    offset: u64,
    size: u64,
) -> Result<(), PxarError> {
    let end = offset
        .checked_add(HEADER_LEN)
        .and_then(|e| e.checked_add(size))
        .filter(|e| offset >= HEADER_LEN && *e <= payload.size() - HEADER_LEN);
    if end.is_none() {
        return Err(PxarError::malformed(
            "pxar payload reference",
            format!(
                "{size} bytes at offset {offset} lie outside the payload archive ({} bytes)",
                payload.size()
            ),
        ));
    }
    let b = read_exact(payload, offset, HEADER_LEN, "pxar payload header").await?;
    let (t, full) = (le_u64(&b[..8]), le_u64(&b[8..]));
    if t != htype::PAYLOAD || full != size + HEADER_LEN {
        return Err(PxarError::malformed(
            "pxar payload reference",
            format!(
                "at payload offset {offset}: expected a PAYLOAD item of {} bytes, found {} of {full}",
                size + HEADER_LEN,
                htype::name(t)
            ),
        ));
    }
    Ok(())
}
