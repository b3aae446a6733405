//! Snapshot manifest `index.json.blob` (docs/formats.md#manifest): JSON schema, the server-owned
//! `unprotected` section, canonical JSON and the HMAC signature over the protected part.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::blob::{encode_blob, BlobView};
use super::FormatError;

/// Upper bound for a decoded manifest; real manifests are a few KiB.
pub const MAX_MANIFEST_SIZE: usize = 16 * 1024 * 1024;
/// Name of the manifest file inside a snapshot.
pub const MANIFEST_BLOB_NAME: &str = "index.json.blob";

/// Per-file crypt mode (docs/formats.md#crypt-modes); absent in pre-0.8 manifests, hence the
/// default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CryptMode {
    #[default]
    None,
    Encrypt,
    SignOnly,
}

/// One archive listed in the manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct FileInfo {
    pub filename: String,
    #[serde(default)]
    pub crypt_mode: CryptMode,
    pub size: u64,
    pub csum: String,
}

/// The manifest. Unknown top-level keys are ignored on read and dropped on rewrite (like PBS).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Manifest {
    pub backup_type: String,
    pub backup_id: String,
    pub backup_time: i64,
    pub files: Vec<FileInfo>,
    #[serde(default)]
    pub unprotected: Map<String, Value>,
    #[serde(default)]
    pub signature: Option<String>,
}

/// `unprotected.verify_state`, written by the verify task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VerifyState {
    /// "ok" or "failed"
    pub state: String,
    pub upid: String,
}

/// `unprotected.chunk_upload_stats`, written by the server in `finish` (snake_case keys).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ChunkUploadStats {
    pub count: u64,
    pub size: u64,
    pub compressed_size: u64,
    pub duplicates: u64,
}

impl Manifest {
    /// A fresh unsigned manifest without files.
    pub fn new(backup_type: &str, backup_id: &str, backup_time: i64) -> Self {
        Self {
            backup_type: backup_type.to_string(),
            backup_id: backup_id.to_string(),
            backup_time,
            files: Vec::new(),
            unprotected: Map::new(),
            signature: None,
        }
    }

    /// Parse a manifest blob: verify CRC, refuse encrypted, decode (≤ 16 MiB), parse JSON.
    pub fn from_blob(raw: &[u8]) -> Result<Self, FormatError> {
        let view = BlobView::parse(raw)?;
        view.verify_crc()?;
        if view.kind().is_encrypted() {
            return Err(FormatError::Manifest("manifest blob is encrypted".into()));
        }
        let json = view.decode(MAX_MANIFEST_SIZE)?;
        Self::from_json(&json)
    }

    /// Parse manifest JSON bytes.
    pub fn from_json(json: &[u8]) -> Result<Self, FormatError> {
        serde_json::from_slice(json)
            .map_err(|e| FormatError::Manifest(format!("invalid manifest JSON: {e}")))
    }

    /// Pretty JSON (2-space indent) in a zstd-compressed plain blob, as the server rewrites it.
    pub fn to_blob(&self) -> Vec<u8> {
        encode_blob(self.to_json_pretty().as_bytes(), true)
    }

    /// Pretty-printed JSON with 2-space indentation.
    pub fn to_json_pretty(&self) -> String {
        // Serialising strings, integers and a JSON map cannot fail.
        serde_json::to_string_pretty(self).expect("manifest serialisation is infallible")
    }

    /// The entry for `filename`, if listed.
    pub fn file(&self, filename: &str) -> Option<&FileInfo> {
        self.files.iter().find(|f| f.filename == filename)
    }

    /// Snapshot notes (`unprotected.notes`).
    pub fn notes(&self) -> Option<&str> {
        self.unprotected.get("notes").and_then(Value::as_str)
    }

    /// Set snapshot notes.
    pub fn set_notes(&mut self, notes: &str) {
        self.unprotected
            .insert("notes".into(), Value::String(notes.to_string()));
    }

    /// Last verify result; `None` if never verified or unparsable.
    pub fn verify_state(&self) -> Option<VerifyState> {
        let v = self.unprotected.get("verify_state")?;
        serde_json::from_value(v.clone()).ok()
    }

    /// Record a verify result.
    pub fn set_verify_state(&mut self, v: &VerifyState) {
        self.unprotected
            .insert("verify_state".into(), to_value_infallible(v));
    }

    /// Record the session's chunk upload statistics (done in `finish`).
    pub fn set_chunk_upload_stats(&mut self, s: &ChunkUploadStats) {
        self.unprotected
            .insert("chunk_upload_stats".into(), to_value_infallible(s));
    }

    /// Client-written `unprotected["key-fingerprint"]` (colon hex).
    pub fn key_fingerprint(&self) -> Option<&str> {
        self.unprotected
            .get("key-fingerprint")
            .and_then(Value::as_str)
    }

    /// Canonical JSON of the manifest without `unprotected` and `signature`
    /// (docs/formats.md#manifest-signature).
    pub fn signed_canonical_json(&self) -> Result<String, FormatError> {
        let mut v =
            serde_json::to_value(self).map_err(|e| FormatError::CanonicalJson(e.to_string()))?;
        if let Value::Object(m) = &mut v {
            m.remove("unprotected");
            m.remove("signature");
        }
        canonical_json(&v)
    }

    /// Lowercase hex HMAC-SHA256(id_key, canonical JSON) — the manifest signature.
    pub fn compute_signature(&self, id_key: &[u8; 32]) -> Result<String, FormatError> {
        let text = self.signed_canonical_json()?;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, id_key);
        Ok(hex::encode(
            ring::hmac::sign(&key, text.as_bytes()).as_ref(),
        ))
    }

    /// Check `signature` against `id_key` (constant-time). Unsigned manifests are an error here;
    /// callers decide whether an unsigned manifest is acceptable.
    pub fn verify_signature(&self, id_key: &[u8; 32]) -> Result<(), FormatError> {
        let sig = self
            .signature
            .as_deref()
            .ok_or_else(|| FormatError::Manifest("manifest is not signed".into()))?;
        let tag = hex::decode(sig)
            .map_err(|_| FormatError::Manifest("manifest signature is not hex".into()))?;
        let text = self.signed_canonical_json()?;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, id_key);
        ring::hmac::verify(&key, text.as_bytes(), &tag)
            .map_err(|_| FormatError::Manifest("manifest signature mismatch".into()))
    }
}

fn to_value_infallible<T: Serialize>(v: &T) -> Value {
    // Only used for plain structs of strings/integers, whose serialisation cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Canonical JSON (docs/formats.md#manifest-signature): keys sorted byte-wise, no whitespace,
/// serde_json's compact scalars; `null` anywhere is an error.
pub fn canonical_json(v: &Value) -> Result<String, FormatError> {
    let mut out = String::new();
    write_canonical(v, &mut out)?;
    Ok(out)
}

fn write_canonical(v: &Value, out: &mut String) -> Result<(), FormatError> {
    match v {
        Value::Null => {
            return Err(FormatError::CanonicalJson(
                "null is not allowed in signed data".into(),
            ))
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&json_string(s)),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(e, out)?;
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json_string(k));
                out.push(':');
                write_canonical(&m[k], out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::blob::{assemble_encrypted_blob, BlobKind};
    use crate::format::digest::derive_id_key;

    fn pbs_vector_manifest() -> Manifest {
        let mut m = Manifest::new("host", "elsa", 1593179765);
        m.files.push(FileInfo {
            filename: "test1.img.fidx".into(),
            crypt_mode: CryptMode::Encrypt,
            size: 200,
            csum: "01".repeat(32),
        });
        m.files.push(FileInfo {
            filename: "abc.blob".into(),
            crypt_mode: CryptMode::None,
            size: 200,
            csum: "02".repeat(32),
        });
        m
    }

    #[test]
    fn signature_vector() {
        // enc_key = scrypt(password "test", salt "", N=65536, r=8, p=1, 32 bytes), precomputed
        // with Python hashlib.scrypt so the test needs no scrypt crate.
        let enc_key: [u8; 32] =
            hex::decode("28cdb1a3bef39396c3860e00d448fe7a0efd8244486ab6feb30457681d31597e")
                .unwrap()
                .try_into()
                .unwrap();
        let id_key = derive_id_key(&enc_key);
        let mut m = pbs_vector_manifest();
        m.set_notes("not signed");
        let canon = m.signed_canonical_json().unwrap();
        let expected = format!(
            "{{\"backup-id\":\"elsa\",\"backup-time\":1593179765,\"backup-type\":\"host\",\
             \"files\":[{{\"crypt-mode\":\"encrypt\",\"csum\":\"{}\",\"filename\":\"test1.img.fidx\",\
             \"size\":200}},{{\"crypt-mode\":\"none\",\"csum\":\"{}\",\"filename\":\"abc.blob\",\
             \"size\":200}}]}}",
            "01".repeat(32),
            "02".repeat(32)
        );
        assert_eq!(canon, expected);
        let sig = m.compute_signature(&id_key).unwrap();
        assert_eq!(
            sig,
            "d7b446fb7db081662081d4b40fedd858a1d6307a5aff4ecff7d5bf4fd35679e9"
        );
        m.signature = Some(sig);
        m.verify_signature(&id_key).unwrap();
        // unprotected changes keep the signature valid, protected ones break it
        m.set_verify_state(&VerifyState {
            state: "ok".into(),
            upid: "UPID:x".into(),
        });
        m.verify_signature(&id_key).unwrap();
        m.files[1].size = 201;
        assert!(m.verify_signature(&id_key).is_err());
    }

    #[test]
    fn canonical_json_rules() {
        let v: Value = serde_json::from_str(
            r#"{"b": [3, {"z": true, "a": "é\"\n"}], "a": -1.5, "B": "x", "aa": 0}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&v).unwrap(),
            r#"{"B":"x","a":-1.5,"aa":0,"b":[3,{"a":"é\"\n","z":true}]}"#
        );
        let n: Value = serde_json::from_str(r#"{"a": [null]}"#).unwrap();
        assert!(canonical_json(&n).is_err());
    }

    /// Found by the manifest_parse fuzz target: a float that serde_json's fast parser rounded
    /// off by one unit in the last place came back different after a rewrite, so the canonical
    /// form was not stable and a rewritten manifest changed a client's value.
    #[test]
    fn floats_survive_a_rewrite_unchanged() {
        let text = "999999999929999999999929999999999999999999999999999999999999999999999";
        let v: Value = serde_json::from_str(text).unwrap();
        let canon = canonical_json(&v).unwrap();
        let again: Value = serde_json::from_str(&canon).unwrap();
        assert_eq!(again, v);
        assert_eq!(canonical_json(&again).unwrap(), canon);

        let mut m = pbs_vector_manifest();
        m.unprotected.insert("client-value".into(), v);
        assert_eq!(Manifest::from_blob(&m.to_blob()).unwrap(), m);
    }

    #[test]
    fn blob_round_trip_and_unprotected() {
        let mut m = pbs_vector_manifest();
        m.set_notes("line1\nline2");
        m.set_chunk_upload_stats(&ChunkUploadStats {
            count: 3,
            size: 10,
            compressed_size: 7,
            duplicates: 1,
        });
        let vs = VerifyState {
            state: "failed".into(),
            upid: "UPID:node:1".into(),
        };
        m.set_verify_state(&vs);
        let blob = m.to_blob();
        assert_eq!(BlobView::parse(&blob).unwrap().kind(), BlobKind::Compressed);
        let back = Manifest::from_blob(&blob).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.notes(), Some("line1\nline2"));
        assert_eq!(back.verify_state(), Some(vs));
        assert_eq!(
            back.unprotected["chunk_upload_stats"],
            serde_json::json!({"count":3,"size":10,"compressed_size":7,"duplicates":1})
        );
        let pretty = m.to_json_pretty();
        assert!(
            pretty.starts_with("{\n  \"backup-type\": \"host\",\n"),
            "{pretty}"
        );
        assert!(pretty.contains("\"signature\": null"));
        assert_eq!(back.file("abc.blob").map(|f| f.size), Some(200));
        assert!(back.file("nope").is_none());
    }

    #[test]
    fn parse_defaults_and_fields() {
        let json = r#"{"backup-type":"vm","backup-id":"100","backup-time":5,"extra":1,
            "files":[{"filename":"a.blob","size":1,"csum":"00"}],
            "unprotected":{"key-fingerprint":"aa:bb","verify_state":{"state":"ok"}}}"#;
        let m = Manifest::from_json(json.as_bytes()).unwrap();
        assert_eq!(m.files[0].crypt_mode, CryptMode::None);
        assert_eq!(m.signature, None);
        assert_eq!(m.key_fingerprint(), Some("aa:bb"));
        assert_eq!(m.verify_state(), None); // upid missing => unparsable
        assert!(!m.to_json_pretty().contains("extra"));
        let sm: FileInfo =
            serde_json::from_str(r#"{"filename":"x","crypt-mode":"sign-only","size":0,"csum":""}"#)
                .unwrap();
        assert_eq!(sm.crypt_mode, CryptMode::SignOnly);
    }

    #[test]
    fn from_blob_rejections() {
        let m = pbs_vector_manifest();
        let mut blob = m.to_blob();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert!(matches!(
            Manifest::from_blob(&blob),
            Err(FormatError::BlobCrcMismatch { .. })
        ));
        let enc = assemble_encrypted_blob(false, &[0; 16], &[0; 16], b"{}");
        assert!(Manifest::from_blob(&enc)
            .unwrap_err()
            .to_string()
            .contains("encrypted"));
        let notjson = encode_blob(b"not json", false);
        assert!(matches!(
            Manifest::from_blob(&notjson),
            Err(FormatError::Manifest(_))
        ));
        let bomb = encode_blob(&vec![b' '; MAX_MANIFEST_SIZE + 1], true);
        assert!(matches!(
            Manifest::from_blob(&bomb),
            Err(FormatError::DecodedTooLarge { .. })
        ));
        assert!(m.verify_signature(&[0; 32]).is_err()); // unsigned
    }
}
