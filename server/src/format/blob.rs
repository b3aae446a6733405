//! DataBlob container (docs/formats.md#datablob): the envelope of every chunk and every `.blob`
//! file.
//!
//! Layout: magic(8) ‖ crc32 LE(4) ‖ [iv(16) ‖ tag(16) if encrypted] ‖ payload. The CRC covers
//! only the payload. Parsing is zero-copy; decoding is bounded so a zstd bomb cannot exhaust
//! memory.

use std::io::Read;

use super::digest::{digest_to_hex, sha256, Digest, Sha256};
use super::FormatError;

/// Largest blob the encoder accepts (client-side library limit, docs/formats.md#size-limits).
pub const MAX_BLOB_SIZE: usize = 128 * 1024 * 1024;
/// Largest decoded chunk the backup API accepts (`size` parameter upper bound).
pub const MAX_CHUNK_SIZE: u64 = 16 * 1024 * 1024;
/// Header length of plain blobs: magic + crc.
pub const PLAIN_HEADER_LEN: usize = 12;
/// Header length of encrypted blobs: magic + crc + iv + tag.
pub const ENCRYPTED_HEADER_LEN: usize = 44;

/// sha256("Proxmox Backup uncompressed blob v1.0")[..8]
pub const MAGIC_UNCOMPRESSED: [u8; 8] = [66, 171, 56, 7, 190, 131, 112, 161];
/// sha256("Proxmox Backup zstd compressed blob v1.0")[..8]
pub const MAGIC_COMPRESSED: [u8; 8] = [49, 185, 88, 66, 111, 182, 163, 127];
/// sha256("Proxmox Backup encrypted blob v1.0")[..8]
pub const MAGIC_ENCRYPTED: [u8; 8] = [123, 103, 133, 190, 34, 45, 76, 240];
/// sha256("Proxmox Backup zstd compressed encrypted blob v1.0")[..8]
pub const MAGIC_ENCRYPTED_COMPRESSED: [u8; 8] = [230, 89, 27, 191, 11, 191, 216, 11];
/// Removed pre-1.0 "authenticated" blob; recognised only to reject it clearly
/// (docs/formats.md#legacy-signed-blobs).
pub const MAGIC_LEGACY_AUTHENTICATED: [u8; 8] = [31, 135, 238, 226, 145, 206, 5, 2];
/// Removed pre-1.0 "zstd compressed authenticated" blob; recognised only to reject it.
pub const MAGIC_LEGACY_AUTHENTICATED_COMPRESSED: [u8; 8] = [126, 166, 15, 190, 145, 31, 169, 96];

/// The four blob variants PBS produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    Uncompressed,
    Compressed,
    Encrypted,
    EncryptedCompressed,
}

impl BlobKind {
    /// Identify the kind from (at least) the first 8 bytes.
    pub fn from_magic(m: &[u8]) -> Result<Self, FormatError> {
        let Some(m) = m.get(..8) else {
            return Err(FormatError::BlobTooShort {
                kind: "blob",
                len: m.len(),
                min: PLAIN_HEADER_LEN,
            });
        };
        match m {
            _ if m == MAGIC_UNCOMPRESSED => Ok(Self::Uncompressed),
            _ if m == MAGIC_COMPRESSED => Ok(Self::Compressed),
            _ if m == MAGIC_ENCRYPTED => Ok(Self::Encrypted),
            _ if m == MAGIC_ENCRYPTED_COMPRESSED => Ok(Self::EncryptedCompressed),
            _ if m == MAGIC_LEGACY_AUTHENTICATED || m == MAGIC_LEGACY_AUTHENTICATED_COMPRESSED => {
                Err(FormatError::LegacySignedBlob(hex::encode(m)))
            }
            _ => Err(FormatError::UnknownMagic(hex::encode(m))),
        }
    }

    /// The 8 magic bytes of this kind.
    pub fn magic(self) -> [u8; 8] {
        match self {
            Self::Uncompressed => MAGIC_UNCOMPRESSED,
            Self::Compressed => MAGIC_COMPRESSED,
            Self::Encrypted => MAGIC_ENCRYPTED,
            Self::EncryptedCompressed => MAGIC_ENCRYPTED_COMPRESSED,
        }
    }

    /// Encrypted blobs carry iv+tag and cannot be checked by the server.
    pub fn is_encrypted(self) -> bool {
        matches!(self, Self::Encrypted | Self::EncryptedCompressed)
    }

    /// Payload (or plaintext before encryption) is one zstd frame.
    pub fn is_compressed(self) -> bool {
        matches!(self, Self::Compressed | Self::EncryptedCompressed)
    }

    /// 12 for plain, 44 for encrypted blobs; also the minimum legal blob length.
    pub fn header_len(self) -> usize {
        if self.is_encrypted() {
            ENCRYPTED_HEADER_LEN
        } else {
            PLAIN_HEADER_LEN
        }
    }
}

/// Zero-copy view over encoded blob bytes whose magic and minimum length were checked.
#[derive(Clone, Copy, Debug)]
pub struct BlobView<'a> {
    raw: &'a [u8],
    kind: BlobKind,
}

impl<'a> BlobView<'a> {
    /// Check magic and minimum length (12 plain / 44 encrypted). Does NOT check the CRC.
    pub fn parse(raw: &'a [u8]) -> Result<Self, FormatError> {
        if raw.len() < PLAIN_HEADER_LEN {
            return Err(FormatError::BlobTooShort {
                kind: "blob",
                len: raw.len(),
                min: PLAIN_HEADER_LEN,
            });
        }
        let kind = BlobKind::from_magic(raw)?;
        if raw.len() < kind.header_len() {
            return Err(FormatError::BlobTooShort {
                kind: "encrypted blob",
                len: raw.len(),
                min: kind.header_len(),
            });
        }
        Ok(Self { raw, kind })
    }

    /// Which of the four variants this is.
    pub fn kind(&self) -> BlobKind {
        self.kind
    }

    /// The whole encoded blob.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// CRC32 stored at bytes 8..12 (little-endian).
    pub fn stored_crc(&self) -> u32 {
        read_crc(self.raw)
    }

    /// CRC32 (IEEE) over the payload, i.e. everything after the header.
    pub fn compute_crc(&self) -> u32 {
        crc32fast::hash(self.payload())
    }

    /// Error if the stored CRC differs from the payload's CRC (blobs loaded or uploaded as files).
    pub fn verify_crc(&self) -> Result<(), FormatError> {
        let (stored, computed) = (self.stored_crc(), self.compute_crc());
        if stored != computed {
            return Err(FormatError::BlobCrcMismatch { stored, computed });
        }
        Ok(())
    }

    /// Bytes after the header (raw data, zstd frame, or ciphertext).
    pub fn payload(&self) -> &'a [u8] {
        &self.raw[self.kind.header_len()..]
    }

    /// AES-GCM IV of an encrypted blob.
    pub fn iv(&self) -> Option<&'a [u8]> {
        self.kind.is_encrypted().then(|| &self.raw[12..28])
    }

    /// AES-GCM tag of an encrypted blob.
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.kind.is_encrypted().then(|| &self.raw[28..44])
    }

    /// Decode a plain blob, refusing to produce more than `max_len` bytes (zip-bomb safe).
    pub fn decode(&self, max_len: usize) -> Result<Vec<u8>, FormatError> {
        match self.kind {
            BlobKind::Encrypted | BlobKind::EncryptedCompressed => Err(FormatError::EncryptedBlob),
            BlobKind::Uncompressed => {
                let p = self.payload();
                if p.len() > max_len {
                    return Err(FormatError::DecodedTooLarge { limit: max_len });
                }
                Ok(p.to_vec())
            }
            BlobKind::Compressed => zstd_decode_bounded(self.payload(), max_len),
        }
    }

    /// SHA-256 and length of the decoded payload, computed while decoding in small pieces so
    /// the decoded bytes are never held whole; `DecodedTooLarge` past `max_len`.
    pub fn hash_decoded(&self, max_len: usize) -> Result<(Digest, u64), FormatError> {
        match self.kind {
            BlobKind::Encrypted | BlobKind::EncryptedCompressed => Err(FormatError::EncryptedBlob),
            BlobKind::Uncompressed => {
                let p = self.payload();
                if p.len() > max_len {
                    return Err(FormatError::DecodedTooLarge { limit: max_len });
                }
                Ok((sha256(p), p.len() as u64))
            }
            BlobKind::Compressed => zstd_hash_bounded(self.payload(), max_len),
        }
    }
}

/// Decoded bytes per step of [`zstd_hash_bounded`].
const HASH_STEP: usize = 64 * 1024;

thread_local! {
    /// One zstd decoder per thread, reused for every chunk: its window buffer (as large as the
    /// largest frame's window, ≤ the chunk size) is allocated once per thread instead of once
    /// per chunk, which keeps large short-lived allocations away from the allocator.
    static HASH_DECODER: std::cell::RefCell<Option<zstd::stream::raw::Decoder<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Streams a zstd payload (one or more frames) through SHA-256 in [`HASH_STEP`] pieces.
fn zstd_hash_bounded(payload: &[u8], max_len: usize) -> Result<(Digest, u64), FormatError> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let zerr = |e: std::io::Error| FormatError::Zstd(e.to_string());
    HASH_DECODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decoder = match slot.as_mut() {
            Some(d) => {
                // a failed earlier use may have left it mid-frame
                d.reinit().map_err(zerr)?;
                d
            }
            None => slot.insert(Decoder::new().map_err(zerr)?),
        };
        let mut out = vec![0u8; HASH_STEP];
        let mut input = InBuffer::around(payload);
        let mut hasher = Sha256::new();
        let mut total = 0usize;
        loop {
            let mut output = OutBuffer::around(&mut out[..]);
            let hint = decoder.run(&mut input, &mut output).map_err(zerr)?;
            let n = output.pos();
            total += n;
            if total > max_len {
                return Err(FormatError::DecodedTooLarge { limit: max_len });
            }
            hasher.update(&out[..n]);
            let input_done = input.pos() == payload.len();
            if hint == 0 {
                // a frame ended; more frames may follow
                if input_done {
                    break;
                }
                decoder.reinit().map_err(zerr)?;
            } else if input_done && n < HASH_STEP {
                return Err(FormatError::Zstd(
                    "truncated zstd frame: input ended inside a frame".into(),
                ));
            }
        }
        Ok((hasher.finish(), total as u64))
    })
}

fn read_crc(raw: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&raw[8..12]);
    u32::from_le_bytes(b)
}

/// Decode zstd without ever producing more than `max_len` bytes. A frame whose header states
/// its size (PBS clients compress with zstd's one-shot API, which writes it) is decoded in one
/// call into a buffer of exactly that size; the decoder refuses to write past it. Other frames
/// are stream-decoded, reading at most `max_len + 1` bytes so an oversize result is detected
/// without materialising it.
fn zstd_decode_bounded(payload: &[u8], max_len: usize) -> Result<Vec<u8>, FormatError> {
    if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(payload) {
        if declared > max_len as u64 {
            return Err(FormatError::DecodedTooLarge { limit: max_len });
        }
        // `declared` fits: it is at most `max_len`.
        return zstd::bulk::decompress(payload, declared as usize)
            .map_err(|e| FormatError::Zstd(e.to_string()));
    }
    let decoder = zstd::stream::read::Decoder::with_buffer(payload)
        .map_err(|e| FormatError::Zstd(e.to_string()))?;
    let mut out = Vec::new();
    let bound = (max_len as u64).saturating_add(1);
    decoder
        .take(bound)
        .read_to_end(&mut out)
        .map_err(|e| FormatError::Zstd(e.to_string()))?;
    if out.len() > max_len {
        return Err(FormatError::DecodedTooLarge { limit: max_len });
    }
    Ok(out)
}

fn assemble(magic: [u8; 8], extra_header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PLAIN_HEADER_LEN + extra_header.len() + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(extra_header);
    out.extend_from_slice(payload);
    out
}

/// Encode a plain blob. With `compress`, zstd level 1 is used only if the result is not larger
/// than the input (PBS rule, docs/formats.md#compression). Callers keep `data` within
/// [`MAX_BLOB_SIZE`].
pub fn encode_blob(data: &[u8], compress: bool) -> Vec<u8> {
    if compress {
        if let Ok(z) = zstd::bulk::compress(data, 1) {
            if z.len() <= data.len() {
                return assemble(MAGIC_COMPRESSED, &[], &z);
            }
        }
    }
    assemble(MAGIC_UNCOMPRESSED, &[], data)
}

/// Build an encrypted blob from already-encrypted parts (client-side helper for the e2e client).
pub fn assemble_encrypted_blob(
    compressed: bool,
    iv: &[u8; 16],
    tag: &[u8; 16],
    ciphertext: &[u8],
) -> Vec<u8> {
    let magic = if compressed {
        MAGIC_ENCRYPTED_COMPRESSED
    } else {
        MAGIC_ENCRYPTED
    };
    let mut extra = [0u8; 32];
    extra[..16].copy_from_slice(iv);
    extra[16..].copy_from_slice(tag);
    assemble(magic, &extra, ciphertext)
}

/// Recompute the payload CRC and store it; the server never trusts a client's chunk CRC
/// (docs/formats.md#chunk-upload-checks).
pub fn rewrite_crc(raw: &mut [u8]) -> Result<(), FormatError> {
    let crc = BlobView::parse(raw)?.compute_crc();
    raw[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Result of the server-side checks of an uploaded chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedChunk {
    pub kind: BlobKind,
    pub raw_len: usize,
}

/// Server-side checks of an uploaded chunk body, docs/formats.md#chunk-upload-checks steps 1–5:
/// length equals `encoded_size`; known magic and minimum length; plain chunks are decoded (bounded
/// by `size`) and must hash to `digest` with exactly `size` bytes; encrypted chunks are accepted
/// as-is; finally the CRC is rewritten in place.
pub fn check_uploaded_chunk(
    raw: &mut [u8],
    encoded_size: u64,
    digest: &Digest,
    size: u64,
) -> Result<CheckedChunk, FormatError> {
    if raw.len() as u64 != encoded_size {
        return Err(FormatError::ChunkEncodedSize {
            expected: encoded_size,
            actual: raw.len() as u64,
        });
    }
    let view = BlobView::parse(raw)?;
    let kind = view.kind();
    if !kind.is_encrypted() {
        let limit = usize::try_from(size).unwrap_or(usize::MAX);
        let (computed, len) = view.hash_decoded(limit).map_err(|e| match e {
            FormatError::DecodedTooLarge { .. } => FormatError::ChunkSizeMismatch {
                digest: digest_to_hex(digest),
                expected: size,
                actual: size.saturating_add(1),
            },
            other => other,
        })?;
        if &computed != digest {
            return Err(FormatError::ChunkDigestMismatch {
                expected: digest_to_hex(digest),
                computed: digest_to_hex(&computed),
            });
        }
        if len != size {
            return Err(FormatError::ChunkSizeMismatch {
                digest: digest_to_hex(digest),
                expected: size,
                actual: len,
            });
        }
    }
    rewrite_crc(raw)?;
    Ok(CheckedChunk {
        kind,
        raw_len: raw.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label_magic(label: &str) -> [u8; 8] {
        let mut m = [0u8; 8];
        m.copy_from_slice(&sha256(label.as_bytes())[..8]);
        m
    }

    #[test]
    fn magics_are_label_hashes() {
        assert_eq!(
            label_magic("Proxmox Backup uncompressed blob v1.0"),
            MAGIC_UNCOMPRESSED
        );
        assert_eq!(
            label_magic("Proxmox Backup zstd compressed blob v1.0"),
            MAGIC_COMPRESSED
        );
        assert_eq!(
            label_magic("Proxmox Backup encrypted blob v1.0"),
            MAGIC_ENCRYPTED
        );
        assert_eq!(
            label_magic("Proxmox Backup zstd compressed encrypted blob v1.0"),
            MAGIC_ENCRYPTED_COMPRESSED
        );
        assert_eq!(
            label_magic("Proxmox Backup authenticated blob v1.0"),
            MAGIC_LEGACY_AUTHENTICATED
        );
        assert_eq!(
            label_magic("Proxmox Backup zstd compressed authenticated blob v1.0"),
            MAGIC_LEGACY_AUTHENTICATED_COMPRESSED
        );
        assert_eq!(hex::encode(MAGIC_UNCOMPRESSED), "42ab3807be8370a1");
        assert_eq!(hex::encode(MAGIC_ENCRYPTED_COMPRESSED), "e6591bbf0bbfd80b");
        for k in [
            BlobKind::Uncompressed,
            BlobKind::Compressed,
            BlobKind::Encrypted,
            BlobKind::EncryptedCompressed,
        ] {
            assert_eq!(BlobKind::from_magic(&k.magic()).unwrap(), k);
        }
    }

    #[test]
    fn plain_hello_vector() {
        let b = encode_blob(b"hello", false);
        assert_eq!(hex::encode(&b), "42ab3807be8370a186a6103668656c6c6f");
        // "hello" does not shrink under zstd, so compress=true must fall back to uncompressed
        assert_eq!(encode_blob(b"hello", true), b);
        let v = BlobView::parse(&b).unwrap();
        assert_eq!(v.kind(), BlobKind::Uncompressed);
        assert_eq!(v.stored_crc(), 0x3610a686);
        v.verify_crc().unwrap();
        assert_eq!(v.decode(5).unwrap(), b"hello");
        assert!(matches!(
            v.decode(4),
            Err(FormatError::DecodedTooLarge { limit: 4 })
        ));
    }

    #[test]
    fn encrypted_hello_vector() {
        let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
        let tag: [u8; 16] = hex::decode("2110f379489fd0eb64e5d1a4b430ca76")
            .unwrap()
            .try_into()
            .unwrap();
        let ct = hex::decode("5e5607cb45").unwrap();
        let b = assemble_encrypted_blob(false, &iv, &tag, &ct);
        let expected = "7b6785be222d4cf0d67b9084000102030405060708090a0b0c0d0e0f\
                        2110f379489fd0eb64e5d1a4b430ca765e5607cb45";
        assert_eq!(hex::encode(&b), expected);
        assert_eq!(b.len(), 49);
        let v = BlobView::parse(&b).unwrap();
        assert_eq!(v.kind(), BlobKind::Encrypted);
        v.verify_crc().unwrap();
        assert_eq!(v.iv().unwrap(), &iv);
        assert_eq!(v.tag().unwrap(), &tag);
        assert_eq!(v.payload(), &ct[..]);
        assert!(matches!(v.decode(1000), Err(FormatError::EncryptedBlob)));
        let bc = assemble_encrypted_blob(true, &iv, &tag, &ct);
        assert_eq!(
            BlobView::parse(&bc).unwrap().kind(),
            BlobKind::EncryptedCompressed
        );
    }

    #[test]
    fn compressed_round_trip_and_empty() {
        let data = vec![7u8; 100_000];
        let b = encode_blob(&data, true);
        let v = BlobView::parse(&b).unwrap();
        assert_eq!(v.kind(), BlobKind::Compressed);
        assert!(b.len() < 1000);
        v.verify_crc().unwrap();
        assert_eq!(v.decode(data.len()).unwrap(), data);
        let e = encode_blob(b"", true);
        assert_eq!(e.len(), PLAIN_HEADER_LEN);
        assert_eq!(BlobView::parse(&e).unwrap().decode(0).unwrap(), b"");
    }

    #[test]
    fn rejects_bad_blobs() {
        let mut b = encode_blob(b"hello", false);
        b[0] ^= 1;
        let err = BlobView::parse(&b).unwrap_err();
        assert!(
            err.to_string().starts_with("blob has unknown magic "),
            "{err}"
        );

        let mut legacy = MAGIC_LEGACY_AUTHENTICATED.to_vec();
        legacy.extend_from_slice(&[0u8; 40]);
        assert!(matches!(
            BlobView::parse(&legacy),
            Err(FormatError::LegacySignedBlob(_))
        ));
        legacy[..8].copy_from_slice(&MAGIC_LEGACY_AUTHENTICATED_COMPRESSED);
        assert!(matches!(
            BlobView::parse(&legacy),
            Err(FormatError::LegacySignedBlob(_))
        ));

        let mut b = encode_blob(b"hello", false);
        b[12] ^= 0xff;
        let err = BlobView::parse(&b).unwrap().verify_crc().unwrap_err();
        assert!(err
            .to_string()
            .starts_with("blob CRC mismatch (stored 0x3610a686"));

        assert!(BlobView::parse(&MAGIC_UNCOMPRESSED[..]).is_err());
        assert!(BlobView::parse(&[]).is_err());
        let mut short_enc = MAGIC_ENCRYPTED.to_vec();
        short_enc.extend_from_slice(&[0u8; 35]); // 43 bytes
        assert!(matches!(
            BlobView::parse(&short_enc),
            Err(FormatError::BlobTooShort { min: 44, .. })
        ));
        short_enc.push(0);
        assert!(BlobView::parse(&short_enc).is_ok());
    }

    #[test]
    fn frames_without_or_with_a_lying_size_stay_bounded() {
        let big = vec![7u8; 4 * 1024 * 1024];
        // A streamed frame has no size in its header: the streaming path bounds it.
        let streamed = zstd::stream::encode_all(&big[..], 1).unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&streamed),
            Ok(None)
        ));
        let blob = assemble(MAGIC_COMPRESSED, &[], &streamed);
        let v = BlobView::parse(&blob).unwrap();
        assert!(matches!(
            v.decode(1024),
            Err(FormatError::DecodedTooLarge { .. })
        ));
        assert_eq!(v.decode(big.len()).unwrap(), big);
        // A small sized frame followed by a big one: never more than the first frame's size.
        let mut two = zstd::bulk::compress(b"tiny", 1).unwrap();
        two.extend_from_slice(&zstd::bulk::compress(&big, 1).unwrap());
        let blob = assemble(MAGIC_COMPRESSED, &[], &two);
        match BlobView::parse(&blob).unwrap().decode(big.len()) {
            Ok(out) => assert!(out.len() <= 4, "decoded {} bytes", out.len()),
            Err(e) => assert!(matches!(e, FormatError::Zstd(_)), "{e}"),
        }
    }

    #[test]
    fn zstd_bomb_is_bounded() {
        let big = vec![0u8; 10 * 1024 * 1024];
        let b = encode_blob(&big, true);
        let v = BlobView::parse(&b).unwrap();
        assert!(matches!(
            v.decode(1024 * 1024),
            Err(FormatError::DecodedTooLarge { .. })
        ));
        assert_eq!(v.decode(big.len()).unwrap().len(), big.len());
        // garbage payload with the compressed magic is a decode error, not a panic
        let mut g = MAGIC_COMPRESSED.to_vec();
        g.extend_from_slice(&[0u8; 4]);
        g.extend_from_slice(b"not zstd at all");
        assert!(matches!(
            BlobView::parse(&g).unwrap().decode(1 << 20),
            Err(FormatError::Zstd(_))
        ));
    }

    #[test]
    fn uploaded_chunk_checks() {
        let data = vec![3u8; 50_000];
        let digest = sha256(&data);
        let good = encode_blob(&data, true);
        let n = good.len() as u64;

        // CRC is rewritten even when the client sent garbage
        let mut raw = good.clone();
        raw[8..12].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let c = check_uploaded_chunk(&mut raw, n, &digest, data.len() as u64).unwrap();
        assert_eq!(c.kind, BlobKind::Compressed);
        assert_eq!(c.raw_len, good.len());
        assert_eq!(raw, good);

        let mut raw = good.clone();
        let wrong = sha256(b"other");
        assert!(matches!(
            check_uploaded_chunk(&mut raw, n, &wrong, data.len() as u64),
            Err(FormatError::ChunkDigestMismatch { .. })
        ));
        assert!(matches!(
            check_uploaded_chunk(&mut raw, n, &digest, data.len() as u64 + 1),
            Err(FormatError::ChunkSizeMismatch { .. })
        ));
        assert!(matches!(
            check_uploaded_chunk(&mut raw, n, &digest, data.len() as u64 - 1),
            Err(FormatError::ChunkSizeMismatch { .. })
        ));
        assert!(matches!(
            check_uploaded_chunk(&mut raw, n + 1, &digest, data.len() as u64),
            Err(FormatError::ChunkEncodedSize { .. })
        ));

        // encrypted: digest and size cannot be checked, chunk accepted, CRC fixed
        let mut enc = assemble_encrypted_blob(false, &[1; 16], &[2; 16], b"ciphertext");
        let expected = enc.clone();
        enc[8] ^= 0x55;
        let len = enc.len() as u64;
        let c = check_uploaded_chunk(&mut enc, len, &wrong, 12345).unwrap();
        assert_eq!(c.kind, BlobKind::Encrypted);
        assert_eq!(enc, expected);

        let mut bad = vec![0u8; 20];
        assert!(matches!(
            check_uploaded_chunk(&mut bad, 20, &digest, 1),
            Err(FormatError::UnknownMagic(_))
        ));
    }

    #[test]
    fn rewrite_crc_rejects_non_blob() {
        let mut b = vec![1u8; 30];
        assert!(rewrite_crc(&mut b).is_err());
        let mut ok = encode_blob(b"abc", false);
        ok[9] = 0;
        rewrite_crc(&mut ok).unwrap();
        BlobView::parse(&ok).unwrap().verify_crc().unwrap();
    }

    #[test]
    fn streamed_hash_equals_hash_of_decoded_bytes() {
        // large enough for many steps, with a second frame appended
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let blob = encode_blob(&data, true);
        let view = BlobView::parse(&blob).unwrap();
        assert_eq!(
            view.hash_decoded(data.len()).unwrap(),
            (sha256(&data), data.len() as u64)
        );
        assert!(matches!(
            view.hash_decoded(data.len() - 1),
            Err(FormatError::DecodedTooLarge { .. })
        ));
        let mut two = blob.clone();
        two.extend_from_slice(&zstd::bulk::compress(b"tail", 1).unwrap());
        let both = [data.as_slice(), b"tail"].concat();
        let view = BlobView::parse(&two).unwrap();
        assert_eq!(
            view.hash_decoded(both.len()).unwrap(),
            (sha256(&both), both.len() as u64)
        );
        // a cut frame is an error, and the next use of the thread's decoder still works
        let cut = &blob[..blob.len() - 10];
        let view = BlobView::parse(cut).unwrap();
        assert!(matches!(
            view.hash_decoded(data.len()),
            Err(FormatError::Zstd(_))
        ));
        let view = BlobView::parse(&blob).unwrap();
        assert_eq!(view.hash_decoded(data.len()).unwrap().0, sha256(&data));
    }
}
