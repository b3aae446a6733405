//! The Tenant reconciler against a mock API server (a `tower-test` service behind a real
//! `kube::Client`, as in kube-rs's controller-rs `fixtures.rs`): each test lists the exact API
//! calls a reconcile makes, in order, and fails on any other, missing or extra call. The
//! caches are filled by hand, as the watches would fill them.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

use super::stores::{Stores, Writers};
use super::tenant::reconcile_entry;
use super::{Context, Settings, FINALIZER, RESYNC, USAGE_INTERVAL};
use crate::crd::Tenant;
use crate::metrics::Metrics;

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
        };
        let resp = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(out))
            .expect("response");
        send.send_response(resp);
    }
}

/// Fills a cache with `objects` and marks it listed.
fn fill<K>(w: &mut Writer<K>, objects: Vec<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    w.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        w.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    w.apply_watcher_event(&watcher::Event::InitDone);
}

/// What the caches hold in a test.
#[derive(Default)]
struct Cached {
    tenants: Vec<Tenant>,
    datastores: Vec<crate::crd::Datastore>,
    secrets: Vec<k8s_openapi::api::core::v1::Secret>,
    deployments: Vec<k8s_openapi::api::apps::v1::Deployment>,
    services: Vec<k8s_openapi::api::core::v1::Service>,
}

fn context(client: Client, cached: Cached) -> Arc<Context> {
    let (stores, w) = Stores::new();
    let Writers {
        filled,
        mut tenants,
        mut datastores,
        mut prune_policies,
        mut retention_locks,
        mut sync_jobs,
        mut secrets,
        mut deployments,
        mut services,
        mut pvcs,
        mut ingresses,
    } = w;
    fill(&mut tenants, cached.tenants);
    fill(&mut datastores, cached.datastores);
    fill(&mut prune_policies, vec![]);
    fill(&mut retention_locks, vec![]);
    fill(&mut sync_jobs, vec![]);
    fill(&mut secrets, cached.secrets);
    fill(&mut deployments, cached.deployments);
    fill(&mut services, cached.services);
    fill(&mut pvcs, vec![]);
    fill(&mut ingresses, vec![]);
    filled.mark(super::stores::ALL);
    let settings = Settings {
        image: "pbs-cloud-server:test".into(),
        namespace: Some(NS.into()),
        usage_interval: USAGE_INTERVAL,
        resync: RESYNC,
        instance: None,
    };
    Arc::new(Context::new(
        client,
        settings,
        Arc::new(Metrics::default()),
        stores,
    ))
}

/// Runs one reconcile of `t` against a mock that expects exactly `calls`.
async fn run(t: Arc<Tenant>, calls: Vec<Call>) -> Result<Action, super::Error> {
    run_cached(t, Cached::default(), calls).await
}

async fn run_cached(
    t: Arc<Tenant>,
    cached: Cached,
    calls: Vec<Call>,
) -> Result<Action, super::Error> {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(mock, NS);
    let server = tokio::spawn(serve(handle, calls));
    let ctx = context(client, cached);
    let res = tokio::time::timeout(Duration::from_secs(20), reconcile_entry(t, ctx))
        .await
        .expect("reconcile finished (a call nobody expected never gets an answer)");
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
        call(Method::GET, sec("credentials"), Reply::NotFound),
        apply(sec("credentials"), "token-secret"),
        event("CredentialsCreated"),
        call(Method::GET, sec("tls"), Reply::NotFound),
        apply(sec("tls"), "kubernetes.io/tls"),
        event("CertificateCreated"),
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
    assert_eq!(action, Action::requeue(RESYNC));
}

/// Everything as the previous reconcile left it, in the caches: no API call at all.
#[tokio::test]
async fn unchanged_tenant_reconcile_makes_no_calls() {
    use crate::render::{self, Credentials, Inputs, Names};
    let t = tenant(true, false, "Retain");
    let names = Names::of(&t);
    let creds = Credentials::generate("acme").expect("credentials");
    let tls = render::generate_self_signed(&t).expect("certificate");
    let inputs = Inputs::default();
    let bound = render::bind(&t, &inputs);
    let config = render::render_config(&t, &bound, &inputs, &creds);
    use super::diff::stamp;
    let cached = |o: k8s_openapi::api::core::v1::Secret| {
        let mut o = stamp(o);
        o.metadata.resource_version = Some("3".into());
        o
    };
    let secrets = vec![
        cached(render::credentials_secret(&t, &creds).expect("secret")),
        cached(render::tls_secret(&t, &tls).expect("secret")),
        cached(render::config_secret(&t, &config).expect("secret")),
    ];
    let deployment =
        stamp(render::deployment(&t, &bound, "pbs-cloud-server:test").expect("deploy"));
    let service = stamp(render::service(&t).expect("service"));
    let fingerprint = render::fingerprint(&t, &tls.cert_pem).expect("fingerprint");
    let want = super::status::desired(&t, &bound, false, &names, Some(fingerprint), "t0");
    let mut current = (*t).clone();
    current.status = Some(crate::crd::TenantStatus {
        observed_generation: want.observed_generation,
        conditions: want.conditions.clone(),
        endpoint: want.endpoint.clone(),
        certificate_fingerprint: want.certificate_fingerprint.clone(),
        repository: want.repository.clone(),
        credentials_secret: want.credentials_secret.clone(),
        datastores: want.datastores.clone(),
        ..Default::default()
    });
    let cache = Cached {
        tenants: vec![current.clone()],
        secrets,
        deployments: vec![deployment],
        services: vec![service],
        ..Cached::default()
    };
    let action = run_cached(Arc::new(current), cache, vec![])
        .await
        .expect("reconcile");
    assert_eq!(action, Action::requeue(RESYNC));
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
    let cached = Cached {
        datastores: vec![serde_json::from_value(ds).expect("datastore")],
        ..Cached::default()
    };
    let err = run_cached(tenant(true, true, "Delete"), cached, calls)
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
