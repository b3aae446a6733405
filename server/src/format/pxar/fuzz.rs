//! Fuzz-friendly entry points: whole-archive checks from plain byte slices. They exercise every
//! reader (open, walk, listing, lookup, hardlinks, payload references, content reads) and must
//! return an error, never panic or run away, on any input.

use bytes::Bytes;

use super::accessor::Archive;
use super::entry::EntryKind;
use super::error::PxarError;
use super::source::MemSource;
use super::walk::{WalkEvent, Walker};

/// Children per directory that the check also resolves by name.
const LOOKUPS_PER_DIR: usize = 16;
/// Piece size of content reads.
const READ_PIECE: usize = 64 * 1024;

/// What a successful check saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub directories: u64,
    pub files: u64,
    pub other: u64,
    pub content_bytes: u64,
}

/// Checks a unified archive (`.pxar`) held in memory.
pub fn fuzz_archive(data: &[u8]) -> Result<ArchiveSummary, PxarError> {
    let meta = MemSource::new(Bytes::copy_from_slice(data));
    futures::executor::block_on(check(meta, None))
}

/// Checks a split archive (`.mpxar` + `.ppxar`) held in memory.
pub fn fuzz_split_archive(meta: &[u8], payload: &[u8]) -> Result<ArchiveSummary, PxarError> {
    let meta = MemSource::new(Bytes::copy_from_slice(meta));
    let payload = MemSource::new(Bytes::copy_from_slice(payload));
    futures::executor::block_on(check(meta, Some(payload)))
}

async fn check(meta: MemSource, payload: Option<MemSource>) -> Result<ArchiveSummary, PxarError> {
    let archive = Archive::open(meta, payload).await?;
    let root = archive.root().await?;
    let mut summary = ArchiveSummary::default();
    let mut walker = Walker::new(&archive, root)?;
    while let Some(event) = walker.next().await? {
        match event {
            WalkEvent::Enter(_) => summary.directories += 1,
            WalkEvent::Exit(dir) => {
                let opened = archive.open_dir(&dir).await?;
                let children = archive.list(&opened).await?;
                for child in children.iter().take(LOOKUPS_PER_DIR) {
                    let found = archive.lookup_child(&opened, &child.name).await?;
                    if found.as_ref().map(|f| f.start) != Some(child.start) {
                        return Err(PxarError::malformed(
                            "pxar goodbye table",
                            "lookup by name does not find the listed child",
                        ));
                    }
                }
            }
            WalkEvent::Leaf(entry) => {
                let file = match entry.kind {
                    EntryKind::Hardlink { .. } => {
                        // The target's contents were read where it was archived.
                        archive.follow_hardlink(&entry).await?;
                        summary.other += 1;
                        continue;
                    }
                    EntryKind::File { .. } => entry,
                    _ => {
                        summary.other += 1;
                        continue;
                    }
                };
                summary.files += 1;
                let range = archive.payload_range(&file).await?;
                let mut at = 0;
                while at < range.size {
                    let piece = archive.read_file(&range, at, READ_PIECE).await?;
                    if piece.is_empty() {
                        return Err(PxarError::Source("content read returned nothing".into()));
                    }
                    at += piece.len() as u64;
                }
                summary.content_bytes += range.size;
            }
        }
    }
    Ok(summary)
}
