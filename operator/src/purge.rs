//! `deletionPolicy: Delete`: removing every object (every version, every delete marker) under
//! the S3 prefixes of a tenant's datastores.
//!
//! Objects under S3 Object Lock cannot be deleted before their retain-until date (governance
//! locks are not bypassed either: that needs a deliberate, privileged act). They are counted
//! and reported; the controller keeps the Tenant's finalizer until they are gone (see
//! `controller::cleanup`).

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use futures::StreamExt;

/// Deletes in flight per prefix.
const PARALLEL_DELETES: usize = 16;
/// Locked keys named in the outcome (the count covers all of them).
const LOCKED_SAMPLE: usize = 5;

/// One S3 prefix to empty, with resolved credentials.
#[derive(Clone)]
pub struct PurgeTarget {
    pub bucket: String,
    /// Key prefix; a trailing `/` is added so `a/b` never matches `a/bc/...`.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Access key id and secret; the SDK's default chain when `None`.
    pub keys: Option<(String, String)>,
    /// Extra trusted CAs (PEM).
    pub ca_bundle_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for PurgeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.location())
    }
}

impl PurgeTarget {
    /// `s3://bucket/prefix/` for messages.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, normalized(&self.prefix))
    }
}

fn normalized(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// What a purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Object versions and delete markers removed.
    pub deleted: u64,
    /// Versions refused because of Object Lock (or a legal hold).
    pub locked: u64,
    /// Some of the locked keys.
    pub locked_sample: Vec<String>,
}

/// A purge that could not run or finish; names the location.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("purging {location}: an empty prefix would delete the whole bucket; refused")]
    EmptyPrefix { location: String },
    #[error("purging {location}: {message}")]
    S3 { location: String, message: String },
}

async fn client(t: &PurgeTarget) -> Result<aws_sdk_s3::Client, PurgeError> {
    let err = |message: String| PurgeError::S3 {
        location: t.location(),
        message,
    };
    let mut trust = TrustStore::default();
    if let Some(pem) = &t.ca_bundle_pem {
        trust = trust.with_pem_certificate(pem.clone());
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| err(format!("invalid CA bundle: {e}")))?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context)
        .build_https();
    let region = Region::new(t.region.clone().unwrap_or_else(|| "us-east-1".into()));
    let credentials = match &t.keys {
        Some((id, secret)) => SharedCredentialsProvider::new(Credentials::new(
            id.clone(),
            secret.clone(),
            None,
            None,
            "pbs-cloud-datastore-secret",
        )),
        None => aws_config::defaults(BehaviorVersion::latest())
            .region(region.clone())
            .http_client(http.clone())
            .load()
            .await
            .credentials_provider()
            .ok_or_else(|| err("the SDK's default credential chain found no provider".into()))?,
    };
    let mut b = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(credentials)
        .http_client(http)
        .force_path_style(t.path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(e) = &t.endpoint {
        b = b.endpoint_url(e.clone());
    }
    Ok(aws_sdk_s3::Client::from_conf(b.build()))
}

/// One version (or delete marker) to delete; `None` version id on unversioned listings.
type Entry = (String, Option<String>);
/// A delete's failure: whether Object Lock refused it, and the message.
type DeleteFailure = (bool, String);

/// Lists every version and delete marker under the prefix; falls back to a plain listing on
/// stores without versioning support.
async fn list_all(
    c: &aws_sdk_s3::Client,
    t: &PurgeTarget,
    prefix: &str,
) -> Result<Vec<Entry>, PurgeError> {
    let err = |e: String| PurgeError::S3 {
        location: t.location(),
        message: e,
    };
    let mut out = Vec::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let res = c
            .list_object_versions()
            .bucket(&t.bucket)
            .prefix(prefix)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await;
        let page = match res {
            Ok(p) => p,
            Err(e) if e.code() == Some("NotImplemented") && out.is_empty() => {
                return list_current(c, t, prefix).await
            }
            Err(e) => return Err(err(format!("list versions: {}", DisplayErrorContext(&e)))),
        };
        for v in page.versions() {
            if let Some(k) = v.key() {
                out.push((k.to_string(), v.version_id().map(str::to_string)));
            }
        }
        for m in page.delete_markers() {
            if let Some(k) = m.key() {
                out.push((k.to_string(), m.version_id().map(str::to_string)));
            }
        }
        if page.is_truncated() != Some(true) {
            return Ok(out);
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
        if key_marker.is_none() {
            return Ok(out);
        }
    }
}

async fn list_current(
    c: &aws_sdk_s3::Client,
    t: &PurgeTarget,
    prefix: &str,
) -> Result<Vec<Entry>, PurgeError> {
    let mut out = Vec::new();
    let mut pages = c
        .list_objects_v2()
        .bucket(&t.bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| PurgeError::S3 {
            location: t.location(),
            message: format!("list: {}", DisplayErrorContext(&e)),
        })?;
        for o in page.contents() {
            if let Some(k) = o.key() {
                out.push((k.to_string(), None));
            }
        }
    }
    Ok(out)
}

/// Deletes every object version under the target's prefix. Locked versions are counted, not
/// errors; any other failure is an error (the purge can simply run again).
pub async fn purge(t: &PurgeTarget) -> Result<PurgeOutcome, PurgeError> {
    let prefix = normalized(&t.prefix);
    if prefix.is_empty() {
        return Err(PurgeError::EmptyPrefix {
            location: t.location(),
        });
    }
    let c = client(t).await?;
    let entries = list_all(&c, t, &prefix).await?;
    let results: Vec<(String, Result<(), DeleteFailure>)> = futures::stream::iter(entries)
        .map(|(key, version)| {
            let c = c.clone();
            let bucket = t.bucket.clone();
            async move {
                let res = c
                    .delete_object()
                    .bucket(bucket)
                    .key(&key)
                    .set_version_id(version)
                    .send()
                    .await;
                let res = match res {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let status = e.raw_response().map(|r| r.status().as_u16());
                        let locked = status == Some(403)
                            || matches!(e.code(), Some("AccessDenied") | Some("ObjectLocked"));
                        let not_found = status == Some(404);
                        if not_found {
                            Ok(())
                        } else {
                            Err((locked, DisplayErrorContext(&e).to_string()))
                        }
                    }
                };
                (key, res)
            }
        })
        .buffer_unordered(PARALLEL_DELETES)
        .collect()
        .await;
    let mut out = PurgeOutcome::default();
    for (key, res) in results {
        match res {
            Ok(()) => out.deleted += 1,
            Err((true, _)) => {
                out.locked += 1;
                if out.locked_sample.len() < LOCKED_SAMPLE {
                    out.locked_sample.push(key);
                }
            }
            Err((false, message)) => {
                return Err(PurgeError::S3 {
                    location: t.location(),
                    message: format!("delete {key}: {message}"),
                })
            }
        }
    }
    out.locked_sample.sort();
    Ok(out)
}

/// Counts the objects (all versions) under the prefix; for reports and tests.
pub async fn count(t: &PurgeTarget) -> Result<usize, PurgeError> {
    let c = client(t).await?;
    Ok(list_all(&c, t, &normalized(&t.prefix)).await?.len())
}
