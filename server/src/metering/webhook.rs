//! Posting one webhook event: HTTP/1.1 over TCP or TLS (system CA bundle), the JSON body
//! signed with HMAC-SHA256 keyed by the secret file's contents (trailing line breaks removed),
//! sent as `X-PBS-Cloud-Signature: sha256=<hex>`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-pbs-cloud-signature";
/// Header carrying the event type.
pub const EVENT_HEADER: &str = "x-pbs-cloud-event";
/// Longest a single delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// `sha256=<hex>` of `body` under `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

/// Where and how events are posted.
pub struct WebhookSender {
    uri: Uri,
    host: String,
    port: u16,
    key: Vec<u8>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl WebhookSender {
    /// Check the address and read the secret (without one, bodies are signed with an empty key
    /// and a warning says so).
    pub fn new(url: &str, secret_file: Option<&Path>) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("webhook url '{url}': {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => anyhow::bail!("webhook url '{url}' is not http:// or https://"),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("webhook url '{url}' has no host"))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let key = match secret_file {
            Some(path) => {
                let raw = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("webhook secret_file {}: {e}", path.display()))?;
                let end = raw
                    .iter()
                    .rposition(|b| *b != b'\n' && *b != b'\r')
                    .map_or(0, |p| p + 1);
                raw[..end].to_vec()
            }
            None => {
                tracing::warn!("webhook has no secret_file: events are signed with an empty key");
                Vec::new()
            }
        };
        let tls = match https {
            true => Some(tls_connector()?),
            false => None,
        };
        Ok(Self {
            uri,
            host,
            port,
            key,
            tls,
        })
    }

    /// Post one event body; returns the receiver's status.
    pub async fn post(&self, event_type: &str, body: Bytes) -> Result<StatusCode, String> {
        tokio::time::timeout(ATTEMPT_TIMEOUT, self.post_inner(event_type, body))
            .await
            .map_err(|_| format!("no answer within {ATTEMPT_TIMEOUT:?}"))?
    }

    async fn post_inner(&self, event_type: &str, body: Bytes) -> Result<StatusCode, String> {
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let authority = self
            .uri
            .authority()
            .map_or(self.host.clone(), |a| a.to_string());
        let req = Request::post(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "pbs-cloud-server")
            .header(SIGNATURE_HEADER, sign(&self.key, &body))
            .header(EVENT_HEADER, event_type)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", self.host, self.port))?;
        match &self.tls {
            None => send(TokioIo::new(tcp), req).await,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("server name '{}': {e}", self.host))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.host))?;
                send(TokioIo::new(tls), req).await
            }
        }
    }
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<StatusCode, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    // Read the answer to the end so the receiver sees a complete exchange.
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// TLS client trusting the system CA bundle (`SSL_CERT_FILE` or the usual locations).
fn tls_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let candidates = [
        std::env::var("SSL_CERT_FILE").unwrap_or_default(),
        "/etc/ssl/certs/ca-certificates.crt".to_string(),
        "/etc/pki/tls/certs/ca-bundle.crt".to_string(),
        "/etc/ssl/cert.pem".to_string(),
    ];
    let mut roots = rustls::RootCertStore::empty();
    for path in candidates.iter().filter(|p| !p.is_empty()) {
        let Ok(file) = std::fs::File::open(path) else {
            continue;
        };
        let mut reader = std::io::BufReader::new(file);
        for cert in rustls_pemfile::certs(&mut reader).flatten() {
            let _ = roots.add(cert);
        }
        if !roots.is_empty() {
            break;
        }
    }
    if roots.is_empty() {
        anyhow::bail!("webhook over https: no CA certificates found (set SSL_CERT_FILE)");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
