//! The byte-range source a reader pulls archive bytes from. The datastore implements it over a
//! `.didx` (loading only the chunks a read touches); tests and fuzzing use [`MemSource`].

use bytes::Bytes;

use super::error::PxarError;
use super::header::{Header, HEADER_LEN};

/// Random access to the bytes of one archive stream.
#[async_trait::async_trait]
pub trait ReadAt: Send + Sync {
    /// Total stream length.
    fn size(&self) -> u64;

    /// Up to `len` bytes starting at `offset` (fewer only at the end of the stream). Readers
    /// call it with `offset < size()` and small `len`; big contents are read piece by piece.
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, PxarError>;
}

/// An archive held in memory.
#[derive(Clone, Debug, Default)]
pub struct MemSource(pub Bytes);

impl MemSource {
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self(data.into())
    }
}

#[async_trait::async_trait]
impl ReadAt for MemSource {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, PxarError> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let end = start.saturating_add(len).min(self.0.len());
        Ok(self.0.slice(start..end))
    }
}

/// Exactly `len` bytes at `offset`, gathered over several reads if the source returns pieces;
/// refuses ranges past the end of the stream.
pub(crate) async fn read_exact<S: ReadAt + ?Sized>(
    src: &S,
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<Bytes, PxarError> {
    let end = offset
        .checked_add(len)
        .filter(|e| *e <= src.size())
        .ok_or_else(|| {
            PxarError::malformed(
                what,
                format!(
                    "{len} bytes at offset {offset} run past the end of the archive ({} bytes)",
                    src.size()
                ),
            )
        })?;
    let len = usize::try_from(len).map_err(|_| PxarError::limit(what, "read too large"))?;
    let first = src.read_at(offset, len).await?;
    if first.len() == len {
        return Ok(first);
    }
    let mut buf = Vec::with_capacity(len);
    buf.extend_from_slice(&first);
    while (buf.len() as u64) < end - offset {
        let at = offset + buf.len() as u64;
        let piece = src.read_at(at, len - buf.len()).await?;
        if piece.is_empty() {
            return Err(PxarError::Source(format!(
                "archive source returned no bytes at offset {at}"
            )));
        }
        buf.extend_from_slice(&piece);
    }
    buf.truncate(len);
    Ok(Bytes::from(buf))
}

/// The item header at `offset`, which must lie completely before `limit`.
pub(crate) async fn read_header<S: ReadAt + ?Sized>(
    src: &S,
    offset: u64,
    limit: u64,
) -> Result<Header, PxarError> {
    if offset.checked_add(HEADER_LEN).is_none_or(|e| e > limit) {
        return Err(PxarError::malformed(
            "pxar item header",
            format!("at offset {offset}: no room for a header before offset {limit}"),
        ));
    }
    let bytes = read_exact(src, offset, HEADER_LEN, "pxar item header").await?;
    let header = Header::parse(&bytes, offset)?;
    if offset
        .checked_add(header.full_size)
        .is_none_or(|e| e > limit)
    {
        return Err(PxarError::malformed(
            "pxar item",
            format!(
                "at offset {offset}: {} item of {} bytes runs past its container's end {limit}",
                super::header::htype::name(header.htype),
                header.full_size
            ),
        ));
    }
    Ok(header)
}

/// The body of the item whose header is at `offset` (after its limit check).
pub(crate) async fn read_body<S: ReadAt + ?Sized>(
    src: &S,
    offset: u64,
    header: &Header,
) -> Result<Bytes, PxarError> {
    header.check_content_limit(offset)?;
    read_exact(
        src,
        offset + HEADER_LEN,
        header.content_size(),
        "pxar item body",
    )
    .await
}
