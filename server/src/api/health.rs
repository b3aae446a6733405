//! Liveness and readiness for Kubernetes probes. Both answer without authentication and then say
//! only "ok", "ready" or "not ready": `/healthz` says the process serves requests; `/readyz` says
//! every datastore's backend answers (for S3 datastores: the backend's health, kept from every
//! request and a periodic probe of the bucket). Why a datastore is not ready (its name, bucket,
//! endpoint, the backend's error) is logged, and shown only to a caller with valid credentials,
//! for the datastores that caller may see.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};

use crate::auth::Identity;
use crate::net::body::{text, Body};
use crate::net::path::path_is;
use crate::state::{AppState, DatastoreEntry};

/// Paths answered here, before routing and authentication.
pub fn is_health_path<B>(req: &Request<B>) -> bool {
    let path = req.uri().path();
    req.method() == Method::GET && (path_is(path, &["healthz"]) || path_is(path, &["readyz"]))
}

/// Answers a health path (see [`is_health_path`]).
pub async fn answer<B>(state: &Arc<AppState>, req: &Request<B>) -> Response<Body> {
    if path_is(req.uri().path(), &["healthz"]) {
        return text(StatusCode::OK, "text/plain", "ok\n".to_string());
    }
    let mut failures: Vec<(Arc<DatastoreEntry>, String)> = Vec::new();
    for entry in state.datastores() {
        // The top level of the datastore (one small LIST on S3) and its capacity (a statvfs of
        // the directory locally, which fails once the directory is gone).
        let backend = entry.store.backend();
        let probe = match backend.list("", Some('/')).await {
            Ok(_) => backend.capacity().await.map(|_| ()),
            Err(err) => Err(err),
        };
        let failure = match probe {
            Err(err) => Some(format!("datastore '{}': {err}", entry.name)),
            // Remote stores: listings are served from memory, so the backend's health state
            // (updated by every request and a periodic probe) tells whether the bucket answers.
            Ok(()) => backend
                .health()
                .and_then(|h| h.message)
                .map(|message| format!("datastore '{}': {message}", entry.name)),
        };
        if let Some(failure) = failure {
            failures.push((entry, failure));
        }
    }
    if failures.is_empty() {
        return text(StatusCode::OK, "text/plain", "ready\n".to_string());
    }
    for (_, failure) in &failures {
        tracing::warn!("not ready: {failure}");
    }
    let details = match viewer(state, req).await {
        Some(id) => failures
            .iter()
            .filter(|(entry, _)| state.auth.store_visible(&id, &entry.name, &entry.tenant))
            .map(|(_, failure)| failure.as_str())
            .collect::<Vec<_>>(),
        None => Vec::new(),
    };
    let body = match details.is_empty() {
        true => "not ready\n".to_string(),
        false => format!("not ready: {}\n", details.join("; ")),
    };
    text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body)
}

/// The identity of a caller that sent valid credentials; probes send none and get no details.
async fn viewer<B>(state: &AppState, req: &Request<B>) -> Option<Identity> {
    crate::auth::credentials::extract(req.headers())?;
    state
        .auth
        .authenticate(req.headers(), &Method::GET)
        .await
        .ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::{AuthSeed, AuthService};
    use crate::backend::local::LocalBackend;
    use crate::datastore::Datastore;
    use crate::state::{DatastoreEntry, NodeIdentity};
    use crate::tasks::TaskRegistry;

    async fn state_with_store(root: &std::path::Path) -> Arc<AppState> {
        let auth = AuthService::open(&root.join("auth"), AuthSeed::default()).unwrap();
        auth.set_failure_delay(Duration::ZERO);
        auth.ensure_tenant("t", None).unwrap();
        auth.ensure_tenant("other", None).unwrap();
        auth.add_user("admin@pbs", "t", "pw", true).unwrap();
        auth.add_user("eve@pbs", "other", "pw", false).unwrap();
        auth.add_acl("/", "eve@pbs", "Admin").unwrap();
        let node = NodeIdentity {
            name: "n".into(),
            instance_id: "0123456789abcdef".into(),
        };
        let state = Arc::new(AppState::new(auth, TaskRegistry::new("n"), node));
        let backend = Arc::new(LocalBackend::open(&root.join("s1")).unwrap());
        state.insert_datastore(DatastoreEntry {
            name: "s1".into(),
            tenant: "t".into(),
            comment: None,
            store: Datastore::open("s1", backend).await.unwrap(),
        });
        state
    }

    fn get(path: &str) -> Request<bytes::Bytes> {
        Request::get(path).body(bytes::Bytes::new()).unwrap()
    }

    #[tokio::test]
    async fn ready_while_the_backend_answers_and_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_with_store(dir.path()).await;
        let live = crate::api::handle_buffered(state.clone(), get("/healthz")).await;
        assert_eq!(live.status(), StatusCode::OK);
        let ready = crate::api::handle_buffered(state.clone(), get("/readyz")).await;
        assert_eq!(ready.status(), StatusCode::OK);

        // the datastore directory disappears (a lost mount, say): its backend no longer answers
        std::fs::remove_dir_all(dir.path().join("s1")).unwrap();
        let ready = crate::api::handle_buffered(state.clone(), get("/readyz")).await;
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        // without credentials: no datastore name, path or error text
        assert_eq!(body_text(ready).await, "not ready\n");
        let live = crate::api::handle_buffered(state.clone(), get("/healthz")).await;
        assert_eq!(live.status(), StatusCode::OK);

        // wrong credentials: still no details
        let mut forged = get("/readyz");
        forged.headers_mut().insert(
            http::header::COOKIE,
            "PBSAuthCookie=PBS:admin@pbs:00000000::AAAA"
                .parse()
                .unwrap(),
        );
        let ready = crate::api::handle_buffered(state.clone(), forged).await;
        assert_eq!(body_text(ready).await, "not ready\n");

        // a superuser's ticket: the failing datastore and why
        let login = state.auth.login("admin@pbs", "pw").await.unwrap();
        let mut with_ticket = get("/readyz");
        with_ticket.headers_mut().insert(
            http::header::COOKIE,
            format!("PBSAuthCookie={}", login.ticket).parse().unwrap(),
        );
        let ready = crate::api::handle_buffered(state.clone(), with_ticket).await;
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = body_text(ready).await;
        assert!(text.starts_with("not ready: datastore 's1': "), "{text}");

        // a user of another tenant sees that the server is not ready, but not which store
        let login = state.auth.login("eve@pbs", "pw").await.unwrap();
        let mut other = get("/readyz");
        other.headers_mut().insert(
            http::header::COOKIE,
            format!("PBSAuthCookie={}", login.ticket).parse().unwrap(),
        );
        let ready = crate::api::handle_buffered(state, other).await;
        assert_eq!(body_text(ready).await, "not ready\n");
    }

    async fn body_text(resp: Response<Body>) -> String {
        use http_body_util::BodyExt;
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
