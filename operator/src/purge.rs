//! `deletionPolicy: Delete`: removing every object (every version, every delete marker) under
//! the S3 prefixes of a tenant's datastores.
//!
//! Objects under S3 Object Lock cannot be deleted before their retain-until date (governance
//! locks are not bypassed either: that needs a deliberate, privileged act). They are counted
//! and reported; the controller keeps the Tenant's finalizer until they are gone (see
//! `controller::cleanup`).

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use futures::StreamExt;
use pbs_cloud_server::backend::s3::{sdk_client, S3Credentials, S3Settings};

/// Deletes in flight per prefix.
const PARALLEL_DELETES: usize = 16;
/// Locked keys named in the outcome (the count covers all of them).
const LOCKED_SAMPLE: usize = 5;
/// Bound of one request attempt (the shared S3 client turns the SDK's 5 s stalled-stream check
/// off: a store busy with a 1000-key delete in a large bucket answers later than that).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One S3 prefix to empty, with resolved credentials.
#[derive(Clone)]
pub struct PurgeTarget {
    pub bucket: String,
    /// Key prefix; a trailing `/` is added so `a/b` never matches `a/bc/...`.
    pub prefix: String,
    /// Prefixes inside `prefix` that are left alone (other datastores' keys).
    pub exclude: Vec<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Access key id and secret; the SDK's default chain when `None`.
    pub keys: Option<(String, String)>,
    /// Extra trusted CAs (PEM).
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Listing page size; the store's default (1000) when `None`.
    pub page_size: Option<i32>,
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
    /// Versions under an excluded prefix, left alone (as the last pass saw them).
    pub skipped: u64,
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
    let credentials = match &t.keys {
        Some((id, secret)) => S3Credentials::Static {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
        },
        None => S3Credentials::DefaultChain,
    };
    let mut settings = S3Settings::new(&t.bucket, "", credentials);
    settings.endpoint = t.endpoint.clone();
    settings.region = t.region.clone().unwrap_or_else(|| "us-east-1".into());
    settings.path_style = t.path_style;
    settings.ca_bundle_pem = t.ca_bundle_pem.clone();
    settings.request_timeout = REQUEST_TIMEOUT;
    // The SDK's standard retry mode: three attempts.
    settings.max_retries = 2;
    sdk_client(&settings).await.map_err(|e| PurgeError::S3 {
        location: t.location(),
        message: e.to_string(),
    })
}

/// One version (or delete marker) to delete; `None` version id on unversioned listings.
type Entry = (String, Option<String>);
/// A delete's failure: whether Object Lock refused it, and the message.
type DeleteFailure = (bool, String);

/// Where the next listing page starts.
#[derive(Default)]
enum Cursor {
    #[default]
    Start,
    /// ListObjectVersions markers.
    Versions(Option<String>, Option<String>),
    /// ListObjectsV2 continuation token (stores without versioning support).
    Plain(Option<String>),
    Done,
}

/// One page (at most 1000 entries) of every version and delete marker under the prefix, and
/// where the next page starts. Falls back to a plain listing on stores without versioning.
/// Pages keep memory flat however many objects a datastore holds.
async fn page(
    c: &aws_sdk_s3::Client,
    t: &PurgeTarget,
    prefix: &str,
    cursor: Cursor,
) -> Result<(Vec<Entry>, Cursor), PurgeError> {
    let err = |e: String| PurgeError::S3 {
        location: t.location(),
        message: e,
    };
    let (key_marker, version_marker) = match cursor {
        Cursor::Done => return Ok((Vec::new(), Cursor::Done)),
        Cursor::Plain(token) => return plain_page(c, t, prefix, token).await,
        Cursor::Start => (None, None),
        Cursor::Versions(k, v) => (k, v),
    };
    let first = key_marker.is_none();
    let res = c
        .list_object_versions()
        .bucket(&t.bucket)
        .prefix(prefix)
        .set_max_keys(t.page_size)
        .set_key_marker(key_marker)
        .set_version_id_marker(version_marker)
        .send()
        .await;
    let page = match res {
        Ok(p) => p,
        Err(e) if e.code() == Some("NotImplemented") && first => {
            return plain_page(c, t, prefix, None).await
        }
        Err(e) => return Err(err(format!("list versions: {}", DisplayErrorContext(&e)))),
    };
    let mut out = Vec::new();
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
    let next = match (page.is_truncated(), page.next_key_marker()) {
        (Some(true), Some(k)) => Cursor::Versions(
            Some(k.to_string()),
            page.next_version_id_marker().map(str::to_string),
        ),
        _ => Cursor::Done,
    };
    Ok((out, next))
}

async fn plain_page(
    c: &aws_sdk_s3::Client,
    t: &PurgeTarget,
    prefix: &str,
    token: Option<String>,
) -> Result<(Vec<Entry>, Cursor), PurgeError> {
    let page = c
        .list_objects_v2()
        .bucket(&t.bucket)
        .prefix(prefix)
        .set_max_keys(t.page_size)
        .set_continuation_token(token)
        .send()
        .await
        .map_err(|e| PurgeError::S3 {
            location: t.location(),
            message: format!("list: {}", DisplayErrorContext(&e)),
        })?;
    let out = page
        .contents()
        .iter()
        .filter_map(|o| o.key().map(|k| (k.to_string(), None)))
        .collect();
    let next = match (page.is_truncated(), page.next_continuation_token()) {
        (Some(true), Some(tok)) => Cursor::Plain(Some(tok.to_string())),
        _ => Cursor::Done,
    };
    Ok((out, next))
}

/// Deletes one page of entries; locked versions are counted in `out`.
async fn delete_page(
    c: &aws_sdk_s3::Client,
    t: &PurgeTarget,
    entries: Vec<Entry>,
    out: &mut PurgeOutcome,
) -> Result<(), PurgeError> {
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
                        if status == Some(404) {
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
    Ok(())
}

/// Splits listed entries into those to delete and the number left alone: a key must lie under
/// the target's own prefix and under none of its excluded ones.
fn own_entries(prefix: &str, exclude: &[String], entries: Vec<Entry>) -> (Vec<Entry>, u64) {
    let exclude: Vec<String> = exclude
        .iter()
        .map(|e| normalized(e))
        .filter(|e| !e.is_empty())
        .collect();
    let (mine, other): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|(k, _)| {
        k.starts_with(prefix) && !exclude.iter().any(|e| k.starts_with(e.as_str()))
    });
    (mine, other.len() as u64)
}

/// Listing passes at most; a pass that deletes nothing ends the purge earlier.
const MAX_PASSES: usize = 5;

/// Deletes every object version under the target's prefix (except under its excluded
/// prefixes), page by page. Deleting while
/// listing can make a store skip entries after the marker (Ceph RGW does), so passes repeat
/// from the start until one deletes nothing. Locked versions are counted (as the last pass
/// saw them), not errors; any other failure is an error (the purge can simply run again).
pub async fn purge(t: &PurgeTarget) -> Result<PurgeOutcome, PurgeError> {
    let prefix = normalized(&t.prefix);
    if prefix.is_empty() {
        return Err(PurgeError::EmptyPrefix {
            location: t.location(),
        });
    }
    let c = client(t).await?;
    let mut deleted = 0;
    let mut last = PurgeOutcome::default();
    for _ in 0..MAX_PASSES {
        let mut pass = PurgeOutcome::default();
        let mut cursor = Cursor::Start;
        loop {
            let (entries, next) = page(&c, t, &prefix, cursor).await?;
            let (entries, skipped) = own_entries(&prefix, &t.exclude, entries);
            pass.skipped += skipped;
            delete_page(&c, t, entries, &mut pass).await?;
            if matches!(next, Cursor::Done) {
                break;
            }
            cursor = next;
        }
        deleted += pass.deleted;
        let done = pass.deleted == 0;
        last = pass;
        if done {
            break;
        }
    }
    last.deleted = deleted;
    last.locked_sample.sort();
    Ok(last)
}

/// Counts the objects (all versions and delete markers) under the prefix and not under an
/// excluded one; for reports and tests.
pub async fn count(t: &PurgeTarget) -> Result<usize, PurgeError> {
    let c = client(t).await?;
    let prefix = normalized(&t.prefix);
    let (mut n, mut cursor) = (0, Cursor::Start);
    loop {
        let (entries, next) = page(&c, t, &prefix, cursor).await?;
        n += own_entries(&prefix, &t.exclude, entries).0.len();
        if matches!(next, Cursor::Done) {
            return Ok(n);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_under_the_own_prefix_and_outside_excluded_ones_are_deleted() {
        let e = |k: &str| (k.to_string(), None);
        let listed = vec![
            e("t/a/.chunks/00/x"),
            e("t/a/b/.chunks/00/y"),
            e("t/a/bc/z"),
            e("t/ab/q"),
        ];
        let (mine, left) = own_entries("t/a/", &["/t/a/b/".to_string()], listed);
        let keys: Vec<&str> = mine.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["t/a/.chunks/00/x", "t/a/bc/z"]);
        assert_eq!(
            left, 2,
            "the nested prefix and a key a store listed by mistake"
        );
    }
}
