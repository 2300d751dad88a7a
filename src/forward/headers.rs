//! Header normalization between the provider and the app.
//!
//! [`normalize_request`] is the one place that decides what the upstream
//! sees: it removes the hop-by-hop headers of RFC 9110 §7.6.1 (`Connection`
//! and every name it lists, `Keep-Alive`, `Proxy-Connection`, `TE`,
//! `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authorization`,
//! `Proxy-Authenticate`), the route's signature header, every incoming
//! `X-Webhook-*` header (a client must not be able to spoof them) and every
//! incoming `Forwarded` / `X-Forwarded-*` header, then sets hookgate's own.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1), besides those `Connection` lists.
pub static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Webhook-Verified`.
pub static X_WEBHOOK_VERIFIED: HeaderName = HeaderName::from_static("x-webhook-verified");
/// `X-Webhook-Route`.
pub static X_WEBHOOK_ROUTE: HeaderName = HeaderName::from_static("x-webhook-route");
/// `X-Webhook-Event`.
pub static X_WEBHOOK_EVENT: HeaderName = HeaderName::from_static("x-webhook-event");
/// `X-Webhook-Campaign-Id`.
pub static X_WEBHOOK_CAMPAIGN_ID: HeaderName = HeaderName::from_static("x-webhook-campaign-id");
/// `X-Webhook-Verdict` (shadow mode only: the error code a request failed with).
pub static X_WEBHOOK_VERDICT: HeaderName = HeaderName::from_static("x-webhook-verdict");

/// True for names hookgate strips or sets itself; a route's signature header
/// may not be one of them.
pub fn is_managed(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    HOP_BY_HOP.iter().any(|h| h.as_str() == lower)
        || is_forwarding_or_webhook(&lower)
        || matches!(
            lower.as_str(),
            "host" | "content-type" | "content-length" | "x-request-id"
        )
}

/// `Forwarded`, `X-Forwarded-*` and `X-Webhook-*` (lowercase input).
fn is_forwarding_or_webhook(lower: &str) -> bool {
    lower == "forwarded" || lower.starts_with("x-forwarded-") || lower.starts_with("x-webhook-")
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 from `headers`: the
/// static set and every name listed in any `Connection` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Only names beyond the static set are collected, so the usual
    // `Connection: keep-alive` costs no allocation.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| {
            !HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(name))
        })
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// What hookgate asserts about a verified request, set on the upstream request.
#[derive(Debug)]
pub struct Forwarding<'a> {
    /// The upstream's authority, for `Host`.
    pub upstream_host: &'a HeaderValue,
    /// The client's IP address, for `X-Forwarded-For`.
    pub peer_ip: &'a HeaderValue,
    /// A trusted proxy's incoming `X-Forwarded-For` chain, to which the peer is appended.
    pub forwarded_for: Option<String>,
    /// The Host / `:authority` the client used, for `X-Forwarded-Host`.
    pub original_host: Option<HeaderValue>,
    /// The request id, for `X-Request-Id`.
    pub request_id: &'a HeaderValue,
    /// The route name, for `X-Webhook-Route`.
    pub route: &'a HeaderValue,
    /// Passed: the event name and campaign id, each where it can be a header
    /// (`X-Webhook-Verified: true`, `X-Webhook-Event`, `X-Webhook-Campaign-Id`). Failed, in shadow mode:
    /// the error code (`X-Webhook-Verified: false`, `X-Webhook-Verdict`).
    pub verdict: Result<(Option<HeaderValue>, Option<HeaderValue>), &'static str>,
    /// The exact body length, for `Content-Length`.
    pub content_length: usize,
}

/// How many headers [`normalize_request`] may add.
const ADDED_HEADERS: usize = 11;

/// Turns the provider's headers into the upstream's, in place.
///
/// Removes hop-by-hop headers, the route's `signature_header`, and every
/// incoming `X-Webhook-*`, `Forwarded` and `X-Forwarded-*`; then sets `Host`,
/// `Content-Type`, `Content-Length`, `X-Forwarded-{For,Proto,Host}`,
/// `X-Request-Id` and the `X-Webhook-*` set. Other end-to-end headers
/// (`User-Agent`, ...) pass unchanged.
pub fn normalize_request(
    headers: &mut HeaderMap,
    signature_header: &HeaderName,
    f: Forwarding<'_>,
) {
    // Grow the map once for the headers added below instead of rehashing
    // it as it fills.
    headers.reserve(ADDED_HEADERS);
    strip_hop_by_hop(headers);
    // hookgate has read the whole body already (and answered any
    // `100-continue` itself): an app that refuses `Expect` with 417 would
    // make the provider retry forever.
    headers.remove(header::EXPECT);
    headers.remove(signature_header);
    let spoofable: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_forwarding_or_webhook(name.as_str()))
        .cloned()
        .collect();
    for name in spoofable {
        headers.remove(&name);
    }
    headers.insert(header::HOST, f.upstream_host.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(f.content_length));
    let xff = match f.forwarded_for {
        Some(chain) => {
            let mut joined = Vec::with_capacity(chain.len() + 2 + f.peer_ip.len());
            joined.extend_from_slice(chain.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(f.peer_ip.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| f.peer_ip.clone())
        }
        None => f.peer_ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
    if let Some(host) = f.original_host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    headers.insert(X_REQUEST_ID.clone(), f.request_id.clone());
    headers.insert(X_WEBHOOK_ROUTE.clone(), f.route.clone());
    match f.verdict {
        Ok((event, campaign_id)) => {
            headers.insert(X_WEBHOOK_VERIFIED.clone(), HeaderValue::from_static("true"));
            if let Some(event) = event {
                headers.insert(X_WEBHOOK_EVENT.clone(), event);
            }
            if let Some(campaign_id) = campaign_id {
                headers.insert(X_WEBHOOK_CAMPAIGN_ID.clone(), campaign_id);
            }
        }
        Err(code) => {
            headers.insert(
                X_WEBHOOK_VERIFIED.clone(),
                HeaderValue::from_static("false"),
            );
            headers.insert(X_WEBHOOK_VERDICT.clone(), HeaderValue::from_static(code));
        }
    }
}

/// The request id: the incoming `X-Request-Id` if it matches
/// `[A-Za-z0-9._-]{1,128}`, else a fresh random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut incoming = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(v), None) = (incoming.next(), incoming.next()) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
        {
            return v.clone();
        }
    }
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The app's headers the provider gets (and the only ones `forward::h1`
/// keeps from an answer): `Content-Type` and `Retry-After`.
pub const PASSED_ON: [HeaderName; 2] = [header::CONTENT_TYPE, header::RETRY_AFTER];

/// Keeps only the app's headers the provider gets ([`PASSED_ON`]).
/// Everything else (`Server`, `Set-Cookie`, a `Location` naming an
/// internal URL, `X-Powered-By`, ...) stays inside; hyper sets
/// `Content-Length`, and hookgate `X-Request-Id`.
///
/// The map is emptied and refilled in place, keeping its allocation (hyper
/// parses the connection's next request into it).
pub fn normalize_response(headers: &mut HeaderMap) {
    let kept = PASSED_ON.map(|name| {
        let values = take_all(headers, &name);
        (name, values)
    });
    headers.clear();
    for (name, (first, rest)) in kept {
        for value in first.into_iter().chain(rest) {
            headers.append(name.clone(), value);
        }
    }
}

/// Removes `name`'s values and returns them in order: the first, then any
/// others (no allocation for the usual zero or one value).
fn take_all(headers: &mut HeaderMap, name: &HeaderName) -> (Option<HeaderValue>, Vec<HeaderValue>) {
    match headers.entry(name) {
        http::header::Entry::Occupied(e) => {
            let mut values = e.remove_entry_mult().1;
            (values.next(), values.collect())
        }
        http::header::Entry::Vacant(_) => (None, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_static_hop_by_hop_and_connection_listed_names() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Custom-Hop"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-authenticate", "Basic"),
            ("x-custom-hop", "1"),
            ("x-other", "1"),
            ("user-agent", "CoolPopup/1.0"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["user-agent"]);
    }

    #[test]
    fn normalize_sets_ours_and_drops_spoofed_ones() {
        let mut h = map(&[
            ("x-coolpopup-signature", "abc"),
            ("x-webhook-verified", "false"),
            ("X-Webhook-Admin", "1"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-port", "1"),
            ("host", "hooks.example.com:8443"),
            ("content-type", "application/json; charset=utf-8"),
            ("user-agent", "CoolPopup/1.0"),
            ("expect", "100-continue"),
        ]);
        let upstream_host = HeaderValue::from_static("127.0.0.1:8080");
        let rid = HeaderValue::from_static("rid-1");
        let route = HeaderValue::from_static("coolpopup");
        let peer_ip = HeaderValue::from_static("10.1.2.3");
        let original_host = h.get("host").cloned();
        normalize_request(
            &mut h,
            &HeaderName::from_static("x-coolpopup-signature"),
            Forwarding {
                upstream_host: &upstream_host,
                peer_ip: &peer_ip,
                forwarded_for: None,
                original_host,
                request_id: &rid,
                route: &route,
                verdict: Ok((
                    Some(HeaderValue::from_static("popup.clicked")),
                    Some(HeaderValue::from_static("camp_1")),
                )),
                content_length: 42,
            },
        );
        let get = |k: &str| {
            h.get_all(k)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect::<Vec<_>>()
        };
        assert!(get("x-coolpopup-signature").is_empty());
        assert!(get("x-webhook-admin").is_empty());
        assert!(get("forwarded").is_empty());
        assert!(get("x-forwarded-port").is_empty());
        assert!(get("expect").is_empty());
        assert_eq!(get("x-webhook-verified"), ["true"]);
        assert_eq!(get("x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(get("x-forwarded-proto"), ["https"]);
        assert_eq!(get("x-forwarded-host"), ["hooks.example.com:8443"]);
        assert_eq!(get("host"), ["127.0.0.1:8080"]);
        assert_eq!(get("content-type"), ["application/json"]);
        assert_eq!(get("content-length"), ["42"]);
        assert_eq!(get("x-request-id"), ["rid-1"]);
        assert_eq!(get("x-webhook-route"), ["coolpopup"]);
        assert_eq!(get("x-webhook-event"), ["popup.clicked"]);
        assert_eq!(get("x-webhook-campaign-id"), ["camp_1"]);
        assert_eq!(get("user-agent"), ["CoolPopup/1.0"]);
    }

    #[test]
    fn only_content_type_and_retry_after_leave_the_app() {
        let mut h = map(&[
            ("server", "gunicorn/21"),
            ("location", "http://127.0.0.1:8080/internal"),
            ("set-cookie", "session=1"),
            ("x-powered-by", "PHP/8"),
            ("content-type", "application/json"),
            ("retry-after", "120"),
            ("content-length", "7"),
            ("connection", "close"),
        ]);
        normalize_response(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "retry-after"]);
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["retry-after"], "120");
    }

    #[test]
    fn repeated_kept_headers_keep_every_value_in_order() {
        let mut h = map(&[
            ("content-type", "application/json"),
            ("server", "x"),
            ("retry-after", "5"),
            ("content-type", "text/plain"),
            ("retry-after", "10"),
        ]);
        normalize_response(&mut h);
        let all = |k: &str| h.get_all(k).iter().cloned().collect::<Vec<_>>();
        assert_eq!(all("content-type"), ["application/json", "text/plain"]);
        assert_eq!(all("retry-after"), ["5", "10"]);
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn request_id_is_kept_only_when_well_formed() {
        let keep = map(&[("x-request-id", "req-42.abc_DEF")]);
        assert_eq!(request_id(&keep), "req-42.abc_DEF");
        for bad in ["has space", "semi;colon", &"x".repeat(129)] {
            let id = request_id(&map(&[("x-request-id", bad)]));
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
        }
        let twice = map(&[("x-request-id", "a"), ("x-request-id", "b")]);
        assert_eq!(request_id(&twice).len(), 32);
        assert_eq!(request_id(&HeaderMap::new()).len(), 32);
    }

    #[test]
    fn managed_names_are_recognized_in_any_case() {
        for n in [
            "Host",
            "X-Webhook-Verified",
            "x-forwarded-for",
            "Forwarded",
            "Connection",
            "TE",
        ] {
            assert!(is_managed(n), "{n}");
        }
        assert!(!is_managed("X-CoolPopup-Signature"));
    }
}
