//! The admin listener: plain HTTP/1.1, meant to stay pod-local.
//!
//! - `GET /healthz`: 200 while the process runs (liveness).
//! - `GET /readyz`: 200 once config, secrets and certificate are loaded and
//!   the server is not draining; 503 during shutdown (readiness).
//! - `GET /metrics`: Prometheus/OpenMetrics text.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::net::server::accept_loop;

use crate::observe::metrics::{self, Metrics};

/// What the admin endpoints report on.
#[derive(Debug, Clone)]
pub(crate) struct AdminState {
    /// Set while the server accepts webhooks; cleared when draining starts.
    pub(crate) ready: Arc<AtomicBool>,
    /// The metrics to expose.
    pub(crate) metrics: Arc<Metrics>,
}

/// Answers one admin request.
pub(crate) fn respond<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// At most this many admin connections at once (probes, a scraper, a person).
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Serves the admin endpoints until `stop` resolves, through the same
/// accept loop as the public listener (permits, backoff, tracked tasks).
pub(crate) async fn serve(
    listener: TcpListener,
    state: AdminState,
    stop: impl std::future::Future<Output = ()>,
) {
    let tracker = TaskTracker::new();
    accept_loop(
        &listener,
        MAX_ADMIN_CONNECTIONS,
        &tracker,
        stop,
        move |stream, peer| {
            let state = state.clone();
            async move {
                let service = service_fn(move |req| {
                    let r = respond(&state, &req);
                    async move { Ok::<_, Infallible>(r) }
                });
                let result = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "admin connection error");
                }
            }
        },
    )
    .await;
    tracker.close();
}
