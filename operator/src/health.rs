//! The operator's own HTTP endpoint: `/healthz`, `/readyz` and Prometheus `/metrics`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::metrics::Metrics;

/// Serves the endpoints on `listener` until the process ends. `/readyz` answers 200 while
/// `ready` is set: from start-up to shutdown, whether this process leads or follows.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (code, body) = match req.uri().path() {
                    "/healthz" => (StatusCode::OK, "ok\n".to_string()),
                    "/readyz" if ready.load(Ordering::Relaxed) => {
                        (StatusCode::OK, "ready\n".to_string())
                    }
                    "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string()),
                    "/metrics" => (StatusCode::OK, metrics.render()),
                    _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
                };
                let resp = Response::builder()
                    .status(code)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
