//! pxar archives (the file-level backup format): item headers, entry bodies, goodbye tables,
//! random access to paths and file contents, a stream-order walk, and split archives
//! (metadata `.mpxar` + payload `.ppxar`).
//!
//! Nothing here does I/O: archive bytes come from a [`ReadAt`] source that the datastore layer
//! implements over a `.didx` and its chunks. Every parser bounds its reads by per-item limits and
//! by the archive size, refuses offsets that do not move strictly inside their parent, and
//! returns a [`PxarError`]; a hostile archive costs at most work proportional to its size.

mod accessor;
mod entry;
mod error;
mod fuzz;
mod goodbye;
mod header;
mod source;
mod walk;

#[cfg(test)]
mod test_builder;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_malformed;

pub use accessor::{Archive, Directory, PayloadRange, MAX_LOOKUP_COMPONENTS};
pub use entry::{mode, Entry, EntryKind, FileData, Metadata, Stat, XAttr};
pub use error::PxarError;
pub use fuzz::{fuzz_archive, fuzz_split_archive, ArchiveSummary};
pub use goodbye::{hash_filename, GoodbyeItem, GOODBYE_ITEM_LEN};
pub use header::{htype, max_content_size, Header, HEADER_LEN};
pub use source::{MemSource, ReadAt};
pub use walk::{WalkEvent, Walker, MAX_DEPTH};
