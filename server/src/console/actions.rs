//! The console's state changes: form posts carrying the CSRF token, each forwarded to the API
//! operation a REST client would call (`PUT notes`, `PUT protected`, `DELETE snapshots`,
//! `POST prune`, `POST gc`, `POST admin/{prune|verify}/{id}/run`, `DELETE tasks/{upid}`),
//! with the user's ticket and that token. The API decides; the console only shows its answer.
//! A refused snapshot action shows the snapshot page again with the API's own words
//! (docs/design.md#web-console).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use super::api_client::{enc, query};
use super::session::{authenticated_change, current, redirect, CSRF_FIELD};
use super::snapshots::{ident, snapshot_page};
use super::{html, prune, segments, ConsoleError, Query, Session};
use crate::net::Body;
use crate::state::AppState;

/// The fields naming a snapshot, forwarded to the API.
pub(crate) const SNAPSHOT_FIELDS: [&str; 4] = ["ns", "backup-type", "backup-id", "backup-time"];

/// `POST /console/…`: checks origin, ticket and CSRF token, then runs the action.
pub(crate) async fn post(
    state: &Arc<AppState>,
    req: &Request<Bytes>,
    path: &str,
) -> Result<Response<Body>, ConsoleError> {
    let body = std::str::from_utf8(req.body())
        .map_err(|_| ConsoleError::BadRequest("form is not UTF-8".into()))?;
    let form = Query::parse(Some(body));
    let csrf = form
        .get(CSRF_FIELD)
        .ok_or(ConsoleError::Forbidden("missing CSRF token"))?
        .to_string();
    authenticated_change(state, req, Some(csrf.clone())).await?;
    let s = current(state, req)
        .await
        .ok_or(ConsoleError::Forbidden("not signed in"))?;
    let segs = segments(path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["console", "datastore", store, "notes"] => {
            snapshot_action(&s, store, &form, &csrf, Method::PUT, "notes", "notes").await
        }
        ["console", "datastore", store, "protected"] => {
            let op = "protected";
            snapshot_action(&s, store, &form, &csrf, Method::PUT, op, op).await
        }
        ["console", "datastore", store, "forget"] => forget(&s, store, &form, &csrf).await,
        ["console", "datastore", store, "prune"] => {
            let page = prune::post(&s, store, &form, &csrf).await?;
            Ok(html(StatusCode::OK, page))
        }
        ["console", "datastore", store, "gc"] => {
            let path = format!("admin/datastore/{}/gc", enc(store));
            let upid = s.api.send(Method::POST, &path, &[], &csrf).await?;
            let upid = upid.as_str().unwrap_or_default();
            Ok(redirect(&format!("/console/tasks/{}", enc(upid)), None))
        }
        ["console", "jobs", kind, id, "run"] => {
            let path = format!("admin/{}/{}/run", enc(kind), enc(id));
            let upid = s.api.send(Method::POST, &path, &[], &csrf).await?;
            let upid = upid.as_str().unwrap_or_default();
            Ok(redirect(&format!("/console/tasks/{}", enc(upid)), None))
        }
        ["console", "tasks", upid, "stop"] => {
            let path = format!("nodes/localhost/tasks/{}", enc(upid));
            s.api.send(Method::DELETE, &path, &[], &csrf).await?;
            Ok(redirect(&format!("/console/tasks/{}", enc(upid)), None))
        }
        _ => Err(ConsoleError::NotFound(path.to_string())),
    }
}

/// The snapshot page's address for the snapshot named in `form`.
fn snapshot_location(store: &str, form: &Query) -> String {
    format!(
        "/console/datastore/{}/snapshot?{}",
        enc(store),
        query(&form.pick(&SNAPSHOT_FIELDS))
    )
}

/// A refusal of a snapshot action: the snapshot page again, with the API's words and status.
async fn refused(
    s: &Session,
    store: &str,
    form: &Query,
    err: ConsoleError,
) -> Result<Response<Body>, ConsoleError> {
    let (status, message) = match err {
        ConsoleError::Api {
            status, message, ..
        } => (status, message),
        other => return Err(other),
    };
    match snapshot_page(s, store, form, Some(&message)).await {
        Ok(page) => Ok(html(status, page)),
        // The snapshot is not visible (any more): the API's refusal alone.
        Err(_) => Err(ConsoleError::Api {
            path: String::new(),
            status,
            message,
        }),
    }
}

/// `PUT admin/datastore/{store}/{op}` with the snapshot and the field `extra`, then back to
/// the snapshot.
async fn snapshot_action(
    s: &Session,
    store: &str,
    form: &Query,
    csrf: &str,
    method: Method,
    op: &str,
    extra: &str,
) -> Result<Response<Body>, ConsoleError> {
    let mut params = form.pick(&SNAPSHOT_FIELDS);
    params.push((extra, form.get(extra).unwrap_or("")));
    let path = format!("admin/datastore/{}/{op}", enc(store));
    match s.api.send(method, &path, &params, csrf).await {
        Ok(_) => Ok(redirect(&snapshot_location(store, form), None)),
        Err(e) => refused(s, store, form, e).await,
    }
}

/// `DELETE admin/datastore/{store}/snapshots`, then the group's page.
async fn forget(
    s: &Session,
    store: &str,
    form: &Query,
    csrf: &str,
) -> Result<Response<Body>, ConsoleError> {
    let params = form.pick(&SNAPSHOT_FIELDS);
    let path = format!("admin/datastore/{}/snapshots", enc(store));
    match s.api.send(Method::DELETE, &path, &params, csrf).await {
        Ok(_) => {
            let group = ident(
                form.get("ns").unwrap_or(""),
                form.get("backup-type").unwrap_or(""),
                form.get("backup-id").unwrap_or(""),
            );
            Ok(redirect(
                &format!("/console/datastore/{}/group?{}", enc(store), query(&group)),
                None,
            ))
        }
        Err(e) => refused(s, store, form, e).await,
    }
}
