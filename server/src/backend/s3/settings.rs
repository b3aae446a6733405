//! Settings of an S3 datastore: bucket, prefix, endpoint, credentials, storage options and
//! the limits of the client.

use std::time::Duration;

use super::DEFAULT_HEALTH_INTERVAL;

/// Default per-request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// Default bound of requests in flight.
pub const DEFAULT_MAX_CONCURRENCY: usize = 32;

/// Where the S3 credentials come from.
#[derive(Clone)]
pub enum S3Credentials {
    /// Given in the configuration (secret read from a file by the caller).
    Static {
        access_key_id: String,
        secret_access_key: String,
    },
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`).
    Env,
    /// The SDK's default chain: environment, profile, web identity, instance metadata.
    DefaultChain,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Credentials::Static { access_key_id, .. } => {
                write!(f, "Static({access_key_id}, secret hidden)")
            }
            S3Credentials::Env => f.write_str("Env"),
            S3Credentials::DefaultChain => f.write_str("DefaultChain"),
        }
    }
}

/// Whether to use `If-None-Match: *` for only-if-absent writes (`conditional_writes` in
/// `[datastore.s3]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionalWrites {
    /// Probe the store at open (`"auto"`).
    Auto,
    /// The store honours the header (`"if-none-match"`).
    On,
    /// HEAD before PUT (`"head-then-put"`; safe because one server writes a datastore).
    Off,
}

impl ConditionalWrites {
    /// The config spellings, in the order of the variants.
    pub const NAMES: &'static [&'static str] = &["auto", "if-none-match", "head-then-put"];

    /// Parses a config value (see [`ConditionalWrites::NAMES`]).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "auto" => Some(ConditionalWrites::Auto),
            "if-none-match" => Some(ConditionalWrites::On),
            "head-then-put" => Some(ConditionalWrites::Off),
            _ => None,
        }
    }
}

/// Settings of one S3 datastore, already resolved (secrets read, defaults applied).
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix; normalised to "" or ending in '/'.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    pub credentials: S3Credentials,
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// PEM bundle of extra trusted CAs.
    pub ca_bundle_pem: Option<Vec<u8>>,
    pub request_timeout: Duration,
    pub max_retries: u32,
    pub max_concurrency: usize,
    pub conditional_writes: ConditionalWrites,
    /// Interval of the background health probe (zero: no probe, requests still update it).
    pub health_interval: Duration,
}

impl S3Settings {
    /// Settings with defaults for everything but the location and credentials.
    pub fn new(bucket: &str, prefix: &str, credentials: S3Credentials) -> Self {
        S3Settings {
            bucket: bucket.to_string(),
            prefix: normalize_prefix(prefix),
            endpoint: None,
            region: "us-east-1".to_string(),
            path_style: false,
            credentials,
            storage_class: None,
            sse: None,
            sse_kms_key_id: None,
            ca_bundle_pem: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            conditional_writes: ConditionalWrites::Auto,
            health_interval: DEFAULT_HEALTH_INTERVAL,
        }
    }
}

/// "" stays ""; "a/b" and "/a/b/" become "a/b/".
pub fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}
