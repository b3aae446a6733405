//! A sequential pxar decoder: reads an archive front to back into a list of entries in stream
//! order, checking item sizes, goodbye tails and payload references as it goes.

use std::collections::HashMap;

use crate::error::{ClientError, Result};

use super::format::*;

/// One decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedEntry {
    /// Path relative to the archive root (empty for the root).
    pub path: Vec<u8>,
    /// Stat data (the target's for hardlinks is not repeated: zero here).
    pub stat: Stat,
    pub kind: DecodedKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedKind {
    Dir,
    /// `data`: the content's range in the archive (unified) or in the payload stream.
    File {
        size: u64,
        data: (u64, u64),
        /// Offset of the PAYLOAD header in the payload stream (split archives).
        payload_offset: Option<u64>,
    },
    Symlink(Vec<u8>),
    /// Path of the first name of the same file.
    Hardlink(Vec<u8>),
    Device(u64, u64),
    Fifo,
    Socket,
}

fn bad(msg: String) -> ClientError {
    ClientError::Format(format!("pxar: {msg}"))
}

struct Dec<'a> {
    buf: &'a [u8],
    payload: Option<&'a [u8]>,
    pos: usize,
    out: Vec<DecodedEntry>,
    /// FILENAME offset → path, for hardlink targets.
    files: HashMap<u64, Vec<u8>>,
}

impl<'a> Dec<'a> {
    fn header(&self, at: usize) -> Result<(u64, usize)> {
        let h = self
            .buf
            .get(at..at + 16)
            .ok_or_else(|| bad(format!("truncated header at {at}")))?;
        let t = u64::from_le_bytes(h[..8].try_into().unwrap_or_default());
        let size = u64::from_le_bytes(h[8..].try_into().unwrap_or_default());
        if size < 16 || at as u64 + size > self.buf.len() as u64 {
            return Err(bad(format!("item at {at} has bad size {size}")));
        }
        Ok((t, size as usize))
    }

    fn body(&self, at: usize, size: usize) -> &'a [u8] {
        &self.buf[at + 16..at + size]
    }

    fn dir(&mut self, path: Vec<u8>, stat: Stat, entry_start: usize, root: bool) -> Result<()> {
        self.out.push(DecodedEntry {
            path: path.clone(),
            stat,
            kind: DecodedKind::Dir,
        });
        loop {
            let at = self.pos;
            let (t, size) = self.header(at)?;
            match t {
                FILENAME => {
                    let body = self.body(at, size);
                    let name = body
                        .strip_suffix(b"\0")
                        .ok_or_else(|| bad(format!("file name at {at} not NUL-terminated")))?;
                    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
                        return Err(bad(format!("bad file name at {at}")));
                    }
                    let child = if path.is_empty() {
                        name.to_vec()
                    } else {
                        [&path[..], b"/", name].concat()
                    };
                    self.pos = at + size;
                    self.entry(child, at as u64)?;
                }
                GOODBYE => {
                    let end = at + size;
                    let tail = &self.buf[end - 24..end];
                    let marker = u64::from_le_bytes(tail[..8].try_into().unwrap_or_default());
                    let back = u64::from_le_bytes(tail[8..16].try_into().unwrap_or_default());
                    let full = u64::from_le_bytes(tail[16..].try_into().unwrap_or_default());
                    let target = if root { 0 } else { entry_start as u64 };
                    if marker != GOODBYE_TAIL_MARKER
                        || full != size as u64
                        || back != at as u64 - target
                    {
                        return Err(bad(format!("bad goodbye tail at {at}")));
                    }
                    self.pos = end;
                    return Ok(());
                }
                other => return Err(bad(format!("unexpected item {other:016x} at {at}"))),
            }
        }
    }

    fn entry(&mut self, path: Vec<u8>, fstart: u64) -> Result<()> {
        let at = self.pos;
        let (t, size) = self.header(at)?;
        if t == HARDLINK {
            let body = self.body(at, size);
            if body.len() <= 8 {
                return Err(bad(format!("hardlink at {at} too short")));
            }
            let back = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
            let target = fstart
                .checked_sub(back)
                .and_then(|t| self.files.get(&t))
                .ok_or_else(|| bad(format!("hardlink at {at} points to no earlier file")))?
                .clone();
            self.pos = at + size;
            self.out.push(DecodedEntry {
                path,
                stat: Stat::default(),
                kind: DecodedKind::Hardlink(target),
            });
            return Ok(());
        }
        if t != ENTRY || size != 56 {
            return Err(bad(format!("expected ENTRY at {at}")));
        }
        let stat = Stat::from_bytes(self.body(at, size));
        self.pos = at + size;
        // extended attributes are skipped
        while let Ok((XATTR, s)) = self.header(self.pos) {
            self.pos += s;
        }
        let kind = match stat.file_type() {
            S_IFDIR => return self.dir(path, stat, at, false),
            S_IFREG => {
                let (t, s) = self.header(self.pos)?;
                let body = self.body(self.pos, s);
                let item_at = self.pos;
                self.pos += s;
                self.files.insert(fstart, path.clone());
                match t {
                    PAYLOAD => DecodedKind::File {
                        size: body.len() as u64,
                        data: (item_at as u64 + 16, body.len() as u64),
                        payload_offset: None,
                    },
                    PAYLOAD_REF if body.len() == 16 => {
                        let off = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
                        let size = u64::from_le_bytes(body[8..].try_into().unwrap_or_default());
                        if let Some(p) = self.payload {
                            let h = off
                                .checked_add(16 + size)
                                .filter(|e| *e <= p.len() as u64)
                                .map(|_| &p[off as usize..off as usize + 16])
                                .ok_or_else(|| {
                                    bad(format!("payload ref at {item_at} out of range"))
                                })?;
                            let ht = u64::from_le_bytes(h[..8].try_into().unwrap_or_default());
                            let hs = u64::from_le_bytes(h[8..].try_into().unwrap_or_default());
                            if ht != PAYLOAD || hs != size + 16 {
                                return Err(bad(format!(
                                    "payload ref at {item_at} points to no payload"
                                )));
                            }
                        }
                        DecodedKind::File {
                            size,
                            data: (off + 16, size),
                            payload_offset: Some(off),
                        }
                    }
                    other => {
                        return Err(bad(format!(
                            "file without payload ({other:016x}) at {item_at}"
                        )))
                    }
                }
            }
            S_IFLNK => {
                let (t, s) = self.header(self.pos)?;
                let body = self.body(self.pos, s);
                if t != SYMLINK {
                    return Err(bad(format!("symlink without target at {}", self.pos)));
                }
                self.pos += s;
                DecodedKind::Symlink(body.strip_suffix(b"\0").unwrap_or(body).to_vec())
            }
            S_IFBLK | S_IFCHR => {
                let (t, s) = self.header(self.pos)?;
                let body = self.body(self.pos, s);
                if t != DEVICE || body.len() != 16 {
                    return Err(bad(format!("device without numbers at {}", self.pos)));
                }
                self.pos += s;
                DecodedKind::Device(
                    u64::from_le_bytes(body[..8].try_into().unwrap_or_default()),
                    u64::from_le_bytes(body[8..].try_into().unwrap_or_default()),
                )
            }
            S_IFIFO => DecodedKind::Fifo,
            _ => DecodedKind::Socket,
        };
        self.out.push(DecodedEntry { path, stat, kind });
        Ok(())
    }
}

/// Decodes a whole archive (unified, or the metadata part of a split pair; with `payload`
/// given, every payload reference is checked against it).
pub fn decode(archive: &[u8], payload: Option<&[u8]>) -> Result<Vec<DecodedEntry>> {
    let mut d = Dec {
        buf: archive,
        payload,
        pos: 0,
        out: Vec::new(),
        files: HashMap::new(),
    };
    let (t, size) = d.header(0)?;
    if t == FORMAT_VERSION {
        d.pos = size;
        if let Ok((0xe309d79d9f7b771b, s)) = d.header(d.pos) {
            d.pos += s; // prelude
        }
    }
    let at = d.pos;
    let (t, size) = d.header(at)?;
    if t != ENTRY || size != 56 {
        return Err(bad("archive does not start with the root entry".into()));
    }
    let stat = Stat::from_bytes(d.body(at, size));
    d.pos = at + size;
    d.dir(Vec::new(), stat, at, true)?;
    if d.pos != archive.len() {
        return Err(bad(format!(
            "{} bytes after the root directory",
            archive.len() - d.pos
        )));
    }
    Ok(d.out)
}
