//! The payload stream of a split archive (`.ppxar`): new bytes, and whole chunks of the
//! previous snapshot's payload archive reused as they are (metadata change detection).

use crate::wire::Digest;

use super::format::{put_header, PAYLOAD_START_MARKER, PAYLOAD_TAIL_MARKER};

/// A run of the stream: bytes to chunk and upload, or previous chunks to append by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadPiece {
    Data(Vec<u8>),
    /// (digest, length) of chunks of the previous payload index, appended unchanged.
    Reused(Vec<(Digest, u64)>),
}

/// The whole payload stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadStream {
    pub pieces: Vec<PayloadPiece>,
    len: u64,
}

impl Default for PayloadStream {
    fn default() -> Self {
        Self::new()
    }
}

impl PayloadStream {
    /// A stream holding only its start marker.
    pub fn new() -> Self {
        let mut start = Vec::new();
        put_header(&mut start, PAYLOAD_START_MARKER, 0);
        PayloadStream {
            len: start.len() as u64,
            pieces: vec![PayloadPiece::Data(start)],
        }
    }

    /// Current length (the offset the next byte gets).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends new bytes.
    pub fn append(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if let Some(PayloadPiece::Data(d)) = self.pieces.last_mut() {
            d.extend_from_slice(bytes);
            return;
        }
        self.pieces.push(PayloadPiece::Data(bytes.to_vec()));
    }

    /// Appends previous chunks unchanged.
    pub fn inject(&mut self, chunks: &[(Digest, u64)]) {
        if chunks.is_empty() {
            return;
        }
        self.len += chunks.iter().map(|c| c.1).sum::<u64>();
        if let Some(PayloadPiece::Reused(r)) = self.pieces.last_mut() {
            r.extend_from_slice(chunks);
            return;
        }
        self.pieces.push(PayloadPiece::Reused(chunks.to_vec()));
    }

    /// Appends the tail marker.
    pub fn finish(&mut self) {
        let mut tail = Vec::new();
        put_header(&mut tail, PAYLOAD_TAIL_MARKER, 0);
        self.append(&tail);
    }

    /// The stream's bytes when nothing was reused (data mode, first backups).
    pub fn data_only(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len as usize);
        for p in &self.pieces {
            match p {
                PayloadPiece::Data(d) => out.extend_from_slice(d),
                PayloadPiece::Reused(_) => return None,
            }
        }
        Some(out)
    }

    /// Number of reused chunks.
    pub fn reused_chunks(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                PayloadPiece::Reused(r) => r.len(),
                PayloadPiece::Data(_) => 0,
            })
            .sum()
    }
}
