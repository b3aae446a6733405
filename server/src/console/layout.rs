//! The frame of every page: head with the embedded assets, navigation, the signed-in user with
//! the logout form (CSRF token as a hidden field), and error pages.

use http::{Response, StatusCode};
use maud::{html, Markup, DOCTYPE};

use super::session::CSRF_FIELD;
use super::Session;
use crate::net::Body;

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    None,
    Dashboard,
    Content,
    Tasks,
    Jobs,
    Tenants,
}

/// A whole page.
pub(crate) fn frame(title: &str, nav: Nav, session: Option<&Session>, body: Markup) -> Markup {
    let current = |n: Nav| if n == nav { Some("page") } else { None };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = session {
                    meta name="csrf-token" content=(s.csrf);
                }
                title { (title) " – PBS Cloud" }
                link rel="stylesheet" href=(super::assets::CSS_PATH);
                script src=(super::assets::JS_PATH) defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "PBS Cloud" }
                    @if let Some(s) = session {
                        nav aria-label="main" {
                            a href="/" aria-current=[current(Nav::Dashboard)] { "Dashboard" }
                            a href="/console/tasks" aria-current=[current(Nav::Tasks)] { "Tasks" }
                            a href="/console/jobs" aria-current=[current(Nav::Jobs)] { "Jobs" }
                            @if s.id.superuser {
                                a href="/console/tenants" aria-current=[current(Nav::Tenants)] { "Tenants" }
                            }
                        }
                        div.user {
                            span #whoami { (s.id.authid.to_string()) }
                            form method="post" action="/console/logout" {
                                input type="hidden" name=(CSRF_FIELD) value=(s.csrf);
                                button #logout type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main #content data-nav=[(nav == Nav::Content).then_some("content")] { (body) }
            }
        }
    }
}

/// An error page (status and the message, e.g. the API's own refusal text).
pub(crate) fn error_page(
    session: Option<&Session>,
    status: StatusCode,
    message: &str,
) -> Response<Body> {
    let body = html! {
        h1 { "Error " (status.as_u16()) }
        p.error role="alert" { (message) }
        p { a href="/" { "Back to the dashboard" } }
    };
    super::html(status, frame("Error", Nav::None, session, body))
}
