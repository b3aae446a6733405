//! Client-side encryption exactly like the stock client
//! (server/docs/formats.md#encryption-and-keys, #chunk-digests, #manifest-signature): AES-256-GCM
//! with a 16-byte IV and empty AAD, PBKDF2-derived id key, keyed digests, key fingerprint and
//! manifest HMAC.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::AesGcm;

use crate::error::{ClientError, Result};
use crate::wire::{self, BlobKind, Digest};

type Cipher = AesGcm<Aes256, U16>;

/// An encryption key with everything derived from it.
#[derive(Clone)]
pub struct CryptConfig {
    enc_key: [u8; 32],
    id_key: [u8; 32],
    cipher: Cipher,
}

impl std::fmt::Debug for CryptConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CryptConfig({})", self.fingerprint_hex())
    }
}

impl CryptConfig {
    pub fn new(enc_key: [u8; 32]) -> CryptConfig {
        let mut id_key = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::MIN.saturating_add(9),
            b"_id_key",
            &enc_key,
            &mut id_key,
        );
        let cipher = Cipher::new(GenericArray::from_slice(&enc_key));
        CryptConfig {
            enc_key,
            id_key,
            cipher,
        }
    }

    /// A fresh random key.
    pub fn random() -> CryptConfig {
        CryptConfig::new(rand::random())
    }

    pub fn enc_key(&self) -> &[u8; 32] {
        &self.enc_key
    }

    pub fn id_key(&self) -> &[u8; 32] {
        &self.id_key
    }

    /// Keyed chunk digest SHA-256(plain ‖ id_key).
    pub fn compute_digest(&self, data: &[u8]) -> Digest {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(data);
        ctx.update(&self.id_key);
        ctx.finish().as_ref().try_into().unwrap_or_default()
    }

    /// Key fingerprint SHA-256(SHA-256("Proxmox Backup Encryption Key Fingerprint") ‖ id_key).
    pub fn fingerprint(&self) -> Digest {
        let c = wire::sha256(b"Proxmox Backup Encryption Key Fingerprint");
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&c);
        ctx.update(&self.id_key);
        ctx.finish().as_ref().try_into().unwrap_or_default()
    }

    /// Full fingerprint as colon-separated lowercase hex (manifest `key-fingerprint`).
    pub fn fingerprint_hex(&self) -> String {
        crate::tls::colon_hex(&self.fingerprint())
    }

    /// HMAC-SHA256 with the id key, lowercase hex (manifest signature,
    /// server/docs/formats.md#manifest-signature).
    pub fn hmac_hex(&self, data: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.id_key);
        wire::hex(ring::hmac::sign(&key, data).as_ref())
    }

    /// Encrypted blob with a random IV (compress first when `compress` and it helps).
    pub fn encrypt_blob(&self, data: &[u8], compress: bool) -> Result<Vec<u8>> {
        self.encrypt_blob_with_iv(data, compress, rand::random())
    }

    /// Encrypted blob with a caller-chosen IV (deterministic tests).
    pub fn encrypt_blob_with_iv(
        &self,
        data: &[u8],
        compress: bool,
        iv: [u8; 16],
    ) -> Result<Vec<u8>> {
        let (magic, mut buf) = match compress.then(|| wire::maybe_compress(data)).flatten() {
            Some(c) => (wire::MAGIC_ENC_ZSTD, c),
            None => (wire::MAGIC_ENC, data.to_vec()),
        };
        let tag = self
            .cipher
            .encrypt_in_place_detached(GenericArray::from_slice(&iv), b"", &mut buf)
            .map_err(|e| ClientError::Crypto(format!("AES-GCM encryption failed: {e}")))?;
        let mut out = Vec::with_capacity(44 + buf.len());
        out.extend_from_slice(&magic);
        out.extend_from_slice(&crc32fast::hash(&buf).to_le_bytes());
        out.extend_from_slice(&iv);
        out.extend_from_slice(tag.as_slice());
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Decodes any blob: checks the CRC, decrypts (tag verified) if encrypted, decompresses.
    pub fn decode_blob(&self, raw: &[u8], max: usize) -> Result<Vec<u8>> {
        let kind = wire::verify_blob_crc(raw)?;
        if !kind.is_encrypted() {
            return wire::decode_plain_blob(raw, max);
        }
        let iv = &raw[12..28];
        let tag = &raw[28..44];
        let mut buf = raw[44..].to_vec();
        self.cipher
            .decrypt_in_place_detached(
                GenericArray::from_slice(iv),
                b"",
                &mut buf,
                GenericArray::from_slice(tag),
            )
            .map_err(|_| {
                ClientError::Crypto("AES-GCM tag mismatch (wrong key or corrupted blob)".into())
            })?;
        if kind == BlobKind::EncryptedZstd {
            wire::zstd_decode(&buf, max)
        } else {
            Ok(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_vectors() {
        let c = CryptConfig::new([9u8; 32]);
        assert_eq!(
            wire::hex(c.id_key()),
            "d8574fc7e9bcffc3127c21c78bebf73504a3be683e4dba652865f23435609353"
        );
        assert_eq!(
            wire::hex(&c.compute_digest(b"hello")),
            "b851432e039cc5e9bf9e739081632202c2c9d4204289ebf0cca6910b851ae5f1"
        );
        let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
        let blob = c.encrypt_blob_with_iv(b"hello", false, iv).unwrap();
        assert_eq!(
            wire::hex(&blob),
            "7b6785be222d4cf0d67b9084000102030405060708090a0b0c0d0e0f2110f379489fd0eb64e5d1a4b430ca765e5607cb45"
        );
        assert_eq!(c.decode_blob(&blob, 100).unwrap(), b"hello");
        let c0 = wire::sha256(b"Proxmox Backup Encryption Key Fingerprint");
        assert_eq!(&c0[..4], &[110, 208, 239, 119]);
    }

    #[test]
    fn roundtrip_compressed_and_wrong_key() {
        let c = CryptConfig::random();
        let data = vec![3u8; 50_000];
        let blob = c.encrypt_blob(&data, true).unwrap();
        assert_eq!(BlobKind::of(&blob).unwrap(), BlobKind::EncryptedZstd);
        assert_eq!(c.decode_blob(&blob, 60_000).unwrap(), data);
        assert!(CryptConfig::random().decode_blob(&blob, 60_000).is_err());
    }
}
