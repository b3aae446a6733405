//! Item types, the item header, the stat body and the goodbye hash.

use std::hash::Hasher;

pub const FORMAT_VERSION: u64 = 0x730f6c75df16a40d;
pub const ENTRY: u64 = 0xd5956474e588acef;
pub const FILENAME: u64 = 0x16701121063917b3;
pub const SYMLINK: u64 = 0x27f971e7dbf5dc5f;
pub const DEVICE: u64 = 0x9fc9e906586d5ce9;
pub const HARDLINK: u64 = 0x51269c8422bd7275;
pub const PAYLOAD: u64 = 0x28147a1b0b7c1a25;
pub const PAYLOAD_REF: u64 = 0x419d3d6bc4ba977e;
pub const GOODBYE: u64 = 0x2fec4fa642d5731d;
pub const GOODBYE_TAIL_MARKER: u64 = 0xef5eed5b753e1555;
pub const PAYLOAD_START_MARKER: u64 = 0x834c68c2194a4ed2;
pub const PAYLOAD_TAIL_MARKER: u64 = 0x6c72b78b984c81b5;
pub const XATTR: u64 = 0x0dab0229b57dcd03;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// Appends an item (header + body).
pub fn put_item(out: &mut Vec<u8>, htype: u64, body: &[u8]) {
    put_header(out, htype, body.len() as u64);
    out.extend_from_slice(body);
}

/// Appends an item header for a body of `len` bytes.
pub fn put_header(out: &mut Vec<u8>, htype: u64, len: u64) {
    out.extend_from_slice(&htype.to_le_bytes());
    out.extend_from_slice(&(len + 16).to_le_bytes());
}

/// SipHash-2-4 with the pxar key, over a name's raw bytes.
pub fn name_hash(name: &[u8]) -> u64 {
    let mut h = siphasher::sip::SipHasher24::new_with_keys(0x83ac3f1cfbb450db, 0xaa4f1b6879369fbd);
    h.write(name);
    h.finish()
}

/// The per-entry stat data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    pub mode: u32,
    pub flags: u64,
    pub uid: u32,
    pub gid: u32,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
}

impl Stat {
    pub fn from_metadata(m: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            mode: m.mode(),
            flags: 0,
            uid: m.uid(),
            gid: m.gid(),
            mtime_secs: m.mtime(),
            mtime_nanos: m.mtime_nsec() as u32,
        }
    }

    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    /// The 40-byte ENTRY body.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[0..8].copy_from_slice(&u64::from(self.mode).to_le_bytes());
        b[8..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..20].copy_from_slice(&self.uid.to_le_bytes());
        b[20..24].copy_from_slice(&self.gid.to_le_bytes());
        b[24..32].copy_from_slice(&self.mtime_secs.to_le_bytes());
        b[32..36].copy_from_slice(&self.mtime_nanos.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Stat {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        Stat {
            mode: u64_at(0) as u32,
            flags: u64_at(8),
            uid: u32_at(16),
            gid: u32_at(20),
            mtime_secs: u64_at(24) as i64,
            mtime_nanos: u32_at(32),
        }
    }
}

/// glibc's split of `st_rdev` into major and minor.
pub fn split_rdev(rdev: u64) -> (u64, u64) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major, minor)
}

/// Sorted goodbye records laid out as an implicit binary search tree: array positions are
/// filled in in-order order of the complete tree, children of i at 2i+1 and 2i+2.
pub fn goodbye_order<T: Copy>(sorted: &[T]) -> Vec<T> {
    let mut out: Vec<Option<T>> = vec![None; sorted.len()];
    // iterative in-order walk over positions
    let mut stack = Vec::new();
    let mut i = 0usize;
    let mut next = 0usize;
    loop {
        while i < sorted.len() {
            stack.push(i);
            i = 2 * i + 1;
        }
        let Some(top) = stack.pop() else { break };
        out[top] = Some(sorted[next]);
        next += 1;
        i = 2 * top + 2;
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_layout() {
        assert_eq!(name_hash(b"x.txt"), 0x934b062586461b6a);
        assert_eq!(name_hash(b"__PROXMOX_FORMAT_ENTRY_V2__"), ENTRY);
        assert_eq!(
            name_hash(b"__PROXMOX_FORMAT_PXAR_PAYLOAD_REF__"),
            PAYLOAD_REF
        );
        assert_eq!(goodbye_order(&[0, 1, 2, 3, 4]), vec![3, 1, 4, 0, 2]);
        assert_eq!(goodbye_order(&[0]), vec![0]);
        assert_eq!(split_rdev(0x0103), (1, 3));
    }
}
