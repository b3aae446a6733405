//! Liveness and readiness for Kubernetes probes. Both answer without authentication and carry
//! no data a caller could use: `/healthz` says the process serves requests; `/readyz` says every
//! datastore's backend answers (for S3 datastores: the backend's health, kept from every request
//! and a periodic probe of the bucket).

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};

use crate::net::body::{text, Body};
use crate::state::AppState;

/// Paths answered here, before routing and authentication.
pub fn is_health_path<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET && matches!(req.uri().path(), "/healthz" | "/readyz")
}

/// Answers a health path (see [`is_health_path`]).
pub async fn answer<B>(state: &Arc<AppState>, req: &Request<B>) -> Response<Body> {
    if req.uri().path() == "/healthz" {
        return text(StatusCode::OK, "text/plain", "ok\n".to_string());
    }
    let mut failures = Vec::new();
    for entry in state.datastores() {
        // The top level of the datastore (one small LIST on S3) and its capacity (a statvfs of
        // the directory locally, which fails once the directory is gone).
        let backend = entry.store.backend();
        let probe = match backend.list("", Some('/')).await {
            Ok(_) => backend.capacity().await.map(|_| ()),
            Err(err) => Err(err),
        };
        if let Err(err) = probe {
            failures.push(format!("datastore '{}': {err}", entry.name));
        } else if let Some(message) = backend.health().and_then(|h| h.message) {
            // Remote stores: listings are served from memory, so the backend's health state
            // (updated by every request and a periodic probe) tells whether the bucket answers.
            failures.push(format!("datastore '{}': {message}", entry.name));
        }
    }
    if failures.is_empty() {
        text(StatusCode::OK, "text/plain", "ready\n".to_string())
    } else {
        for failure in &failures {
            tracing::warn!("not ready: {failure}");
        }
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("not ready: {}\n", failures.join("; ")),
        )
    }
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
        let live = crate::api::handle_buffered(state, get("/healthz")).await;
        assert_eq!(live.status(), StatusCode::OK);
    }
}
