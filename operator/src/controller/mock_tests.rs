//! The Tenant reconciler against a mock API server (a `tower-test` service behind a real
//! `kube::Client`, as in kube-rs's controller-rs `fixtures.rs`): each test lists the exact API
//! calls a reconcile makes, in order, and fails on any other, missing or extra call.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::Client;
use serde_json::{json, Value};

use super::tenant::reconcile_entry;
use super::{Context, Metrics, FINALIZER, REQUEUE, USAGE_INTERVAL};
use crate::crd::{Datastore, PrunePolicy, RetentionLock, Tenant};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NS: &str = "team-a";
const CRD: &str = "/apis/pbs.cloud/v1alpha1/namespaces/team-a";
const CORE: &str = "/api/v1/namespaces/team-a";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

/// How the mock answers one expected call.
enum Reply {
    /// 200 with this body.
    Json(Value),
    /// 200 echoing the request body (server-side apply, event creation).
    Echo,
    /// 404 Not Found.
    NotFound,
    /// An empty list of this kind.
    EmptyList(&'static str),
}

/// One expected call: method, path (without query), a required query fragment, the reply.
struct Call {
    method: Method,
    path: String,
    query: &'static str,
    reply: Reply,
    /// Substring the request body must contain.
    body_has: &'static str,
}

fn call(method: Method, path: impl Into<String>, reply: Reply) -> Call {
    Call {
        method,
        path: path.into(),
        query: "",
        reply,
        body_has: "",
    }
}

/// A server-side apply of an owned object by the operator.
fn apply(path: impl Into<String>, body_has: &'static str) -> Call {
    Call {
        query: "fieldManager=pbs-cloud-operator",
        body_has,
        ..call(Method::PATCH, path, Reply::Echo)
    }
}

fn event(reason: &'static str) -> Call {
    Call {
        body_has: reason,
        ..call(Method::POST, EVENTS, Reply::Echo)
    }
}

fn tenant_json(finalizer: bool, deleting: bool, policy: &str) -> Value {
    let mut v = json!({
        "apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "acme", "namespace": NS, "uid": "uid-acme", "generation": 1,
                     "resourceVersion": "10"},
        "spec": {"deletionPolicy": policy}
    });
    if finalizer {
        v["metadata"]["finalizers"] = json!([FINALIZER]);
    }
    if deleting {
        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    v
}

fn tenant(finalizer: bool, deleting: bool, policy: &str) -> Arc<Tenant> {
    Arc::new(serde_json::from_value(tenant_json(finalizer, deleting, policy)).expect("tenant"))
}

async fn serve(mut handle: Handle, calls: Vec<Call>) {
    for (i, c) in calls.into_iter().enumerate() {
        let (req, send) = handle
            .next_request()
            .await
            .unwrap_or_else(|| panic!("call {i} ({} {}) never came", c.method, c.path));
        let (parts, body) = req.into_parts();
        let body = body.collect().await.expect("request body").to_bytes();
        let text = String::from_utf8_lossy(&body).to_string();
        assert_eq!(
            (&parts.method, parts.uri.path()),
            (&c.method, c.path.as_str()),
            "call {i}: unexpected request (query {:?})",
            parts.uri.query()
        );
        let query = parts.uri.query().unwrap_or_default();
        assert!(
            query.contains(c.query),
            "call {i} {}: query {query:?} lacks {:?}",
            c.path,
            c.query
        );
        assert!(
            text.contains(c.body_has),
            "call {i} {}: body lacks {:?}: {text}",
            c.path,
            c.body_has
        );
        let (status, out) = match c.reply {
            Reply::Json(v) => (200, v.to_string().into_bytes()),
            Reply::Echo => (200, body.to_vec()),
            Reply::NotFound => (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404, "message": "not found"})
                .to_string()
                .into_bytes(),
            ),
            Reply::EmptyList(kind) => (
                200,
                json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"},
                       "items": []})
                .to_string()
                .into_bytes(),
            ),
        };
        let resp = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(out))
            .expect("response");
        send.send_response(resp);
    }
}

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "pbs-cloud-operator".into(),
                instance: None,
            },
        ),
        client,
        image: "pbs-cloud-server:test".into(),
        namespace: Some(NS.into()),
        metrics: Arc::new(Metrics::default()),
        datastores: reflector::store::<Datastore>().0,
        prune_policies: reflector::store::<PrunePolicy>().0,
        retention_locks: reflector::store::<RetentionLock>().0,
        usage_interval: USAGE_INTERVAL,
    })
}

/// Runs one reconcile of `t` against a mock that expects exactly `calls`.
async fn run(t: Arc<Tenant>, calls: Vec<Call>) -> Result<Action, super::Error> {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(mock, NS);
    let server = tokio::spawn(serve(handle, calls));
    let res = tokio::time::timeout(Duration::from_secs(60), reconcile_entry(t, context(client)))
        .await
        .expect("reconcile finished");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("mock finished")
        .expect("every expected call came, in order");
    res
}

#[tokio::test]
async fn first_reconcile_only_adds_the_finalizer() {
    let calls = vec![Call {
        body_has: FINALIZER,
        ..call(
            Method::PATCH,
            format!("{CRD}/tenants/acme"),
            Reply::Json(tenant_json(true, false, "Retain")),
        )
    }];
    let action = run(tenant(false, false, "Retain"), calls)
        .await
        .expect("ok");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn create_reconcile_makes_exactly_these_calls() {
    let sec = |n: &str| format!("{CORE}/secrets/acme-pbs-{n}");
    let calls = vec![
        call(
            Method::GET,
            format!("{CRD}/datastores"),
            Reply::EmptyList("DatastoreList"),
        ),
        call(
            Method::GET,
            format!("{CRD}/prunepolicies"),
            Reply::EmptyList("PrunePolicyList"),
        ),
        call(
            Method::GET,
            format!("{CRD}/retentionlocks"),
            Reply::EmptyList("RetentionLockList"),
        ),
        call(Method::GET, sec("credentials"), Reply::NotFound),
        apply(sec("credentials"), "token-secret"),
        event("CredentialsCreated"),
        call(Method::GET, sec("tls"), Reply::NotFound),
        apply(sec("tls"), "kubernetes.io/tls"),
        event("CertificateCreated"),
        call(Method::GET, sec("config"), Reply::NotFound),
        apply(sec("config"), "config.toml"),
        event("ConfigCreated"),
        apply(
            "/apis/apps/v1/namespaces/team-a/deployments/acme-pbs",
            "Recreate",
        ),
        apply(format!("{CORE}/services/acme-pbs"), "8007"),
        Call {
            body_has: "acme-pbs.team-a.svc:8007",
            ..call(
                Method::PATCH,
                format!("{CRD}/tenants/acme/status"),
                Reply::Json(tenant_json(true, false, "Retain")),
            )
        },
    ];
    let action = run(tenant(true, false, "Retain"), calls)
        .await
        .expect("reconcile");
    assert_eq!(action, Action::requeue(REQUEUE), "server not ready yet");
}

#[tokio::test]
async fn deletion_with_retain_only_releases_the_finalizer() {
    let calls = vec![
        event("DataRetained"),
        Call {
            body_has: "remove",
            ..call(
                Method::PATCH,
                format!("{CRD}/tenants/acme"),
                Reply::Json(tenant_json(false, true, "Retain")),
            )
        },
    ];
    let action = run(tenant(true, true, "Retain"), calls)
        .await
        .expect("cleanup");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn deletion_with_delete_stops_the_server_deletes_data_then_releases() {
    let calls = vec![
        call(
            Method::DELETE,
            "/apis/apps/v1/namespaces/team-a/deployments/acme-pbs",
            Reply::NotFound,
        ),
        call(
            Method::DELETE,
            format!("{CORE}/persistentvolumeclaims/acme-pbs-data"),
            Reply::NotFound,
        ),
        call(
            Method::GET,
            format!("{CRD}/datastores"),
            Reply::EmptyList("DatastoreList"),
        ),
        event("DataDeleted"),
        Call {
            body_has: "remove",
            ..call(
                Method::PATCH,
                format!("{CRD}/tenants/acme"),
                Reply::Json(tenant_json(false, true, "Delete")),
            )
        },
    ];
    let action = run(tenant(true, true, "Delete"), calls)
        .await
        .expect("cleanup");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn deletion_with_a_missing_credentials_secret_keeps_the_finalizer() {
    let ds = json!({
        "apiVersion": "pbs.cloud/v1alpha1", "kind": "Datastore",
        "metadata": {"name": "acme-store", "namespace": NS},
        "spec": {"tenant": "acme", "s3": {"bucket": "b", "credentialsSecret": {"name": "gone"}}}
    });
    let calls = vec![
        call(
            Method::DELETE,
            "/apis/apps/v1/namespaces/team-a/deployments/acme-pbs",
            Reply::NotFound,
        ),
        call(
            Method::DELETE,
            format!("{CORE}/persistentvolumeclaims/acme-pbs-data"),
            Reply::NotFound,
        ),
        call(
            Method::GET,
            format!("{CRD}/datastores"),
            Reply::Json(json!({"apiVersion": "v1", "kind": "DatastoreList",
                "metadata": {"resourceVersion": "1"}, "items": [ds]})),
        ),
        call(Method::GET, format!("{CORE}/secrets/gone"), Reply::NotFound),
        Call {
            body_has: "DeleteFailed",
            ..call(
                Method::PATCH,
                format!("{CRD}/tenants/acme/status"),
                Reply::Json(tenant_json(true, true, "Delete")),
            )
        },
        event("DataNotDeleted"),
    ];
    let err = run(tenant(true, true, "Delete"), calls)
        .await
        .expect_err("finalizer kept");
    let text = err.to_string();
    assert!(
        text.contains("Secret gone is gone, cannot delete s3://b/team-a/acme/acme-store/"),
        "{text}"
    );
    assert_eq!(
        super::backoff(&err),
        Action::requeue(Duration::from_secs(300))
    );
}
