//! The admin listener: plain HTTP/1.1, meant to stay pod-local.
//!
//! - `GET /healthz`: 200 while the process runs (liveness).
//! - `GET /readyz`: 200 once config, secrets and certificate are loaded and
//!   the server is not draining; 503 during shutdown (readiness).
//! - `GET /metrics`: Prometheus/OpenMetrics text.
//! - `GET /` (with `/console.js`, `/console.css`, `/favicon.svg`): the admin console, a
//!   page served from the binary under a strict Content-Security-Policy.
//! - `GET /api/status`, `GET /api/events`: the console's data as JSON
//!   (see [`console`]).
//! - `POST /api/events/{id}/replay`, `POST /api/events/{id}/drop`: the only
//!   requests that change anything, and only past [`console::authorize`].
//!
//! Any other method on these paths is 405 with `Allow`; an unknown path is
//! 404 (405 for a method other than GET or HEAD).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::load::Routes;
use crate::net::console::{
    self, Acted, Action, ActionsView, CertificateView, EventList, QueueView, RateWindow,
    ReloadsView, RouteInfo, Status, TokenFile, assets,
};
use crate::net::server::accept_loop;
use crate::observe::metrics::{self, Metrics};
use crate::reload::Reloader;
use crate::store::{Millis, now_ms};

/// What the admin endpoints report on.
#[derive(Debug)]
pub(crate) struct AdminState {
    /// Set while the server accepts webhooks; cleared when draining starts.
    pub(crate) ready: Arc<AtomicBool>,
    /// The metrics to expose.
    pub(crate) metrics: Arc<Metrics>,
    /// The configured routes (names, paths, modes; never their secrets).
    pub(crate) routes: Arc<Routes>,
    /// Its history of reloads.
    pub(crate) reloader: Arc<Reloader>,
    /// `[reload] interval`.
    pub(crate) reload_interval: Duration,
    /// `admin.token_file`'s token: actions must carry it.
    pub(crate) token: Option<Arc<TokenFile>>,
    /// The event store and its delivery, when there is a `[store]`.
    pub(crate) store: Option<Arc<crate::delivery::Queue>>,
    /// When the sidecar started (Unix ms), for the console.
    pub(crate) started_at: Millis,
    /// The same instant on the monotonic clock, for the uptime.
    pub(crate) started: Instant,
    /// Readings of the request counters, for the last minute's rates
    /// (taken by [`serve`] every [`console::SAMPLE_EVERY`]).
    pub(crate) rates: RateWindow,
}

/// How long the console waits for the store before answering 503.
const STORE_WAIT: Duration = Duration::from_secs(5);

/// The admin paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'a> {
    Healthz,
    Readyz,
    Metrics,
    Page,
    Script,
    Style,
    Icon,
    Status,
    Events,
    Act { id: &'a str, action: Action },
}

impl<'a> Endpoint<'a> {
    fn of(path: &'a str) -> Option<Self> {
        Some(match path {
            "/healthz" => Self::Healthz,
            "/readyz" => Self::Readyz,
            "/metrics" => Self::Metrics,
            "/" => Self::Page,
            "/console.js" => Self::Script,
            "/console.css" => Self::Style,
            "/favicon.svg" => Self::Icon,
            "/api/status" => Self::Status,
            "/api/events" => Self::Events,
            _ => {
                let rest = path.strip_prefix("/api/events/")?;
                let (id, action) = rest.split_once('/')?;
                if id.is_empty() {
                    return None;
                }
                Self::Act {
                    id,
                    action: Action::parse(action)?,
                }
            }
        })
    }

    /// The `Allow` header's value.
    fn allow(self) -> &'static str {
        match self {
            Self::Act { .. } => "POST",
            _ => "GET, HEAD",
        }
    }

    fn accepts(self, method: &Method) -> bool {
        match self {
            Self::Act { .. } => method == Method::POST,
            _ => method == Method::GET || method == Method::HEAD,
        }
    }

    /// Errors on these paths are JSON; elsewhere short text, as before.
    fn is_api(self) -> bool {
        matches!(self, Self::Status | Self::Events | Self::Act { .. })
    }

    /// The console's paths (not the probes' and the scraper's), whose every
    /// answer carries [`console_headers`].
    fn is_console(self) -> bool {
        !matches!(self, Self::Healthz | Self::Readyz | Self::Metrics)
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Headers on everything the console serves (the page, its assets, the API's
/// answers and errors): never cached, never sniffed, never framed, no
/// referrer, and the page's CSP (on JSON it only keeps a browser that opens
/// an answer as a document from running or loading anything).
fn console_headers(r: &mut Response<Full<Bytes>>) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(assets::CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// The page and its assets.
fn asset(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    console_headers(&mut r);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let Ok(mut body) = serde_json::to_vec(value) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "cannot encode the answer",
        );
    };
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    console_headers(&mut r);
    r
}

/// `{"error": code, "message": ...}`, like the public listener's errors.
fn error(status: StatusCode, code: &'static str, message: &str) -> Response<Full<Bytes>> {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'static str,
        message: &'a str,
    }
    let body = serde_json::to_vec(&Body {
        error: code,
        message,
    })
    .unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    console_headers(&mut r);
    r
}

fn method_not_allowed(allow: &'static str, api: bool) -> Response<Full<Bytes>> {
    let mut r = if api {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
        )
    } else {
        text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
    };
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn store_unavailable(why: &str) -> Response<Full<Bytes>> {
    error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", why)
}

/// Answers one admin request from `peer`.
pub(crate) async fn respond<B>(
    state: &AdminState,
    req: Request<B>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    // Nothing here reads a body.
    let (parts, _) = req.into_parts();
    let Some(endpoint) = Endpoint::of(parts.uri.path()) else {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return method_not_allowed("GET, HEAD", false);
        }
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if !endpoint.accepts(&parts.method) {
        let mut r = method_not_allowed(endpoint.allow(), endpoint.is_api());
        if endpoint.is_console() {
            console_headers(&mut r);
        }
        return r;
    }
    match endpoint {
        Endpoint::Healthz => text(StatusCode::OK, "ok\n"),
        Endpoint::Readyz if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        Endpoint::Readyz => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        Endpoint::Metrics => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        Endpoint::Page => asset(assets::PAGE, "text/html; charset=utf-8"),
        Endpoint::Script => asset(assets::SCRIPT, "text/javascript; charset=utf-8"),
        Endpoint::Style => asset(assets::STYLE, "text/css; charset=utf-8"),
        Endpoint::Icon => asset(assets::ICON, "image/svg+xml"),
        Endpoint::Status => json(StatusCode::OK, &status(state).await),
        Endpoint::Events => events(state, parts.uri.query()).await,
        Endpoint::Act { id, action } => {
            if let Err(refusal) =
                console::authorize(peer.ip(), &parts.headers, state.token.as_deref())
            {
                tracing::warn!(peer = %peer, action = ?action, id, reason = refusal.message(),
                    "admin action refused");
                return error(StatusCode::FORBIDDEN, "forbidden", refusal.message());
            }
            act(state, id, action, peer).await
        }
    }
}

/// The store, once open; `None` when it is not (yet). The admin listener
/// serves before the store is first opened (the public listener only
/// after), so while the sidecar is starting this waits for that first open,
/// up to [`STORE_WAIT`]; once it is ready (or draining), it does not wait.
async fn open_store(state: &AdminState) -> Option<&crate::store::Store> {
    let queue = state.store.as_deref()?;
    let deadline = Instant::now() + STORE_WAIT;
    loop {
        if let Some(store) = queue.store() {
            return Some(store);
        }
        if state.ready.load(Ordering::Acquire) || Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /api/status`.
async fn status(state: &AdminState) -> Status {
    let opened = open_store(state).await;
    let now = now_ms();
    let store = match state.store.as_ref().map(|_| opened) {
        None => None,
        Some(None) => Some(QueueView::unavailable(
            "the store is not open (see the log)".to_owned(),
        )),
        Some(Some(store)) => Some(
            match tokio::time::timeout(STORE_WAIT, store.stats()).await {
                Ok(Ok(stats)) => QueueView::new(&stats, now),
                Ok(Err(e)) => QueueView::unavailable(e.to_string()),
                Err(_) => QueueView::unavailable("the store did not answer in time".to_owned()),
            },
        ),
    };
    let routes: Vec<RouteInfo<'_>> = state
        .routes
        .iter()
        .map(|r| RouteInfo {
            name: &r.name,
            path: &r.path,
            shadow: r.shadow,
        })
        .collect();
    let traffic = state.metrics.traffic();
    let last_minute = state
        .rates
        .last_minute(Instant::now(), &console::tallies(&traffic));
    Status {
        version: env!("CARGO_PKG_VERSION"),
        now,
        started_at: state.started_at,
        uptime_seconds: state.started.elapsed().as_secs(),
        ready: state.ready.load(Ordering::Acquire),
        routes: console::route_views(&routes, traffic, &last_minute),
        certificate: state
            .reloader
            .certificate()
            .map(|leaf| CertificateView::new(leaf, now)),
        reloads: ReloadsView::new(state.reload_interval, state.reloader.history()),
        actions: ActionsView {
            header: "X-Hookgate-Action",
            token_required: state.token.is_some(),
        },
        store,
    }
}

/// `GET /api/events[?state=&route=&limit=]`: newest first; empty without a store.
async fn events(state: &AdminState, query: Option<&str>) -> Response<Full<Bytes>> {
    let filter = match console::events_filter(query) {
        Ok(f) => f,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_request", &message),
    };
    let opened = open_store(state).await;
    let records = match state.store.as_ref().map(|_| opened) {
        None => Vec::new(),
        Some(None) => return store_unavailable("the store is not open (see the log)"),
        Some(Some(store)) => match tokio::time::timeout(STORE_WAIT, store.list(&filter)).await {
            Ok(Ok(records)) => records,
            Ok(Err(e)) => return store_unavailable(&e.to_string()),
            Err(_) => return store_unavailable("the store did not answer in time"),
        },
    };
    json(StatusCode::OK, &EventList::new(&records))
}

/// An authorized replay or drop of one id.
async fn act(
    state: &AdminState,
    id: &str,
    action: Action,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no stored event has this id",
        )
    };
    // Without a store, or with an id that is no UUID, no event has this id.
    let (Some(_), Ok(uuid)) = (&state.store, Uuid::parse_str(id)) else {
        return not_found();
    };
    let Some(store) = open_store(state).await else {
        return store_unavailable("the store is not open (see the log)");
    };
    let ids = [uuid];
    let done = match action {
        Action::Replay => {
            let replay = store.replay_ids(&ids, false, now_ms());
            tokio::time::timeout(STORE_WAIT, replay)
                .await
                .map(|r| r.map(Acted::from_replay))
        }
        Action::Drop => tokio::time::timeout(STORE_WAIT, store.drop_ids(&ids))
            .await
            .map(|r| r.map(Acted::from_drop)),
    };
    match done {
        Ok(Ok(Acted::Done(event))) => {
            tracing::info!(peer = %peer, action = ?action, id = %uuid, route = %event.route,
                "admin action");
            json(StatusCode::OK, &event)
        }
        Ok(Ok(Acted::NotFound)) => not_found(),
        Ok(Ok(Acted::AlreadyDelivered(_))) => error(
            StatusCode::CONFLICT,
            "already_delivered",
            "the event was delivered; replay it with `hookgate events replay --force ID`",
        ),
        Ok(Err(e)) => store_unavailable(&e.to_string()),
        Err(_) => {
            store_unavailable("the store did not answer in time; the action may have happened")
        }
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
    let state = Arc::new(state);
    let sampler = tokio::spawn({
        let state = state.clone();
        async move {
            let mut tick = tokio::time::interval(console::SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let tallies = console::tallies(&state.metrics.traffic());
                state.rates.record(Instant::now(), tallies);
            }
        }
    });
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
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(respond(&state, req, peer).await) }
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
    sampler.abort();
    tracker.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_endpoints_and_their_methods() {
        assert_eq!(Endpoint::of("/"), Some(Endpoint::Page));
        assert_eq!(Endpoint::of("/api/status"), Some(Endpoint::Status));
        assert_eq!(
            Endpoint::of("/api/events/0190e0e4-7f3a-7000-8000-000000000001/replay"),
            Some(Endpoint::Act {
                id: "0190e0e4-7f3a-7000-8000-000000000001",
                action: Action::Replay
            })
        );
        assert_eq!(
            Endpoint::of("/api/events/x/drop"),
            Some(Endpoint::Act {
                id: "x",
                action: Action::Drop
            })
        );
        for none in [
            "/api/events/x/delete",
            "/api/events//replay",
            "/api/events/a/b/replay",
            "/api/events/x",
            "/index.html",
            "/api",
        ] {
            assert_eq!(Endpoint::of(none), None, "{none}");
        }
        let page = Endpoint::Page;
        assert!(page.accepts(&Method::GET) && page.accepts(&Method::HEAD));
        assert!(!page.accepts(&Method::POST));
        let act = Endpoint::of("/api/events/x/drop").unwrap();
        assert!(act.accepts(&Method::POST) && !act.accepts(&Method::GET));
        assert_eq!(act.allow(), "POST");
    }
}
