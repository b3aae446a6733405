//! Master key (`--master-pubkey-fd`, QEMU's `master_keyfile`): the backup's encryption key
//! is written as a key-file JSON, encrypted with the master RSA public key (PKCS#1 v1.5
//! padding) and uploaded as `rsa-encrypted.key.blob`, a plain uncompressed blob listed in the
//! manifest with the backup's crypt mode. Whoever holds the RSA private key can recover the
//! encryption key from any snapshot.

use base64::Engine;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};

use crate::crypto::CryptConfig;
use crate::error::{ClientError, Result};
use crate::wire;

/// File name of the encrypted key in a snapshot.
pub const ENCRYPTED_KEY_BLOB_NAME: &str = "rsa-encrypted.key.blob";

/// An unprotected key file (`kdf` null: the key bytes are stored as they are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub kdf: Option<serde_json::Value>,
    /// RFC 3339 creation time.
    pub created: String,
    pub modified: String,
    /// Base64 of the 32 key bytes.
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl KeyFile {
    /// The key file of `key`, created at `time` (epoch seconds).
    pub fn for_key(key: &CryptConfig, time: i64) -> KeyFile {
        let stamp = crate::timefmt::epoch_to_rfc3339(time);
        KeyFile {
            kdf: None,
            created: stamp.clone(),
            modified: stamp,
            data: base64::engine::general_purpose::STANDARD.encode(key.enc_key()),
            fingerprint: Some(key.fingerprint_hex()),
        }
    }

    /// The encryption key stored in this file (its fingerprint must match when present).
    pub fn key(&self) -> Result<CryptConfig> {
        if self.kdf.as_ref().is_some_and(|k| !k.is_null()) {
            return Err(ClientError::Crypto(
                "password-protected key files are not supported here".into(),
            ));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|e| ClientError::Crypto(format!("key file data is not base64: {e}")))?;
        let bytes: [u8; 32] = raw.try_into().map_err(|v: Vec<u8>| {
            ClientError::Crypto(format!("key file holds {} key bytes, not 32", v.len()))
        })?;
        let key = CryptConfig::new(bytes);
        if let Some(fp) = &self.fingerprint {
            if fp != &key.fingerprint_hex() {
                return Err(ClientError::Crypto(format!(
                    "key file fingerprint {fp} does not match its key {}",
                    key.fingerprint_hex()
                )));
            }
        }
        Ok(key)
    }
}

/// The public half, as the client reads it (PEM) from `--master-pubkey-fd`.
#[derive(Debug, Clone)]
pub struct MasterPublicKey(RsaPublicKey);

impl MasterPublicKey {
    pub fn from_pem(pem: &str) -> Result<MasterPublicKey> {
        RsaPublicKey::from_public_key_pem(pem)
            .map(MasterPublicKey)
            .map_err(|e| ClientError::Crypto(format!("master public key: {e}")))
    }

    /// `rsa-encrypted.key.blob` for `key`: plain, uncompressed blob of the RSA-encrypted key
    /// file JSON.
    pub fn encrypted_key_blob(&self, key: &CryptConfig, time: i64) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(&KeyFile::for_key(key, time))
            .map_err(|e| ClientError::json("key file", e))?;
        let sealed = self
            .0
            .encrypt(&mut rand::thread_rng(), Pkcs1v15Encrypt, &json)
            .map_err(|e| ClientError::Crypto(format!("RSA encryption of the key failed: {e}")))?;
        Ok(wire::encode_plain_blob(&sealed, false))
    }
}

/// A master key pair (the private half stays with the administrator).
pub struct MasterKeyPair {
    private: RsaPrivateKey,
}

impl MasterKeyPair {
    /// A fresh key pair of `bits` bits (PBS creates 4096; 2048 holds a key file too).
    pub fn generate(bits: usize) -> Result<MasterKeyPair> {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), bits)
            .map_err(|e| ClientError::Crypto(format!("RSA key generation failed: {e}")))?;
        Ok(MasterKeyPair { private })
    }

    /// The public key in PEM, as PVE stores it and hands it to the client.
    pub fn public_pem(&self) -> Result<String> {
        RsaPublicKey::from(&self.private)
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| ClientError::Crypto(format!("PEM encoding failed: {e}")))
    }

    /// Recovers the backup's key from a downloaded `rsa-encrypted.key.blob` (what
    /// `key import-with-master-key` does).
    pub fn recover_key(&self, blob: &[u8]) -> Result<CryptConfig> {
        let kind = wire::verify_blob_crc(blob)?;
        if kind != wire::BlobKind::Plain {
            return Err(ClientError::Format(format!(
                "{ENCRYPTED_KEY_BLOB_NAME} must be a plain uncompressed blob, got {kind:?}"
            )));
        }
        let sealed = &blob[kind.header_len()..];
        let json = self
            .private
            .decrypt(Pkcs1v15Encrypt, sealed)
            .map_err(|e| ClientError::Crypto(format!("RSA decryption of the key failed: {e}")))?;
        let file: KeyFile =
            serde_json::from_slice(&json).map_err(|e| ClientError::json("key file", e))?;
        file.key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_the_master_key() {
        let pair = MasterKeyPair::generate(2048).unwrap();
        let public = MasterPublicKey::from_pem(&pair.public_pem().unwrap()).unwrap();
        let key = CryptConfig::random();
        let blob = public.encrypted_key_blob(&key, 1_767_225_600).unwrap();
        assert_eq!(wire::BlobKind::of(&blob).unwrap(), wire::BlobKind::Plain);
        let back = pair.recover_key(&blob).unwrap();
        assert_eq!(back.enc_key(), key.enc_key());
        let other = MasterKeyPair::generate(2048).unwrap();
        assert!(other.recover_key(&blob).is_err());
    }
}
