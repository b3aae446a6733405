//! pxar archives and the catalog as the stock client writes them, for backing up and restoring
//! real directory trees: legacy mode (`NAME.pxar` + `catalog.pcat1`) and split archives
//! (`NAME.mpxar` metadata + `NAME.ppxar` payloads) with metadata-mode reuse of the previous
//! snapshot's payload chunks.
//!
//! Written independently of the server's readers, so that a symmetric bug cannot hide.

pub mod catalog;
pub mod decoder;
pub mod encoder;
pub mod extract;
pub mod format;
pub mod payload;

pub use catalog::CatalogWriter;
pub use decoder::{decode, DecodedEntry, DecodedKind};
pub use encoder::{encode_tree, EncodeOptions, Encoded, PreviousArchive};
pub use extract::extract;
pub use payload::{PayloadPiece, PayloadStream};

#[cfg(test)]
mod tests;
