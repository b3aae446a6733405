//! A client of another PBS-compatible server: TLS pinned to the certificate's fingerprint,
//! ticket or API-token authentication, the REST calls a sync job needs, and the upgrade to a
//! reader session (docs/protocol.md#transport, #authentication, #reader-session).
//!
//! Every call opens its own connection: a job makes a few listing calls per group, and each
//! reader session needs a fresh connection to upgrade anyway.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::rate::{self, RateLimiter, Throttled};
use super::reader::RemoteReader;
use super::session::{error_text, with_query, H2Session};
use super::writer::RemoteWriter;
use super::SyncError;
use crate::format::names::{BackupDir, BackupNamespace};
use crate::net::pinned::pinned_client_config;

/// Upgrade protocols of reader and backup sessions.
const READER_PROTOCOL: &str = "proxmox-backup-reader-protocol-v1";
const BACKUP_PROTOCOL: &str = "proxmox-backup-protocol-v1";

/// A configured remote, resolved from `[[remote]]`.
#[derive(Clone, Debug)]
pub struct RemoteSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// `user@realm` (password) or `user@realm!token` (API token).
    pub auth_id: String,
    pub fingerprint: String,
    /// Holds the password or token secret; read at every login.
    pub secret_file: PathBuf,
}

impl RemoteSpec {
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// How requests authenticate.
#[derive(Clone, Debug)]
enum Auth {
    /// `PBSAuthCookie` from a ticket login, and the CSRF token writes need.
    Ticket { cookie: String, csrf: String },
    /// `Authorization: PBSAPIToken=<tokenid>:<secret>`.
    Token(String),
}

/// An authenticated client of one remote.
#[derive(Clone)]
pub struct RemoteClient {
    spec: Arc<RemoteSpec>,
    tls: TlsConnector,
    auth: Auth,
    /// Shared by every connection of this client: downloads, uploads.
    limit_in: Option<Arc<RateLimiter>>,
    limit_out: Option<Arc<RateLimiter>>,
}

impl std::fmt::Debug for RemoteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClient")
            .field("remote", &self.spec.name)
            .finish_non_exhaustive()
    }
}

impl RemoteClient {
    /// Reads the secret, checks the certificate and logs in (a password login asks for a
    /// ticket; a token is checked by a first call). With `rate_in` (`rate_out`), all
    /// downloads (uploads) together keep to that many bytes per second.
    pub async fn connect(
        spec: &RemoteSpec,
        rate_in: Option<u64>,
        rate_out: Option<u64>,
    ) -> Result<RemoteClient, SyncError> {
        let secret =
            std::fs::read_to_string(&spec.secret_file).map_err(|source| SyncError::Secret {
                remote: spec.name.clone(),
                path: spec.secret_file.clone(),
                source,
            })?;
        let secret = secret.trim_end_matches(['\r', '\n']).to_string();
        let config = pinned_client_config(&spec.fingerprint).map_err(|e| SyncError::Transport {
            remote: spec.name.clone(),
            message: format!("TLS configuration: {e}"),
        })?;
        let mut client = RemoteClient {
            spec: Arc::new(spec.clone()),
            tls: TlsConnector::from(Arc::new(config)),
            auth: Auth::Token(format!("PBSAPIToken={}:{secret}", spec.auth_id)),
            limit_in: rate_in.map(|rate| Arc::new(RateLimiter::new(rate))),
            limit_out: rate_out.map(|rate| Arc::new(RateLimiter::new(rate))),
        };
        if spec.auth_id.contains('!') {
            client.get_json("/api2/json/version", &[]).await?;
            return Ok(client);
        }
        let body = json!({ "username": spec.auth_id, "password": secret }).to_string();
        let request = Request::builder()
            .method(Method::POST)
            .uri("/api2/json/access/ticket")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| client.transport(e))?;
        let answer = client.call(request, "login").await?;
        let field = |name: &str| {
            answer["data"][name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| client.answer("login", format!("no {name} in the answer")))
        };
        client.auth = Auth::Ticket {
            cookie: format!("PBSAuthCookie={}", field("ticket")?),
            csrf: field("CSRFPreventionToken")?,
        };
        Ok(client)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// `GET path?query`, the answer's `data`.
    pub async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<Value, SyncError> {
        let uri = with_query(path, query);
        let request = self
            .authorized(Method::GET, &uri)
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.transport(e))?;
        let mut answer = self.call(request, path).await?;
        Ok(answer["data"].take())
    }

    /// `POST path` with a JSON body (a write: the ticket's CSRF token goes along).
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, SyncError> {
        let request = self
            .authorized(Method::POST, path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| self.transport(e))?;
        let mut answer = self.call(request, path).await?;
        Ok(answer["data"].take())
    }

    /// `DELETE path?query`, the answer's `data`.
    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, SyncError> {
        let request = self
            .authorized(Method::DELETE, &with_query(path, query))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.transport(e))?;
        let mut answer = self.call(request, path).await?;
        Ok(answer["data"].take())
    }

    /// Opens a reader session on a snapshot of `store`.
    pub async fn reader(
        &self,
        store: &str,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<RemoteReader, SyncError> {
        let mut query = snapshot_query(store, ns, dir);
        query.push(("debug", "true".to_string()));
        let what = format!("reader session on {}", dir.path());
        let session = self
            .upgrade("/api2/json/reader", READER_PROTOCOL, &query, what)
            .await?;
        Ok(RemoteReader::new(session))
    }

    /// Opens a backup session for a new snapshot `dir` in `store`, as a pushing PBS does.
    pub async fn writer(
        &self,
        store: &str,
        ns: &BackupNamespace,
        dir: &BackupDir,
    ) -> Result<RemoteWriter, SyncError> {
        let mut query = snapshot_query(store, ns, dir);
        query.push(("benchmark", "false".to_string()));
        query.push(("debug", "false".to_string()));
        let what = format!("backup session for {}", dir.path());
        let session = self
            .upgrade("/api2/json/backup", BACKUP_PROTOCOL, &query, what)
            .await?;
        Ok(RemoteWriter::new(session))
    }

    async fn upgrade(
        &self,
        path: &str,
        protocol: &str,
        query: &[(&str, String)],
        what: String,
    ) -> Result<H2Session, SyncError> {
        let request = self
            .authorized(Method::GET, &with_query(path, query))
            .header(header::UPGRADE, protocol)
            .header(header::CONNECTION, "upgrade")
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.transport(e))?;
        let (mut sender, conn) = self.open().await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.transport(format!("{what}: {e}")))?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            return Err(self.remote_error(&what, status, &body.unwrap_or_default()));
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| self.transport(format!("{what}: {e}")))?;
        H2Session::handshake(self.spec.name.clone(), what, upgraded).await
    }

    fn authorized(&self, method: Method, uri: &str) -> http::request::Builder {
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, self.spec.host.as_str());
        match &self.auth {
            Auth::Ticket { cookie, csrf } => builder
                .header(header::COOKIE, cookie.as_str())
                .header("CSRFPreventionToken", csrf.as_str()),
            Auth::Token(value) => builder.header(header::AUTHORIZATION, value.as_str()),
        }
    }

    async fn open(
        &self,
    ) -> Result<
        (
            http1::SendRequest<Full<Bytes>>,
            http1::Connection<TokioIo<TlsStream<Throttled<tokio::net::TcpStream>>>, Full<Bytes>>,
        ),
        SyncError,
    > {
        let address = self.spec.address();
        let tcp = rate::connect(&address, self.limit_in.as_deref())
            .await
            .map_err(|source| SyncError::Connect {
                remote: self.spec.name.clone(),
                address: address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        // The certificate is checked by fingerprint only; the name just has to be valid.
        let name = ServerName::try_from(self.spec.host.clone())
            .unwrap_or_else(|_| ServerName::try_from("localhost").expect("valid name"));
        let tls = self
            .tls
            .connect(
                name,
                Throttled::new(tcp, self.limit_in.clone(), self.limit_out.clone()),
            )
            .await
            .map_err(|e| self.transport(format!("TLS with {address}: {e}")))?;
        http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.transport(format!("HTTP with {address}: {e}")))
    }

    /// One request on a new connection; the answer as JSON, or the remote's error.
    async fn call(&self, request: Request<Full<Bytes>>, what: &str) -> Result<Value, SyncError> {
        let (mut sender, conn) = self.open().await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.transport(format!("{what}: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.transport(format!("{what}: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(self.remote_error(what, status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| self.answer(what, e.to_string()))
    }

    fn remote_error(&self, what: &str, status: StatusCode, body: &[u8]) -> SyncError {
        SyncError::Remote {
            remote: self.spec.name.clone(),
            what: what.to_string(),
            status: status.as_u16(),
            message: error_text(body),
        }
    }

    fn transport(&self, e: impl std::fmt::Display) -> SyncError {
        SyncError::Transport {
            remote: self.spec.name.clone(),
            message: e.to_string(),
        }
    }

    fn answer(&self, what: &str, message: impl Into<String>) -> SyncError {
        SyncError::Answer {
            remote: self.spec.name.clone(),
            what: what.to_string(),
            message: message.into(),
        }
    }
}

/// The snapshot parameters of a session upgrade.
fn snapshot_query(
    store: &str,
    ns: &BackupNamespace,
    dir: &BackupDir,
) -> Vec<(&'static str, String)> {
    let mut query = vec![
        ("store", store.to_string()),
        ("backup-type", dir.group.ty.as_str().to_string()),
        ("backup-id", dir.group.id.clone()),
        ("backup-time", dir.time.to_string()),
    ];
    if !ns.is_root() {
        query.push(("ns", ns.display_path()));
    }
    query
}
