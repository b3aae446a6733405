//! The operator's Kubernetes client: kube's default stack with one extra layer that counts
//! every request by verb and resource, names the process in the `User-Agent` (so the API
//! server's audit log tells replicas apart), and refuses writes while the [`WriteGate`] is
//! closed, i.e. when this process cannot prove it still holds the leader lease.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::FutureExt;
use http::header::USER_AGENT;
use http::{HeaderValue, Method, Request, Response, Uri};
use kube::client::{Body, ClientBuilder};
use kube::Client;
use tower::{BoxError, Layer, Service};

use crate::leader::WriteGate;
use crate::metrics::Metrics;

/// A write attempted while the leader lease could not be proven.
#[derive(Debug, thiserror::Error)]
#[error("{verb} {resource} refused: this process cannot prove it holds the leader lease")]
pub struct NotLeader {
    pub verb: &'static str,
    pub resource: String,
}

/// The Kubernetes verb of a request (what RBAC and the audit log call it).
pub fn verb(method: &Method, uri: &Uri, item: bool) -> &'static str {
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match *method {
        Method::GET if watch => "watch",
        Method::GET if item => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if item => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// True for verbs that change state.
pub fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// `(resource[/subresource], names one object)` of an API path such as
/// `/apis/pbs.cloud/v1alpha1/namespaces/a/tenants/x/status` → `("tenants/status", true)`.
pub fn resource(path: &str) -> (String, bool) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segs.as_slice() {
        ["api", _v, rest @ ..] => rest,
        ["apis", _g, _v, rest @ ..] => rest,
        _ => return ("other".into(), false),
    };
    let rest = match rest {
        ["namespaces", _ns, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    match rest {
        [] => ("other".into(), false),
        [r] => (r.to_string(), false),
        [r, _name] => (r.to_string(), true),
        [r, _name, sub, ..] => (format!("{r}/{sub}"), true),
    }
}

/// The layer described in the module doc.
#[derive(Clone)]
pub struct ApiLayer {
    metrics: Arc<Metrics>,
    gate: WriteGate,
    agent: HeaderValue,
}

impl ApiLayer {
    /// `identity` goes into the User-Agent: `pbs-cloud-operator/<version> (<identity>)`.
    pub fn new(metrics: Arc<Metrics>, gate: WriteGate, identity: &str) -> Self {
        let text = format!(
            "pbs-cloud-operator/{} ({identity})",
            env!("CARGO_PKG_VERSION")
        );
        let agent = HeaderValue::from_str(&text)
            .unwrap_or_else(|_| HeaderValue::from_static("pbs-cloud-operator"));
        ApiLayer {
            metrics,
            gate,
            agent,
        }
    }
}

impl<S> Layer<S> for ApiLayer {
    type Service = ApiService<S>;
    fn layer(&self, inner: S) -> ApiService<S> {
        ApiService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ApiLayer`] wraps around kube's stack.
#[derive(Clone)]
pub struct ApiService<S> {
    inner: S,
    layer: ApiLayer,
}

impl<S, B> Service<Request<Body>> for ApiService<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<B>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let (resource, item) = resource(req.uri().path());
        let verb = verb(req.method(), req.uri(), item);
        if is_write(verb) && !self.layer.gate.is_open() {
            self.layer
                .metrics
                .writes_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let err: BoxError = Box::new(NotLeader { verb, resource });
            return futures::future::ready(Err(err)).boxed();
        }
        self.layer.metrics.api_request(verb, &resource);
        req.headers_mut()
            .insert(USER_AGENT, self.layer.agent.clone());
        self.inner.call(req).map(|r| r.map_err(Into::into)).boxed()
    }
}

/// A client for `config` with the [`ApiLayer`].
pub fn client(config: kube::Config, layer: &ApiLayer) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?.with_layer(layer).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(method: Method, uri: &str) -> (&'static str, String) {
        let uri: Uri = uri.parse().expect("uri");
        let (r, item) = resource(uri.path());
        (verb(&method, &uri, item), r)
    }

    #[test]
    fn requests_are_classified_like_the_audit_log() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/a/secrets?labelSelector=x",
                "list",
                "secrets",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/secrets/s",
                "get",
                "secrets",
            ),
            (
                Method::GET,
                "/api/v1/secrets?watch=true&resourceVersion=5",
                "watch",
                "secrets",
            ),
            (
                Method::GET,
                "/apis/apps/v1/deployments",
                "list",
                "deployments",
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/deployments/d?fieldManager=x",
                "patch",
                "deployments",
            ),
            (
                Method::PATCH,
                "/apis/pbs.cloud/v1alpha1/namespaces/a/tenants/t/status",
                "patch",
                "tenants/status",
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/a/events",
                "create",
                "events",
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
                "update",
                "leases",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/persistentvolumeclaims/p",
                "delete",
                "persistentvolumeclaims",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default",
                "get",
                "namespaces",
            ),
            (Method::GET, "/api/v1/namespaces", "list", "namespaces"),
            (Method::GET, "/version", "list", "other"),
        ];
        for (m, uri, verb, res) in cases {
            assert_eq!(classify(m, uri), (verb, res.to_string()), "{uri}");
        }
        assert!(is_write("patch") && is_write("create") && !is_write("watch"));
    }
}
