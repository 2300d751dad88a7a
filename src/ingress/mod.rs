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

use crate::error::Rejection;
use crate::forward::upstream::{TransportError, Upstream};
use crate::forward::{Envelope, Peer, UpstreamRequest, headers};
use crate::load::{Route, Routes};
use crate::observe::metrics::{Metrics, RouteLabels};
use crate::payload::EventKind;
use crate::verify::{Checked, Unverified};
use head::Head;
use respond::{Answer, Outcome};

/// What every request handler on the public listener shares.
#[derive(Debug)]
pub(crate) struct Gate {
    /// Routes by path.
    pub(crate) routes: Arc<Routes>,
    /// The pooled client to the app.
    pub(crate) upstream: Upstream,
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
            let event = verified.event.kind;
            let request = Envelope::new(verified, &gate.upstream, peer, request_id)
                .map(Envelope::into_request);
            forward(gate, &route, request).await.with_event(event)
        }
        Ok(Checked::Shadowed(shadowed)) => {
            let code = shadowed.code;
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
            gate.metrics
                .upstream_duration
                .get_or_create(&RouteLabels {
                    route: route.name.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
            result
        }
        Err(e) => Err(e),
    };
    let result = result.map(Answer::Upstream).map_err(|e| match e {
        TransportError::Target => Rejection::Internal,
        e if e.is_timeout() => Rejection::UpstreamTimeout(e),
        e => Rejection::UpstreamUnavailable(e),
    });
    Outcome::new(Some(route.clone()), result)
}

impl Outcome {
    fn with_event(mut self, event: Option<EventKind>) -> Self {
        self.event = event;
        self
    }
}
