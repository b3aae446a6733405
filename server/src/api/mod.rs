//! The REST API below `/api2/json` (protocol.md §3, §6): authentication, routing, parameter
//! parsing and one module per area or operation. The listener calls [`handle`] for every
//! HTTP/1.1 request; backup and reader upgrades are authenticated here and handed to the
//! protocol layer.

pub mod access;
mod compliance;
pub mod context;
pub mod datastore;
mod health;
pub mod jobs;
mod metrics;
pub mod node;
pub mod router;
pub mod tenants;
pub mod version;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod worm_api_tests;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::Identity;
use crate::net::{Body, HttpError, Params};
use crate::state::AppState;
use context::Ctx;
use router::{DatastoreOp, Route, MAX_URI_LEN};

/// Largest body read for ordinary requests (parameter bodies must stay below 512 KiB).
const MAX_BODY: usize = crate::net::params::MAX_PARAM_BODY;
/// Largest `upload-backup-log` body: a 16 MiB log in an encrypted blob header.
pub const MAX_LOG_BLOB: usize = 16 * 1024 * 1024 + 44;

/// Entry point for every HTTP/1.1 request.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    if health::is_health_path(&req) {
        return health::answer(&state, &req).await;
    }
    if metrics::is_metrics_path(&req) {
        let result = metrics::answer(&state, &req).await;
        return finish(&state, result).await;
    }
    let result = match preflight(&req) {
        Err(e) => Err(e),
        Ok(route @ (Route::BackupUpgrade | Route::ReaderUpgrade)) => {
            upgrade(state.clone(), route, req).await
        }
        Ok(route) => {
            let limit = body_limit(&route);
            let (parts, body) = req.into_parts();
            match Limited::new(body, limit).collect().await {
                Ok(collected) => {
                    let req = Request::from_parts(parts, collected.to_bytes());
                    dispatch(state.clone(), route, req).await
                }
                Err(_) => Err(HttpError::bad_request(format!(
                    "request body too large or unreadable (limit {limit} bytes)"
                ))),
            }
        }
    };
    finish(&state, result).await
}

/// Like [`handle`] for a request whose body is already in memory (tests, internal callers).
/// Upgrades are refused here because they need the live connection.
pub async fn handle_buffered(state: Arc<AppState>, req: Request<Bytes>) -> Response<Body> {
    if health::is_health_path(&req) {
        return health::answer(&state, &req).await;
    }
    if metrics::is_metrics_path(&req) {
        let result = metrics::answer(&state, &req).await;
        return finish(&state, result).await;
    }
    let result = match preflight(&req) {
        Err(e) => Err(e),
        Ok(Route::BackupUpgrade | Route::ReaderUpgrade) => Err(HttpError::bad_request(
            "protocol upgrade needs a live connection",
        )),
        Ok(route) if req.body().len() > body_limit(&route) => {
            Err(HttpError::bad_request("request body too large"))
        }
        Ok(route) => dispatch(state.clone(), route, req).await,
    };
    finish(&state, result).await
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

fn body_limit(route: &Route) -> usize {
    match route {
        Route::Datastore {
            op: DatastoreOp::UploadBackupLog,
            ..
        } => MAX_LOG_BLOB,
        _ => MAX_BODY,
    }
}

/// Turns errors into responses; authentication failures are answered after the configured
/// delay (anti brute force).
async fn finish(state: &AppState, result: Result<Response<Body>, HttpError>) -> Response<Body> {
    match result {
        Ok(resp) => resp,
        Err(err) => {
            if err.status == StatusCode::UNAUTHORIZED {
                let delay = state.auth.failure_delay();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            err.into_response()
        }
    }
}

fn authenticate<B>(state: &AppState, req: &Request<B>) -> Result<Identity, HttpError> {
    state
        .auth
        .authenticate(req.headers(), req.method())
        .map_err(|e| {
            tracing::debug!(
                "authentication failed for {} {}: {e}",
                req.method(),
                req.uri().path()
            );
            HttpError::unauthorized()
        })
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
    let identity = authenticate(&state, &req)?;
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

/// Authenticates (except for the login itself), parses parameters and runs the handler.
async fn dispatch(
    state: Arc<AppState>,
    route: Route,
    req: Request<Bytes>,
) -> Result<Response<Body>, HttpError> {
    let (parts, body) = req.into_parts();
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
    if route.is_public() {
        return match method {
            Method::POST => access::create_ticket(&state, &params).await,
            _ => Err(method_not_allowed(&method)),
        };
    }
    let identity = authenticate(&state, &Request::from_parts(parts, ()))?;
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
        (Route::NodeIdentity, &Method::GET) => Ok(node::identity(ctx)),
        (Route::Tasks, &Method::GET) => node::list_tasks(ctx),
        (Route::TaskStatus { upid }, &Method::GET) => node::task_status(ctx, &upid),
        (Route::TaskLog { upid }, &Method::GET) => node::task_log(ctx, &upid),
        (Route::Task { upid }, &Method::DELETE) => node::abort_task(ctx, &upid),
        (Route::Task { upid }, &Method::GET) => node::task_status(ctx, &upid),
        (Route::DatastoreList, &Method::GET) => Ok(datastore::list::list(ctx)),
        (Route::Datastore { store, op }, m) => datastore::call(ctx, &store, op, m).await,
        (Route::Tenants, &Method::GET) => Ok(tenants::list(ctx)),
        (Route::Tenants, &Method::POST) => tenants::create(ctx),
        (Route::TenantUsage { tenant }, &Method::GET) => tenants::usage(ctx, &tenant).await,
        (Route::Jobs { kind }, &Method::GET) => jobs::list(ctx, &kind),
        (Route::JobRun { kind, id }, &Method::POST) => jobs::run(ctx, &kind, &id),
        (Route::TenantCompliance { tenant }, &Method::GET) => {
            compliance::report(ctx, &tenant).await
        }
        (_, m) => Err(method_not_allowed(m)),
    }
}
