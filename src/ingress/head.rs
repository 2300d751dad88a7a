//! The checks on a request head, before any of the body is read, in the
//! spec's order: HTTPS (behind a trusted proxy), route, reachability ping
//! (GET/HEAD), method, declared size, media type and encoding.

use std::sync::Arc;

use http::request::Parts;
use http::{Method, Version, header};

use super::Gate;
use crate::error::Rejection;
use crate::forward::Peer;
use crate::forward::headers;
use crate::load::Route;

/// What the head of a request to a route asks for.
pub(super) enum Head {
    /// GET/HEAD on a route: answered locally.
    Ping,
    /// A POST to verify; on a shadow route possibly with the rejection its
    /// head earned (a wrong media type), which becomes its verdict.
    Post { prior: Option<Rejection> },
}

/// The declared `Content-Length`, if there is one that parses. hyper has
/// already refused a malformed or conflicting one on HTTP/1.1.
pub(super) fn content_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// A refusal, with the route when one matched.
pub(super) type Refused = (Option<Arc<Route>>, Rejection);

/// Finds the route and checks the head. A refusal names the route when
/// there is one (for the metrics and the log).
pub(super) fn admit(
    gate: &Gate,
    parts: &Parts,
    peer: &Peer,
) -> Result<(Arc<Route>, Head), Refused> {
    let route = gate.routes.find(parts.uri.path()).cloned();
    if let Err(rejection) = check_host(parts) {
        return Err((route, rejection));
    }
    // Plain HTTP is only for a trusted proxy that terminated TLS itself.
    let secure = gate.tls || (peer.trusted_proxy && forwarded_proto_is_https(&parts.headers));
    if !secure {
        return Err((route, Rejection::HttpsRequired));
    }
    let Some(route) = route else {
        return Err((None, Rejection::NotFound));
    };
    match check(parts, gate.max_body_bytes) {
        Ok(head) => Ok((route, head)),
        // A shadow route still enforces what protects hookgate itself
        // (method, size); a wrong media type becomes the request's verdict.
        Err(
            rejection @ (Rejection::UnsupportedContentType | Rejection::UnsupportedContentEncoding),
        ) if route.shadow => Ok((
            route,
            Head::Post {
                prior: Some(rejection),
            },
        )),
        Err(rejection) => Err((Some(route), rejection)),
    }
}

/// The request names exactly one host: at most one `Host` line; on
/// HTTP/1.1 exactly one (RFC 9112 §3.2); on HTTP/2 a `host` header, if any,
/// equal to `:authority` (RFC 9113 §8.3.1).
fn check_host(parts: &Parts) -> Result<(), Rejection> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let (host, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(Rejection::InvalidRequest("more than one Host header"));
    }
    if parts.version == Version::HTTP_11 && host.is_none() {
        return Err(Rejection::InvalidRequest("HTTP/1.1 request without Host"));
    }
    if parts.version >= Version::HTTP_2
        && let (Some(host), Some(authority)) = (host, parts.uri.authority())
        && !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Err(Rejection::InvalidRequest(
            "the host header differs from :authority",
        ));
    }
    Ok(())
}

/// `X-Forwarded-Proto: https`, exactly once.
fn forwarded_proto_is_https(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(&headers::X_FORWARDED_PROTO).iter();
    matches!((values.next(), values.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// The header-only checks, in the spec's order.
fn check(parts: &Parts, max_body_bytes: usize) -> Result<Head, Rejection> {
    match parts.method {
        Method::POST => {}
        Method::GET | Method::HEAD => return Ok(Head::Ping),
        _ => return Err(Rejection::MethodNotAllowed),
    }
    if parts.headers.contains_key(header::CONTENT_LENGTH)
        && content_length(parts).is_none_or(|len| len > max_body_bytes as u64)
    {
        return Err(Rejection::PayloadTooLarge {
            limit: max_body_bytes,
        });
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
    Ok(Head::Post { prior: None })
}

/// `application/json`, any case, parameters (`; charset=utf-8`) allowed.
fn is_json(value: &[u8]) -> bool {
    let essence = value.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

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
            Ok(Head::Post { .. }) => "post",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn head_checks_follow_the_spec_order() {
        let json = ("content-type", "application/json");
        assert_eq!(code(check(&parts(Method::GET, &[]), 10)), "ping");
        assert_eq!(code(check(&parts(Method::HEAD, &[]), 10)), "ping");
        assert_eq!(
            code(check(&parts(Method::PUT, &[json]), 10)),
            "method_not_allowed"
        );
        assert_eq!(
            code(check(
                &parts(
                    Method::POST,
                    &[("content-length", "11"), ("content-type", "text/plain")]
                ),
                10
            )),
            "payload_too_large"
        );
        assert_eq!(
            code(check(
                &parts(Method::POST, &[("content-length", "10"), json]),
                10
            )),
            "post"
        );
        assert_eq!(
            code(check(&parts(Method::POST, &[]), 10)),
            "unsupported_media_type"
        );
        assert_eq!(
            code(check(
                &parts(Method::POST, &[json, ("content-encoding", "gzip")]),
                10
            )),
            "unsupported_media_type"
        );
        assert_eq!(
            code(check(
                &parts(Method::POST, &[json, ("content-encoding", "identity")]),
                10
            )),
            "post"
        );
        assert_eq!(
            code(check(
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
}
