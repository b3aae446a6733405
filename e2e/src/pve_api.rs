//! The REST calls Proxmox VE's storage plugin makes itself (through its Perl `LWP` API
//! client), with that client's request shapes rather than the Rust client's:
//!
//! * ticket login with a form-urlencoded body;
//! * `Cookie: PBSAuthCookie=<uri-escaped ticket>; path=/; secure; SameSite=Strict;` (cookie
//!   attributes inside the request header) plus a `CSRFPreventionToken` header on every call;
//! * API tokens as `Authorization: PBSAPIToken=<tokenid>:<secret>` (`=`, raw secret);
//! * GET and DELETE parameters in the query string, POST and PUT parameters as a
//!   form-urlencoded body;
//! * a success only counts when its `Content-Type` says `application/json` and the JSON has a
//!   `data` member.

use http::Method;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::error::{ClientError, Result};
use crate::http::{PbsClient, RawResponse};

/// Perl's `uri_escape`: everything but `A-Za-z0-9-._~` is percent-encoded (so `:`, `+`,
/// `/`, `=` and `@` of a ticket are too).
pub const URI_ESCAPE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const FORM_CT: &str = "application/x-www-form-urlencoded";

#[derive(Debug, Clone)]
enum PveAuth {
    None,
    Ticket { ticket: String, csrf: String },
    Token { tokenid: String, secret: String },
}

/// A PVE-style API client on top of the test client's connection handling.
pub struct PveApiClient {
    http: PbsClient,
    auth: PveAuth,
}

impl PveApiClient {
    pub async fn connect(host: &str, port: u16, fingerprint: &str) -> Result<PveApiClient> {
        Ok(PveApiClient {
            http: PbsClient::connect(host, port, fingerprint).await?,
            auth: PveAuth::None,
        })
    }

    /// Uses an API token (no ticket, no CSRF token).
    pub fn with_token(mut self, tokenid: &str, secret: &str) -> PveApiClient {
        self.auth = PveAuth::Token {
            tokenid: tokenid.to_string(),
            secret: secret.to_string(),
        };
        self
    }

    /// `POST /api2/json/access/ticket` with `username=…&password=…` as form body; the
    /// ticket and CSRF token are then sent with every call. Returns the response `data`.
    pub async fn login(&mut self, username: &str, password: &str) -> Result<Value> {
        let body = form(&[("username", username), ("password", password)]);
        let resp = self
            .http
            .raw(
                Method::POST,
                "/api2/json/access/ticket",
                Some(FORM_CT),
                body.into_bytes(),
                &[],
                false,
            )
            .await?;
        let data = pve_data("POST /api2/json/access/ticket", &resp)?;
        let field = |k: &str| {
            data[k].as_str().map(str::to_string).ok_or_else(|| {
                ClientError::Protocol(format!("ticket answer lacks data.{k}: {data}"))
            })
        };
        self.auth = PveAuth::Ticket {
            ticket: field("ticket")?,
            csrf: field("CSRFPreventionToken")?,
        };
        Ok(data)
    }

    /// The ticket of the last login, if any.
    pub fn ticket(&self) -> Option<&str> {
        match &self.auth {
            PveAuth::Ticket { ticket, .. } => Some(ticket),
            _ => None,
        }
    }

    /// Headers the LWP client sends for the current authentication.
    pub fn auth_headers(&self) -> Vec<(String, String)> {
        match &self.auth {
            PveAuth::None => Vec::new(),
            PveAuth::Ticket { ticket, csrf } => {
                let escaped = percent_encoding::utf8_percent_encode(ticket, URI_ESCAPE_SET);
                vec![
                    (
                        "Cookie".to_string(),
                        format!("PBSAuthCookie={escaped}; path=/; secure; SameSite=Strict;"),
                    ),
                    ("CSRFPreventionToken".to_string(), csrf.clone()),
                ]
            }
            PveAuth::Token { tokenid, secret } => vec![(
                "Authorization".to_string(),
                format!("PBSAPIToken={tokenid}:{secret}"),
            )],
        }
    }

    /// `GET /api2/json/<path>?<params>` → `data`.
    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        self.call(Method::GET, path, params).await
    }

    /// `DELETE` with query parameters → `data`.
    pub async fn delete(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        self.call(Method::DELETE, path, params).await
    }

    /// `PUT` with a form-urlencoded body → `data`.
    pub async fn put(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        self.call(Method::PUT, path, params).await
    }

    /// `POST` with a form-urlencoded body → `data`.
    pub async fn post(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        self.call(Method::POST, path, params).await
    }

    /// One call with the LWP client's parameter placement; returns the raw answer too, for
    /// header checks.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<RawResponse> {
        let full = format!("/api2/json/{}", path.trim_start_matches('/'));
        let encoded = form(params);
        let in_body = method == Method::POST || method == Method::PUT;
        let (target, content_type, body) = if in_body {
            (full, Some(FORM_CT), encoded.into_bytes())
        } else if encoded.is_empty() {
            (full, None, Vec::new())
        } else {
            (format!("{full}?{encoded}"), None, Vec::new())
        };
        let headers = self.auth_headers();
        let extra: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.http
            .raw(method, &target, content_type, body, &extra, false)
            .await
    }

    async fn call(&self, method: Method, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let ctx = format!("{method} /api2/json/{path}");
        let resp = self.call_raw(method, path, params).await?;
        pve_data(&ctx, &resp)
    }
}

fn form(params: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// The LWP client's success rule: 2xx, a JSON content type and a `data` member.
fn pve_data(ctx: &str, resp: &RawResponse) -> Result<Value> {
    if !(200..300).contains(&resp.status) {
        return Err(ClientError::Status {
            context: ctx.to_string(),
            status: resp.status,
            body: resp.text(),
        });
    }
    let ct = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.contains("application/json") {
        return Err(ClientError::Protocol(format!(
            "{ctx}: success without a JSON content type (Content-Type: '{ct}')"
        )));
    }
    let mut v: Value = serde_json::from_slice(&resp.body).map_err(|e| ClientError::json(ctx, e))?;
    match v.as_object_mut().and_then(|o| o.remove("data")) {
        Some(d) => Ok(d),
        None => Err(ClientError::Protocol(format!(
            "{ctx}: undefined result data: {}",
            resp.text()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_escape_like_perl() {
        let t = "PBS:root@pam:6650A1B2::ab+/c=d-_.~";
        let enc = percent_encoding::utf8_percent_encode(t, URI_ESCAPE_SET).to_string();
        assert_eq!(enc, "PBS%3Aroot%40pam%3A6650A1B2%3A%3Aab%2B%2Fc%3Dd-_.~");
    }
}
