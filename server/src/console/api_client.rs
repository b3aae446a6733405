//! The REST API called in-process with the browser's ticket cookie: the console's only way to
//! read data, so every visibility and privilege rule is the API's own.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::ConsoleError;
use crate::state::AppState;

/// Name of the CSRF token in forms and of the header `console.js` sends (the API's header).
pub(crate) const CSRF_FIELD: &str = "CSRFPreventionToken";

/// Calls `/api2/json/...` as the signed-in user.
pub(crate) struct Api {
    state: Arc<AppState>,
    cookie: HeaderValue,
}

/// A string field of an API answer, empty when absent or not a string (pages show it as is).
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Percent-encodes one path segment or query value.
pub(crate) fn enc(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `a=b&c=d` with every value encoded.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

impl Api {
    pub fn new(state: Arc<AppState>, cookie: HeaderValue) -> Self {
        Self { state, cookie }
    }

    /// The server state (for what is public anyway, such as the certificate fingerprint).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// `GET /api2/json/{path}`: the `data` member of the answer, or the API's refusal.
    pub async fn get(&self, path: &str) -> Result<Value, ConsoleError> {
        let (status, body) = self.get_raw(path).await?;
        Self::data(path, status, body)
    }

    /// The `data` member of a 200 answer; any other status is the API's refusal.
    fn data(path: &str, status: StatusCode, body: Bytes) -> Result<Value, ConsoleError> {
        if status != StatusCode::OK {
            return Err(ConsoleError::Api {
                path: path.split('?').next().unwrap_or(path).to_string(),
                status,
                message: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        let mut value: Value = serde_json::from_slice(&body).map_err(|e| ConsoleError::Api {
            path: path.to_string(),
            status,
            message: format!("answer is not JSON: {e}"),
        })?;
        Ok(value
            .get_mut("data")
            .map(Value::take)
            .unwrap_or(Value::Null))
    }

    /// Like [`Api::get`], but a refusal (403, 404) is `None`: the user may not see that part.
    pub async fn get_opt(&self, path: &str) -> Result<Option<Value>, ConsoleError> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(ConsoleError::Api { status, .. })
                if status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A state-changing call (`PUT`, `POST`, `DELETE`) with urlencoded `params` and the CSRF
    /// token of the console form, which the API checks like any other client's: the data of
    /// the answer, or the API's refusal in its own words.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        csrf: &str,
    ) -> Result<Value, ConsoleError> {
        let csrf =
            HeaderValue::from_str(csrf).map_err(|_| ConsoleError::Forbidden("bad CSRF token"))?;
        let req = Request::builder()
            .method(method)
            .uri(format!("/api2/json/{path}"))
            .header(header::COOKIE, self.cookie.clone())
            .header(CSRF_FIELD, csrf)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Bytes::from(query(params)))
            .map_err(|e| ConsoleError::BadRequest(format!("bad API path {path}: {e}")))?;
        let (status, body) = self.call(path, req).await?;
        Self::data(path, status, body)
    }

    async fn get_raw(&self, path: &str) -> Result<(StatusCode, Bytes), ConsoleError> {
        let req = Request::get(format!("/api2/json/{path}"))
            .header(header::COOKIE, self.cookie.clone())
            .body(Bytes::new())
            .map_err(|e| ConsoleError::BadRequest(format!("bad API path {path}: {e}")))?;
        self.call(path, req).await
    }

    async fn call(
        &self,
        path: &str,
        req: Request<Bytes>,
    ) -> Result<(StatusCode, Bytes), ConsoleError> {
        let resp = crate::api::handle_buffered(self.state.clone(), req).await;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ConsoleError::Api {
                path: path.to_string(),
                status,
                message: format!("cannot read the answer: {e}"),
            })?
            .to_bytes();
        Ok((status, body))
    }
}
