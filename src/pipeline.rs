//! One webhook request, in the spec's order:
//! route → GET/HEAD ping → method → size → content type/encoding → body
//! (bounded) → signature over the raw bytes → schema → event allow-list →
//! header normalization → forward.
//!
//! The types carry the proof: an [`Unverified`] request becomes a
//! [`Verified`] one only through [`Unverified::verify`], only a `Verified`
//! request can become an [`UpstreamRequest`], and [`Upstream::send`] takes
//! nothing else. Nothing about the body is parsed before the signature
//! matched.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::{BodyExt, Full};

use crate::config::UnknownEvents;
use crate::error::{Fault, Rejection};
use crate::headers::{self, Forwarding};
use crate::metrics::Metrics;
use crate::payload::{self, EventKind, PayloadError, Validated, Violation};
use crate::signature::{self, SignatureError};
use crate::state::{Route, Routes};
use crate::upstream::Upstream;

/// Everything a request handler needs, shared by all connections.
#[derive(Debug)]
pub struct App {
    /// Routes by path.
    pub routes: Arc<Routes>,
    /// The pooled client to the app.
    pub upstream: Upstream,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
    /// `server.body_read_timeout`.
    pub body_read_timeout: Duration,
    /// `server.trusted_proxies`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// TLS is terminated here (false: plain HTTP behind a trusted proxy).
    pub tls: bool,
}

impl App {
    /// Whether `peer` is one of the trusted TLS-terminating proxies.
    pub fn is_trusted(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client of a new connection, worked out once for all its requests.
    pub fn peer(&self, addr: SocketAddr) -> Peer {
        Peer::new(addr, self.is_trusted(addr))
    }
}

/// The client at the far end of a connection, with what each of its
/// requests needs from the address formatted once per connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `ip:port`, for log lines.
    text: Box<str>,
    /// The IP address (an IPv4-mapped IPv6 one as IPv4), for `X-Forwarded-For`.
    ip: HeaderValue,
    /// One of `server.trusted_proxies`.
    trusted_proxy: bool,
}

impl Peer {
    /// `trusted_proxy`: the address is one of `server.trusted_proxies`.
    pub fn new(addr: SocketAddr, trusted_proxy: bool) -> Self {
        let ip = addr.ip().to_canonical().to_string();
        Self {
            text: addr.to_string().into_boxed_str(),
            // An IP address's text form is always a valid header value.
            ip: HeaderValue::from_str(&ip).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            trusted_proxy,
        }
    }
}

/// `ip:port`.
impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `X-Forwarded-Proto: https`, exactly once.
fn forwarded_proto_is_https(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(&headers::X_FORWARDED_PROTO).iter();
    matches!((values.next(), values.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// A request whose head passed the checks and whose body was read, but whose
/// signature has not been checked yet.
pub struct Unverified {
    parts: Parts,
    body: Bytes,
    route: Arc<Route>,
}

/// A request whose signature matched one of its route's secrets, whose body
/// fits the schema, and whose event the route accepts — or, on a route in
/// shadow mode only, a request that failed and carries its verdict. Only
/// [`Unverified::verify`] and [`Unverified::verify_shadow`] make one.
pub struct Verified {
    parts: Parts,
    body: Bytes,
    route: Arc<Route>,
    verdict: Result<Passed, Rejection>,
}

/// What a request that passed every check is.
enum Passed {
    /// One of the four events.
    Known {
        event: EventKind,
        campaign_id: HeaderValue,
    },
    /// An event hookgate does not know, on a route that forwards those:
    /// the `X-Webhook-Event` and `X-Webhook-Campaign-Id` values, where
    /// they are clean enough to be headers.
    Unknown {
        event: Option<HeaderValue>,
        campaign_id: Option<HeaderValue>,
    },
    /// An event hookgate does not know, on a route that acknowledges those.
    Acknowledged,
}

/// `[A-Za-z0-9._-]{1,64}`: an unknown event name that may become `X-Webhook-Event`.
fn event_token(name: &str) -> Option<HeaderValue> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then(|| HeaderValue::from_str(name).ok()).flatten()
}

/// The request for the upstream, built only from a [`Verified`] request.
pub struct UpstreamRequest(Request<Full<Bytes>>);

impl fmt::Debug for Unverified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unverified")
            .field("route", &self.route.name)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("route", &self.route.name)
            .field(
                "verdict",
                &self
                    .verdict
                    .as_ref()
                    .map(|p| match p {
                        Passed::Known { event, .. } => event.as_str(),
                        Passed::Unknown { .. } => "unknown",
                        Passed::Acknowledged => "acknowledged",
                    })
                    .map_err(Rejection::code),
            )
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamRequest")
            .field("uri", self.0.uri())
            .finish_non_exhaustive()
    }
}

impl Unverified {
    /// A request for `route` with its head and complete body.
    pub fn new(parts: Parts, body: Bytes, route: Arc<Route>) -> Self {
        Self { parts, body, route }
    }

    /// Checks the signature over the raw bytes, then the schema, then the
    /// route's event list.
    pub fn verify(self) -> Result<Verified, Rejection> {
        let passed = self.check()?;
        Ok(Verified {
            parts: self.parts,
            body: self.body,
            route: self.route,
            verdict: Ok(passed),
        })
    }

    /// Shadow mode: runs the same checks (after `prior`, a rejection the
    /// head already earned), but on a route with `mode = "shadow"` a failure
    /// is forwarded too, carrying its verdict. On an enforcing route this is
    /// exactly [`verify`](Self::verify).
    pub fn verify_shadow(self, prior: Option<Rejection>) -> Result<Verified, Rejection> {
        if !self.route.shadow {
            return match prior {
                Some(rejection) => Err(rejection),
                None => self.verify(),
            };
        }
        let verdict = match prior {
            Some(rejection) => Err(rejection),
            None => self.check(),
        };
        Ok(Verified {
            parts: self.parts,
            body: self.body,
            route: self.route,
            verdict,
        })
    }

    fn check(&self) -> Result<Passed, Rejection> {
        let route = &self.route;
        let mut values = self.parts.headers.get_all(&route.signature_header).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Err(Rejection::InvalidSignature(SignatureError::Missing)),
            (Some(_), Some(_)) => {
                return Err(Rejection::InvalidSignature(SignatureError::Repeated));
            }
            (Some(v), None) => v,
        };
        let tag = signature::parse(value.as_bytes(), route.encoding)
            .map_err(Rejection::InvalidSignature)?;
        signature::verify(&self.body, &tag, &route.secrets().secrets)
            .map_err(Rejection::InvalidSignature)?;

        let validated = payload::validate(&self.body).map_err(|e| match e {
            PayloadError::InvalidJson(m) => Rejection::InvalidJson(m),
            PayloadError::Invalid(v) => Rejection::InvalidPayload(v),
        })?;
        let event = match validated {
            Validated::Known(event) => event,
            Validated::Unknown(unknown) => {
                return match route.unknown_events {
                    UnknownEvents::Acknowledge => Ok(Passed::Acknowledged),
                    UnknownEvents::Reject => Err(Rejection::InvalidPayload(unknown.violations)),
                    UnknownEvents::Forward => Ok(Passed::Unknown {
                        event: unknown.name.as_deref().and_then(event_token),
                        campaign_id: unknown
                            .campaign_id
                            .and_then(|id| HeaderValue::from_str(&id).ok()),
                    }),
                };
            }
        };
        if !route.allows(event.kind) {
            return Err(Rejection::EventNotAllowed(event.kind.as_str()));
        }
        let campaign_id = HeaderValue::from_bytes(event.campaign_id.as_bytes()).map_err(|_| {
            Rejection::InvalidPayload(vec![Violation {
                path: "/campaign_id".to_owned(),
                message: "cannot be carried in an HTTP header",
            }])
        })?;
        Ok(Passed::Known {
            event: event.kind,
            campaign_id,
        })
    }
}

impl Verified {
    /// The event kind, if the request passed.
    pub fn event(&self) -> Option<EventKind> {
        match &self.verdict {
            Ok(Passed::Known { event, .. }) => Some(*event),
            _ => None,
        }
    }

    /// An unknown event that the route acknowledges without forwarding.
    fn acknowledged(&self) -> bool {
        matches!(self.verdict, Ok(Passed::Acknowledged))
    }

    /// The error code a shadow-mode request failed with.
    pub fn failed_with(&self) -> Option<&'static str> {
        self.verdict.as_ref().err().map(Rejection::code)
    }

    /// Builds the upstream request: the exact body bytes, POST to the
    /// upstream URL + the route's upstream path + the original query, with
    /// headers normalized by [`headers::normalize_request`].
    pub fn into_upstream_request(
        self,
        upstream: &Upstream,
        peer: &Peer,
        request_id: &HeaderValue,
    ) -> Result<UpstreamRequest, Rejection> {
        let Verified {
            mut parts,
            body,
            route,
            verdict,
        } = self;
        let uri = upstream.uri_for(&route.upstream_path, parts.uri.query())?;
        // A trusted proxy's X-Forwarded-For chain is kept (the peer is appended).
        let forwarded_for = if peer.trusted_proxy {
            let chain: Vec<&str> = parts
                .headers
                .get_all(&headers::X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!chain.is_empty()).then(|| chain.join(", "))
        } else {
            None
        };
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        headers::normalize_request(
            &mut parts.headers,
            &route.signature_header,
            Forwarding {
                upstream_host: upstream.host(),
                peer_ip: &peer.ip,
                forwarded_for,
                original_host,
                request_id,
                route: &route.name_header,
                verdict: match verdict {
                    Ok(Passed::Known { event, campaign_id }) => Ok((
                        Some(HeaderValue::from_static(event.as_str())),
                        Some(campaign_id),
                    )),
                    Ok(Passed::Unknown { event, campaign_id }) => Ok((event, campaign_id)),
                    // Answered before forwarding; never reaches here.
                    Ok(Passed::Acknowledged) => Ok((None, None)),
                    Err(r) => Err(r.code()),
                },
                content_length: body.len(),
            },
        );
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = parts.headers;
        Ok(UpstreamRequest(req))
    }
}

impl UpstreamRequest {
    /// The request to send. There is no way back: an `UpstreamRequest`
    /// cannot be made from a plain `Request`.
    pub fn into_inner(self) -> Request<Full<Bytes>> {
        self.0
    }

    /// The request, for inspection.
    pub fn get_ref(&self) -> &Request<Full<Bytes>> {
        &self.0
    }
}

/// What the head of a request asks for.
enum Head {
    /// GET/HEAD on a route: answered locally.
    Ping,
    /// A POST to verify.
    Post,
}

/// The header-only checks, in the spec's order.
fn check_head(parts: &Parts, max_body_bytes: usize) -> Result<Head, Rejection> {
    match parts.method {
        Method::POST => {}
        Method::GET | Method::HEAD => return Ok(Head::Ping),
        _ => return Err(Rejection::MethodNotAllowed),
    }
    if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
        // hyper has already refused a malformed or conflicting Content-Length.
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        if len > max_body_bytes as u64 {
            return Err(Rejection::PayloadTooLarge {
                limit: max_body_bytes,
            });
        }
    }
    let mut types = parts.headers.get_all(header::CONTENT_TYPE).iter();
    match (types.next(), types.next()) {
        (Some(t), None) if is_json(t.as_bytes()) => {}
        _ => return Err(Rejection::UnsupportedContentType),
    }
    for encoding in parts.headers.get_all(header::CONTENT_ENCODING) {
        let ok = encoding
            .as_bytes()
            .split(|&b| b == b',')
            .all(|e| e.trim_ascii().eq_ignore_ascii_case(b"identity"));
        if !ok {
            return Err(Rejection::UnsupportedContentEncoding);
        }
    }
    Ok(Head::Post)
}

/// `application/json`, any case, parameters (`; charset=utf-8`) allowed.
fn is_json(value: &[u8]) -> bool {
    let essence = value.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// Reads the whole body, refusing it as soon as it grows past `limit`.
async fn read_body<B>(body: &mut B, limit: usize, size_hint: usize) -> Result<Bytes, Rejection>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Rejection::BodyIncomplete { timed_out: false })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we forward
        };
        let so_far = first.as_ref().map_or(buf.len(), Bytes::len);
        if so_far + data.len() > limit {
            return Err(Rejection::PayloadTooLarge { limit });
        }
        // The common case, a body in one frame, is kept without a copy.
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(f) => {
                buf.reserve(size_hint.max(f.len() + data.len()));
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// How much of an unread body is drained after an early answer, and for how
/// long, so the client reads the answer instead of a reset.
const DRAIN_BYTES: usize = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and discards what is left of a body in the background (bounded),
/// so closing the connection after an early answer does not reset it while
/// the client is still sending.
fn drain<B>(mut body: B)
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, Bytes::len);
                if seen > DRAIN_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

/// The answer and what to record about it.
struct Outcome {
    route: Option<Arc<Route>>,
    /// The route is in shadow mode (counted with `shadow="true"`).
    shadow: bool,
    event: Option<EventKind>,
    /// Shadow mode: the error code a forwarded request failed with.
    failed_with: Option<&'static str>,
    result: Result<Answer, Rejection>,
    /// The connection must close after the answer (an unread body is left).
    close: bool,
}

enum Answer {
    Ping,
    /// An unknown event the route acknowledges: 200, nothing forwarded.
    Acknowledged,
    Upstream(Response<Bytes>),
}

/// Handles one request on the public listener.
pub async fn handle<B>(app: &App, req: Request<B>, peer: &Peer) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: fmt::Display,
{
    let start = Instant::now();
    let request_id = headers::request_id(req.headers());
    let version = req.version();
    let outcome = process(app, req, peer, &request_id).await;
    let elapsed = start.elapsed();
    respond(app, outcome, version, request_id, peer, elapsed)
}

async fn process<B>(app: &App, req: Request<B>, peer: &Peer, request_id: &HeaderValue) -> Outcome
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
{
    let (parts, mut body) = req.into_parts();
    let h1 = parts.version < Version::HTTP_2;
    // An answer before the body was read: on HTTP/1.1, if body bytes are
    // still coming, drain them and close (the stream cannot be reused).
    let early = |route: Option<Arc<Route>>, rejection: Rejection, body: B| {
        let close = h1 && !body.is_end_stream();
        if close {
            drain(body);
        }
        Outcome {
            shadow: route.as_ref().is_some_and(|r| r.shadow),
            route,
            event: None,
            failed_with: None,
            result: Err(rejection),
            close,
        }
    };
    let trusted = peer.trusted_proxy;
    // Plain HTTP is only for a trusted proxy that terminated TLS itself.
    let secure = app.tls || (trusted && forwarded_proto_is_https(&parts.headers));
    let route = app.routes.find(parts.uri.path()).cloned();
    if !secure {
        return early(route, Rejection::HttpsRequired, body);
    }
    let Some(route) = route else {
        return early(None, Rejection::NotFound, body);
    };
    // A shadow route still enforces what protects hookgate itself (method,
    // size); a wrong media type becomes the request's verdict instead.
    let mut prior = None;
    match check_head(&parts, app.max_body_bytes) {
        Ok(Head::Ping) => {
            return Outcome {
                shadow: route.shadow,
                route: Some(route),
                event: None,
                failed_with: None,
                result: Ok(Answer::Ping),
                close: false,
            };
        }
        Ok(Head::Post) => {}
        Err(
            rejection @ (Rejection::UnsupportedContentType | Rejection::UnsupportedContentEncoding),
        ) if route.shadow => prior = Some(rejection),
        Err(rejection) => return early(Some(route), rejection, body),
    }
    let size_hint = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let read = tokio::time::timeout(
        app.body_read_timeout,
        read_body(&mut body, app.max_body_bytes, size_hint),
    )
    .await
    .unwrap_or(Err(Rejection::BodyIncomplete { timed_out: true }));
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(rejection) => return early(Some(route), rejection, body),
    };
    drop(body);

    let verified = match Unverified::new(parts, bytes, route.clone()).verify_shadow(prior) {
        Ok(v) => v,
        Err(rejection) => {
            return Outcome {
                shadow: route.shadow,
                route: Some(route),
                event: None,
                failed_with: None,
                result: Err(rejection),
                close: false,
            };
        }
    };
    if verified.acknowledged() {
        return Outcome {
            shadow: route.shadow,
            route: Some(route),
            event: None,
            failed_with: None,
            result: Ok(Answer::Acknowledged),
            close: false,
        };
    }
    let event = verified.event();
    let failed_with = verified.failed_with();
    let result = match verified.into_upstream_request(&app.upstream, peer, request_id) {
        Ok(req) => {
            let started = Instant::now();
            let result = app.upstream.send(req).await;
            app.metrics
                .upstream_duration
                .get_or_create(&crate::metrics::RouteLabels {
                    route: route.name.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
            result.map(Answer::Upstream)
        }
        Err(rejection) => Err(rejection),
    };
    Outcome {
        shadow: route.shadow,
        route: Some(route),
        event,
        failed_with,
        result,
        close: false,
    }
}

fn respond(
    app: &App,
    outcome: Outcome,
    version: Version,
    request_id: HeaderValue,
    peer: &Peer,
    elapsed: Duration,
) -> Response<Full<Bytes>> {
    let route_name = outcome.route.as_ref().map_or("-", |r| r.name.as_str());
    let event = outcome.event.map_or("-", EventKind::as_str);
    let (mut response, label, fault) = match outcome.result {
        Ok(Answer::Ping) => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"ok\"}\n")));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (r, "ping", None)
        }
        Ok(Answer::Acknowledged) => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                b"{\"status\":\"acknowledged\"}\n",
            )));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (r, "acknowledged", None)
        }
        Ok(Answer::Upstream(up)) => {
            let (mut parts, body) = up.into_parts();
            let passed_on = if parts.status.is_success() {
                // The provider wants exactly 200; 201/202/204 would be retried.
                parts.status = StatusCode::OK;
                "forwarded"
            } else {
                "upstream_error_status"
            };
            // A shadow-mode failure is counted as what it failed with.
            let label = outcome.failed_with.unwrap_or(passed_on);
            headers::normalize_response(&mut parts.headers);
            (Response::from_parts(parts, Full::new(body)), label, None)
        }
        Err(rejection) => {
            let mut r = Response::new(Full::new(rejection.body()));
            *r.status_mut() = rejection.status();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if matches!(rejection, Rejection::MethodNotAllowed) {
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST, GET, HEAD"));
            }
            let fault = rejection.fault();
            (r, rejection.code(), Some((fault, rejection)))
        }
    };
    if outcome.close && version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
        .headers_mut()
        .insert(headers::X_REQUEST_ID.clone(), request_id.clone());
    let status = response.status().as_u16();
    let seconds = elapsed.as_secs_f64();
    app.metrics
        .record_request(route_name, label, outcome.shadow, seconds);

    let duration_ms = seconds * 1000.0;
    let rid = request_id.to_str().unwrap_or("-");
    match fault {
        None if outcome.failed_with.is_some() => tracing::info!(
            request_id = rid, route = route_name, event, outcome = label, status,
            duration_ms, peer = %peer, shadow = true, "shadow mode: failed request forwarded unverified"
        ),
        None => tracing::info!(
            request_id = rid, route = route_name, event, outcome = label, status,
            duration_ms, peer = %peer, shadow = outcome.shadow, "request"
        ),
        Some((Fault::Client, rejection)) => tracing::info!(
            request_id = rid, route = route_name, event, outcome = label, status,
            duration_ms, peer = %peer, reason = %reason(&rejection), "request rejected"
        ),
        Some((Fault::Upstream, rejection)) => tracing::warn!(
            request_id = rid, route = route_name, event, outcome = label, status,
            duration_ms, peer = %peer, reason = %reason(&rejection), "upstream failed"
        ),
        Some((Fault::Internal, rejection)) => tracing::error!(
            request_id = rid, route = route_name, event, outcome = label, status,
            duration_ms, peer = %peer, reason = %reason(&rejection), "internal error"
        ),
    }
    response
}

/// The operator-facing reason: finer than the client's message (which
/// signature problem), never a value from the body or a secret.
fn reason(rejection: &Rejection) -> String {
    match rejection {
        Rejection::InvalidSignature(e) => e.to_string(),
        Rejection::InvalidPayload(v) => {
            let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
            format!("schema violations at {}", paths.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method(method).uri("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn code(r: Result<Head, Rejection>) -> &'static str {
        match r {
            Ok(Head::Ping) => "ping",
            Ok(Head::Post) => "post",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn head_checks_follow_the_spec_order() {
        let json = ("content-type", "application/json");
        assert_eq!(code(check_head(&parts(Method::GET, &[]), 10)), "ping");
        assert_eq!(code(check_head(&parts(Method::HEAD, &[]), 10)), "ping");
        assert_eq!(
            code(check_head(&parts(Method::PUT, &[json]), 10)),
            "method_not_allowed"
        );
        assert_eq!(
            code(check_head(
                &parts(
                    Method::POST,
                    &[("content-length", "11"), ("content-type", "text/plain")]
                ),
                10
            )),
            "payload_too_large"
        );
        assert_eq!(
            code(check_head(
                &parts(Method::POST, &[("content-length", "10"), json]),
                10
            )),
            "post"
        );
        assert_eq!(
            code(check_head(&parts(Method::POST, &[]), 10)),
            "unsupported_media_type"
        );
        assert_eq!(
            code(check_head(
                &parts(Method::POST, &[json, ("content-encoding", "gzip")]),
                10
            )),
            "unsupported_media_type"
        );
        assert_eq!(
            code(check_head(
                &parts(Method::POST, &[json, ("content-encoding", "identity")]),
                10
            )),
            "post"
        );
        assert_eq!(
            code(check_head(
                &parts(Method::POST, &[json, ("content-type", "application/json")]),
                10
            )),
            "unsupported_media_type",
            "two Content-Type headers"
        );
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(b"application/json"));
        assert!(is_json(b"Application/JSON; charset=utf-8"));
        assert!(!is_json(b"application/jsonx"));
        assert!(!is_json(b"text/json"));
        assert!(!is_json(b"application/x-www-form-urlencoded"));
    }

    #[tokio::test]
    async fn body_limit_applies_to_streamed_bodies() {
        use http_body_util::StreamBody;
        let frames = || {
            futures_util::stream::iter([
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(
                    b"12345",
                ))),
                Ok(http_body::Frame::data(Bytes::from_static(b"67890"))),
            ])
        };
        let mut body = StreamBody::new(frames());
        assert_eq!(read_body(&mut body, 10, 0).await.unwrap(), "1234567890");
        let mut body = StreamBody::new(frames());
        assert!(matches!(
            read_body(&mut body, 9, 0).await,
            Err(Rejection::PayloadTooLarge { limit: 9 })
        ));
    }
}
