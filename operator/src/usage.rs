//! Reading a tenant's usage from its server (`GET /api2/json/tenants/{id}/usage`) and folding
//! it into the Tenant status; reading its sync jobs' runs (`GET /api2/json/admin/sync`, see
//! [`sync`]) for the SyncJobs' status. The operator authenticates with the API token it generated for
//! the tenant and pins the server certificate by its SHA-256 fingerprint, as PBS clients do,
//! so it works with self-signed and cert-manager certificates alike.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use pbs_cloud_server::net::pinned::pinned_client_config;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde::Deserialize;

use crate::crd::{condition, set_condition, DatastoreUsage, TenantStatus, UsageStatus};

/// Upper bound of one usage read (connect, TLS, request, body).
pub const USAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why usage could not be read; the message names the server and tenant.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("usage of tenant {tenant} from {addr}: {message}")]
    Transport {
        tenant: String,
        addr: String,
        message: String,
    },
    #[error("usage of tenant {tenant} from {addr}: HTTP {status}: {body}")]
    Status {
        tenant: String,
        addr: String,
        status: u16,
        body: String,
    },
    #[error("usage of tenant {tenant}: malformed answer: {message}")]
    Parse { tenant: String, message: String },
}

/// The usage endpoint's `data` member (field names as the server sends them).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct UsageReport {
    pub tenant: String,
    pub logical_bytes: u64,
    pub physical_bytes: u64,
    pub chunks: u64,
    pub snapshots: u64,
    pub groups: u64,
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    #[serde(default)]
    pub quota_warning: bool,
    #[serde(default)]
    pub datastores: Vec<StoreReport>,
}

/// One element of `datastores`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StoreReport {
    pub store: String,
    #[serde(default)]
    pub logical_bytes: u64,
    #[serde(default)]
    pub physical_bytes: u64,
    #[serde(default)]
    pub chunks: u64,
    #[serde(default)]
    pub snapshots: u64,
    #[serde(default)]
    pub groups: u64,
    /// A request count, or an object of counts per request kind (summed).
    #[serde(default, deserialize_with = "count_or_counts")]
    pub s3_requests: Option<u64>,
}

fn count_or_counts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::Object(m) => Some(
            m.values()
                .filter_map(serde_json::Value::as_u64)
                .fold(0u64, u64::saturating_add),
        ),
        _ => None,
    })
}

#[derive(Deserialize)]
struct Envelope {
    data: UsageReport,
}

/// Parses the body of the usage endpoint (PBS's `{"data": ...}` envelope).
pub fn parse(tenant: &str, body: &[u8]) -> Result<UsageReport, UsageError> {
    serde_json::from_slice::<Envelope>(body)
        .map(|e| e.data)
        .map_err(|e| UsageError::Parse {
            tenant: tenant.to_string(),
            message: e.to_string(),
        })
}

impl UsageReport {
    /// The status shape, stamped with `now`.
    pub fn to_status(&self, now: &str) -> UsageStatus {
        UsageStatus {
            logical_bytes: self.logical_bytes,
            physical_bytes: self.physical_bytes,
            chunks: self.chunks,
            snapshots: self.snapshots,
            groups: self.groups,
            quota_bytes: self.quota_bytes,
            quota_warning: self.quota_warning,
            datastores: self
                .datastores
                .iter()
                .map(|d| DatastoreUsage {
                    store: d.store.clone(),
                    logical_bytes: d.logical_bytes,
                    physical_bytes: d.physical_bytes,
                    chunks: d.chunks,
                    snapshots: d.snapshots,
                    groups: d.groups,
                    s3_requests: d.s3_requests,
                })
                .collect(),
            read_at: now.to_string(),
        }
    }
}

/// An event the controller publishes after a usage update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

fn quota_message(u: &UsageStatus) -> String {
    match u.quota_bytes {
        Some(q) if q > 0 => format!(
            "{} of {} quota bytes used ({}%)",
            u.physical_bytes,
            q,
            u.physical_bytes.saturating_mul(100) / q
        ),
        _ => format!("{} bytes used, no quota", u.physical_bytes),
    }
}

/// Writes `usage` into `status` (`usage`, `usedBytes`, condition `QuotaWarning`) and returns
/// the event to publish when the quota warning switched on or off.
pub fn apply_usage(
    status: &mut TenantStatus,
    usage: UsageStatus,
    generation: Option<i64>,
    now: &str,
) -> Option<UsageEvent> {
    let was = status.usage.as_ref().is_some_and(|u| u.quota_warning);
    let on = usage.quota_warning;
    let message = quota_message(&usage);
    set_condition(
        &mut status.conditions,
        condition(
            "QuotaWarning",
            on,
            if on { "QuotaNearlyFull" } else { "QuotaOk" },
            message.clone(),
            generation,
            now,
        ),
    );
    status.used_bytes = Some(usage.physical_bytes);
    status.usage = Some(usage);
    match (was, on) {
        (false, true) => Some(UsageEvent {
            warning: true,
            reason: "QuotaWarning",
            note: format!("tenant is near its quota: {message}"),
        }),
        (true, false) => Some(UsageEvent {
            warning: false,
            reason: "QuotaOk",
            note: format!("tenant is below its quota warning again: {message}"),
        }),
        _ => None,
    }
}

/// Where and how to read one tenant's usage.
#[derive(Debug, Clone)]
pub struct UsageTarget {
    /// `host:port` to connect to.
    pub addr: String,
    /// SHA-256 fingerprint of the server certificate (colon-separated hex).
    pub fingerprint: String,
    /// Full token id (`user@realm!name`).
    pub tokenid: String,
    pub secret: String,
    /// Tenant id inside the server.
    pub tenant_id: String,
}

/// Percent-encodes everything but unreserved characters (token secrets in the header).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Reads the usage of `t.tenant_id` from its server.
pub async fn fetch(t: &UsageTarget) -> Result<UsageReport, UsageError> {
    let path = format!("/api2/json/tenants/{}/usage", encode(&t.tenant_id));
    let (status, body) = get(t, &path)
        .await
        .map_err(|message| UsageError::Transport {
            tenant: t.tenant_id.clone(),
            addr: t.addr.clone(),
            message,
        })?;
    if status != 200 {
        return Err(UsageError::Status {
            tenant: t.tenant_id.clone(),
            addr: t.addr.clone(),
            status,
            body: String::from_utf8_lossy(&body).chars().take(300).collect(),
        });
    }
    parse(&t.tenant_id, &body)
}

/// Lists the tenant's sync jobs with their last and next runs (`GET /api2/json/admin/sync`),
/// with the same token and pinned certificate as the usage read; the error names the tenant
/// and server.
pub async fn fetch_sync_jobs(t: &UsageTarget) -> Result<Vec<sync::SyncListEntry>, String> {
    let what = |m: String| format!("sync jobs of tenant {} from {}: {m}", t.tenant_id, t.addr);
    let (status, body) = get(t, "/api2/json/admin/sync").await.map_err(what)?;
    if status != 200 {
        let body: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        return Err(what(format!("HTTP {status}: {body}")));
    }
    sync::parse_sync_list(&body).map_err(what)
}

/// One GET of `path` on the tenant's server over TLS pinned to its fingerprint, with the API
/// token; the HTTP status and body, within [`USAGE_TIMEOUT`].
async fn get(t: &UsageTarget, path: &str) -> Result<(u16, Bytes), String> {
    let work = async {
        let config = pinned_config(&t.fingerprint)?;
        let host = t
            .addr
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&t.addr)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = ServerName::try_from(host.clone())
            .map_err(|e| format!("invalid host '{host}': {e}"))?;
        let tcp = tokio::net::TcpStream::connect(&t.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, t.addr.as_str())
            .header(
                hyper::header::AUTHORIZATION,
                format!("PBSAPIToken={}:{}", t.tokenid, encode(&t.secret)),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(USAGE_TIMEOUT, work)
        .await
        .map_err(|_| format!("no answer within {USAGE_TIMEOUT:?}"))?
}

fn pinned_config(fingerprint: &str) -> Result<Arc<ClientConfig>, String> {
    pinned_client_config(fingerprint)
        .map(Arc::new)
        .map_err(|e| format!("TLS client setup: {e}"))
}

pub mod sync;

#[cfg(test)]
mod tests;
