//! The one place that turns what happened to a request ([`Outcome`]) into
//! the answer to the provider, the request's metrics and its one log line.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body_util::Full;
use tracing::Level;

use super::Gate;
use crate::error::{Fault, Rejection};
use crate::forward::{Peer, headers};
use crate::load::Route;
use crate::payload::EventKind;

/// What happened to a request: the answer and what to record about it.
pub(super) struct Outcome {
    pub(super) route: Option<Arc<Route>>,
    pub(super) event: Option<EventKind>,
    /// Shadow mode: the error code a forwarded request failed with.
    pub(super) shadowed: Option<&'static str>,
    pub(super) result: Result<Answer, Rejection>,
    /// The connection must close after the answer (an unread body is left).
    pub(super) close: bool,
}

/// A successful answer.
pub(super) enum Answer {
    /// GET/HEAD on a route.
    Ping,
    /// An unknown event the route acknowledges: 200, nothing forwarded.
    Acknowledged,
    /// The app's answer.
    Upstream(Response<Bytes>),
    /// The key of this event was remembered: 200, nothing forwarded.
    Duplicate,
    /// Durably stored for queued delivery, under this id.
    Queued(uuid::Uuid),
}

impl Outcome {
    /// An outcome for `route` (None: no route matched).
    pub(super) fn new(route: Option<Arc<Route>>, result: Result<Answer, Rejection>) -> Self {
        Self {
            route,
            event: None,
            shadowed: None,
            result,
            close: false,
        }
    }

    /// Marks the connection for closing after the answer.
    pub(super) fn closing(mut self, close: bool) -> Self {
        self.close = close;
        self
    }

    /// A shadow-mode request that failed `code` and was forwarded anyway.
    pub(super) fn shadowed(mut self, code: &'static str) -> Self {
        self.shadowed = Some(code);
        self
    }
}

fn json(body: Bytes, status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Builds the answer, counts it, and logs the request's one line.
pub(super) fn answer(
    gate: &Gate,
    outcome: Outcome,
    version: Version,
    request_id: HeaderValue,
    peer: &Peer,
    elapsed: Duration,
) -> Response<Full<Bytes>> {
    let Outcome {
        route,
        event,
        shadowed,
        result,
        close,
    } = outcome;
    let route_name = route
        .as_ref()
        .map_or(crate::observe::metrics::no_route(), |r| &r.name);
    let shadow = route.as_ref().is_some_and(|r| r.shadow);
    let event = event.map_or("-", EventKind::as_str);
    let (mut response, label, fault, reason) = match result {
        Ok(Answer::Ping) => (
            json(Bytes::from_static(b"{\"status\":\"ok\"}\n"), StatusCode::OK),
            "ping",
            None,
            None,
        ),
        Ok(Answer::Acknowledged) => (
            json(
                Bytes::from_static(b"{\"status\":\"acknowledged\"}\n"),
                StatusCode::OK,
            ),
            "acknowledged",
            None,
            None,
        ),
        Ok(Answer::Duplicate) => (
            json(
                Bytes::from_static(b"{\"status\":\"duplicate\"}\n"),
                StatusCode::OK,
            ),
            "duplicate",
            None,
            None,
        ),
        Ok(Answer::Queued(id)) => (
            json(
                Bytes::from(format!("{{\"status\":\"queued\",\"id\":\"{id}\"}}\n")),
                StatusCode::OK,
            ),
            "queued",
            None,
            None,
        ),
        Ok(Answer::Upstream(up)) => {
            let (mut parts, body) = up.into_parts();
            let passed_on = if parts.status.is_success() {
                // The provider wants exactly 200; 201/202/204 would be retried.
                parts.status = StatusCode::OK;
                "forwarded"
            } else {
                "upstream_error_status"
            };
            headers::normalize_response(&mut parts.headers);
            (
                Response::from_parts(parts, Full::new(body)),
                // A shadow-mode failure is counted as what it failed with.
                shadowed.unwrap_or(passed_on),
                None,
                None,
            )
        }
        Err(rejection) => {
            let mut r = json(rejection.body(), rejection.status());
            if matches!(rejection, Rejection::MethodNotAllowed) {
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST, GET, HEAD"));
            }
            if matches!(rejection, Rejection::StoreUnavailable(_)) {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            (
                r,
                rejection.code(),
                Some(rejection.fault()),
                Some(reason(&rejection)),
            )
        }
    };
    if close && version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
        .headers_mut()
        .insert(headers::X_REQUEST_ID.clone(), request_id.clone());
    let status = response.status().as_u16();
    let seconds = elapsed.as_secs_f64();
    gate.metrics
        .record_request(route_name, label, shadow, seconds);

    let (level, message) = match fault {
        None if shadowed.is_some() => (
            Level::INFO,
            "shadow mode: failed request forwarded unverified",
        ),
        None => (Level::INFO, "request"),
        Some(Fault::Client) => (Level::INFO, "request rejected"),
        Some(Fault::Upstream) => (Level::WARN, "upstream failed"),
        Some(Fault::Internal) if label == "store_unavailable" => {
            (Level::WARN, "event store unavailable")
        }
        Some(Fault::Internal) => (Level::ERROR, "internal error"),
    };
    let rid = request_id.to_str().unwrap_or("-");
    let duration_ms = seconds * 1000.0;
    // tracing wants the level as a constant: one line, three expansions.
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                $level,
                request_id = rid,
                route = &**route_name,
                event,
                outcome = label,
                status,
                duration_ms,
                peer = %peer,
                shadow,
                reason = reason.as_deref(),
                "{message}"
            )
        };
    }
    match level {
        Level::ERROR => line!(Level::ERROR),
        Level::WARN => line!(Level::WARN),
        _ => line!(Level::INFO),
    }
    response
}

/// The operator-facing reason: finer than the client's message (which
/// signature problem, what the transport said), never a value from the body
/// or a secret.
fn reason(rejection: &Rejection) -> String {
    match rejection {
        Rejection::InvalidSignature(e) => e.to_string(),
        Rejection::InvalidPayload(v) => {
            let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
            format!("schema violations at {}", paths.join(", "))
        }
        Rejection::UpstreamUnavailable(e) | Rejection::UpstreamTimeout(e) => {
            format!("{rejection}: {e}")
        }
        Rejection::StoreUnavailable(e) => format!("{rejection}: {e}"),
        other => other.to_string(),
    }
}
