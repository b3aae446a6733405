//! Which index kind a file holds, and the `AnyIndex` wrapper used by verify, GC and the reader
//! session, which need the chunk list of an index without caring about its kind. The header
//! both kinds share lives in [`super::index_header`].

use super::digest::Digest;
use super::dynamic_index::DynamicIndex;
use super::fixed_index::FixedIndex;
use super::FormatError;

/// Which index format a snapshot file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexKind {
    Fixed,
    Dynamic,
}

/// Index kind from a file/archive name: `.fidx` → fixed, `.didx` → dynamic, else `None`.
pub fn index_kind_of(file_name: &str) -> Option<IndexKind> {
    if file_name.ends_with(".fidx") {
        Some(IndexKind::Fixed)
    } else if file_name.ends_with(".didx") {
        Some(IndexKind::Dynamic)
    } else {
        None
    }
}

/// A parsed index of either kind.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyIndex {
    Fixed(FixedIndex),
    Dynamic(DynamicIndex),
}

impl AnyIndex {
    /// Parse and validate index bytes of the given kind.
    pub fn parse(kind: IndexKind, bytes: &[u8]) -> Result<Self, FormatError> {
        Ok(match kind {
            IndexKind::Fixed => Self::Fixed(FixedIndex::parse(bytes)?),
            IndexKind::Dynamic => Self::Dynamic(DynamicIndex::parse(bytes)?),
        })
    }

    /// The kind of this index.
    pub fn kind(&self) -> IndexKind {
        match self {
            Self::Fixed(_) => IndexKind::Fixed,
            Self::Dynamic(_) => IndexKind::Dynamic,
        }
    }

    /// (digest, chunk length) for every entry, in index order (duplicates kept).
    pub fn chunks(&self) -> Vec<(Digest, u64)> {
        match self {
            Self::Fixed(f) => f
                .digests
                .iter()
                .enumerate()
                .map(|(i, d)| (*d, f.chunk_len(i)))
                .collect(),
            Self::Dynamic(d) => d
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.digest, d.chunk_len(i)))
                .collect(),
        }
    }

    /// Number of entries.
    pub fn chunk_count(&self) -> usize {
        match self {
            Self::Fixed(f) => f.chunk_count(),
            Self::Dynamic(d) => d.entries.len(),
        }
    }

    /// index_csum recomputed from the entries (what the manifest lists as `csum`).
    pub fn csum(&self) -> Digest {
        match self {
            Self::Fixed(f) => f.csum(),
            Self::Dynamic(d) => d.csum(),
        }
    }

    /// Content bytes described (what the manifest lists as `size`).
    pub fn size(&self) -> u64 {
        match self {
            Self::Fixed(f) => f.size,
            Self::Dynamic(d) => d.size(),
        }
    }

    /// Serialise back to the on-disk form.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Fixed(f) => f.to_bytes(),
            Self::Dynamic(d) => d.to_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::sha256;
    use crate::format::dynamic_index::DynamicEntry;
    use crate::format::index_header::stored_header_csum;

    #[test]
    fn kind_from_name() {
        assert_eq!(
            index_kind_of("drive-scsi0.img.fidx"),
            Some(IndexKind::Fixed)
        );
        assert_eq!(index_kind_of("root.pxar.didx"), Some(IndexKind::Dynamic));
        assert_eq!(index_kind_of("index.json.blob"), None);
        assert_eq!(index_kind_of("fidx"), None);
    }

    #[test]
    fn any_index_dispatch() {
        let d1 = sha256(b"a");
        let d2 = sha256(b"b");
        let f = FixedIndex {
            uuid: [1; 16],
            ctime: 5,
            size: 10,
            chunk_size: 8,
            digests: vec![d1, d2],
        };
        let fb = f.to_bytes();
        let any = AnyIndex::parse(IndexKind::Fixed, &fb).unwrap();
        assert_eq!(any.kind(), IndexKind::Fixed);
        assert_eq!(any.chunks(), vec![(d1, 8), (d2, 2)]);
        assert_eq!(any.size(), 10);
        assert_eq!(any.csum(), f.csum());
        assert_eq!(stored_header_csum(&fb), Some(f.csum()));
        assert!(AnyIndex::parse(IndexKind::Dynamic, &fb).is_err());

        let d = DynamicIndex {
            uuid: [2; 16],
            ctime: 6,
            entries: vec![
                DynamicEntry { end: 3, digest: d1 },
                DynamicEntry { end: 7, digest: d2 },
            ],
        };
        let any = AnyIndex::parse(IndexKind::Dynamic, &d.to_bytes()).unwrap();
        assert_eq!(any.chunks(), vec![(d1, 3), (d2, 4)]);
        assert_eq!(any.size(), 7);
        assert_eq!(any.chunk_count(), 2);
        assert_eq!(any.to_bytes(), d.to_bytes());
    }
}
