//! One webhook request on the public listener, from head to answer:
//! [`head::admit`] (route, HTTPS, method, size, media type) → [`body::read`]
//! (bounded) → [`crate::verify`] (signature over the raw bytes, schema,
//! event list) → [`crate::forward`] (normalized headers, the app) →
//! [`respond::answer`] (the one place that turns an [`Outcome`] into the
//! response, the metrics and the one log line of the request).

mod body;
mod head;
mod respond;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, Version};
use http_body::Body;
use http_body_util::Full;

use crate::dedup::{self, Dedup, Flight};
use crate::delivery::Queue;
use crate::error::Rejection;
use crate::forward::upstream::{TransportError, Upstream};
use crate::forward::{Envelope, Peer, UpstreamRequest, headers};
use crate::load::{Route, Routes};
use crate::observe::metrics::{EventLabels, Metrics, RouteLabels};
use crate::payload::EventKind;
use crate::store::{DedupClaim, Ingested, NewEvent, now_ms};
use crate::verify::{Checked, Unverified};
use head::Head;
use respond::{Answer, Outcome};

/// What every request handler on the public listener shares.
#[derive(Debug)]
pub(crate) struct Gate {
    /// Routes by path.
    pub(crate) routes: Arc<Routes>,
    /// The pooled client to the app.
    pub(crate) upstream: Arc<Upstream>,
    /// Remembered duplicate keys and the copies at the app.
    pub(crate) dedup: Arc<Dedup>,
    /// `upstream.late_answer_window`.
    pub(crate) late_answer_window: Duration,
    /// The store and its delivery workers, with a `[store]`.
    pub(crate) queue: Option<Arc<Queue>>,
    /// Counters and histograms.
    pub(crate) metrics: Arc<Metrics>,
    /// `server.max_body_bytes`.
    pub(crate) max_body_bytes: usize,
    /// `server.body_read_timeout`.
    pub(crate) body_read_timeout: Duration,
    /// `server.trusted_proxies`.
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    /// TLS is terminated here (false: plain HTTP behind a trusted proxy).
    pub(crate) tls: bool,
}

impl Gate {
    /// The client of a new connection, worked out once for all its requests.
    pub(crate) fn peer(&self, addr: SocketAddr) -> Peer {
        let ip = addr.ip().to_canonical();
        let trusted = self.trusted_proxies.iter().any(|net| net.contains(&ip));
        Peer::new(addr, trusted)
    }
}

/// Handles one request on the public listener.
pub(crate) async fn handle<B>(gate: &Gate, req: Request<B>, peer: &Peer) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: fmt::Display,
{
    let start = Instant::now();
    let request_id = headers::request_id(req.headers());
    let version = req.version();
    let outcome = process(gate, req, peer, &request_id).await;
    respond::answer(gate, outcome, version, request_id, peer, start.elapsed())
}

async fn process<B>(gate: &Gate, req: Request<B>, peer: &Peer, request_id: &HeaderValue) -> Outcome
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
{
    let (parts, mut body) = req.into_parts();
    // An answer before the body was read: on HTTP/1.1, if body bytes are
    // still coming, drain them and close (the stream cannot be reused).
    let h1 = parts.version < Version::HTTP_2;
    let early = |route: Option<Arc<Route>>, rejection: Rejection, body: B| {
        let close = h1 && !body.is_end_stream();
        if close {
            body::drain(body);
        }
        Outcome::new(route, Err(rejection)).closing(close)
    };
    let (route, prior) = match head::admit(gate, &parts, peer) {
        Ok((route, Head::Ping)) => return Outcome::new(Some(route), Ok(Answer::Ping)),
        Ok((route, Head::Post { prior })) => (route, prior),
        Err((route, rejection)) => return early(route, rejection, body),
    };
    let size_hint = head::content_length(&parts).map_or(0, |n| n as usize);
    let bytes = match body::read(
        &mut body,
        gate.max_body_bytes,
        size_hint,
        gate.body_read_timeout,
    )
    .await
    {
        Ok(bytes) => bytes,
        Err(rejection) => return early(Some(route), rejection, body),
    };
    drop(body);

    let now = time::OffsetDateTime::now_utc();
    match Unverified::new(parts, bytes, route.clone()).check(prior, now) {
        Err(rejection) => Outcome::new(Some(route), Err(rejection)),
        Ok(Checked::Acknowledged) => Outcome::new(Some(route), Ok(Answer::Acknowledged)),
        Ok(Checked::Verified(verified)) => {
            let event = verified.event().kind;
            let window = route.dedup_window(event);
            let key = window.map(|_| dedup::key(&route.name, verified.body()));
            let envelope = Envelope::new(verified, &gate.upstream, peer, request_id);
            let outcome = match (key, window) {
                _ if route.queue.is_some() => {
                    Box::pin(enqueue(gate, &route, envelope, key.zip(window))).await
                }
                (Some(key), Some(window)) => {
                    Box::pin(deliver_once(gate, &route, envelope, key, window)).await
                }
                _ => forward(gate, &route, envelope.map(Envelope::into_request)).await,
            };
            outcome.with_event(event)
        }
        Ok(Checked::Shadowed(shadowed)) => {
            let code = shadowed.code();
            let request = shadowed.into_request(&gate.upstream, peer, request_id);
            forward(gate, &route, request).await.shadowed(code)
        }
    }
}

/// Sends a request to the app and times it.
async fn forward(
    gate: &Gate,
    route: &Arc<Route>,
    request: Result<UpstreamRequest, TransportError>,
) -> Outcome {
    let result = match request {
        Ok(request) => {
            let started = Instant::now();
            let result = gate.upstream.send(request).await;
            observe_upstream(gate, route, started);
            result
        }
        Err(e) => Err(e),
    };
    let result = result.map(Answer::Upstream).map_err(transport_rejection);
    Outcome::new(Some(route.clone()), result)
}

/// Direct delivery of a deduplicated event: a remembered key is a
/// duplicate; a copy arriving while another is at the app waits for its
/// answer; a 2xx (even one arriving after the 504, within
/// `upstream.late_answer_window`) is remembered for the route's window.
async fn deliver_once(
    gate: &Gate,
    route: &Arc<Route>,
    envelope: Result<Envelope, TransportError>,
    key: dedup::Key,
    window: Duration,
) -> Outcome {
    match gate.dedup.seen(&key, now_ms()).await {
        Ok(true) => return duplicate(gate, route, envelope.as_ref().ok()),
        Ok(false) => {}
        // Forwarding is better than refusing: the app may see a copy twice.
        Err(e) => {
            tracing::warn!(route = %route.name, error = %e, "duplicate check failed; forwarding")
        }
    }
    let leader = match gate.dedup.join(key) {
        Flight::Leader(leader) => Some(leader),
        Flight::Follower(mut rx) => {
            let waited =
                tokio::time::timeout(gate.upstream.timeout(), rx.wait_for(Option::is_some)).await;
            let took = matches!(waited, Ok(Ok(ref v)) if **v == Some(true));
            if took {
                return duplicate(gate, route, envelope.as_ref().ok());
            }
            // The earlier copy failed or is still waiting: this one goes itself.
            None
        }
    };
    let request = match envelope {
        Ok(envelope) => envelope.into_request(),
        Err(e) => return forward(gate, route, Err(e)).await,
    };
    // The exchange runs in its own task so that it can outlive the 504.
    let upstream = gate.upstream.clone();
    let memory = gate.dedup.clone();
    let metrics = gate.metrics.clone();
    let name = route.name.clone();
    let timeout = upstream.timeout();
    let limit = timeout + gate.late_answer_window;
    let started = Instant::now();
    let exchange = tokio::spawn(async move {
        let result = upstream.send_within(request, limit).await;
        let delivered = matches!(&result, Ok(r) if r.status().is_success());
        if delivered {
            let now = now_ms();
            let until = now.saturating_add(window.as_millis() as i64);
            if let Err(e) = memory.remember(&key, &name, until, now).await {
                tracing::warn!(route = %name, error = %e, "could not remember a delivered event's key");
            }
            if started.elapsed() >= timeout {
                metrics
                    .late_answers
                    .get_or_create(&RouteLabels {
                        route: name.clone(),
                    })
                    .inc();
                tracing::info!(
                    route = %name,
                    upstream_ms = started.elapsed().as_millis() as u64,
                    "late 2xx from the app after the 504: key remembered, the provider's retry will be a duplicate"
                );
            }
        }
        if let Some(leader) = leader {
            leader.finish(delivered);
        }
        result
    });
    let result = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(result)) => result,
        Ok(Err(_panicked)) => return Outcome::new(Some(route.clone()), Err(Rejection::Internal)),
        Err(_) => Err(TransportError::Timeout(timeout)),
    };
    observe_upstream(gate, route, started);
    Outcome::new(
        Some(route.clone()),
        result.map(Answer::Upstream).map_err(transport_rejection),
    )
}

/// Queued delivery's ingest: 200 `queued` once the event is durably stored
/// (its dedup key claimed in the same transaction), 503
/// `store_unavailable` when the store is not open, fails, or takes longer
/// than `store.timeout`.
async fn enqueue(
    gate: &Gate,
    route: &Arc<Route>,
    envelope: Result<Envelope, TransportError>,
    claim: Option<(dedup::Key, Duration)>,
) -> Outcome {
    let unavailable =
        |why: String| Outcome::new(Some(route.clone()), Err(Rejection::StoreUnavailable(why)));
    let Some(queue) = &gate.queue else {
        return unavailable("no [store]".to_owned());
    };
    let Some(store) = queue.store() else {
        return unavailable("the store is not open yet".to_owned());
    };
    let envelope = match envelope {
        Ok(e) => e,
        Err(e) => return forward(gate, route, Err(e)).await,
    };
    let now = now_ms();
    let id = uuid::Uuid::now_v7();
    let new = NewEvent {
        id,
        route: route.name.to_string(),
        event: envelope.event_name(),
        received_at: now,
        headers: envelope.stored_head(),
        body: envelope.body().clone(),
        dedup: claim.map(|(key, window)| DedupClaim {
            key,
            expires_at: now.saturating_add(window.as_millis() as i64),
        }),
    };
    let failure = match tokio::time::timeout(queue.timeout, store.ingest_one(new)).await {
        Ok(Ok(ingested)) => {
            queue.health.record(true);
            return match ingested {
                Ingested::Stored => {
                    queue.wake(&route.name);
                    Outcome::new(Some(route.clone()), Ok(Answer::Queued(id)))
                }
                Ingested::Duplicate => duplicate(gate, route, Some(&envelope)),
            };
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!(
            "the store took longer than store.timeout ({:?})",
            queue.timeout
        ),
    };
    queue.health.record(false);
    if let Some(m) = &gate.metrics.store {
        m.up.set(0);
    }
    unavailable(failure)
}

/// 200 `{"status":"duplicate"}`, counted in `hookgate_duplicates_total`.
fn duplicate(gate: &Gate, route: &Arc<Route>, envelope: Option<&Envelope>) -> Outcome {
    gate.metrics
        .duplicates
        .get_or_create(&EventLabels {
            route: route.name.clone(),
            event: event_label(envelope),
        })
        .inc();
    Outcome::new(Some(route.clone()), Ok(Answer::Duplicate))
}

/// `hookgate_upstream_duration_seconds{route}`: the app's time since `started`.
fn observe_upstream(gate: &Gate, route: &Route, started: Instant) {
    gate.metrics
        .upstream_duration
        .get_or_create(&RouteLabels {
            route: route.name.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
}

/// The `event` label of a request's metrics: one of the four, or `-`.
fn event_label(envelope: Option<&Envelope>) -> &'static str {
    envelope
        .and_then(|e| e.event().kind)
        .map_or("-", EventKind::as_str)
}

fn transport_rejection(e: TransportError) -> Rejection {
    match e {
        TransportError::Target => Rejection::Internal,
        e if e.is_timeout() => Rejection::UpstreamTimeout(e),
        e => Rejection::UpstreamUnavailable(e),
    }
}

impl Outcome {
    fn with_event(mut self, event: Option<EventKind>) -> Self {
        self.event = event;
        self
    }
}
