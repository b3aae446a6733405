//! The console's session: the ticket in an HttpOnly `__Host-PBSAuthCookie` (the cookie the API
//! already reads), logout and ticket renewal. The REST login keeps PBS's `SameSite=Lax` cookie
//! for the stock clients; the console's own login sets the stricter `SameSite=Strict`
//! (docs/design.md#web-console).

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;

use super::api_client::Api;
use super::{ConsoleError, Session};
use crate::auth::credentials::ticket_from_cookies;
use crate::net::body::json_response;
use crate::net::Body;
use crate::state::AppState;

pub(crate) const COOKIE: &str = "__Host-PBSAuthCookie";
const ATTRIBUTES: &str = "Secure; SameSite=Strict; HttpOnly; Path=/";
pub(crate) use super::api_client::CSRF_FIELD;

/// `Set-Cookie` value carrying `ticket`.
pub(crate) fn cookie(ticket: &str) -> Result<HeaderValue, ConsoleError> {
    HeaderValue::from_str(&format!("{COOKIE}={ticket}; {ATTRIBUTES}"))
        .map_err(|_| ConsoleError::BadRequest("ticket is not a valid cookie value".into()))
}

fn expired_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; {ATTRIBUTES}"
    ))
    .expect("static cookie is a valid header")
}

/// Only the ticket cookie of a request (an API token header never signs in to the console).
fn cookie_headers(ticket: &str) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("{COOKIE}={ticket}")).ok()?,
    );
    Some(headers)
}

/// The signed-in user of a request, if its ticket cookie is valid.
pub(crate) async fn current(state: &Arc<AppState>, req: &Request<Bytes>) -> Option<Session> {
    let ticket = ticket_from_cookies(req.headers())?;
    let headers = cookie_headers(&ticket)?;
    let id = state.auth.authenticate(&headers, &Method::GET).await.ok()?;
    let csrf = state.auth.csrf_token(id.authid.user());
    let cookie = headers.get(header::COOKIE)?.clone();
    Some(Session {
        id,
        api: Api::new(state.clone(), cookie),
        csrf,
    })
}

/// A state change must come from a console page: same origin (when the browser says) and,
/// once signed in, the ticket plus a valid CSRF token (form field or header).
pub(crate) fn check_origin(req: &Request<Bytes>) -> Result<(), ConsoleError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(o), Some(h)) if o == format!("https://{h}") => Ok(()),
        _ => Err(ConsoleError::Forbidden("cross-origin form")),
    }
}

/// The user of a state-changing request: valid ticket and CSRF token, checked by the same
/// `AuthService::authenticate` the API uses for its non-GET requests.
pub(crate) async fn authenticated_change(
    state: &AppState,
    req: &Request<Bytes>,
    form_csrf: Option<String>,
) -> Result<crate::auth::Identity, ConsoleError> {
    check_origin(req)?;
    let ticket = ticket_from_cookies(req.headers()).ok_or(ConsoleError::Forbidden("no ticket"))?;
    let mut headers = cookie_headers(&ticket).ok_or(ConsoleError::Forbidden("bad ticket"))?;
    let csrf = form_csrf.or_else(|| {
        req.headers()
            .get(CSRF_FIELD)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let csrf = csrf.ok_or(ConsoleError::Forbidden("missing CSRF token"))?;
    headers.insert(
        CSRF_FIELD,
        HeaderValue::from_str(&csrf).map_err(|_| ConsoleError::Forbidden("bad CSRF token"))?,
    );
    state
        .auth
        .authenticate(&headers, &Method::POST)
        .await
        .map_err(|_| ConsoleError::Forbidden("ticket or CSRF token not valid"))
}

/// A form field of an urlencoded body.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `POST /console/logout`: expires the cookie and goes back to the login page. Tickets are
/// stateless, so there is nothing to revoke on the server.
pub(crate) async fn logout(
    state: &AppState,
    req: &Request<Bytes>,
) -> Result<Response<Body>, ConsoleError> {
    authenticated_change(state, req, form_field(req.body(), CSRF_FIELD)).await?;
    Ok(redirect("/console/login", Some(expired_cookie())))
}

/// `POST /console/renew` (from `console.js`, CSRF header): a fresh ticket in the cookie, the
/// API's ticket renewal (the old ticket as password), and a fresh CSRF token in the answer.
pub(crate) async fn renew(
    state: &AppState,
    req: &Request<Bytes>,
) -> Result<Response<Body>, ConsoleError> {
    let id = authenticated_change(state, req, None).await?;
    let ticket = ticket_from_cookies(req.headers()).ok_or(ConsoleError::Forbidden("no ticket"))?;
    let login = state
        .auth
        .login(&id.authid.user().to_string(), &ticket)
        .await
        .map_err(|_| ConsoleError::Forbidden("ticket renewal refused"))?;
    let mut resp = json_response(
        StatusCode::OK,
        &json!({ "data": { "CSRFPreventionToken": login.csrf } }),
    );
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&login.ticket)?);
    Ok(resp)
}

/// `303 See Other` to `location`, optionally setting a cookie.
pub(crate) fn redirect(location: &str, cookie: Option<HeaderValue>) -> Response<Body> {
    let mut resp = crate::net::body::text(StatusCode::SEE_OTHER, "text/plain", String::new());
    if let Ok(loc) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    if let Some(c) = cookie {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp
}
