//! The 16-byte item header (type hash + full size) and the item type constants.
//!
//! Each type constant is SipHash-2-4 (keyed with the pxar hash key, see
//! [`super::hash_filename`]) of an ASCII label such as `__PROXMOX_FORMAT_ENTRY_V2__`; the
//! tests recompute them all.

use super::error::PxarError;

/// Length of an item header: u64 LE type, u64 LE full size (header included).
pub const HEADER_LEN: u64 = 16;

/// Item type constants.
pub mod htype {
    pub const FORMAT_VERSION: u64 = 0x730f6c75df16a40d;
    pub const ENTRY: u64 = 0xd5956474e588acef;
    pub const ENTRY_V1: u64 = 0x11da850a1c1cceff;
    pub const PRELUDE: u64 = 0xe309d79d9f7b771b;
    pub const FILENAME: u64 = 0x16701121063917b3;
    pub const SYMLINK: u64 = 0x27f971e7dbf5dc5f;
    pub const DEVICE: u64 = 0x9fc9e906586d5ce9;
    pub const XATTR: u64 = 0x0dab0229b57dcd03;
    pub const ACL_USER: u64 = 0x2ce8540a457d55b8;
    pub const ACL_GROUP: u64 = 0x136e3eceb04c03ab;
    pub const ACL_GROUP_OBJ: u64 = 0x10868031e9582876;
    pub const ACL_DEFAULT: u64 = 0xbbbb13415a6896f5;
    pub const ACL_DEFAULT_USER: u64 = 0xc89357b40532cd1f;
    pub const ACL_DEFAULT_GROUP: u64 = 0xf90a8a5816038ffe;
    pub const FCAPS: u64 = 0x2da9dd9db5f7fb67;
    pub const QUOTA_PROJID: u64 = 0xe07540e82f7d1cbb;
    pub const HARDLINK: u64 = 0x51269c8422bd7275;
    pub const PAYLOAD: u64 = 0x28147a1b0b7c1a25;
    pub const PAYLOAD_REF: u64 = 0x419d3d6bc4ba977e;
    pub const GOODBYE: u64 = 0x2fec4fa642d5731d;
    /// Not an item type: the hash field of the last record of every goodbye table.
    pub const GOODBYE_TAIL_MARKER: u64 = 0xef5eed5b753e1555;
    pub const PAYLOAD_START_MARKER: u64 = 0x834c68c2194a4ed2;
    pub const PAYLOAD_TAIL_MARKER: u64 = 0x6c72b78b984c81b5;

    /// Human name of a type, for error messages.
    pub fn name(t: u64) -> &'static str {
        match t {
            FORMAT_VERSION => "FORMAT_VERSION",
            ENTRY => "ENTRY",
            ENTRY_V1 => "ENTRY_V1",
            PRELUDE => "PRELUDE",
            FILENAME => "FILENAME",
            SYMLINK => "SYMLINK",
            DEVICE => "DEVICE",
            XATTR => "XATTR",
            ACL_USER => "ACL_USER",
            ACL_GROUP => "ACL_GROUP",
            ACL_GROUP_OBJ => "ACL_GROUP_OBJ",
            ACL_DEFAULT => "ACL_DEFAULT",
            ACL_DEFAULT_USER => "ACL_DEFAULT_USER",
            ACL_DEFAULT_GROUP => "ACL_DEFAULT_GROUP",
            FCAPS => "FCAPS",
            QUOTA_PROJID => "QUOTA_PROJID",
            HARDLINK => "HARDLINK",
            PAYLOAD => "PAYLOAD",
            PAYLOAD_REF => "PAYLOAD_REF",
            GOODBYE => "GOODBYE",
            PAYLOAD_START_MARKER => "PAYLOAD_START_MARKER",
            PAYLOAD_TAIL_MARKER => "PAYLOAD_TAIL_MARKER",
            _ => "UNKNOWN",
        }
    }
}

/// Longest file name or symlink target (Linux PATH_MAX), without the trailing NUL.
pub const MAX_PATH_LEN: u64 = 4096;
/// Longest xattr or fcaps body: a 255-byte name, its NUL and a 64 KiB value.
pub const MAX_XATTR_LEN: u64 = 255 + 1 + 64 * 1024;

/// Largest body a reader accepts for a type; `None` means the body is skipped or streamed,
/// never read into memory whole.
pub fn max_content_size(t: u64) -> Option<u64> {
    use htype::*;
    Some(match t {
        FORMAT_VERSION | QUOTA_PROJID | ACL_GROUP_OBJ => 8,
        ENTRY => 40,
        ENTRY_V1 => 32,
        FILENAME | SYMLINK => MAX_PATH_LEN + 1,
        HARDLINK => 8 + MAX_PATH_LEN + 1,
        DEVICE | ACL_USER | ACL_GROUP | ACL_DEFAULT_USER | ACL_DEFAULT_GROUP | PAYLOAD_REF => 16,
        ACL_DEFAULT => 32,
        XATTR | FCAPS => MAX_XATTR_LEN,
        PAYLOAD_START_MARKER | PAYLOAD_TAIL_MARKER => 0,
        _ => return None,
    })
}

/// One item header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub htype: u64,
    pub full_size: u64,
}

impl Header {
    /// Parse 16 bytes; refuses a full size below the header length.
    pub fn parse(bytes: &[u8], at: u64) -> Result<Self, PxarError> {
        let Some(b) = bytes.get(..16) else {
            return Err(PxarError::malformed(
                "pxar item header",
                format!("at offset {at}: only {} bytes", bytes.len()),
            ));
        };
        let htype = le_u64(&b[..8]);
        let full_size = le_u64(&b[8..16]);
        if full_size < HEADER_LEN {
            return Err(PxarError::malformed(
                "pxar item header",
                format!(
                    "at offset {at}: {} item claims size {full_size}, below the 16-byte header",
                    htype::name(htype)
                ),
            ));
        }
        Ok(Self { htype, full_size })
    }

    /// Body length.
    pub fn content_size(&self) -> u64 {
        self.full_size - HEADER_LEN
    }

    /// The 16 bytes of this header.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.htype.to_le_bytes());
        out[8..].copy_from_slice(&self.full_size.to_le_bytes());
        out
    }

    /// Refuses a body larger than the type allows (checked before anything is allocated).
    pub fn check_content_limit(&self, at: u64) -> Result<(), PxarError> {
        if let Some(max) = max_content_size(self.htype) {
            if self.content_size() > max {
                return Err(PxarError::malformed(
                    "pxar item",
                    format!(
                        "at offset {at}: {} body of {} bytes exceeds the limit of {max}",
                        htype::name(self.htype),
                        self.content_size()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Little-endian u64 of the first 8 bytes (callers pass at least 8).
pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Little-endian u32 of the first 4 bytes (callers pass at least 4).
pub(crate) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}
