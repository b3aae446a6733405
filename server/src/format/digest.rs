//! SHA-256 chunk digests, their hex form, and the client-side key derivations that PBS
//! builds on them (id key, keyed chunk digest, key fingerprint;
//! docs/formats.md#encryption-and-keys, #chunk-digests).

use super::FormatError;

/// A chunk digest (SHA-256); the chunk's identity and its file/object name.
pub type Digest = [u8; 32];

/// Digest of a 4 MiB all-zero plain chunk (docs/formats.md#chunk-digests); PBS uses it for the
/// atime self-test and QEMU references it for every zero block.
pub const ZERO_CHUNK_4M_DIGEST: &str =
    "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8";

/// One-shot SHA-256 (ring is faster than `sha2` on this hot path).
pub fn sha256(data: &[u8]) -> Digest {
    Sha256::digest_of(data)
}

/// Incremental SHA-256, e.g. for index csums computed while entries stream in.
pub struct Sha256 {
    ctx: ring::digest::Context,
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// Start a new hash.
    pub fn new() -> Self {
        Self {
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }

    /// Feed more bytes.
    pub fn update(&mut self, d: &[u8]) {
        self.ctx.update(d);
    }

    /// Finish and return the 32-byte digest.
    pub fn finish(self) -> Digest {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.ctx.finish().as_ref());
        out
    }

    fn digest_of(data: &[u8]) -> Digest {
        let mut h = Self::new();
        h.update(data);
        h.finish()
    }
}

/// Parse a wire digest: exactly 64 lowercase hex characters (PBS schema `^[a-f0-9]{64}$`).
pub fn parse_digest_hex(s: &str) -> Result<Digest, FormatError> {
    let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !ok {
        return Err(FormatError::InvalidDigest(shorten(s)));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| FormatError::InvalidDigest(shorten(s)))?;
    Ok(out)
}

/// Lowercase hex form of a digest (the chunk file name and wire form).
pub fn digest_to_hex(d: &Digest) -> String {
    hex::encode(d)
}

/// Keep error messages bounded when a client sends a huge bogus digest string.
fn shorten(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_string();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Derive the "id key" from a 32-byte encryption key: PBKDF2-HMAC-SHA256(enc_key, "_id_key", 10).
/// Client-side only (the e2e client and tests); the server never sees keys.
pub fn derive_id_key(enc_key: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let iterations = std::num::NonZeroU32::MIN.saturating_add(9); // 10 rounds
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        b"_id_key",
        enc_key,
        &mut out,
    );
    out
}

/// Digest of an encrypted chunk: SHA-256(plaintext ‖ id_key). The server cannot recompute it.
pub fn keyed_chunk_digest(data: &[u8], id_key: &[u8; 32]) -> Digest {
    let mut h = Sha256::new();
    h.update(data);
    h.update(id_key);
    h.finish()
}

/// Key fingerprint = SHA-256(SHA-256("Proxmox Backup Encryption Key Fingerprint") ‖ id_key).
pub fn key_fingerprint(id_key: &[u8; 32]) -> Digest {
    let c = sha256(b"Proxmox Backup Encryption Key Fingerprint");
    let mut h = Sha256::new();
    h.update(&c);
    h.update(id_key);
    h.finish()
}

/// Colon-separated lowercase hex, the form of `unprotected["key-fingerprint"]`.
pub fn fingerprint_to_colon_hex(fp: &Digest) -> String {
    fp.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_chunk_digest_matches_spec() {
        let zeros = vec![0u8; 4 * 1024 * 1024];
        assert_eq!(digest_to_hex(&sha256(&zeros)), ZERO_CHUNK_4M_DIGEST);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = Sha256::new();
        h.update(b"hel");
        h.update(b"lo");
        let d = h.finish();
        assert_eq!(d, sha256(b"hello"));
        assert_eq!(
            digest_to_hex(&d),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn hex_round_trip_and_rejections() {
        let d = sha256(b"x");
        assert_eq!(parse_digest_hex(&digest_to_hex(&d)).unwrap(), d);
        let upper = digest_to_hex(&d).to_uppercase();
        assert!(parse_digest_hex(&upper).is_err());
        assert!(parse_digest_hex("").is_err());
        assert!(parse_digest_hex(&"a".repeat(63)).is_err());
        assert!(parse_digest_hex(&"a".repeat(65)).is_err());
        assert!(parse_digest_hex(&"g".repeat(64)).is_err());
        // multi-byte chars with a byte length of 64 must not panic
        let weird = "é".repeat(32);
        assert_eq!(weird.len(), 64);
        assert!(parse_digest_hex(&weird).is_err());
        let long = "é".repeat(100);
        assert!(parse_digest_hex(&long).is_err());
    }

    #[test]
    fn key_derivation_vectors() {
        let enc_key = [9u8; 32];
        let id_key = derive_id_key(&enc_key);
        assert_eq!(
            hex::encode(id_key),
            "d8574fc7e9bcffc3127c21c78bebf73504a3be683e4dba652865f23435609353"
        );
        assert_eq!(
            digest_to_hex(&keyed_chunk_digest(b"hello", &id_key)),
            "b851432e039cc5e9bf9e739081632202c2c9d4204289ebf0cca6910b851ae5f1"
        );
        let c = sha256(b"Proxmox Backup Encryption Key Fingerprint");
        assert_eq!(&c[..4], &[110, 208, 239, 119]);
        let fp = fingerprint_to_colon_hex(&key_fingerprint(&id_key));
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert_eq!(fp.matches(':').count(), 31);
    }
}
