//! Entry bodies: the stat item (ENTRY / ENTRY_V1), the attribute items that may follow it, and
//! the item that says what kind of entry it is (payload, symlink, device, hardlink, or a
//! directory's first child).

use super::error::PxarError;
use super::header::{htype, le_u32, le_u64, MAX_PATH_LEN};
use super::source::{read_body, read_header, ReadAt};

/// File type and permission bits of `Stat::mode` (the Linux values).
pub mod mode {
    pub const IFMT: u64 = 0o170000;
    pub const IFSOCK: u64 = 0o140000;
    pub const IFLNK: u64 = 0o120000;
    pub const IFREG: u64 = 0o100000;
    pub const IFBLK: u64 = 0o060000;
    pub const IFDIR: u64 = 0o040000;
    pub const IFCHR: u64 = 0o020000;
    pub const IFIFO: u64 = 0o010000;
}

/// Most xattr items kept per entry, and most xattr bytes; more is refused as hostile.
const MAX_XATTRS: usize = 4096;
const MAX_XATTR_BYTES: usize = 4 * 1024 * 1024;

/// The stat data of an entry (the 40-byte ENTRY body).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub mode: u64,
    /// pxar's chattr / FAT attribute bits (not `st_flags`).
    pub flags: u64,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch, rounded down (pre-1970 times have positive nanos).
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
}

impl Stat {
    /// The current 40-byte layout.
    pub fn parse(b: &[u8]) -> Self {
        Self {
            mode: le_u64(&b[0..8]),
            flags: le_u64(&b[8..16]),
            uid: le_u32(&b[16..20]),
            gid: le_u32(&b[20..24]),
            mtime_secs: le_u64(&b[24..32]) as i64,
            mtime_nanos: le_u32(&b[32..36]),
        }
    }

    /// The old 32-byte layout, whose mtime is unsigned nanoseconds since the epoch.
    pub fn parse_v1(b: &[u8]) -> Self {
        let ns = le_u64(&b[24..32]);
        Self {
            mode: le_u64(&b[0..8]),
            flags: le_u64(&b[8..16]),
            uid: le_u32(&b[16..20]),
            gid: le_u32(&b[20..24]),
            mtime_secs: (ns / 1_000_000_000) as i64,
            mtime_nanos: (ns % 1_000_000_000) as u32,
        }
    }

    /// The 40-byte ENTRY body.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[0..8].copy_from_slice(&self.mode.to_le_bytes());
        b[8..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..20].copy_from_slice(&self.uid.to_le_bytes());
        b[20..24].copy_from_slice(&self.gid.to_le_bytes());
        b[24..32].copy_from_slice(&self.mtime_secs.to_le_bytes());
        b[32..36].copy_from_slice(&self.mtime_nanos.to_le_bytes());
        b
    }

    pub fn file_type(&self) -> u64 {
        self.mode & mode::IFMT
    }

    /// Permission bits including setuid/setgid/sticky.
    pub fn permissions(&self) -> u32 {
        (self.mode & 0o7777) as u32
    }

    /// mtime in whole seconds truncated toward zero (what listings report).
    pub fn mtime_truncated(&self) -> i64 {
        if self.mtime_secs < 0 && self.mtime_nanos > 0 {
            self.mtime_secs + 1
        } else {
            self.mtime_secs
        }
    }
}

/// One extended attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XAttr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Everything an entry carries besides its kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub stat: Stat,
    pub xattrs: Vec<XAttr>,
    /// Raw `security.capability` value.
    pub fcaps: Option<Vec<u8>>,
    pub quota_project_id: Option<u64>,
    /// Number of ACL items (their contents are not exported anywhere, so not kept).
    pub acl_items: usize,
}

/// Where a regular file's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileData {
    /// In the archive itself, starting at this offset (after the PAYLOAD header).
    Inline { offset: u64 },
    /// In the payload archive (`.ppxar`): offset of its PAYLOAD header there.
    PayloadRef { offset: u64 },
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// `content_start`: offset of the first child's FILENAME (or of the GOODBYE when empty).
    /// `end`: end of the directory's GOODBYE item; 0 until the caller knows it.
    Directory {
        content_start: u64,
        end: u64,
    },
    File {
        size: u64,
        data: FileData,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A later name of a regular file archived earlier; `target_filename_start` is the offset
    /// of that file's FILENAME item. `target_path` is informational only.
    Hardlink {
        target_filename_start: u64,
        target_path: Vec<u8>,
    },
    Device {
        major: u64,
        minor: u64,
    },
    Fifo,
    Socket,
}

impl EntryKind {
    /// The kind's name as PBS spells it in "cannot download file of type …".
    pub fn name(&self) -> &'static str {
        match self {
            Self::Directory { .. } => "Directory",
            Self::File { .. } => "File",
            Self::Symlink { .. } => "Symlink",
            Self::Hardlink { .. } => "Hardlink",
            Self::Device { .. } => "Device",
            Self::Fifo => "Fifo",
            Self::Socket => "Socket",
        }
    }

    /// The one-letter type of catalog listings.
    pub fn type_char(&self, meta: &Metadata) -> char {
        match self {
            Self::Directory { .. } => 'd',
            Self::File { .. } => 'f',
            Self::Symlink { .. } => 'l',
            Self::Hardlink { .. } => 'h',
            Self::Device { .. } if meta.stat.file_type() == mode::IFBLK => 'b',
            Self::Device { .. } => 'c',
            Self::Fifo => 'p',
            Self::Socket => 's',
        }
    }
}

/// One decoded entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Last path component (raw bytes); empty for the archive root.
    pub name: Vec<u8>,
    /// Offset of the FILENAME item; `None` for the root.
    pub filename_start: Option<u64>,
    /// Offset of the ENTRY (or HARDLINK) item.
    pub start: u64,
    /// End of the entry's items; for a directory the end of its GOODBYE.
    pub end: u64,
    /// Default (all zero) for hardlinks, which carry no metadata of their own.
    pub metadata: Metadata,
    pub kind: EntryKind,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Directory { .. })
    }
}

/// Checks a file name as read from an archive: not empty, not `.`/`..`, no `/` or NUL.
pub(crate) fn check_name(name: &[u8], at: u64) -> Result<(), PxarError> {
    let bad = |why: &str| {
        Err(PxarError::malformed(
            "pxar file name",
            format!("at offset {at}: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("empty name");
    }
    if name == b"." || name == b".." {
        return bad("name is '.' or '..'");
    }
    if name.contains(&b'/') || name.contains(&0) {
        return bad("name contains '/' or NUL");
    }
    if name.len() as u64 > MAX_PATH_LEN {
        return bad("name too long");
    }
    Ok(())
}

/// Body bytes of a NUL-terminated string item, without the NUL.
fn nul_terminated(body: &[u8], what: &'static str, at: u64) -> Result<Vec<u8>, PxarError> {
    match body.split_last() {
        Some((0, rest)) => Ok(rest.to_vec()),
        _ => Err(PxarError::malformed(
            what,
            format!("at offset {at}: not terminated by a NUL byte"),
        )),
    }
}

/// Reads the FILENAME item at `at`; returns the name and the offset right after the item.
pub(crate) async fn decode_filename<S: ReadAt + ?Sized>(
    src: &S,
    at: u64,
    limit: u64,
) -> Result<(Vec<u8>, u64), PxarError> {
    let h = read_header(src, at, limit).await?;
    if h.htype != htype::FILENAME {
        return Err(PxarError::malformed(
            "pxar entry",
            format!(
                "at offset {at}: expected FILENAME, found {} item",
                htype::name(h.htype)
            ),
        ));
    }
    let body = read_body(src, at, &h).await?;
    let name = nul_terminated(&body, "pxar file name", at)?;
    check_name(&name, at)?;
    Ok((name, at + h.full_size))
}

fn exact(body: &[u8], len: usize, what: &'static str, at: u64) -> Result<(), PxarError> {
    if body.len() != len {
        return Err(PxarError::malformed(
            what,
            format!(
                "at offset {at}: body is {} bytes, expected {len}",
                body.len()
            ),
        ));
    }
    Ok(())
}

fn once<T>(slot: &Option<T>, what: &'static str, at: u64) -> Result<(), PxarError> {
    if slot.is_some() {
        return Err(PxarError::malformed(
            what,
            format!("at offset {at}: item appears twice in one entry"),
        ));
    }
    Ok(())
}

/// Decodes the entry whose first item (ENTRY, ENTRY_V1 or HARDLINK) is at `start`; nothing of
/// it may reach `limit`. `filename_start` is needed to resolve a hardlink's back-offset. For a
/// directory the returned `end` is its `content_start` (its real end is found by the caller).
pub(crate) async fn decode_entry<S: ReadAt + ?Sized>(
    src: &S,
    start: u64,
    limit: u64,
    filename_start: Option<u64>,
) -> Result<(Metadata, EntryKind, u64), PxarError> {
    let h = read_header(src, start, limit).await?;
    let body = match h.htype {
        htype::ENTRY | htype::ENTRY_V1 | htype::HARDLINK => read_body(src, start, &h).await?,
        other => {
            return Err(PxarError::malformed(
                "pxar entry",
                format!(
                    "at offset {start}: expected ENTRY, found {} item ({other:016x})",
                    htype::name(other)
                ),
            ))
        }
    };
    if h.htype == htype::HARDLINK {
        let fname = filename_start.ok_or_else(|| {
            PxarError::malformed("pxar hardlink", format!("at offset {start}: the root"))
        })?;
        if body.len() <= 8 {
            return Err(PxarError::malformed(
                "pxar hardlink",
                format!("at offset {start}: body too short"),
            ));
        }
        let back = le_u64(&body[..8]);
        if back == 0 || back > fname {
            return Err(PxarError::malformed(
                "pxar hardlink",
                format!("at offset {start}: back-offset {back} does not point before the link"),
            ));
        }
        let target_path = nul_terminated(&body[8..], "pxar hardlink", start)?;
        let kind = EntryKind::Hardlink {
            target_filename_start: fname - back,
            target_path,
        };
        return Ok((Metadata::default(), kind, start + h.full_size));
    }
    let stat = match h.htype {
        htype::ENTRY => {
            exact(&body, 40, "pxar ENTRY", start)?;
            Stat::parse(&body)
        }
        _ => {
            exact(&body, 32, "pxar ENTRY_V1", start)?;
            Stat::parse_v1(&body)
        }
    };
    let ft = stat.file_type();
    if !matches!(
        ft,
        mode::IFSOCK
            | mode::IFLNK
            | mode::IFREG
            | mode::IFBLK
            | mode::IFDIR
            | mode::IFCHR
            | mode::IFIFO
    ) {
        return Err(PxarError::malformed(
            "pxar ENTRY",
            format!(
                "at offset {start}: unknown file type in mode {:o}",
                stat.mode
            ),
        ));
    }
    let mut meta = Metadata {
        stat,
        ..Metadata::default()
    };
    let (kind, end) = decode_kind(src, &mut meta, start + h.full_size, limit).await?;
    Ok((meta, kind, end))
}

/// Reads attribute items and the terminating item after the stat item at `pos`.
async fn decode_kind<S: ReadAt + ?Sized>(
    src: &S,
    meta: &mut Metadata,
    mut pos: u64,
    limit: u64,
) -> Result<(EntryKind, u64), PxarError> {
    let ft = meta.stat.file_type();
    let mut group_obj: Option<()> = None;
    let mut acl_default: Option<()> = None;
    let mut xattr_bytes = 0usize;
    let wrong = |what: &str, at: u64| {
        PxarError::malformed(
            "pxar entry",
            format!(
                "at offset {at}: {what} item in an entry of mode {:o}",
                meta.stat.mode
            ),
        )
    };
    loop {
        if pos == limit {
            return match ft {
                mode::IFDIR => Ok((
                    EntryKind::Directory {
                        content_start: pos,
                        end: 0,
                    },
                    pos,
                )),
                mode::IFIFO => Ok((EntryKind::Fifo, pos)),
                mode::IFSOCK => Ok((EntryKind::Socket, pos)),
                _ => Err(PxarError::malformed(
                    "pxar entry",
                    format!("at offset {pos}: entry ends without its content item"),
                )),
            };
        }
        let h = read_header(src, pos, limit).await?;
        let next = pos + h.full_size;
        match h.htype {
            htype::XATTR => {
                let body = read_body(src, pos, &h).await?;
                let Some(nul) = body.iter().position(|b| *b == 0) else {
                    return Err(PxarError::malformed(
                        "pxar XATTR",
                        format!("at offset {pos}: name not NUL-terminated"),
                    ));
                };
                xattr_bytes += body.len();
                if meta.xattrs.len() >= MAX_XATTRS || xattr_bytes > MAX_XATTR_BYTES {
                    return Err(PxarError::limit(
                        "pxar XATTR",
                        format!("at offset {pos}: too many extended attributes in one entry"),
                    ));
                }
                meta.xattrs.push(XAttr {
                    name: body[..nul].to_vec(),
                    value: body[nul + 1..].to_vec(),
                });
            }
            htype::ACL_USER
            | htype::ACL_GROUP
            | htype::ACL_DEFAULT_USER
            | htype::ACL_DEFAULT_GROUP => {
                exact(&read_body(src, pos, &h).await?, 16, "pxar ACL item", pos)?;
                meta.acl_items += 1;
            }
            htype::ACL_GROUP_OBJ => {
                once(&group_obj, "pxar ACL_GROUP_OBJ", pos)?;
                exact(
                    &read_body(src, pos, &h).await?,
                    8,
                    "pxar ACL_GROUP_OBJ",
                    pos,
                )?;
                group_obj = Some(());
                meta.acl_items += 1;
            }
            htype::ACL_DEFAULT => {
                once(&acl_default, "pxar ACL_DEFAULT", pos)?;
                exact(&read_body(src, pos, &h).await?, 32, "pxar ACL_DEFAULT", pos)?;
                acl_default = Some(());
                meta.acl_items += 1;
            }
            htype::FCAPS => {
                once(&meta.fcaps, "pxar FCAPS", pos)?;
                meta.fcaps = Some(read_body(src, pos, &h).await?.to_vec());
            }
            htype::QUOTA_PROJID => {
                once(&meta.quota_project_id, "pxar QUOTA_PROJID", pos)?;
                let body = read_body(src, pos, &h).await?;
                exact(&body, 8, "pxar QUOTA_PROJID", pos)?;
                meta.quota_project_id = Some(le_u64(&body));
            }
            htype::PAYLOAD => {
                if ft != mode::IFREG {
                    return Err(wrong("PAYLOAD", pos));
                }
                let data = FileData::Inline {
                    offset: pos + super::header::HEADER_LEN,
                };
                return Ok((
                    EntryKind::File {
                        size: h.content_size(),
                        data,
                    },
                    next,
                ));
            }
            htype::PAYLOAD_REF => {
                if ft != mode::IFREG {
                    return Err(wrong("PAYLOAD_REF", pos));
                }
                let body = read_body(src, pos, &h).await?;
                exact(&body, 16, "pxar PAYLOAD_REF", pos)?;
                let data = FileData::PayloadRef {
                    offset: le_u64(&body[..8]),
                };
                let size = le_u64(&body[8..16]);
                return Ok((EntryKind::File { size, data }, next));
            }
            htype::SYMLINK => {
                if ft != mode::IFLNK {
                    return Err(wrong("SYMLINK", pos));
                }
                let body = read_body(src, pos, &h).await?;
                let target = nul_terminated(&body, "pxar SYMLINK", pos)?;
                return Ok((EntryKind::Symlink { target }, next));
            }
            htype::DEVICE => {
                if ft != mode::IFCHR && ft != mode::IFBLK {
                    return Err(wrong("DEVICE", pos));
                }
                let body = read_body(src, pos, &h).await?;
                exact(&body, 16, "pxar DEVICE", pos)?;
                let kind = EntryKind::Device {
                    major: le_u64(&body[..8]),
                    minor: le_u64(&body[8..16]),
                };
                return Ok((kind, next));
            }
            htype::FILENAME | htype::GOODBYE => {
                return match ft {
                    mode::IFDIR => Ok((
                        EntryKind::Directory {
                            content_start: pos,
                            end: 0,
                        },
                        pos,
                    )),
                    mode::IFIFO => Ok((EntryKind::Fifo, pos)),
                    mode::IFSOCK => Ok((EntryKind::Socket, pos)),
                    _ => Err(PxarError::malformed(
                        "pxar entry",
                        format!(
                            "at offset {pos}: entry of mode {:o} has no content item",
                            meta.stat.mode
                        ),
                    )),
                };
            }
            other => {
                return Err(PxarError::malformed(
                    "pxar entry",
                    format!(
                        "at offset {pos}: unexpected {} item ({other:016x})",
                        htype::name(other)
                    ),
                ))
            }
        }
        pos = next;
    }
}
