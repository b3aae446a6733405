//! `PbsClient`: keep-alive HTTP/1.1 over TLS, authentication and REST helpers, and the
//! HTTP/1.1 → HTTP/2 upgrade used by backup and reader sessions (server/docs/protocol.md#transport,
//! #authentication, #rest-conventions).
//!
//! Parameter transport follows the Rust client exactly (server/docs/protocol.md#parameters): POST
//! with parameters sends a JSON body; GET/PUT/DELETE and POST without parameters send a
//! form-urlencoded query.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::error::{ClientError, Result};
use crate::h2session::H2Session;
use crate::params::with_query;
pub use crate::params::{api_path, encode_params, COOKIE_ENCODE_SET, USER_AGENT};

const FORM_CT: &str = "application/x-www-form-urlencoded";
/// The stock client joins `/` and a path that already starts with `/`: its password login
/// and both session upgrades carry a doubled slash (PBS ignores empty path segments).
pub const LOGIN_PATH: &str = "//api2/json/access/ticket";
/// Upgrade path of backup sessions, as the stock client sends it.
pub const BACKUP_PATH: &str = "//api2/json/backup";
/// Upgrade path of reader sessions, as the stock client sends it.
pub const READER_PATH: &str = "//api2/json/reader";
const JSON_CT: &str = "application/json";

/// Result of a successful ticket login (server/docs/protocol.md#ticket-login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub username: String,
    pub ticket: String,
    pub csrf: String,
    /// `PBSAuthCookie`, or `__Host-PBSAuthCookie` when the server sent that Set-Cookie.
    pub cookie_name: String,
}

/// Separator between `PBSAPIToken` and the token id (client: space, PVE: `=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSep {
    Space,
    Equals,
}

/// How requests are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Ticket(Ticket),
    Token {
        tokenid: String,
        secret: String,
        sep: TokenSep,
    },
}

/// A raw HTTP answer, for tests that inspect statuses and headers of odd requests.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    /// Body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Conn = http1::SendRequest<Full<Bytes>>;

/// HTTP client for one PBS server, pinned to a certificate fingerprint.
pub struct PbsClient {
    host: String,
    port: u16,
    tls: tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    auth: Mutex<Auth>,
    /// Idle keep-alive connections (like hyper's pool in the stock client).
    pool: Mutex<Vec<Conn>>,
}

impl PbsClient {
    /// Connects (TCP + TLS + HTTP/1.1) and keeps the connection for later requests, so a
    /// wrong fingerprint or a dead server fails here.
    pub async fn connect(host: &str, port: u16, fingerprint: &str) -> Result<PbsClient> {
        let cfg = crate::tls::client_config(fingerprint)?;
        let client = PbsClient {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            tls: tokio_rustls::TlsConnector::from(cfg),
            server_name: crate::tls::server_name(host)?,
            auth: Mutex::new(Auth::None),
            pool: Mutex::new(Vec::new()),
        };
        let conn = client.open_connection().await?;
        client.put_back(conn);
        Ok(client)
    }

    /// Switches to API-token authentication (`Authorization: PBSAPIToken <id>:<secret>`).
    pub fn with_token(self, tokenid: &str, secret: &str) -> PbsClient {
        self.set_auth(Auth::Token {
            tokenid: tokenid.to_string(),
            secret: secret.to_string(),
            sep: TokenSep::Space,
        });
        self
    }

    /// Like [`with_token`](Self::with_token) but with PVE's `PBSAPIToken=` spelling.
    pub fn with_token_pve(self, tokenid: &str, secret: &str) -> PbsClient {
        self.set_auth(Auth::Token {
            tokenid: tokenid.to_string(),
            secret: secret.to_string(),
            sep: TokenSep::Equals,
        });
        self
    }

    pub fn set_auth(&self, auth: Auth) {
        if let Ok(mut a) = self.auth.lock() {
            *a = auth;
        }
    }

    pub fn auth(&self) -> Auth {
        self.auth.lock().map(|a| a.clone()).unwrap_or(Auth::None)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `Host` header value (`host:port`, IPv6 bracketed).
    fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Ticket login exactly like the stock client: JSON body `{"username","password"}`.
    /// On success the ticket becomes this client's authentication.
    pub async fn login(&self, userid: &str, password: &str) -> Result<Ticket> {
        let body = serde_json::json!({ "username": userid, "password": password });
        self.login_with(JSON_CT, body.to_string().into_bytes())
            .await
    }

    /// Ticket login like PVE's LWP client: form-urlencoded body.
    pub async fn login_form(&self, userid: &str, password: &str) -> Result<Ticket> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("username", userid)
            .append_pair("password", password)
            .finish();
        self.login_with(FORM_CT, body.into_bytes()).await
    }

    async fn login_with(&self, content_type: &str, body: Vec<u8>) -> Result<Ticket> {
        let resp = self
            .raw(
                Method::POST,
                LOGIN_PATH,
                Some(content_type),
                body,
                &[],
                false,
            )
            .await?;
        let value = check_json("POST access/ticket", &resp)?;
        let data = &value["data"];
        let field = |k: &str| {
            data[k].as_str().map(str::to_string).ok_or_else(|| {
                ClientError::Protocol(format!("ticket response lacks string data.{k}: {value}"))
            })
        };
        let mut ticket = Ticket {
            username: field("username")?,
            ticket: field("ticket")?,
            csrf: field("CSRFPreventionToken")?,
            cookie_name: "PBSAuthCookie".to_string(),
        };
        for sc in resp.headers.get_all(http::header::SET_COOKIE) {
            if let Some(v) = sc
                .to_str()
                .ok()
                .and_then(|s| s.strip_prefix("__Host-PBSAuthCookie="))
            {
                let raw = v.split(';').next().unwrap_or("");
                ticket.ticket = percent_encoding::percent_decode_str(raw)
                    .decode_utf8_lossy()
                    .into_owned();
                ticket.cookie_name = "__Host-PBSAuthCookie".to_string();
            }
        }
        self.set_auth(Auth::Ticket(ticket.clone()));
        Ok(ticket)
    }

    /// Authentication headers for the current [`Auth`].
    pub fn auth_headers(&self) -> Vec<(String, String)> {
        match self.auth() {
            Auth::None => Vec::new(),
            Auth::Ticket(t) => {
                let enc = percent_encoding::utf8_percent_encode(&t.ticket, COOKIE_ENCODE_SET);
                vec![
                    ("cookie".to_string(), format!("{}={enc}", t.cookie_name)),
                    ("csrfpreventiontoken".to_string(), t.csrf.clone()),
                ]
            }
            Auth::Token {
                tokenid,
                secret,
                sep,
            } => {
                let enc = percent_encoding::utf8_percent_encode(&secret, COOKIE_ENCODE_SET);
                let sep = match sep {
                    TokenSep::Space => ' ',
                    TokenSep::Equals => '=',
                };
                vec![(
                    "authorization".to_string(),
                    format!("PBSAPIToken{sep}{tokenid}:{enc}"),
                )]
            }
        }
    }

    /// `GET /api2/json/<path>?<params>`; returns the `data` member.
    pub async fn get(&self, path: &str, params: Option<&Value>) -> Result<Value> {
        self.query_call(Method::GET, path, params).await
    }

    /// `PUT` with parameters in the query string (Rust client rule); returns `data`.
    pub async fn put(&self, path: &str, params: Option<&Value>) -> Result<Value> {
        self.query_call(Method::PUT, path, params).await
    }

    /// `DELETE` with parameters in the query string; returns `data`.
    pub async fn delete(&self, path: &str, params: Option<&Value>) -> Result<Value> {
        self.query_call(Method::DELETE, path, params).await
    }

    /// `POST`: parameters as JSON body, or an empty form request without parameters.
    pub async fn post(&self, path: &str, params: Option<&Value>) -> Result<Value> {
        let has_params = params
            .and_then(Value::as_object)
            .is_some_and(|o| !o.is_empty());
        if !has_params {
            return self.query_call(Method::POST, path, None).await;
        }
        let body = params.map(Value::to_string).unwrap_or_default();
        let full = api_path(path);
        let resp = self
            .raw(
                Method::POST,
                &full,
                Some(JSON_CT),
                body.into_bytes(),
                &[],
                true,
            )
            .await?;
        Ok(check_json(&format!("POST {full}"), &resp)?["data"].take())
    }

    /// PVE-style call: form-urlencoded **body** (used by PVE for POST and PUT).
    pub async fn call_form_body(
        &self,
        method: Method,
        path: &str,
        params: &Value,
    ) -> Result<Value> {
        let full = api_path(path);
        let body = encode_params(params);
        let resp = self
            .raw(
                method.clone(),
                &full,
                Some(FORM_CT),
                body.into_bytes(),
                &[],
                true,
            )
            .await?;
        Ok(check_json(&format!("{method} {full}"), &resp)?["data"].take())
    }

    /// Raw upload (e.g. `upload-backup-log`): params in the query, octet-stream body.
    pub async fn upload(&self, path: &str, params: Option<&Value>, body: Vec<u8>) -> Result<Value> {
        let full = with_query(&api_path(path), params);
        let resp = self
            .raw(
                Method::POST,
                &full,
                Some("application/octet-stream"),
                body,
                &[],
                true,
            )
            .await?;
        Ok(check_json(&format!("POST {full}"), &resp)?["data"].take())
    }

    /// Raw download (REST `download`): returns the body bytes of a 2xx answer.
    pub async fn download(&self, path: &str, params: Option<&Value>) -> Result<Bytes> {
        let full = with_query(&api_path(path), params);
        let resp = self
            .raw(Method::GET, &full, Some(FORM_CT), Vec::new(), &[], true)
            .await?;
        if (200..300).contains(&resp.status) {
            Ok(resp.body)
        } else {
            Err(status_error(&format!("GET {full}"), &resp))
        }
    }

    async fn query_call(
        &self,
        method: Method,
        path: &str,
        params: Option<&Value>,
    ) -> Result<Value> {
        let full = with_query(&api_path(path), params);
        let resp = self
            .raw(method.clone(), &full, Some(FORM_CT), Vec::new(), &[], true)
            .await?;
        Ok(check_json(&format!("{method} {full}"), &resp)?["data"].take())
    }

    /// Escape hatch: sends exactly this request (path incl. query, optional content type,
    /// extra headers, auth headers if `with_auth`) and returns whatever came back.
    pub async fn raw(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        extra_headers: &[(&str, &str)],
        with_auth: bool,
    ) -> Result<RawResponse> {
        let req = self.build_request(
            method,
            path_and_query,
            content_type,
            body,
            extra_headers,
            with_auth,
        )?;
        let ctx = format!("{} {}", req.method(), path_and_query);
        let mut conn = self.take_connection().await?;
        let resp = tokio::time::timeout(Duration::from_secs(120), conn.send_request(req))
            .await
            .map_err(|_| ClientError::Protocol(format!("{ctx}: no response within 120 s")))?
            .map_err(|source| ClientError::Hyper {
                context: ctx.clone(),
                source,
            })?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|source| ClientError::Hyper {
                context: format!("{ctx}: reading body"),
                source,
            })?
            .to_bytes();
        self.put_back(conn);
        Ok(RawResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// Upgrades a (possibly reused) keep-alive connection to HTTP/2
    /// (server/docs/protocol.md#session-upgrade). `path` is [`BACKUP_PATH`] or [`READER_PATH`];
    /// `query` is already form-encoded.
    pub async fn upgrade(&self, path: &str, query: &str, protocol: &str) -> Result<H2Session> {
        let path_and_query = format!("{path}?{query}");
        let req = self.build_request(
            Method::GET,
            &path_and_query,
            Some(FORM_CT),
            Vec::new(),
            &[("connection", "upgrade"), ("upgrade", protocol)],
            true,
        )?;
        let ctx = format!("GET {path_and_query} (upgrade {protocol})");
        let mut conn = self.take_connection().await?;
        let resp = tokio::time::timeout(Duration::from_secs(120), conn.send_request(req))
            .await
            .map_err(|_| ClientError::Protocol(format!("{ctx}: no response within 120 s")))?
            .map_err(|source| ClientError::Hyper {
                context: ctx.clone(),
                source,
            })?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            self.put_back(conn);
            return Err(status_error(
                &ctx,
                &RawResponse {
                    status,
                    headers,
                    body,
                },
            ));
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|source| ClientError::Hyper {
                context: format!("{ctx}: taking over upgraded stream"),
                source,
            })?;
        H2Session::handshake(TokioIo::new(upgraded)).await
    }

    /// Builds a request with the stock client's header order and spelling: `user-agent`,
    /// `content-type`, the authentication headers, any extra headers (e.g. `connection`,
    /// `upgrade`), `host`, and (added by hyper for a non-empty body) `content-length`. A
    /// body-less request gets no `content-length`.
    fn build_request(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        extra_headers: &[(&str, &str)],
        with_auth: bool,
    ) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("user-agent", USER_AGENT);
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        if with_auth {
            for (k, v) in self.auth_headers() {
                b = b.header(k, v);
            }
        }
        for (k, v) in extra_headers {
            b = b.header(*k, *v);
        }
        b = b.header("host", self.host_header());
        b.body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Input(format!("cannot build request {path_and_query}: {e}")))
    }

    async fn take_connection(&self) -> Result<Conn> {
        loop {
            let candidate = self.pool.lock().ok().and_then(|mut p| p.pop());
            match candidate {
                Some(mut c) => {
                    if c.is_closed() {
                        continue;
                    }
                    if c.ready().await.is_ok() {
                        return Ok(c);
                    }
                }
                None => return self.open_connection().await,
            }
        }
    }

    fn put_back(&self, conn: Conn) {
        if !conn.is_closed() {
            if let Ok(mut p) = self.pool.lock() {
                p.push(conn);
            }
        }
    }

    async fn open_connection(&self) -> Result<Conn> {
        let addr = (self.host.as_str(), self.port);
        let ctx = format!("connect {}", self.host_header());
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|_| ClientError::Protocol(format!("{ctx}: timeout after 10 s")))?
        .map_err(|e| ClientError::io(ctx.clone(), e))?;
        tcp.set_nodelay(true)
            .map_err(|e| ClientError::io(ctx.clone(), e))?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| ClientError::Tls(format!("{ctx}: handshake failed: {e}")))?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|source| ClientError::Hyper {
                context: ctx,
                source,
            })?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }
}

pub(crate) fn status_error(context: &str, resp: &RawResponse) -> ClientError {
    ClientError::Status {
        context: context.to_string(),
        status: resp.status,
        body: resp.text(),
    }
}

/// Checks for 2xx and parses the body as JSON (empty body → `null`).
fn check_json(context: &str, resp: &RawResponse) -> Result<Value> {
    if !(200..300).contains(&resp.status) {
        return Err(status_error(context, resp));
    }
    if resp.body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&resp.body).map_err(|e| ClientError::json(context, e))
}

/// Shared handle type for tests running several sessions from one login.
pub type SharedClient = Arc<PbsClient>;
