//! The login page and its form post: a password login through `AuthService::login` (the API's
//! own), answered with the ticket cookie and a redirect to the page the user asked for.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use maud::html;

use super::layout::{frame, Nav};
use super::session::{check_origin, cookie, form_field, redirect};
use super::{html as html_response, ConsoleError};
use crate::auth::AuthError;
use crate::net::Body;
use crate::state::AppState;

/// Only console pages are valid targets after login (no open redirect).
fn safe_target(next: Option<&str>) -> &str {
    match next {
        Some(n) if super::is_console_path(n) && !n.starts_with("//") => n,
        _ => "/",
    }
}

/// The login form; `message` after a failed attempt, `next` the page to open afterwards.
pub(crate) fn page(message: Option<&str>, next: Option<&str>) -> Response<Body> {
    let next = safe_target(next);
    let status = if message.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let body = html! {
        section.login {
            h1 { "Sign in" }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form method="post" action="/console/login" {
                input type="hidden" name="next" value=(next);
                label for="username" { "User name (user@realm)" }
                input #username type="text" name="username" autocomplete="username"
                    required autofocus placeholder="alice@pbs";
                label for="password" { "Password" }
                input #password type="password" name="password"
                    autocomplete="current-password" required;
                button #login type="submit" { "Sign in" }
            }
        }
    };
    html_response(status, frame("Sign in", Nav::None, None, body))
}

/// `POST /console/login` (`username`, `password`, `next`).
pub(crate) async fn submit(
    state: &Arc<AppState>,
    req: &Request<Bytes>,
    started: Instant,
) -> Result<Response<Body>, ConsoleError> {
    check_origin(req)?;
    let body = req.body();
    let username = form_field(body, "username").unwrap_or_default();
    let password = form_field(body, "password").unwrap_or_default();
    let next = form_field(body, "next");
    match state.auth.login(username.trim(), &password).await {
        Ok(login) => Ok(redirect(
            safe_target(next.as_deref()),
            Some(cookie(&login.ticket)?),
        )),
        Err(AuthError::Unavailable(_)) => Ok(page(
            Some("The server is busy checking other logins; try again in a moment."),
            next.as_deref(),
        )),
        Err(e) => {
            tracing::info!("console login failed: {e}");
            // The same delay as a refused API login (anti brute force).
            tokio::time::sleep_until((started + state.auth.failure_delay()).into()).await;
            Ok(page(
                Some("Login failed: wrong user name or password."),
                next.as_deref(),
            ))
        }
    }
}
