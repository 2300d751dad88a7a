//! What leaves hookgate for the app, and how.
//!
//! An [`Envelope`] is a verified event ready for the app: the exact body
//! bytes, the normalized headers ([`headers::normalize_request`]) and the
//! request target (the route's upstream path + the original query). It is
//! built only from a [`Verified`] request, so whatever accepts an
//! `Envelope` (the direct forward today, the store and its delivery
//! workers) only ever sees authentic events. A shadow-mode request that
//! failed becomes an [`UpstreamRequest`] directly, marked unverified, and
//! never an `Envelope`. [`upstream::Upstream::send`] takes only an
//! `UpstreamRequest`, which has no public constructor.

pub mod h1;
pub mod headers;
pub mod upstream;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Uri;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;

use crate::load::Route;
use crate::verify::{EventInfo, Shadowed, Verified};
use headers::Forwarding;
use upstream::{TransportError, Upstream};

/// The client at the far end of a connection, with what each of its
/// requests needs from the address formatted once per connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// `ip:port`, for log lines.
    text: Box<str>,
    /// The IP address (an IPv4-mapped IPv6 one as IPv4), for `X-Forwarded-For`.
    ip: HeaderValue,
    /// One of `server.trusted_proxies`.
    pub(crate) trusted_proxy: bool,
}

impl Peer {
    /// `trusted_proxy`: the address is one of `server.trusted_proxies`.
    pub(crate) fn new(addr: SocketAddr, trusted_proxy: bool) -> Self {
        let ip = addr.ip().to_canonical().to_string();
        Self {
            text: addr.to_string().into_boxed_str(),
            #[expect(
                clippy::unwrap_used,
                reason = "an IP address's text form is always a valid header value"
            )]
            ip: HeaderValue::from_str(&ip).unwrap(),
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

/// A verified event, ready for the app. Private fields: only
/// [`Envelope::new`] makes one, from a [`Verified`] request.
pub(crate) struct Envelope {
    /// The route it came in on.
    route: Arc<Route>,
    /// What the event is.
    event: EventInfo,
    /// The exact bytes the provider sent.
    body: Bytes,
    /// The normalized headers for the app.
    headers: HeaderMap,
    /// The upstream path and the original query.
    target: Uri,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("route", &self.route.name)
            .field("event", &self.event.kind)
            .field("target", &self.target)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Envelope {
    /// Normalizes a verified request's headers for the app (see
    /// [`headers::normalize_request`]) and builds its request target.
    pub(crate) fn new(
        verified: Verified,
        upstream: &Upstream,
        peer: &Peer,
        request_id: &HeaderValue,
    ) -> Result<Self, TransportError> {
        let (mut parts, body, route, event) = verified.into_parts();
        let verdict = Ok((event.name.clone(), event.campaign_id.clone()));
        let target = normalize(
            &mut parts, &body, &route, upstream, peer, request_id, verdict,
        )?;
        Ok(Self {
            route,
            event,
            body,
            headers: parts.headers,
            target,
        })
    }

    /// The request for the app.
    pub(crate) fn into_request(self) -> UpstreamRequest {
        UpstreamRequest::post(self.target, self.headers, self.body)
    }

    /// The exact bytes the provider sent.
    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }

    /// What the event is.
    pub(crate) fn event(&self) -> &EventInfo {
        &self.event
    }

    /// The event's name as stored and listed: one of the four, the name of
    /// an unknown event the route forwards, or `-`.
    pub(crate) fn event_name(&self) -> String {
        match (&self.event.kind, &self.event.name) {
            (Some(kind), _) => kind.as_str().to_owned(),
            (None, Some(name)) => String::from_utf8_lossy(name.as_bytes()).into_owned(),
            (None, None) => "-".to_owned(),
        }
    }

    /// What the store keeps besides the body: the request target on the
    /// first line, then each normalized header as `name: value`, every line
    /// ending in CRLF (a header value cannot hold CR or LF).
    pub(crate) fn stored_head(&self) -> Bytes {
        let target = self.target.to_string();
        let mut out = Vec::with_capacity(target.len() + 64 * (self.headers.len() + 1));
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b"\r\n");
        h1::encode_fields(&mut out, &self.headers);
        Bytes::from(out)
    }
}

/// A stored head ([`Envelope::stored_head`]) that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("the stored request head is unreadable")]
pub(crate) struct BadStoredHead;

/// One delivery attempt of a stored event: what queued delivery adds to
/// the stored headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    /// The event's id (`X-Webhook-Id`).
    pub(crate) id: uuid::Uuid,
    /// From 1 (`X-Webhook-Attempt`).
    pub(crate) number: u32,
    /// When hookgate received it, Unix ms (`X-Webhook-Received-At`).
    pub(crate) received_at: i64,
}

/// `X-Webhook-Id`.
pub(crate) static X_WEBHOOK_ID: header::HeaderName =
    header::HeaderName::from_static("x-webhook-id");
/// `X-Webhook-Attempt`.
pub(crate) static X_WEBHOOK_ATTEMPT: header::HeaderName =
    header::HeaderName::from_static("x-webhook-attempt");
/// `X-Webhook-Received-At`.
pub(crate) static X_WEBHOOK_RECEIVED_AT: header::HeaderName =
    header::HeaderName::from_static("x-webhook-received-at");

impl UpstreamRequest {
    /// The request for one attempt at a stored event. Only an
    /// [`Envelope`]'s stored head is ever in the store, so this too carries
    /// only verified events.
    /// The target is rebuilt from the delivering sidecar's route and
    /// upstream (its `upstream_path`, the stored query) and `Host` is its
    /// own app's: with a shared store, another replica may have taken the
    /// event in.
    pub(crate) fn from_stored(
        head: &[u8],
        body: Bytes,
        attempt: Attempt,
        route: &Route,
        upstream: &Upstream,
    ) -> Result<Self, BadStoredHead> {
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let target = lines.next().ok_or(BadStoredHead)?;
        let stored = Uri::try_from(target).map_err(|_| BadStoredHead)?;
        let target = upstream
            .uri_for(&route.upstream_path, stored.query())
            .map_err(|_| BadStoredHead)?;
        let mut headers = HeaderMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let at = line
                .windows(2)
                .position(|w| w == b": ")
                .ok_or(BadStoredHead)?;
            let name = header::HeaderName::from_bytes(&line[..at]).map_err(|_| BadStoredHead)?;
            let value = HeaderValue::from_bytes(&line[at + 2..]).map_err(|_| BadStoredHead)?;
            headers.append(name, value);
        }
        headers.insert(header::HOST, upstream.host().clone());
        headers.insert(
            X_WEBHOOK_ID.clone(),
            HeaderValue::from_str(&attempt.id.to_string()).map_err(|_| BadStoredHead)?,
        );
        headers.insert(X_WEBHOOK_ATTEMPT.clone(), HeaderValue::from(attempt.number));
        let received = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(attempt.received_at) * 1_000_000,
        )
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .ok_or(BadStoredHead)?;
        headers.insert(
            X_WEBHOOK_RECEIVED_AT.clone(),
            HeaderValue::from_str(&received).map_err(|_| BadStoredHead)?,
        );
        Ok(Self::post(target, headers, body))
    }
}

impl Shadowed {
    /// The request for the app, marked `X-Webhook-Verified: false` with
    /// `X-Webhook-Verdict: <code>`.
    pub(crate) fn into_request(
        self,
        upstream: &Upstream,
        peer: &Peer,
        request_id: &HeaderValue,
    ) -> Result<UpstreamRequest, TransportError> {
        let (mut parts, body, route, code) = self.into_parts();
        let target = normalize(
            &mut parts,
            &body,
            &route,
            upstream,
            peer,
            request_id,
            Err(code),
        )?;
        Ok(UpstreamRequest::post(target, parts.headers, body))
    }
}

/// Normalizes `parts.headers` in place and returns the request target.
fn normalize(
    parts: &mut Parts,
    body: &Bytes,
    route: &Route,
    upstream: &Upstream,
    peer: &Peer,
    request_id: &HeaderValue,
    verdict: Result<(Option<HeaderValue>, Option<HeaderValue>), &'static str>,
) -> Result<Uri, TransportError> {
    let target = upstream.uri_for(&route.upstream_path, parts.uri.query())?;
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
    // The host as the client named it: the target's authority (HTTP/2's
    // `:authority`, an HTTP/1.1 absolute-form target), else `Host`. Head
    // checks have refused a request where the two disagree on HTTP/2, and
    // RFC 9112 §3.2.2 makes the target win on HTTP/1.1.
    let original_host = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| parts.headers.get(header::HOST).cloned());
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
            verdict,
            content_length: body.len(),
        },
    );
    Ok(target)
}

/// A request for the app, made only from an [`Envelope`] or a [`Shadowed`]
/// request: always a `POST` with the normalized headers and the exact body.
pub(crate) struct UpstreamRequest {
    /// Origin form: the upstream path and the query.
    target: Uri,
    /// Normalized (`Host` and `Content-Length` set, hop-by-hop removed).
    headers: HeaderMap,
    /// The exact bytes the provider sent.
    body: Bytes,
}

impl fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamRequest")
            .field("uri", &self.target)
            .finish_non_exhaustive()
    }
}

impl UpstreamRequest {
    fn post(target: Uri, headers: HeaderMap, body: Bytes) -> Self {
        Self {
            target,
            headers,
            body,
        }
    }

    /// As an `http::Request` (for the test harness: what the app would
    /// receive). There is no way back: an `UpstreamRequest` cannot be made
    /// from a plain `Request`.
    #[cfg(feature = "testing")]
    pub(crate) fn into_inner(self) -> http::Request<http_body_util::Full<Bytes>> {
        let mut req = http::Request::new(http_body_util::Full::new(self.body));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.target;
        *req.version_mut() = http::Version::HTTP_11;
        *req.headers_mut() = self.headers;
        req
    }
}
