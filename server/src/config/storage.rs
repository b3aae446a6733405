//! Where a datastore keeps its objects: a local directory (default) or an S3 bucket prefix.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// S3 settings of one datastore (`[datastore.s3]`, or the seed-style top-level `[storage]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: Spanned<String>,
    /// Key prefix inside the bucket; every object of the datastore lives below it.
    #[serde(default)]
    pub prefix: String,
    /// Endpoint URL (`https://s3.example.com`, `http://127.0.0.1:7480`); AWS when absent.
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when absent.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-host style.
    #[serde(default)]
    pub path_style: bool,
    /// Access key id given inline (the secret must come from `secret_access_key_file`).
    pub access_key_id: Option<String>,
    /// File holding the secret access key (a mounted Kubernetes Secret, say).
    pub secret_access_key_file: Option<PathBuf>,
    /// Where credentials come from when not given inline: `env` (AWS_ACCESS_KEY_ID/…) or
    /// `default-chain` (the SDK's chain: env, profile, web identity, instance metadata).
    pub credentials: Option<Spanned<String>>,
    /// Storage class for new objects, e.g. `STANDARD_IA`; archive classes are refused.
    pub storage_class: Option<Spanned<String>>,
    /// Server-side encryption: `AES256` or `aws:kms`.
    pub sse: Option<Spanned<String>>,
    /// KMS key id for `sse = "aws:kms"`.
    pub sse_kms_key_id: Option<String>,
    /// PEM bundle of extra CAs for endpoints with private certificates.
    pub ca_bundle: Option<PathBuf>,
    /// Per-request timeout in seconds.
    pub request_timeout_secs: Option<u64>,
    /// Retries (with backoff) of 5xx answers and timeouts.
    pub max_retries: Option<u32>,
    /// Most requests in flight to the bucket at once.
    pub max_concurrency: Option<usize>,
    /// How new chunks are written only-if-absent: `auto` (default: probe the store at start),
    /// `if-none-match` (the store honours `If-None-Match: *`, as AWS, Ceph RGW and MinIO do) or
    /// `head-then-put` (a HEAD before each new object, for stores such as Garage that silently
    /// ignore the header; safe because one server writes a datastore).
    pub conditional_writes: Option<Spanned<String>>,
    /// Seconds between background health probes of the bucket (default 30; 0 turns the probe
    /// off, failures of real requests still show in the status).
    pub health_check_secs: Option<u64>,
}

/// The seed's top-level `[storage]` section: the default datastore's backend, flat.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `filesystem` or `s3`.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// Directory for `filesystem`.
    pub path: Option<PathBuf>,
    pub bucket: Option<Spanned<String>>,
    #[serde(default)]
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    #[serde(default)]
    pub path_style: bool,
}

/// Storage classes that cannot be read at once: restores would need a thaw first.
pub const ARCHIVE_STORAGE_CLASSES: &[&str] = &["GLACIER", "DEEP_ARCHIVE", "GLACIER_IR_ARCHIVE"];
/// Accepted server-side encryption modes.
pub const SSE_MODES: &[&str] = &["AES256", "aws:kms"];
/// Accepted `conditional_writes` values (see `backend::s3::ConditionalWrites`).
pub const CONDITIONAL_WRITE_MODES: &[&str] = &["auto", "if-none-match", "head-then-put"];
/// Accepted credential sources besides inline keys.
pub const CREDENTIAL_SOURCES: &[&str] = &["env", "default-chain"];

/// Checks one S3 section; returns the offending field and message.
pub fn check_s3(s3: &S3Config) -> Result<(), (String, String, usize)> {
    let bucket = s3.bucket.get_ref();
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !valid_bucket {
        return Err((
            "bucket".into(),
            format!(
                "'{bucket}' is not a valid bucket name (3-63 lowercase letters, digits, '-', '.')"
            ),
            s3.bucket.span().start,
        ));
    }
    if s3.prefix.split('/').any(|c| c == ".." || c == ".") || s3.prefix.starts_with('/') {
        return Err((
            "prefix".into(),
            format!(
                "'{}' must be a relative key prefix without '.' or '..'",
                s3.prefix
            ),
            s3.bucket.span().start,
        ));
    }
    if let Some(class) = &s3.storage_class {
        if ARCHIVE_STORAGE_CLASSES.contains(&class.get_ref().as_str()) {
            return Err((
                "storage_class".into(),
                format!(
                    "'{}' is an archive class whose objects cannot be read at once; restores, verify and GC need readable objects (use STANDARD or STANDARD_IA)",
                    class.get_ref()
                ),
                class.span().start,
            ));
        }
    }
    if let Some(sse) = &s3.sse {
        if !SSE_MODES.contains(&sse.get_ref().as_str()) {
            return Err((
                "sse".into(),
                format!("'{}' is not one of {}", sse.get_ref(), SSE_MODES.join(", ")),
                sse.span().start,
            ));
        }
        if sse.get_ref() == "aws:kms" && s3.sse_kms_key_id.is_none() {
            return Err((
                "sse_kms_key_id".into(),
                "required when sse = \"aws:kms\"".into(),
                sse.span().start,
            ));
        }
    }
    if let Some(source) = &s3.credentials {
        if !CREDENTIAL_SOURCES.contains(&source.get_ref().as_str()) {
            return Err((
                "credentials".into(),
                format!(
                    "'{}' is not one of {}",
                    source.get_ref(),
                    CREDENTIAL_SOURCES.join(", ")
                ),
                source.span().start,
            ));
        }
    }
    if let Some(mode) = &s3.conditional_writes {
        if !CONDITIONAL_WRITE_MODES.contains(&mode.get_ref().as_str()) {
            return Err((
                "conditional_writes".into(),
                format!(
                    "'{}' is not one of {}",
                    mode.get_ref(),
                    CONDITIONAL_WRITE_MODES.join(", ")
                ),
                mode.span().start,
            ));
        }
    }
    if s3.access_key_id.is_some() != s3.secret_access_key_file.is_some() {
        return Err((
            "access_key_id".into(),
            "access_key_id and secret_access_key_file go together".into(),
            s3.bucket.span().start,
        ));
    }
    Ok(())
}
