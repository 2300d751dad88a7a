//! The properties hookgate's fuzz targets check, one function per target.
//!
//! The libFuzzer targets in `fuzz_targets/` call these; `tests/fuzz_corpus.rs`
//! in the main crate includes this same file (`#[path]`) and calls them on
//! every file under `fuzz/corpus/<target>/`, so the corpus is replayed by a
//! plain `cargo test`, without libFuzzer or a nightly toolchain.
//!
//! Every function must never panic on any input; a panic is a finding.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "fuzz properties: a broken property must panic"
)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use hookgate::testing::{self as hg, Encoding, MAC_LEN, Routes, Upstream, Verdict, signature};
use http::{HeaderName, HeaderValue, Method, Request};

// === signature_header ===

/// `signature::parse` in both encodings: never panics; whatever it accepts
/// is exactly one canonical spelling of the 32 bytes (hex: 64 digits in
/// either case, optional `sha256=` in any case; base64: the standard encoding, padding
/// optional), and re-encoding the bytes parses back to them. The input also
/// keys an HMAC: the true tag verifies, a flipped bit does not.
pub fn signature_header(data: &[u8]) {
    if let Ok(mac) = signature::parse(data, Encoding::Hex) {
        let digits = match data.split_at_checked(7) {
            Some((prefix, rest)) if prefix.eq_ignore_ascii_case(b"sha256=") => rest,
            _ => data,
        };
        let canonical = hex::encode(mac);
        assert!(
            digits.eq_ignore_ascii_case(canonical.as_bytes()),
            "hex accepted a non-canonical spelling: {data:?}"
        );
        for spelling in [
            canonical.clone(),
            canonical.to_uppercase(),
            format!("sha256={canonical}"),
            format!("sha256={}", canonical.to_uppercase()),
            format!("SHA256={canonical}"),
        ] {
            assert_eq!(
                signature::parse(spelling.as_bytes(), Encoding::Hex),
                Ok(mac)
            );
        }
        assert!(signature::parse(data, Encoding::Base64).is_err() || data.len() >= 43);
    }
    if let Ok(mac) = signature::parse(data, Encoding::Base64) {
        let padded = base64::engine::general_purpose::STANDARD.encode(mac);
        let unpadded = padded.trim_end_matches('=');
        let given = data.strip_suffix(b"=").unwrap_or(data);
        assert_eq!(
            given,
            unpadded.as_bytes(),
            "base64 accepted a non-canonical spelling: {data:?}"
        );
        for spelling in [padded.as_str(), unpadded] {
            assert_eq!(
                signature::parse(spelling.as_bytes(), Encoding::Base64),
                Ok(mac)
            );
        }
    }
    // The input as key and body: verify is the HMAC, nothing else.
    let (key, body) = data.split_at(data.len() / 2);
    if let Ok(secret) = hg::Secret::new(key, "fuzz") {
        let tag = raw_mac(key.trim_ascii_end(), body);
        let secrets = [secret];
        assert!(signature::verify(body, &tag, &secrets).is_ok());
        let mut wrong = tag;
        wrong[usize::from(data.first().copied().unwrap_or(0)) % MAC_LEN] ^= 1;
        assert!(signature::verify(body, &wrong, &secrets).is_err());
        assert_eq!(signature::sign_hex(body, &secrets[0]), hex::encode(tag));
    }
}

fn raw_mac(key: &[u8], body: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().into()
}

// === payload ===

/// `payload::validate` on arbitrary bytes: never panics. If it accepts,
/// serde_json also parses the body as an object with the same `event` and
/// `campaign_id`; if it reports schema violations, the body is valid JSON
/// and every violation's path points into it (or names a missing member of
/// an object that exists).
pub fn payload(data: &[u8]) {
    use hookgate::testing::{PayloadError, Validated, validate};
    match validate(data) {
        Ok(validated) => {
            let value: serde_json::Value = serde_json::from_slice(data)
                .unwrap_or_else(|e| panic!("validate accepted what serde_json refuses: {e}"));
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("validate accepted a non-object"));
            let event = object.get("event");
            let campaign_id = object.get("campaign_id").and_then(|v| v.as_str());
            match validated {
                Validated::Known(e) => {
                    assert_eq!(event.and_then(|v| v.as_str()), Some(e.kind.as_str()));
                    assert_eq!(campaign_id, Some(&*e.campaign_id));
                    assert!(!e.campaign_id.is_empty() && e.campaign_id.len() <= 256);
                    assert!(!e.campaign_id.chars().any(char::is_control));
                }
                Validated::Unknown(u) => {
                    // Absent, or a string that names none of the four.
                    match event {
                        None => assert!(u.name.is_none()),
                        Some(v) => {
                            let name = v.as_str().unwrap_or_else(|| {
                                panic!("a non-string event was taken as unknown")
                            });
                            assert_eq!(u.name.as_deref(), Some(name));
                            assert!(hg::EventKind::from_name(name).is_none());
                        }
                    }
                    if let Some(id) = &u.campaign_id {
                        assert_eq!(campaign_id, Some(&**id));
                        assert!(!id.is_empty() && id.len() <= 256);
                        assert!(!id.chars().any(char::is_control));
                    }
                }
            }
        }
        Err(PayloadError::Invalid(violations)) => {
            assert!(!violations.is_empty(), "422 without a violation");
            let value: serde_json::Value = serde_json::from_slice(data).unwrap_or_else(|e| {
                panic!("schema violations reported for invalid JSON ({e}): {violations:?}")
            });
            for v in &violations {
                let parent = v.path.rsplit_once('/').map_or("", |(p, _)| p);
                assert!(
                    value.pointer(&v.path).is_some()
                        || value
                            .pointer(parent)
                            .is_some_and(serde_json::Value::is_object),
                    "violation path {:?} points nowhere",
                    v.path
                );
            }
        }
        Err(PayloadError::InvalidJson(message)) => {
            assert!(!message.is_empty());
        }
    }
}

// === pipeline ===

/// Secrets and routes, loaded once through the real config path.
struct Fixture {
    routes: Arc<Routes>,
    upstream: Upstream,
}

const SECRET: &[u8] = b"whsec-fuzz-current-0123456789";
const SECRET_OLD: &[u8] = b"whsec-fuzz-previous-9876543210";
const SIGNATURE_HEADER: &str = "x-coolpopup-signature";
/// (path, encoding, shadow mode)
const ROUTES: [(&str, Encoding, bool); 3] = [
    ("/hook", Encoding::Hex, false),
    ("/hook64", Encoding::Base64, false),
    ("/shadow", Encoding::Hex, true),
];

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "hookgate-fuzz-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("current"), dir.join("previous"));
        std::fs::write(&a, [SECRET, b"\n"].concat()).unwrap();
        std::fs::write(&b, SECRET_OLD).unwrap();
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
[server.tls]
self_signed = true
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:9"
[[routes]]
name = "hex"
path = "/hook"
upstream_path = "/app/hook"
secret_files = [{a:?}, {b:?}]
[[routes]]
name = "b64"
path = "/hook64"
signature_encoding = "base64"
secret_files = [{a:?}, {b:?}]
events = ["popup.converted", "popup.closed"]
[[routes]]
name = "shadow"
path = "/shadow"
mode = "shadow"
secret_files = [{a:?}, {b:?}]
"#
        );
        use figment::providers::Format;
        let figment = figment::Figment::new().merge(figment::providers::Toml::string(&text));
        let config = hookgate::Config::from_figment(&figment)
            .and_then(hookgate::Config::validate)
            .unwrap_or_else(|e| panic!("fuzz config: {e}"));
        let loaded = hookgate::load(config).unwrap_or_else(|e| panic!("fuzz config: {e}"));
        let _ = std::fs::remove_dir_all(&dir);
        Fixture {
            upstream: Upstream::new(&loaded.config),
            routes: loaded.routes,
        }
    })
}

/// The pipeline input: `[flags][n]` then `n` headers as
/// `[name_len][name][value_len][value]`, then the body (the rest). Short
/// input leaves the missing parts empty.
///
/// `flags & 7` is how the signature header is made (see `Signing`);
/// `(flags >> 3) % 3` picks the route; `flags & 0x40` treats the peer as a
/// trusted proxy. A header named `?` is the query string.
struct Input<'a> {
    flags: u8,
    headers: Vec<(&'a [u8], &'a [u8])>,
    body: &'a [u8],
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    head
}

fn decode(mut data: &[u8]) -> Input<'_> {
    let flags = take(&mut data, 1).first().copied().unwrap_or(0);
    let n = take(&mut data, 1).first().copied().unwrap_or(0) % 16;
    let mut headers = Vec::new();
    for _ in 0..n {
        let len = usize::from(take(&mut data, 1).first().copied().unwrap_or(0));
        let name = take(&mut data, len);
        let len = usize::from(take(&mut data, 1).first().copied().unwrap_or(0));
        let value = take(&mut data, len);
        headers.push((name, value));
    }
    Input {
        flags,
        headers,
        body: data,
    }
}

/// How the signature header is made from `flags & 7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signing {
    /// The current secret's tag, canonical (lowercase hex / padded base64).
    Current,
    /// The previous secret's tag, other spelling (`sha256=` + uppercase /
    /// unpadded base64): rotation.
    Previous,
    /// Only what the input's own headers carry under the signature
    /// header's name, as given (the fuzzer forges).
    Raw,
    /// No signature header.
    Missing,
    /// The right tag, sent twice.
    Repeated,
    /// The tag of the body plus one byte.
    Tampered,
    /// The tag under a secret the route does not have.
    WrongSecret,
    /// The right tag with a leading space (hyper strips it on HTTP/1.1; at
    /// this layer it must not parse).
    Padded,
}

const SIGNINGS: [Signing; 8] = [
    Signing::Current,
    Signing::Previous,
    Signing::Raw,
    Signing::Missing,
    Signing::Repeated,
    Signing::Tampered,
    Signing::WrongSecret,
    Signing::Padded,
];

fn encode(tag: &[u8; MAC_LEN], encoding: Encoding, other_spelling: bool) -> String {
    match (encoding, other_spelling) {
        (Encoding::Hex, false) => hex::encode(tag),
        (Encoding::Hex, true) => format!("sha256={}", hex::encode_upper(tag)),
        (Encoding::Base64, false) => base64::engine::general_purpose::STANDARD.encode(tag),
        (Encoding::Base64, true) => base64::engine::general_purpose::STANDARD_NO_PAD.encode(tag),
    }
}

/// The whole verifying pipeline on a built request: `Unverified::verify`
/// (or `verify_shadow` on the shadow route), then `into_upstream_request`.
///
/// - nothing panics;
/// - a request passes only with a signature made with one of the route's
///   secrets (a raw fuzzer-made value passes only if it *is* such a tag);
/// - whatever reaches the upstream has the exact body, POST, the upstream's
///   Host, an exact Content-Length, no hop-by-hop header, no signature, no
///   client-made `X-Webhook-*` or `Forwarded` header, and
///   `X-Webhook-Verified: true` exactly when every check passed — then with
///   the event and campaign id that serde_json reads from the body;
/// - rejections have a 4xx status and a JSON body naming their code that
///   never contains the expected tag.
pub fn pipeline(data: &[u8]) {
    let fx = fixture();
    let input = decode(data);
    let (path, encoding, shadow) = ROUTES[usize::from(input.flags >> 3) % ROUTES.len()];
    let signing = SIGNINGS[usize::from(input.flags & 7)];
    let trusted = input.flags & 0x40 != 0;
    let body = input.body;
    let tag = raw_mac(SECRET, body);
    let tag_old = raw_mac(SECRET_OLD, body);

    let mut uri = path.to_owned();
    let mut req = Request::new(());
    *req.method_mut() = Method::POST;
    for (name, value) in &input.headers {
        if *name == b"?" {
            uri = format!("{path}?{}", String::from_utf8_lossy(value));
            continue;
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        if name == SIGNATURE_HEADER && signing != Signing::Raw {
            continue;
        }
        req.headers_mut().append(name, value);
    }
    let Ok(uri) = uri.parse() else { return };
    *req.uri_mut() = uri;

    let signature_value = match signing {
        Signing::Current => Some(encode(&tag, encoding, false)),
        Signing::Previous => Some(encode(&tag_old, encoding, true)),
        Signing::Raw | Signing::Missing => None,
        Signing::Repeated => {
            let v = encode(&tag, encoding, false);
            req.headers_mut()
                .append(SIGNATURE_HEADER, HeaderValue::from_str(&v).unwrap());
            Some(v)
        }
        Signing::Tampered => Some(encode(
            &raw_mac(SECRET, &[body, b"x"].concat()),
            encoding,
            false,
        )),
        Signing::WrongSecret => Some(encode(&raw_mac(b"not-the-secret", body), encoding, false)),
        Signing::Padded => Some(format!(" {}", encode(&tag, encoding, false))),
    };
    if let Some(v) = signature_value {
        req.headers_mut()
            .append(SIGNATURE_HEADER, HeaderValue::from_str(&v).unwrap());
    }
    // Is the request authentic, whatever the checks below it say?
    let sent: Vec<&HeaderValue> = req.headers().get_all(SIGNATURE_HEADER).iter().collect();
    let authentic = match sent.as_slice() {
        [one] => signature::parse(one.as_bytes(), encoding).is_ok_and(|t| t == tag || t == tag_old),
        _ => false,
    };
    assert!(
        authentic == matches!(signing, Signing::Current | Signing::Previous)
            || signing == Signing::Raw,
        "{signing:?}: authenticity {authentic}"
    );

    let request_id = hg::request_id(req.headers());
    let (parts, ()) = req.into_parts();
    let req = Request::from_parts(parts, Bytes::copy_from_slice(body));
    let peer: SocketAddr = ([203, 0, 113, 7], 4711).into();
    let (verified, passed, upstream_req) =
        match hg::check(&fx.routes, &fx.upstream, req, peer, trusted, &request_id) {
            Verdict::Rejected(rejection) => {
                assert!(!shadow, "shadow mode forwards failures");
                check_rejection(&rejection, &tag);
                return;
            }
            Verdict::Acknowledged => {
                assert!(
                    authentic,
                    "{signing:?}: acknowledged without an authentic signature"
                );
                return;
            }
            Verdict::Forwarded {
                verified,
                event,
                request,
            } => (verified, event, request),
        };
    // Forwarded as verified => authentic.
    assert!(
        !verified || authentic,
        "{signing:?}: a request passed without an authentic signature"
    );
    assert!(
        shadow || verified,
        "an enforcing route forwarded a failed request"
    );
    assert!(passed.is_none() || verified);
    check_upstream_request(
        &upstream_req,
        body,
        verified,
        passed.map(|e| e.as_str()),
        fx,
        &request_id,
    );
}

fn check_rejection(rejection: &hg::Rejection, tag: &[u8; MAC_LEN]) {
    let status = rejection.status();
    assert!(status.is_client_error(), "{status} for {rejection:?}");
    let body = rejection.body();
    let json: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    assert_eq!(json["error"].as_str(), Some(rejection.code()));
    let text = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(!text.contains(&hex::encode(tag)), "the expected tag leaked");
    assert!(!text.contains(std::str::from_utf8(SECRET).unwrap()));
}

fn check_upstream_request(
    req: &Request<http_body_util::Full<Bytes>>,
    body: &[u8],
    verified: bool,
    event: Option<&str>,
    fx: &Fixture,
    request_id: &HeaderValue,
) {
    let h = req.headers();
    let one = |name: &str| -> &HeaderValue {
        let all: Vec<&HeaderValue> = h.get_all(name).iter().collect();
        assert_eq!(all.len(), 1, "{name}: {all:?}");
        all[0]
    };
    assert_eq!(req.method(), Method::POST);
    assert_eq!(full_bytes(req.body()), body, "not the exact bytes");
    assert_eq!(one("host"), fx.upstream.host());
    assert_eq!(
        one("content-length").as_bytes(),
        body.len().to_string().as_bytes()
    );
    assert_eq!(one("content-type"), "application/json");
    assert_eq!(one("x-forwarded-proto"), "https");
    assert_eq!(one("x-request-id"), request_id);
    one("x-forwarded-for");
    for gone in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "forwarded",
        SIGNATURE_HEADER,
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream");
    }
    let webhook: Vec<&str> = h
        .keys()
        .map(HeaderName::as_str)
        .filter(|n| n.starts_with("x-webhook-"))
        .collect();
    match event.filter(|_| verified) {
        Some(event) => {
            assert_eq!(one("x-webhook-verified"), "true");
            assert_eq!(one("x-webhook-event"), event);
            let json: serde_json::Value = serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("verified body is not JSON: {e}"));
            assert_eq!(json["event"].as_str(), Some(event));
            let campaign = json["campaign_id"].as_str().unwrap_or_default();
            assert_eq!(one("x-webhook-campaign-id").as_bytes(), campaign.as_bytes());
            let mut want = vec![
                "x-webhook-campaign-id",
                "x-webhook-event",
                "x-webhook-route",
                "x-webhook-verified",
            ];
            want.sort_unstable();
            let mut got = webhook.clone();
            got.sort_unstable();
            assert_eq!(got, want, "client-made X-Webhook-* survived");
        }
        None => {
            // The fixture's routes acknowledge unknown events: only shadow
            // mode forwards a request without a known event.
            assert!(!verified, "verified without a known event");
            assert_eq!(one("x-webhook-verified"), "false");
            one("x-webhook-verdict");
            let mut got = webhook.clone();
            got.sort_unstable();
            assert_eq!(
                got,
                ["x-webhook-route", "x-webhook-verdict", "x-webhook-verified"],
                "client-made X-Webhook-* survived"
            );
        }
    }
    for name in h.keys() {
        assert!(
            !name.as_str().starts_with("x-forwarded-")
                || matches!(
                    name.as_str(),
                    "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
                ),
            "client-made {name} survived"
        );
    }
}

/// The bytes of a `Full` body, read without a runtime (a clone is read, so
/// the request stays whole).
fn full_bytes(body: &http_body_util::Full<Bytes>) -> Vec<u8> {
    use http_body::Body;
    use std::task::{Context, Poll, Waker};
    let mut body = body.clone();
    let mut out = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(Ok(frame))) = std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
    out
}

// === upstream_answer ===

/// `forward::h1::read_answer` on what an app sent back: never panics, and
/// never waits for more once the bytes have ended. The first byte picks
/// how the rest is cut into reads (1 to 16 bytes at a time) and the body
/// limit; the same bytes read in one piece must give the same answer (or
/// the same error) and leave the same bytes over. An answer has a final
/// status (not 1xx), a body within the limit, no header but
/// `Content-Type` and `Retry-After`, and may be reused only if nothing it
/// read was left over. Read in pieces, bytes after the answer may not have
/// arrived yet: then the answer may say reusable where the whole read
/// said not, and the pool's check of an idle connection (a read that must
/// find nothing) refuses it.
pub fn upstream_answer(data: &[u8]) {
    let Some((&first, wire)) = data.split_first() else {
        return;
    };
    let step = usize::from(first % 16) + 1;
    let max_body = 16 * usize::from(first / 16);
    let whole = hg::read_answer(wire, wire.len(), max_body).expect("waited past the end");
    let cut = hg::read_answer(wire, step, max_body).expect("waited past the end");
    match (&whole, &cut) {
        ((Ok(a), a_buf, a_unread), (Ok(b), b_buf, b_unread)) => {
            assert_eq!(
                (a.status, &a.headers, &a.body, a_buf + a_unread),
                (b.status, &b.headers, &b.body, b_buf + b_unread),
                "read in pieces of {step}"
            );
            for (answer, in_buf) in [(a, a_buf), (b, b_buf)] {
                assert!(!answer.status.is_informational(), "{:?}", answer.status);
                assert!(
                    answer.body.len() <= max_body,
                    "{} > {max_body}",
                    answer.body.len()
                );
                assert!(
                    answer
                        .headers
                        .keys()
                        .all(|k| k == http::header::CONTENT_TYPE || k == http::header::RETRY_AFTER),
                    "{:?}",
                    answer.headers
                );
                assert!(
                    !answer.keep_alive || *in_buf == 0,
                    "reusable with {in_buf} bytes read past it"
                );
            }
            // Reused only if nothing followed (whole), or nothing followed
            // that had arrived (pieces): the idle check sees the rest.
            assert!(!a.keep_alive || *a_unread == 0 && *a_buf == 0);
            if a.keep_alive != b.keep_alive {
                assert!(
                    b.keep_alive && *b_unread > 0,
                    "read in pieces of {step}: {cut:?}"
                );
            }
        }
        ((Err(a), ..), (Err(b), ..)) => {
            assert_eq!(a.to_string(), b.to_string(), "read in pieces of {step}");
        }
        _ => panic!("one piece: {whole:?}; pieces of {step}: {cut:?}"),
    }
}
