//! Parameter schema of the session endpoints (docs/protocol.md#backup-endpoints, "Parameter
//! limits"): writer ids, chunk sizes, digests and archive names, with PBS-style error texts.

use crate::format::blob::{ENCRYPTED_HEADER_LEN, PLAIN_HEADER_LEN};
use crate::format::names::check_archive_name;
use crate::format::{parse_digest_hex, Digest};
use crate::net::{HttpError, Params};

use super::backup::session::MAX_WID;

/// Largest decoded chunk (16 MiB).
pub const MAX_CHUNK_SIZE: u64 = 16 * 1024 * 1024;
/// Largest encoded chunk or blob upload: 16 MiB plus the encrypted blob header.
pub const MAX_ENCODED_SIZE: u64 = MAX_CHUNK_SIZE + ENCRYPTED_HEADER_LEN as u64;
/// Smallest encoded chunk: a plain header plus one byte.
pub const MIN_CHUNK_ENCODED_SIZE: u64 = PLAIN_HEADER_LEN as u64 + 1;
/// Smallest blob upload: a plain header.
pub const MIN_BLOB_ENCODED_SIZE: u64 = PLAIN_HEADER_LEN as u64;

/// A required integer parameter within `min..=max`.
pub fn ranged_u64(params: &Params, name: &str, min: u64, max: u64) -> Result<u64, HttpError> {
    let value = params.required_u64(name)?;
    check_range(name, value, min, max)
}

/// An optional integer parameter within `min..=max`.
pub fn optional_ranged_u64(
    params: &Params,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, HttpError> {
    params
        .u64(name)?
        .map(|value| check_range(name, value, min, max))
        .transpose()
}

fn check_range(name: &str, value: u64, min: u64, max: u64) -> Result<u64, HttpError> {
    if value < min {
        return Err(HttpError::bad_param(
            name,
            format!("value must have a minimum value of {min}"),
        ));
    }
    if value > max {
        return Err(HttpError::bad_param(
            name,
            format!("value must have a maximum value of {max}"),
        ));
    }
    Ok(value)
}

/// `wid`: 1..=256.
pub fn wid(params: &Params) -> Result<u64, HttpError> {
    ranged_u64(params, "wid", 1, MAX_WID)
}

/// A 64-hex-digit digest parameter (`digest`, `csum`, `reuse-csum`).
pub fn digest(params: &Params, name: &str) -> Result<Digest, HttpError> {
    let text = params.required_str(name)?;
    parse_digest(name, &text)
}

/// Parses one digest value of parameter `name`.
pub fn parse_digest(name: &str, text: &str) -> Result<Digest, HttpError> {
    parse_digest_hex(text).map_err(|e| HttpError::bad_param(name, e))
}

/// An archive/file name parameter: a safe id.
pub fn archive_name(params: &Params, name: &str) -> Result<String, HttpError> {
    let value = params.required_str(name)?;
    check_archive_name(&value).map_err(|e| HttpError::bad_param(name, e))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let p = Params::from_query(Some("wid=257&size=0&digest=abc&archive-name=..%2Fx&ok=5"));
        assert!(wid(&p).is_err());
        assert!(ranged_u64(&p, "size", 1, 10).is_err());
        assert_eq!(ranged_u64(&p, "ok", 1, 10).unwrap(), 5);
        assert_eq!(optional_ranged_u64(&p, "nope", 1, 10).unwrap(), None);
        assert!(digest(&p, "digest").is_err());
        assert!(archive_name(&p, "archive-name").is_err());
        let p = Params::from_query(Some("wid=256&archive-name=drive-scsi0.img.fidx"));
        assert_eq!(wid(&p).unwrap(), 256);
        assert_eq!(
            archive_name(&p, "archive-name").unwrap(),
            "drive-scsi0.img.fidx"
        );
        assert_eq!(MAX_ENCODED_SIZE, 16 * 1024 * 1024 + 44);
        assert_eq!(MIN_CHUNK_ENCODED_SIZE, 13);
    }
}
