//! The catalog (`catalog.pcat1`, format v1): the file list a legacy-mode backup run uploads
//! next to its `.pxar` archives, for browsing without opening the archives.
//!
//! Layout: 8-byte magic, one table per directory written when the directory is closed (so every
//! child table comes before its parent's), the root table last, and a final u64 LE offset of the
//! root table. A table is varint(body length) ‖ varint(entry count) ‖ entries; an entry is a
//! type byte, varint name length, name bytes and type-specific varints. A directory entry
//! points back to its child table, so following entries always moves strictly backwards.

use bytes::Bytes;

use crate::format::pxar::{PxarError, ReadAt};

/// First 8 bytes of every catalog.
pub const CATALOG_MAGIC: [u8; 8] = [0x91, 0xfd, 0x60, 0xf9, 0xc4, 0x67, 0x58, 0xd5];
/// Longest name a catalog entry may have (bytes).
pub const MAX_NAME_LEN: usize = 4095;
/// Largest directory table read into memory.
pub const MAX_TABLE_LEN: u64 = 64 * 1024 * 1024;
/// Longest varints: u64 (10 bytes), i64 (11 bytes, the sign needs a terminating zero).
const MAX_VARINT_LEN: u64 = 11;

fn bad(msg: impl Into<String>) -> PxarError {
    PxarError::malformed("catalog", msg)
}

/// What a catalog entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogKind {
    /// A directory; its table starts at this offset.
    Directory {
        table: u64,
    },
    File {
        size: u64,
        mtime: i64,
    },
    Symlink,
    Hardlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
}

impl CatalogKind {
    /// The type byte (also the `type` of API listings).
    pub fn type_char(&self) -> char {
        match self {
            Self::Directory { .. } => 'd',
            Self::File { .. } => 'f',
            Self::Symlink => 'l',
            Self::Hardlink => 'h',
            Self::BlockDevice => 'b',
            Self::CharDevice => 'c',
            Self::Fifo => 'p',
            Self::Socket => 's',
        }
    }
}

/// One entry of a directory table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    pub name: Vec<u8>,
    pub kind: CatalogKind,
}

/// Decodes a varint u64 at `*pos` (7 bits per byte, least significant first).
pub fn decode_u64(buf: &[u8], pos: &mut usize) -> Result<u64, PxarError> {
    let mut value = 0u64;
    for i in 0..10 {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| bad("varint runs past the end"))?;
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(bad("varint overflows 64 bits"));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(bad("varint longer than 10 bytes"))
}

/// Decodes a varint i64: non-negative values as u64; a negative value as its magnitude with
/// every byte's high bit set, then a terminating zero byte.
pub fn decode_i64(buf: &[u8], pos: &mut usize) -> Result<i64, PxarError> {
    let mut magnitude = 0u64;
    for i in 0..MAX_VARINT_LEN as usize {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| bad("varint runs past the end"))?;
        *pos += 1;
        if b == 0 && i > 0 {
            return match magnitude {
                m if m <= i64::MAX as u64 => Ok(-(m as i64)),
                m if m == 1u64 << 63 => Ok(i64::MIN),
                _ => Err(bad("negative varint out of range")),
            };
        }
        if i == 10 || (i == 9 && b & 0x7e != 0) {
            return Err(bad("varint overflows 64 bits"));
        }
        magnitude |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return i64::try_from(magnitude).map_err(|_| bad("varint out of range"));
        }
    }
    Err(bad("varint longer than 11 bytes"))
}

/// Encodes a varint u64 (for tests and writers).
pub fn encode_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes a varint i64 (for tests and writers).
pub fn encode_i64(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        return encode_u64(out, v as u64);
    }
    let mut m = v.unsigned_abs();
    while m > 0 {
        out.push((m as u8 & 0x7f) | 0x80);
        m >>= 7;
    }
    out.push(0);
}

/// Parses the body of the table that starts at `start` (body = count ‖ entries).
pub fn parse_table(body: &[u8], start: u64) -> Result<Vec<CatalogEntry>, PxarError> {
    let mut pos = 0;
    let count = decode_u64(body, &mut pos)?;
    if count > body.len() as u64 {
        return Err(bad(format!(
            "table at {start} claims {count} entries in {} bytes",
            body.len()
        )));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let t = *body
            .get(pos)
            .ok_or_else(|| bad(format!("table at {start} ends inside an entry")))?;
        pos += 1;
        let name_len = decode_u64(body, &mut pos)?;
        if name_len as usize > MAX_NAME_LEN || name_len == 0 {
            return Err(bad(format!(
                "table at {start}: name length {name_len} out of range"
            )));
        }
        let name = body
            .get(pos..pos + name_len as usize)
            .ok_or_else(|| bad(format!("table at {start}: name runs past the table")))?
            .to_vec();
        pos += name_len as usize;
        let kind = match t {
            b'd' => {
                let back = decode_u64(body, &mut pos)?;
                let table = start
                    .checked_sub(back)
                    .filter(|t| back > 0 && *t >= CATALOG_MAGIC.len() as u64)
                    .ok_or_else(|| {
                        bad(format!(
                            "table at {start}: directory offset {back} does not point to an earlier table"
                        ))
                    })?;
                CatalogKind::Directory { table }
            }
            b'f' => {
                let size = decode_u64(body, &mut pos)?;
                let mtime = decode_i64(body, &mut pos)?;
                CatalogKind::File { size, mtime }
            }
            b'l' => CatalogKind::Symlink,
            b'h' => CatalogKind::Hardlink,
            b'b' => CatalogKind::BlockDevice,
            b'c' => CatalogKind::CharDevice,
            b'p' => CatalogKind::Fifo,
            b's' => CatalogKind::Socket,
            other => {
                return Err(bad(format!(
                    "table at {start}: unknown entry type byte 0x{other:02x}"
                )))
            }
        };
        entries.push(CatalogEntry { name, kind });
    }
    if pos != body.len() {
        return Err(bad(format!(
            "table at {start}: {} bytes left after {count} entries",
            body.len() - pos
        )));
    }
    Ok(entries)
}

/// A catalog opened over a byte source.
pub struct Catalog<S> {
    src: S,
    root_table: u64,
}

impl<S: ReadAt> Catalog<S> {
    /// Checks the magic and reads the root pointer.
    pub async fn open(src: S) -> Result<Self, PxarError> {
        let size = src.size();
        if size < 16 {
            return Err(bad(format!("{size} bytes is too short")));
        }
        let magic = read(&src, 0, 8).await?;
        if magic[..] != CATALOG_MAGIC {
            return Err(bad(format!("wrong magic {}", hex::encode(&magic))));
        }
        let tail = read(&src, size - 8, 8).await?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&tail);
        let root_table = u64::from_le_bytes(b);
        if root_table < 8 || root_table >= size - 8 {
            return Err(bad(format!("root table offset {root_table} out of range")));
        }
        Ok(Self { src, root_table })
    }

    /// Offset of the root table.
    pub fn root_table(&self) -> u64 {
        self.root_table
    }

    /// The entries of the table at `start`.
    pub async fn read_table(&self, start: u64) -> Result<Vec<CatalogEntry>, PxarError> {
        let data_end = self.src.size() - 8;
        if start < 8 || start >= data_end {
            return Err(bad(format!("table offset {start} out of range")));
        }
        let head = read(&self.src, start, MAX_VARINT_LEN.min(data_end - start)).await?;
        let mut pos = 0;
        let len = decode_u64(&head, &mut pos)?;
        if len == 0 {
            return Err(bad(format!("table at {start} is empty")));
        }
        if len > MAX_TABLE_LEN {
            return Err(PxarError::limit(
                "catalog",
                format!("table at {start} is {len} bytes, more than {MAX_TABLE_LEN}"),
            ));
        }
        let body_start = start + pos as u64;
        if body_start + len > data_end {
            return Err(bad(format!("table at {start} runs past the end")));
        }
        let body = read(&self.src, body_start, len).await?;
        parse_table(&body, start)
    }

    /// Resolves directory names from the root table; returns the final directory's entries.
    /// Each component matches the first entry of that name (PBS's rule); the result is an
    /// error when a component is missing or is not a directory.
    pub async fn list_path(&self, components: &[&[u8]]) -> Result<Vec<CatalogEntry>, PxarError> {
        let mut table = self.read_table(self.root_table).await?;
        for (i, component) in components.iter().enumerate() {
            let shown = || {
                let joined: Vec<u8> = components[..=i].join(&b'/');
                String::from_utf8_lossy(&joined).into_owned()
            };
            let entry = table
                .iter()
                .find(|e| e.name == *component)
                .ok_or_else(|| PxarError::NotFound(shown()))?;
            let CatalogKind::Directory { table: at } = entry.kind else {
                return Err(PxarError::NotADirectory("not a directory"));
            };
            table = self.read_table(at).await?;
        }
        Ok(table)
    }
}

async fn read<S: ReadAt>(src: &S, at: u64, len: u64) -> Result<Bytes, PxarError> {
    let len_usize = usize::try_from(len).map_err(|_| bad("read too large"))?;
    let mut out = Vec::with_capacity(len_usize);
    while (out.len() as u64) < len {
        let piece = src
            .read_at(at + out.len() as u64, len_usize - out.len())
            .await?;
        if piece.is_empty() {
            return Err(bad(format!(
                "unexpected end at offset {}",
                at + out.len() as u64
            )));
        }
        out.extend_from_slice(&piece);
    }
    Ok(Bytes::from(out))
}

/// What a successful full catalog check saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatalogSummary {
    pub tables: u64,
    pub entries: u64,
}

/// Fuzz-friendly check of a whole catalog held in memory: every table reachable from the root
/// is parsed once (shared tables are visited once, so the work stays linear).
pub fn fuzz_catalog(data: &[u8]) -> Result<CatalogSummary, PxarError> {
    let src = crate::format::pxar::MemSource::new(Bytes::copy_from_slice(data));
    futures::executor::block_on(async move {
        let catalog = Catalog::open(src).await?;
        let mut summary = CatalogSummary::default();
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![catalog.root_table()];
        while let Some(at) = stack.pop() {
            if !seen.insert(at) {
                continue;
            }
            let entries = catalog.read_table(at).await?;
            summary.tables += 1;
            summary.entries += entries.len() as u64;
            for e in entries {
                if let CatalogKind::Directory { table } = e.kind {
                    stack.push(table);
                }
            }
        }
        Ok(summary)
    })
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
