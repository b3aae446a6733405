//! The REST API below `/api2/json` (docs/protocol.md#rest-conventions, #rest-api): authentication,
//! routing, parameter parsing and one module per area or operation. The listener calls [`handle`]
//! for every HTTP/1.1 request; backup and reader upgrades are authenticated here and handed to the
//! protocol layer.

pub mod access;
mod access_manage;
mod compliance;
pub mod context;
pub mod datastore;
mod health;
pub mod jobs;
mod metrics;
pub mod node;
pub mod router;
mod status;
pub mod tasks;
pub mod tenants;
pub mod version;

#[cfg(test)]
mod access_manage_tests;
#[cfg(test)]
mod matrix_fixture;
#[cfg(test)]
mod permission_matrix;
#[cfg(test)]
mod permission_visibility;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod worm_api_tests;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::{AuthError, Identity};
use crate::net::request_body::{check_announced, may_have_body, read_bounded};
use crate::net::{Body, HttpError, Params};
use crate::state::AppState;
use context::Ctx;
use router::{DatastoreOp, Route, MAX_URI_LEN};

/// Largest body read for ordinary requests (parameter bodies must stay below 512 KiB).
const MAX_BODY: usize = crate::net::params::MAX_PARAM_BODY;
/// Largest body of the one request read before authentication, the login (PBS reads at most
/// 64 KiB of parameters).
const MAX_LOGIN_BODY: usize = 64 * 1024;
/// Largest `upload-backup-log` body: a 16 MiB log in an encrypted blob header.
pub const MAX_LOG_BLOB: usize = 16 * 1024 * 1024 + 44;

/// Who may send a request body: decided from the request head alone.
enum Admission {
    /// The login itself (its body carries the credentials).
    Login,
    Authenticated(Identity),
}

/// Entry point for every HTTP/1.1 request. Authentication is decided from the head before a
/// byte of the body is read; a refused request's body is never read (the connection is then
/// closed instead of drained).
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    if health::is_health_path(&req) {
        return health::answer(&state, &req).await;
    }
    if metrics::is_metrics_path(&req) {
        let result = metrics::answer(&state, &req).await;
        return finish(&state, started, result).await;
    }
    let result = match preflight(&req) {
        Err(e) => Err(e),
        Ok(route @ (Route::BackupUpgrade | Route::ReaderUpgrade)) => {
            upgrade(state.clone(), route, req).await
        }
        Ok(route) => {
            let (parts, body) = req.into_parts();
            match admit(&state, &route, &parts).await {
                Err(err) => {
                    let unread = may_have_body(&parts.headers);
                    drop(body);
                    let mut response = finish(&state, started, Err(err)).await;
                    if unread {
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    return response;
                }
                Ok(admission) => {
                    let limit = body_limit(&route, &admission);
                    match read_bounded(body, limit, state.limits.body_read_timeout).await {
                        Ok(bytes) => dispatch(state.clone(), route, parts, bytes, admission).await,
                        Err(err) => Err(err),
                    }
                }
            }
        }
    };
    finish(&state, started, result).await
}

/// Like [`handle`] for a request whose body is already in memory (tests, internal callers).
/// Upgrades are refused here because they need the live connection.
pub async fn handle_buffered(state: Arc<AppState>, req: Request<Bytes>) -> Response<Body> {
    let started = Instant::now();
    if health::is_health_path(&req) {
        return health::answer(&state, &req).await;
    }
    if metrics::is_metrics_path(&req) {
        let result = metrics::answer(&state, &req).await;
        return finish(&state, started, result).await;
    }
    let result = match preflight(&req) {
        Err(e) => Err(e),
        Ok(Route::BackupUpgrade | Route::ReaderUpgrade) => Err(HttpError::bad_request(
            "protocol upgrade needs a live connection",
        )),
        Ok(route) => {
            let (parts, body) = req.into_parts();
            match admit(&state, &route, &parts).await {
                Err(e) => Err(e),
                Ok(admission) if body.len() > body_limit(&route, &admission) => {
                    Err(HttpError::bad_request("request body too large"))
                }
                Ok(admission) => dispatch(state.clone(), route, parts, body, admission).await,
            }
        }
    };
    finish(&state, started, result).await
}

/// URI length check and routing.
fn preflight<B>(req: &Request<B>) -> Result<Route, HttpError> {
    let uri_len = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().len())
        .unwrap_or(0);
    if uri_len > MAX_URI_LEN {
        return Err(HttpError::new(StatusCode::URI_TOO_LONG, "URI too long"));
    }
    router::route(req.uri().path())
}

/// Decides from the head alone whether the body may be read: the announced length must fit
/// the route's limit and, except for the login, the credentials must be valid.
async fn admit(state: &AppState, route: &Route, parts: &Parts) -> Result<Admission, HttpError> {
    if route.is_public() {
        check_announced(&parts.headers, MAX_LOGIN_BODY)?;
        return Ok(Admission::Login);
    }
    let identity = authenticate(state, &parts.headers, &parts.method, parts.uri.path()).await?;
    let admission = Admission::Authenticated(identity);
    check_announced(&parts.headers, body_limit(route, &admission))?;
    Ok(admission)
}

fn body_limit(route: &Route, admission: &Admission) -> usize {
    match (route, admission) {
        (_, Admission::Login) => MAX_LOGIN_BODY,
        (
            Route::Datastore {
                op: DatastoreOp::UploadBackupLog,
                ..
            },
            _,
        ) => MAX_LOG_BLOB,
        _ => MAX_BODY,
    }
}

/// Turns errors into responses. Authentication failures are answered no earlier than the
/// configured delay after the request arrived (anti brute force), so the time a failure takes
/// does not depend on how far the check got.
async fn finish(
    state: &AppState,
    started: Instant,
    result: Result<Response<Body>, HttpError>,
) -> Response<Body> {
    match result {
        Ok(resp) => resp,
        Err(err) => {
            if err.status == StatusCode::UNAUTHORIZED {
                let delay = state.auth.failure_delay();
                tokio::time::sleep_until((started + delay).into()).await;
            }
            err.into_response()
        }
    }
}

/// The identity behind a request's credentials; 401 for anything wrong, 503 when the
/// credential check could not run (hash pool full).
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &http::HeaderMap,
    method: &Method,
    path: &str,
) -> Result<Identity, HttpError> {
    state
        .auth
        .authenticate(headers, method)
        .await
        .map_err(|e| auth_error(e, method, path))
}

/// HTTP answer for a failed credential check.
pub(crate) fn auth_error(err: AuthError, method: &Method, path: &str) -> HttpError {
    match err {
        AuthError::Unavailable(e) => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        e => {
            tracing::debug!("authentication failed for {method} {path}: {e}");
            HttpError::unauthorized()
        }
    }
}

async fn upgrade(
    state: Arc<AppState>,
    route: Route,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    if req.method() != Method::GET {
        return Err(method_not_allowed(req.method()));
    }
    if !req.headers().contains_key(header::UPGRADE) {
        return Err(HttpError::bad_request("missing Upgrade header"));
    }
    let identity = authenticate(&state, req.headers(), req.method(), req.uri().path()).await?;
    match route {
        Route::BackupUpgrade => crate::protocol::backup::upgrade(state, identity, req).await,
        _ => crate::protocol::reader::upgrade(state, identity, req).await,
    }
}

fn method_not_allowed(method: &Method) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed on this path"),
    )
}

/// Parses parameters and runs the handler of an admitted request.
async fn dispatch(
    state: Arc<AppState>,
    route: Route,
    parts: Parts,
    body: Bytes,
    admission: Admission,
) -> Result<Response<Body>, HttpError> {
    let query = parts.uri.query();
    let raw_upload = matches!(
        route,
        Route::Datastore {
            op: DatastoreOp::UploadBackupLog,
            ..
        }
    );
    let params = if raw_upload {
        Params::from_query(query)
    } else {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        Params::from_body(content_type, query, &body)?
    };
    let method = parts.method.clone();
    let identity = match admission {
        Admission::Login => {
            return match method {
                Method::POST => access::create_ticket(&state, &params).await,
                Method::DELETE => Ok(access::logout()),
                _ => Err(method_not_allowed(&method)),
            }
        }
        Admission::Authenticated(identity) => identity,
    };
    let ctx = Ctx {
        state,
        id: identity,
        params,
        body,
    };
    route_call(&ctx, route, &method).await
}

async fn route_call(ctx: &Ctx, route: Route, method: &Method) -> Result<Response<Body>, HttpError> {
    match (route, method) {
        (Route::Version, &Method::GET) => Ok(version::get()),
        (Route::UserToken { userid, name }, &Method::POST) => {
            access_manage::create_token(ctx, &userid, &name)
        }
        (Route::Acl, &Method::PUT) => access_manage::update_acl(ctx),
        (Route::NodeIdentity, &Method::GET) => Ok(node::identity(ctx)),
        (Route::Nodes, &Method::GET) => node::list(ctx),
        (Route::NodeStatus, &Method::GET) => node::status(ctx).await,
        (Route::DatastoreUsage, &Method::GET) => status::datastore_usage(ctx).await,
        (Route::AccessPermissions, &Method::GET) => access::permissions(ctx),
        (Route::AccessUsers, &Method::GET) => access::users(ctx),
        (Route::Tasks, &Method::GET) => tasks::list(ctx),
        (Route::TaskStatus { upid }, &Method::GET) => tasks::status(ctx, &upid),
        (Route::TaskLog { upid }, &Method::GET) => tasks::log(ctx, &upid),
        (Route::Task { upid }, &Method::DELETE) => tasks::stop(ctx, &upid),
        (Route::Task { upid }, &Method::GET) => tasks::status(ctx, &upid),
        (Route::DatastoreList, &Method::GET) => Ok(datastore::list::list(ctx)),
        (Route::Datastore { store, op }, m) => datastore::call(ctx, &store, op, m).await,
        (Route::Tenants, &Method::GET) => Ok(tenants::list(ctx)),
        (Route::Tenants, &Method::POST) => tenants::create(ctx),
        (Route::Tenant { tenant }, &Method::GET) => tenants::get(ctx, &tenant),
        (Route::TenantUsage { tenant }, &Method::GET) => tenants::usage(ctx, &tenant).await,
        (Route::Jobs { kind }, &Method::GET) => jobs::list(ctx, &kind),
        (Route::JobRun { kind, id }, &Method::POST) => jobs::run(ctx, &kind, &id),
        (Route::TenantCompliance { tenant }, &Method::GET) => {
            compliance::report(ctx, &tenant).await
        }
        (_, m) => Err(method_not_allowed(m)),
    }
}
