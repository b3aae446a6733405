//! The web console at `/` (docs/design.md#web-console): server-rendered HTML pages for the
//! users the server already has. Every figure a page shows comes from the REST API called
//! in-process with the browser's own ticket cookie ([`api_client`]), so a user sees exactly
//! what the API would show them and no authorisation rule exists twice. Actions (notes,
//! protection, forget, prune, GC, stopping a task, running a job now) are form posts carrying the CSRF token that
//! call the same API operations ([`actions`]). The console's own endpoints are only the session
//! ones (login, logout, ticket renewal) and its static assets.
//!
//! Layering: the listener sends console paths here; the console uses `api` below it.

mod actions;
mod api_client;
mod assets;
mod dashboard;
mod format;
mod jobs;
mod layout;
mod login;
mod prune;
mod session;
mod snapshots;
mod tasks;
mod tenants;
mod usage;

#[cfg(test)]
mod actions_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use maud::Markup;

use crate::auth::Identity;
use crate::net::request_body::read_bounded;
use crate::net::Body;
use crate::state::AppState;
use api_client::Api;

/// Largest body of a console request (the login form).
const MAX_BODY: usize = 64 * 1024;

/// Every console answer carries these: no inline script or style, nothing from elsewhere, no
/// framing (clickjacking), no content sniffing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Errors of the console layer; each becomes an HTML error page.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("page '{0}' not found")]
    NotFound(String),
    #[error("method {0} not allowed on this page")]
    Method(Method),
    #[error("request refused: {0}")]
    Forbidden(&'static str),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("API call {path} answered {status}: {message}")]
    Api {
        path: String,
        status: StatusCode,
        message: String,
    },
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Api { status, .. } => *status,
        }
    }
}

/// True for the paths the console answers: `/` and everything below `/console/`.
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// Entry point from the listener: reads the (small) body, then [`handle_buffered`].
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    match read_bounded(body, MAX_BODY, state.limits.body_read_timeout).await {
        Ok(bytes) => handle_buffered(state, Request::from_parts(parts, bytes)).await,
        Err(e) => secured(layout::error_page(None, e.status, &e.message)),
    }
}

/// A signed-in console user: who, and the in-process API client acting with their ticket.
pub(crate) struct Session {
    pub id: Identity,
    pub api: Api,
    /// A fresh CSRF token for the forms and `console.js` of the page.
    pub csrf: String,
}

/// Answers one console request whose body is in memory.
pub async fn handle_buffered(state: Arc<AppState>, req: Request<Bytes>) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    if let Some(asset) = path.strip_prefix("/console/assets/") {
        return secured(assets::serve(asset));
    }
    let method = req.method().clone();
    let result = match (method.clone(), path.as_str()) {
        (Method::POST, "/console/login") => login::submit(&state, &req, started).await,
        (Method::POST, "/console/logout") => session::logout(&state, &req).await,
        (Method::POST, "/console/renew") => session::renew(&state, &req).await,
        (Method::POST, p) if p.starts_with("/console/") => actions::post(&state, &req, p).await,
        (Method::GET | Method::HEAD, "/console/login") => Ok(login::page(None, None)),
        (Method::GET | Method::HEAD, _) => match session::current(&state, &req).await {
            // Not signed in (or the ticket expired): every page shows the login form.
            None => Ok(login::page(None, Some(&path))),
            Some(s) => page(&s, &req, &path).await,
        },
        (m, _) => Err(ConsoleError::Method(m)),
    };
    match result {
        Ok(resp) => secured(resp),
        Err(e) => {
            let who = session::current(&state, &req).await;
            secured(layout::error_page(who.as_ref(), e.status(), &e.to_string()))
        }
    }
}

/// The pages behind the login.
async fn page(
    s: &Session,
    req: &Request<Bytes>,
    path: &str,
) -> Result<Response<Body>, ConsoleError> {
    let query = Query::parse(req.uri().query());
    let segs = segments(path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:8007");
    let markup = match segs.as_slice() {
        [] | ["console"] => dashboard::render(s, host).await?,
        ["console", "datastore", store] => snapshots::store_page(s, store, &query).await?,
        ["console", "datastore", store, "group"] => snapshots::group_page(s, store, &query).await?,
        ["console", "datastore", store, "snapshot"] => {
            snapshots::snapshot_page(s, store, &query, None).await?
        }
        ["console", "datastore", store, "usage"] => usage::page(s, store).await?,
        ["console", "datastore", store, "browse"] => {
            snapshots::browse_page(s, store, &query).await?
        }
        ["console", "tasks"] => tasks::list_page(s, &query).await?,
        ["console", "tasks", upid] => tasks::log_page(s, upid).await?,
        ["console", "jobs"] => jobs::page(s).await?,
        ["console", "tenants"] => tenants::page(s).await?,
        _ => return Err(ConsoleError::NotFound(path.to_string())),
    };
    Ok(html(StatusCode::OK, markup))
}

/// The percent-decoded segments of a console path.
fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|p| !p.is_empty())
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// Query parameters of a page (or the fields of a posted form).
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The pairs whose names are listed, in the order given (what an action forwards).
    pub fn pick<'a>(&'a self, names: &[&'a str]) -> Vec<(&'a str, &'a str)> {
        names
            .iter()
            .filter_map(|n| self.get(n).map(|v| (*n, v)))
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn required(&self, name: &str) -> Result<&str, ConsoleError> {
        self.get(name)
            .ok_or_else(|| ConsoleError::BadRequest(format!("parameter '{name}' is missing")))
    }
}

/// An HTML answer that is never cached (it shows one user's data).
fn html(status: StatusCode, markup: Markup) -> Response<Body> {
    let mut resp = crate::net::body::text(status, "text/html; charset=utf-8", markup.into_string());
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Adds the security headers of every console answer.
fn secured(mut resp: Response<Body>) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}
