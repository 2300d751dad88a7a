//! Attacks over real sockets: request smuggling and malformed framing on
//! HTTP/1.1 raw bytes over TLS, oversized and numerous headers, slow heads
//! and bodies, pipelining, HTTP/1.0, hostile chunked bodies and JSON,
//! signature-header games, connection and handshake floods, and HTTP/2
//! stream abuse (beyond `max_concurrent_streams`, rapid reset, idle and
//! stalled connections).
//!
//! Every attack asserts the answer (status, error code, or that the server
//! closed the connection) *and* what the upstream received — nothing, unless
//! the case is an accepted one and says so. Every read is bounded by a
//! timeout: a hung server fails the test instead of hanging it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed step should panic the test"
)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any single wait in this file may take.
const BOUND: Duration = Duration::from_secs(10);
const ROUTE: &str = "/webhooks/coolpopup";

// === helpers ===

/// What came back on a raw connection.
struct Exchange {
    text: String,
    /// The server closed the connection (EOF or reset) within `BOUND`.
    closed: bool,
}

impl Exchange {
    /// Status codes of every response, in order (heads parsed one after
    /// the other, bodies skipped by their Content-Length).
    fn statuses(&self) -> Vec<u16> {
        let mut out = Vec::new();
        let mut rest = self.text.as_str();
        while let Some(line) = rest.strip_prefix("HTTP/1.") {
            let Some(code) = line.get(2..5).and_then(|c| c.parse().ok()) else {
                break;
            };
            out.push(code);
            let Some(end) = rest.find("\r\n\r\n") else {
                break;
            };
            let len: usize = rest[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            rest = rest.get(end + 4 + len..).unwrap_or("");
        }
        out
    }

    /// The one response's status.
    fn only_status(&self) -> u16 {
        let s = self.statuses();
        assert_eq!(s.len(), 1, "want one response, got {s:?}:\n{}", self.text);
        s[0]
    }

    fn has(&self, needle: &str) -> bool {
        self.text
            .to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase())
    }
}

/// Reads until the peer closes (EOF or reset), at most `bound`.
async fn read_until_closed<S: AsyncRead + Unpin>(stream: &mut S, bound: Duration) -> Exchange {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    Exchange {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// Writes `bytes` on a fresh TLS (ALPN http/1.1) connection and reads until
/// the server closes, bounded.
async fn exchange(sidecar: &Sidecar, bytes: &[u8]) -> Exchange {
    let mut tls = sidecar.connect(Version::H1).await;
    tls.write_all(bytes).await.unwrap();
    read_until_closed(&mut tls, BOUND).await
}

/// A raw HTTP/1.1 POST head (CRLF) with these extra header lines, ending
/// with the blank line.
fn head(extra: &[&str]) -> String {
    let mut h = format!("POST {ROUTE} HTTP/1.1\r\nHost: localhost\r\n");
    for line in extra {
        h.push_str(line);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h
}

/// A complete raw signed request (Content-Length framing).
fn signed_request(body: &[u8], extra: &[&str]) -> Vec<u8> {
    let sig = format!("X-CoolPopup-Signature: {}", sign(body, SECRET));
    let len = format!("Content-Length: {}", body.len());
    let mut lines = vec!["Content-Type: application/json", &sig, &len];
    lines.extend_from_slice(extra);
    let mut out = head(&lines).into_bytes();
    out.extend_from_slice(body);
    out
}

/// `body` in HTTP/1.1 chunked encoding (one chunk, then the last chunk and
/// `trailers`).
fn chunked(body: &[u8], trailers: &str) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n0\r\n");
    out.extend_from_slice(trailers.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

async fn start_with(server: &str) -> (Upstream, Sidecar) {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.server = server.to_owned();
    let sidecar = Sidecar::start(opts).await;
    (upstream, sidecar)
}

/// A signed, valid request still goes through: the server is alive and
/// serving after an attack.
async fn assert_still_serving(upstream: &Upstream, sidecar: &Sidecar) {
    let reply = tokio::time::timeout(BOUND, sidecar.post(ROUTE, &body_of("popup.shown")))
        .await
        .expect("an honest request was not answered within the bound");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    upstream.only_one();
}

// === request smuggling and framing (HTTP/1.1 raw bytes over TLS) ===

/// `Content-Length` and `Transfer-Encoding: chunked` together: hyper lets
/// chunked win (RFC 9112 §6.3), drops the Content-Length, and closes the
/// connection after the answer, so bytes behind the chunked body are never
/// read as a second request — even a signed, valid one.
#[tokio::test]
async fn content_length_with_transfer_encoding_closes_after_one_answer() {
    let (upstream, sidecar) = world().await;
    let unsigned = body_of("popup.shown");
    let smuggled = signed_request(&body_of("popup.clicked"), &[]);
    for te_first in [false, true] {
        let (a, b) = ("Content-Length: 4", "Transfer-Encoding: chunked");
        let (first, second) = if te_first { (b, a) } else { (a, b) };
        let mut raw = head(&[
            "Content-Type: application/json",
            "X-CoolPopup-Signature: 00",
            first,
            second,
        ])
        .into_bytes();
        raw.extend_from_slice(&chunked(&unsigned, ""));
        raw.extend_from_slice(&smuggled);
        let ex = exchange(&sidecar, &raw).await;
        assert!(ex.closed, "te_first={te_first}: connection left open");
        assert_eq!(ex.only_status(), 401, "te_first={te_first}:\n{}", ex.text);
        assert!(ex.has("invalid_signature"), "{}", ex.text);
    }
    upstream.assert_nothing();
}

/// The same with a chunked body that *is* signed: it is forwarded once,
/// framed by hookgate with its exact Content-Length and no
/// Transfer-Encoding, and the smuggled request behind it is still dropped.
#[tokio::test]
async fn content_length_with_transfer_encoding_forwards_only_the_chunked_body() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let sig = format!("X-CoolPopup-Signature: {}", sign(&body, SECRET));
    let mut raw = head(&[
        "Content-Type: application/json",
        &sig,
        "Content-Length: 4",
        "Transfer-Encoding: chunked",
    ])
    .into_bytes();
    raw.extend_from_slice(&chunked(&body, ""));
    raw.extend_from_slice(&signed_request(&body_of("popup.clicked"), &[]));
    let ex = exchange(&sidecar, &raw).await;
    assert!(ex.closed);
    assert_eq!(ex.only_status(), 200, "{}", ex.text);
    let got = upstream.only_one();
    assert_eq!(got.body, body);
    assert_eq!(got.all("content-length"), [body.len().to_string()]);
    assert!(got.all("transfer-encoding").is_empty());
}

/// Two different Content-Lengths (as two fields or one list), or one that
/// is not a plain decimal, is a framing error: 400 and the connection closes.
#[tokio::test]
async fn conflicting_or_malformed_content_length_is_400_and_closes() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let sig = format!("X-CoolPopup-Signature: {}", sign(&body, SECRET));
    let n = body.len();
    let cases = [
        vec![
            format!("Content-Length: {n}"),
            format!("Content-Length: {}", n + 1),
        ],
        vec![format!("Content-Length: {n}, {}", n - 1)],
        vec![format!("Content-Length: +{n}")],
        vec![format!("Content-Length: -{n}")],
        vec![format!("Content-Length: 0x{n:x}")],
        vec!["Content-Length: 99999999999999999999999".to_owned()],
    ];
    for lengths in cases {
        let mut lines: Vec<&str> = vec!["Content-Type: application/json", &sig];
        lines.extend(lengths.iter().map(String::as_str));
        let mut raw = head(&lines).into_bytes();
        raw.extend_from_slice(&body);
        let ex = exchange(&sidecar, &raw).await;
        assert!(ex.closed, "{lengths:?}: connection left open");
        assert_eq!(ex.only_status(), 400, "{lengths:?}:\n{}", ex.text);
    }
    upstream.assert_nothing();
}

/// Two equal Content-Lengths are one length (RFC 9110 §8.6 allows the
/// repetition); the request goes through once.
#[tokio::test]
async fn repeated_equal_content_length_is_one_length() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let len = format!("Content-Length: {}", body.len());
    let raw = signed_request(&body, &[&len, "Connection: close"]);
    let ex = exchange(&sidecar, &raw).await;
    assert_eq!(ex.only_status(), 200, "{}", ex.text);
    assert_eq!(upstream.only_one().body, body);
}

/// A header continued on the next line (obs-fold, RFC 9112 §5.2) is refused
/// with 400 — the signature header cannot be split or smuggled that way.
#[tokio::test]
async fn obs_fold_header_continuation_is_400() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let sig = sign(&body, SECRET);
    let (a, b) = sig.split_at(32);
    let cases = [
        // The signature folded in two.
        format!("X-CoolPopup-Signature: {a}\r\n {b}"),
        // A fold that would hide a second header in the first one's value.
        format!("X-Padding: x\r\n\tX-CoolPopup-Signature: {sig}"),
        // Content-Length continued.
        format!("X-CoolPopup-Signature: {sig}\r\nX-A: 1\r\n Content-Length: 5"),
    ];
    for fold in cases {
        let len = format!("Content-Length: {}", body.len());
        let mut raw = head(&["Content-Type: application/json", &fold, &len]).into_bytes();
        raw.extend_from_slice(&body);
        let ex = exchange(&sidecar, &raw).await;
        assert!(ex.closed, "{fold:?}: connection left open");
        assert_eq!(ex.only_status(), 400, "{fold:?}:\n{}", ex.text);
    }
    upstream.assert_nothing();
}

/// Bare LF line endings: httparse (hyper's parser) tolerates them, as RFC
/// 9112 §2.2 allows, and the request is then judged like any other — an
/// unsigned one gets 401. No desync is possible behind hookgate: the
/// upstream gets a request that hyper serialized afresh.
#[tokio::test]
async fn bare_lf_line_endings_are_parsed_like_crlf() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let unsigned = format!(
        "POST {ROUTE} HTTP/1.1\nHost: localhost\nContent-Type: application/json\n\
         X-CoolPopup-Signature: {}\nContent-Length: {}\nConnection: close\n\n",
        sign(b"other", SECRET),
        body.len()
    );
    let mut raw = unsigned.into_bytes();
    raw.extend_from_slice(&body);
    let ex = exchange(&sidecar, &raw).await;
    assert_eq!(ex.only_status(), 401, "{}", ex.text);
    upstream.assert_nothing();
    // Mixed: a bare LF inside the head after CRLF lines, a signed body.
    let signed = format!(
        "POST {ROUTE} HTTP/1.1\r\nHost: localhost\nContent-Type: application/json\r\n\
         X-CoolPopup-Signature: {}\nContent-Length: {}\r\nConnection: close\n\r\n",
        sign(&body, SECRET),
        body.len()
    );
    let mut raw = signed.into_bytes();
    raw.extend_from_slice(&body);
    let ex = exchange(&sidecar, &raw).await;
    assert_eq!(ex.only_status(), 200, "{}", ex.text);
    let got = upstream.only_one();
    assert_eq!(got.body, body, "exact bytes");
}

/// A request head over 16 KiB, made of many 1 KiB headers, is 431; so are
/// 500 small headers (hyper allows 100 per request on HTTP/1.1; HTTP/2
/// counts the 16 KiB header list). Neither is forwarded.
#[tokio::test]
async fn oversized_and_numerous_headers_are_431() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let kib = "k".repeat(1024);
    let big: Vec<String> = (0..20).map(|i| format!("X-Big-{i}: {kib}")).collect();
    let many: Vec<String> = (0..500).map(|i| format!("X-H{i}: v")).collect();
    for (what, lines) in [("20 x 1 KiB", &big), ("500 headers", &many)] {
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let ex = exchange(&sidecar, &signed_request(&body, &lines)).await;
        assert!(ex.closed, "{what}: connection left open");
        assert_eq!(ex.only_status(), 431, "{what}:\n{}", ex.text);
    }
    // The same over HTTP/2 (the client sends them; the server refuses).
    let sig = sign(&body, SECRET);
    for (what, n, value) in [("20 x 1 KiB", 20, kib.as_str()), ("500 headers", 500, "v")] {
        let names: Vec<String> = (0..n).map(|i| format!("x-h{i}")).collect();
        let mut headers: Vec<(&str, &str)> = vec![
            ("content-type", "application/json"),
            ("x-coolpopup-signature", &sig),
        ];
        headers.extend(names.iter().map(|n| (n.as_str(), value)));
        let reply = sidecar
            .send(Version::H2, "POST", ROUTE, &body, &headers)
            .await;
        assert_eq!(reply.status, 431, "h2 {what}");
    }
    upstream.assert_nothing();
}

// === slow clients ===

/// Slowloris: a partial head and then silence. The server closes the
/// connection after `header_read_timeout` (2 s in the harness); we only
/// assert it happens within the bound, not when.
#[tokio::test]
async fn slow_head_is_cut_off() {
    let (upstream, sidecar) = world().await;
    let mut tls = sidecar.connect(Version::H1).await;
    tls.write_all(b"POST /webhooks/coolpopup HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let ex = read_until_closed(&mut tls, BOUND).await;
    assert!(ex.closed, "a stalled head was not cut off within {BOUND:?}");
    // hyper answers a head timeout with nothing or a 408; never anything else.
    assert!(
        ex.statuses().iter().all(|&s| s == 408),
        "unexpected answer:\n{}",
        ex.text
    );
    upstream.assert_nothing();
}

/// Slowloris, drip-fed: one byte of the head every 250 ms. The deadline is
/// for the whole head, so the trickle does not keep the connection open.
#[tokio::test]
async fn drip_fed_head_is_cut_off() {
    let (upstream, sidecar) = world().await;
    let tls = sidecar.connect(Version::H1).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let dripper = tokio::spawn(async move {
        let head = b"POST /webhooks/coolpopup HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let ex = read_until_closed(&mut rd, BOUND).await;
    dripper.abort();
    assert!(
        ex.closed,
        "a drip-fed head kept the connection open for {BOUND:?}"
    );
    upstream.assert_nothing();
}

/// Slow body: the head promises 100 bytes, 10 arrive, then silence. With
/// `body_read_timeout = "1s"` the answer is 408 `body_timeout` and the
/// connection closes.
#[tokio::test]
async fn slow_body_is_408_and_closes() {
    let (upstream, sidecar) = start_with("body_read_timeout = \"1s\"").await;
    let mut tls = sidecar.connect(Version::H1).await;
    let raw = head(&[
        "Content-Type: application/json",
        "X-CoolPopup-Signature: 00",
        "Content-Length: 100",
    ]);
    tls.write_all(raw.as_bytes()).await.unwrap();
    tls.write_all(b"{\"event\":\"").await.unwrap();
    let ex = read_until_closed(&mut tls, BOUND).await;
    assert!(ex.closed, "a stalled body kept the connection open");
    assert_eq!(ex.only_status(), 408, "{}", ex.text);
    assert!(ex.has("body_timeout"), "{}", ex.text);
    upstream.assert_nothing();
}

// === pipelining and HTTP/1.0 ===

/// Two signed requests in one write: both are answered, in order (their
/// request ids come back in order), and the upstream got both.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (upstream, sidecar) = world().await;
    let mut raw = signed_request(&body_of("popup.shown"), &["X-Request-Id: first-1"]);
    raw.extend(signed_request(
        &body_of("popup.clicked"),
        &["X-Request-Id: second-2", "Connection: close"],
    ));
    let ex = exchange(&sidecar, &raw).await;
    assert!(ex.closed);
    assert_eq!(ex.statuses(), [200, 200], "{}", ex.text);
    let lower = ex.text.to_ascii_lowercase();
    let first = lower.find("x-request-id: first-1").expect("first id");
    let second = lower.find("x-request-id: second-2").expect("second id");
    assert!(first < second, "answers out of order:\n{}", ex.text);
    let got = upstream.take();
    assert_eq!(got.len(), 2);
    let events: Vec<String> = got.iter().flat_map(|r| r.all("x-webhook-event")).collect();
    assert_eq!(events, ["popup.shown", "popup.clicked"]);
}

/// HTTP/1.0 (no Host, no keep-alive by default): a signed request is
/// served once and the connection closes; unsigned is 401;
/// Transfer-Encoding is not HTTP/1.0 and is refused with 400.
#[tokio::test]
async fn http_1_0_requests() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let request = |sig: &str, extra: &str| {
        let mut raw = format!(
            "POST {ROUTE} HTTP/1.0\r\nContent-Type: application/json\r\n\
             X-CoolPopup-Signature: {sig}\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        raw
    };
    let ex = exchange(&sidecar, &request(&sign(&body, SECRET), "")).await;
    assert!(ex.closed, "HTTP/1.0 without keep-alive must close");
    assert_eq!(ex.only_status(), 200, "{}", ex.text);
    assert_eq!(upstream.only_one().body, body);

    let ex = exchange(&sidecar, &request(&sign(b"x", SECRET), "")).await;
    assert_eq!(ex.only_status(), 401, "{}", ex.text);
    let ex = exchange(
        &sidecar,
        &request(&sign(&body, SECRET), "Transfer-Encoding: chunked\r\n"),
    )
    .await;
    assert!(ex.closed);
    assert_eq!(ex.only_status(), 400, "{}", ex.text);
    upstream.assert_nothing();
}

// === hostile chunked bodies ===

/// Chunk sizes that are not hex, overflow, carry junk, or promise more than
/// is sent: the body is not complete, so nothing is verified or forwarded.
#[tokio::test]
async fn chunked_bodies_with_bad_sizes_are_refused() {
    let (upstream, sidecar) = start_with("body_read_timeout = \"1s\"").await;
    let body = body_of("popup.shown");
    let sig = format!("X-CoolPopup-Signature: {}", sign(&body, SECRET));
    let n = body.len();
    let good_tail = "\r\n0\r\n\r\n".to_owned();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "not hex",
            [b"zz\r\n".as_slice(), &body, good_tail.as_bytes()].concat(),
        ),
        (
            "overflowing size",
            [
                b"ffffffffffffffffffff\r\n".as_slice(),
                &body,
                good_tail.as_bytes(),
            ]
            .concat(),
        ),
        (
            "negative size",
            [
                format!("-{n:x}\r\n").as_bytes(),
                &body,
                good_tail.as_bytes(),
            ]
            .concat(),
        ),
        (
            "size too small (data runs into the next size line)",
            [
                format!("{:x}\r\n", n - 5).as_bytes(),
                &body,
                good_tail.as_bytes(),
            ]
            .concat(),
        ),
        (
            "missing CRLF after data",
            [format!("{n:x}\r\n").as_bytes(), &body, b"XX0\r\n\r\n"].concat(),
        ),
    ];
    for (what, chunks) in cases {
        let mut raw = head(&[
            "Content-Type: application/json",
            &sig,
            "Transfer-Encoding: chunked",
        ])
        .into_bytes();
        raw.extend_from_slice(&chunks);
        let ex = exchange(&sidecar, &raw).await;
        assert!(ex.closed, "{what}: connection left open");
        let s = ex.only_status();
        assert!(
            s == 400 && ex.has("body_incomplete"),
            "{what}: want 400 body_incomplete, got:\n{}",
            ex.text
        );
    }
    // A size larger than what follows, then silence: 408 body_timeout.
    let mut raw = head(&[
        "Content-Type: application/json",
        &sig,
        "Transfer-Encoding: chunked",
    ])
    .into_bytes();
    raw.extend_from_slice(format!("{:x}\r\n", n + 100).as_bytes());
    raw.extend_from_slice(&body);
    let ex = exchange(&sidecar, &raw).await;
    assert!(ex.closed);
    assert_eq!(ex.only_status(), 408, "{}", ex.text);
    upstream.assert_nothing();
}

/// Trailers carry nothing hookgate trusts: a signature sent as a trailer
/// does not count (401), and trailers of a signed request are not forwarded.
#[tokio::test]
async fn chunked_trailers_are_ignored() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let good = sign(&body, SECRET);
    let mut raw = head(&[
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        "Trailer: X-CoolPopup-Signature",
        "Connection: close",
    ])
    .into_bytes();
    raw.extend(chunked(
        &body,
        &format!("X-CoolPopup-Signature: {good}\r\n"),
    ));
    let ex = exchange(&sidecar, &raw).await;
    assert_eq!(ex.only_status(), 401, "{}", ex.text);
    upstream.assert_nothing();

    let sig = format!("X-CoolPopup-Signature: {good}");
    let mut raw = head(&[
        "Content-Type: application/json",
        &sig,
        "Transfer-Encoding: chunked",
        "Connection: close",
    ])
    .into_bytes();
    raw.extend(chunked(
        &body,
        "X-Webhook-Verified: false\r\nX-Trailer: t\r\n",
    ));
    let ex = exchange(&sidecar, &raw).await;
    assert_eq!(ex.only_status(), 200, "{}", ex.text);
    let got = upstream.only_one();
    assert_eq!(got.body, body);
    assert!(got.all("x-trailer").is_empty());
    assert_eq!(got.all("x-webhook-verified"), ["true"]);
}

// === hostile bodies (correctly signed: the parser itself under attack) ===

/// Signed bodies that are not acceptable JSON: 400 `invalid_json`, and the
/// error never repeats body content.
#[tokio::test]
async fn hostile_json_is_400() {
    let (upstream, sidecar) = world().await;
    let valid = String::from_utf8(body_of("popup.shown")).unwrap();
    let with = |extra: &str| valid.replacen('{', &format!("{{{extra},"), 1).into_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid UTF-8 in a string",
            with("\"x\":\"\u{1}\"")
                .iter()
                .map(|&b| if b == 1 { 0xC3 } else { b })
                .collect(),
        ),
        (
            "overlong UTF-8",
            with("\"x\":\"\u{1}\u{2}\"")
                .iter()
                .map(|&b| match b {
                    1 => 0xC0,
                    2 => 0xAF,
                    b => b,
                })
                .collect(),
        ),
        ("raw NUL inside a string", with("\"x\":\"a\u{0}b\"")),
        ("raw NUL between tokens", with("\"x\":1\u{0}")),
        ("NUL after the object", [valid.as_bytes(), b"\0"].concat()),
        (
            "duplicate top-level key",
            with("\"event\":\"popup.clicked\""),
        ),
        (
            "duplicate nested key",
            with("\"x\":{\"a\":1,\"b\":{\"c\":1,\"c\":2}}"),
        ),
        (
            "duplicate key, escaped spelling",
            with("\"ev\\u0065nt\":\"popup.clicked\""),
        ),
        ("number 1e99999", with("\"x\":1e99999")),
        ("number -1e99999", with("\"x\":-1e99999")),
        ("NaN", with("\"x\":NaN")),
        (
            "number out of f64 range as event",
            valid.replace("\"popup.shown\"", "1e400").into_bytes(),
        ),
        ("lone surrogate", with("\"x\":\"\\udc00\"")),
        ("nesting 60k deep", vec![b'['; 60_000]),
        (
            "nesting 129 deep",
            [vec![b'['; 129], vec![b']'; 129]].concat(),
        ),
        ("two objects", [valid.as_bytes(), valid.as_bytes()].concat()),
        (
            "BOM",
            [b"\xEF\xBB\xBF".as_slice(), valid.as_bytes()].concat(),
        ),
    ];
    for (what, body) in cases {
        let reply = sidecar.post(ROUTE, &body).await;
        assert_eq!(reply.status, 400, "{what}: {:?}", reply.body);
        assert_eq!(reply.error(), "invalid_json", "{what}");
        assert!(reply.body.len() < 512, "{what}: error body too large");
    }
    upstream.assert_nothing();
}

/// 100k `[` do not fit the 64 KiB body limit: 413 before parsing. The
/// parser's own depth limit (128) is pinned by the 60k case above and, on
/// 1 MB of nesting, by `deep_nesting_does_not_overflow_the_stack`.
#[tokio::test]
async fn nesting_100k_deep_is_413() {
    let (upstream, sidecar) = world().await;
    let reply = sidecar.post(ROUTE, &vec![b'['; 100_000]).await;
    reply.expect_error(413, "payload_too_large");
    upstream.assert_nothing();
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    for open in [b'[', b'{'] {
        let mut body = vec![open; 1_000_000];
        if open == b'{' {
            body = b"{\"a\":".repeat(200_000);
        }
        let r = hookgate::testing::validate(&body);
        assert!(
            matches!(r, Err(hookgate::testing::PayloadError::InvalidJson(_))),
            "{r:?}"
        );
    }
}

/// Valid JSON that is not an object, and huge or hostile strings in schema
/// fields: 422 `invalid_payload`, and the error body never echoes them.
#[tokio::test]
async fn valid_json_that_breaks_the_schema_is_422() {
    let (upstream, sidecar) = world().await;
    let huge = "e".repeat(60_000);
    let valid = String::from_utf8(body_of("popup.converted")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("array", b"[]".to_vec()),
        ("string", b"\"popup.shown\"".to_vec()),
        ("number", b"1".to_vec()),
        ("null", b"null".to_vec()),
        ("true", b"true".to_vec()),
        (
            "60 KB email",
            valid
                .replacen("jane@example.com", &format!("{huge}@x"), 1)
                .into_bytes(),
        ),
        (
            "campaign_id with an escaped NUL",
            valid.replace("camp_abc123", "camp\\u0000x").into_bytes(),
        ),
        (
            "campaign_id with CR LF",
            valid
                .replace("camp_abc123", "camp\\r\\nX-Webhook-Verified: true")
                .into_bytes(),
        ),
        (
            "number as event",
            valid.replace("\"popup.converted\"", "1e300").into_bytes(),
        ),
    ];
    for (what, body) in cases {
        let reply = sidecar.post(ROUTE, &body).await;
        assert_eq!(reply.status, 422, "{what}: {:?}", reply.body);
        let code = reply.error();
        assert!(code == "invalid_payload", "{what}: {code}");
        assert!(
            reply.body.len() < 1024,
            "{what}: error body echoes the input?"
        );
    }
    // Hostile event names are events hookgate does not know: acknowledged
    // (the default `unknown_events`), never forwarded, never echoed.
    for (what, body) in [
        ("60 KB event name", valid.replace("popup.converted", &huge)),
        (
            "event with an escaped NUL",
            valid.replace("popup.converted", "popup.converted\\u0000"),
        ),
    ] {
        let reply = sidecar.post(ROUTE, body.as_bytes()).await;
        assert_eq!(reply.status, 200, "{what}: {:?}", reply.body);
        assert_eq!(reply.json()["status"], "acknowledged", "{what}");
        assert!(
            reply.body.len() < 1024,
            "{what}: the answer echoes the input?"
        );
    }
    upstream.assert_nothing();
}

/// Accepted by design (a correctly signed, schema-valid body): a 60 KB
/// string in an unknown field or in `campaign_name`, and a 30-digit integer,
/// are forwarded byte for byte. Documented in SECURITY.md: the app must
/// accept what the schema accepts.
#[tokio::test]
async fn large_but_valid_values_are_forwarded_exactly() {
    let (upstream, sidecar) = world().await;
    let valid = String::from_utf8(body_of("popup.shown")).unwrap();
    let big = "n".repeat(60_000);
    let bodies = [
        valid.replacen('{', &format!("{{\"note\":\"{big}\","), 1),
        valid.replace("Summer Sale Popup", &big),
        valid.replacen('{', "{\"n\":123456789012345678901234567890,", 1),
    ];
    for body in bodies {
        let reply = sidecar.post(ROUTE, body.as_bytes()).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(upstream.only_one().body, body.as_bytes());
    }
}

// === signature header games ===

/// What the signature header accepts, seen end to end. Over HTTP/1.1 the
/// parser strips optional whitespace around a field value (RFC 9110 §5.5),
/// so a signature padded with spaces or tabs verifies; inner whitespace,
/// other prefixes, truncation, doubling and lists do not.
#[tokio::test]
async fn signature_header_variants_over_http1() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let good = sign(&body, SECRET);
    let upper = good.to_uppercase();
    let accepted = [
        upper.clone(),
        format!("sha256={upper}"),
        format!("   {good}"),
        format!("{good}   "),
        format!("\t{good}\t"),
        format!(" sha256={good} "),
        format!("SHA256={good}"),
        format!("Sha256={}", good.to_uppercase()),
    ];
    for sig in &accepted {
        let line = format!("X-CoolPopup-Signature: {sig}");
        let len = format!("Content-Length: {}", body.len());
        let mut raw = head(&[
            "Content-Type: application/json",
            &line,
            &len,
            "Connection: close",
        ])
        .into_bytes();
        raw.extend_from_slice(&body);
        let ex = exchange(&sidecar, &raw).await;
        assert_eq!(ex.only_status(), 200, "{sig:?} should verify:\n{}", ex.text);
        assert_eq!(upstream.only_one().body, body);
    }
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(hex::decode(&good).unwrap())
    };
    let refused = [
        format!("sha1={good}"),
        format!("sha256:{good}"),
        format!("sha256= {good}"),
        format!("sha256=sha256={good}"),
        format!("v1,{good}"),
        format!("t=1,v1={good}"),
        good[..63].to_owned(),
        good[..32].to_owned(),
        format!("{good}{good}"),
        format!("{good},{good}"),
        format!("{good} {good}"),
        format!("{}\t{}", &good[..32], &good[32..]),
        format!("{good}0"),
        format!("0x{good}"),
        b64,
        String::new(),
    ];
    for sig in &refused {
        let line = format!("X-CoolPopup-Signature: {sig}");
        let len = format!("Content-Length: {}", body.len());
        let mut raw = head(&[
            "Content-Type: application/json",
            &line,
            &len,
            "Connection: close",
        ])
        .into_bytes();
        raw.extend_from_slice(&body);
        let ex = exchange(&sidecar, &raw).await;
        assert_eq!(
            ex.only_status(),
            401,
            "{sig:?} must not verify:\n{}",
            ex.text
        );
        assert!(ex.has("invalid_signature"));
        assert!(!ex.has(&good), "the expected signature leaked");
    }
    // A control character in the value is a parse error before any check.
    let line = format!("X-CoolPopup-Signature: {}\u{0}{}", &good[..32], &good[32..]);
    let len = format!("Content-Length: {}", body.len());
    let mut raw = head(&["Content-Type: application/json", &line, &len]).into_bytes();
    raw.extend_from_slice(&body);
    let ex = exchange(&sidecar, &raw).await;
    assert_eq!(ex.only_status(), 400, "{}", ex.text);
    upstream.assert_nothing();
}

/// Over HTTP/2, field values with leading or trailing whitespace are
/// malformed (RFC 9113 §8.2.1). What the h2 stack does with them is pinned
/// here: they reach hookgate unchanged and the padded value does not parse
/// as a signature (401); uppercase hex still verifies.
#[tokio::test]
async fn signature_header_variants_over_http2() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let good = sign(&body, SECRET);
    for (sig, want) in [
        (good.to_uppercase(), 200),
        (format!(" {good}"), 401),
        (format!("{good} "), 401),
        (format!("{good}{good}"), 401),
    ] {
        let reply = sidecar
            .send(
                Version::H2,
                "POST",
                ROUTE,
                &body,
                &[
                    ("content-type", "application/json"),
                    ("x-coolpopup-signature", &sig),
                ],
            )
            .await;
        assert_eq!(reply.status, want, "{sig:?}: {:?}", reply.body);
        if want == 200 {
            assert_eq!(upstream.only_one().body, body);
        }
    }
    upstream.assert_nothing();
}

// === floods ===

/// 50 idle TCP connections against `max_connections = 8`: 8 hold permits
/// until `handshake_timeout` drops them, the rest wait in the kernel's
/// backlog. While the flood is on, the server holds at most 8, its admin
/// port answers, and an honest client queued behind the flood is served
/// once the idle ones are dropped.
#[tokio::test]
async fn connection_flood_beyond_max_connections() {
    let (upstream, sidecar) =
        start_with("max_connections = 8\nhandshake_timeout = \"500ms\"").await;
    let mut flood = Vec::new();
    for _ in 0..50 {
        flood.push(TcpStream::connect(sidecar.addr).await.unwrap());
    }
    // The flood is on: at most 8 are being served, and hookgate is alive.
    let (status, _) = sidecar.admin_get("/healthz").await;
    assert_eq!(status, 200);
    let open = sidecar.metric("hookgate_connections_open").await.unwrap();
    assert!(
        open <= 8.0,
        "{open} connections open with max_connections = 8"
    );

    // An honest client behind the flood gets its turn (each idle connection
    // is dropped after 500 ms; 50 / 8 rounds) while the flood sockets stay
    // open on our side.
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        sidecar.post(ROUTE, &body_of("popup.shown")),
    )
    .await
    .expect("an honest client was never served during the flood");
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < Duration::from_secs(20));
    upstream.only_one();

    // Every flood connection was closed by the server.
    for mut s in flood {
        let ex = read_until_closed(&mut s, BOUND).await;
        assert!(ex.closed && ex.text.is_empty(), "{}", ex.text);
    }
    assert_still_serving(&upstream, &sidecar).await;
    let failures = sidecar
        .metric("hookgate_tls_handshake_failures_total")
        .await
        .unwrap();
    assert!(failures >= 50.0, "{failures}");
}

/// 100 connections sending junk or a partial ClientHello and then stalling:
/// each costs one task until `handshake_timeout`, and an honest client is
/// served meanwhile, promptly.
#[tokio::test]
async fn handshake_flood_does_not_starve_honest_clients() {
    let (upstream, sidecar) = start_with("handshake_timeout = \"2s\"").await;
    // A ClientHello record header promising 512 bytes, then 40 of them.
    let mut partial_hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    partial_hello.extend(std::iter::repeat_n(0x42, 40));
    let junk: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8 | 0x80).collect();
    let mut flood = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
        let payload: &[u8] = match i % 3 {
            0 => &partial_hello,
            1 => &junk,
            _ => &[0x16], // one byte of a record header
        };
        s.write_all(payload).await.unwrap();
        flood.push(s);
    }
    let started = Instant::now();
    let reply = tokio::time::timeout(BOUND, sidecar.post(ROUTE, &body_of("popup.shown")))
        .await
        .expect("honest client not served during a handshake flood");
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the honest client waited {:?}, as long as the handshake timeout",
        started.elapsed()
    );
    upstream.only_one();
    // Junk gets an alert or a close; partial hellos are dropped at the timeout.
    for mut s in flood {
        let ex = read_until_closed(&mut s, BOUND).await;
        assert!(
            ex.closed,
            "a flood connection outlived the handshake timeout"
        );
    }
    assert_still_serving(&upstream, &sidecar).await;
}

// === HTTP/2 abuse ===

/// 200 concurrent signed requests on one HTTP/2 connection. Until the
/// server's SETTINGS arrive the client may open more than 64 streams; the
/// server refuses those with REFUSED_STREAM (RFC 9113 §8.7: not processed,
/// safe to retry). Every request is answered 200 or refused that way, the
/// upstream got each answered one exactly once, and nothing refused.
#[tokio::test]
async fn http2_200_concurrent_requests_on_one_connection() {
    let (upstream, sidecar) = world().await;
    let tls = sidecar.connect(Version::H2).await;
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let url = sidecar.url(ROUTE);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut sender = sender.clone();
        let body = String::from_utf8(body_of("popup.shown"))
            .unwrap()
            .replace("camp_abc123", &format!("camp_{i:03}"))
            .into_bytes();
        let req = http::Request::post(&url)
            .version(http::Version::HTTP_2)
            .header("content-type", "application/json")
            .header("x-coolpopup-signature", sign(&body, SECRET))
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap();
        tasks.push(tokio::spawn(async move {
            sender.ready().await.unwrap();
            match sender.send_request(req).await {
                Ok(r) => Ok((i, r.status().as_u16())),
                Err(e) => Err(format!("{e:?}")),
            }
        }));
    }
    let mut answered = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match tokio::time::timeout(BOUND, t).await.unwrap().unwrap() {
            Ok((i, status)) => {
                assert_eq!(status, 200);
                answered.push(format!("camp_{i:03}"));
            }
            Err(e) if e.contains("REFUSED_STREAM") => refused += 1,
            Err(e) => panic!("neither answered nor refused: {e}"),
        }
    }
    assert_eq!(answered.len() + refused, 200);
    assert!(answered.len() >= 64, "only {} answered", answered.len());
    let mut forwarded: Vec<String> = upstream
        .take()
        .iter()
        .flat_map(|r| r.all("x-webhook-campaign-id"))
        .collect();
    forwarded.sort();
    answered.sort();
    assert_eq!(
        forwarded, answered,
        "each answered request forwarded exactly once"
    );
    assert_still_serving(&upstream, &sidecar).await;
}

/// A minimal HTTP/2 frame writer, to do what a well-behaved client library
/// will not: open more streams than the server allows.
mod frames {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// HPACK "literal header field without indexing, new name" with
    /// 7-bit lengths (all names and values here are short).
    pub fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            assert!(name.len() < 127 && value.len() < 127);
            out.push(0x00);
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.push(value.len() as u8);
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// One parsed frame: (type, flags, stream, payload).
    pub type Frame = (u8, u8, u32, Vec<u8>);

    pub fn parse(buf: &mut Vec<u8>) -> Option<Frame> {
        if buf.len() < 9 {
            return None;
        }
        let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
        if buf.len() < 9 + len {
            return None;
        }
        let kind = buf[3];
        let flags = buf[4];
        let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
        let payload = buf[9..9 + len].to_vec();
        buf.drain(..9 + len);
        Some((kind, flags, stream, payload))
    }
}

/// What the server did to each stream of a raw HTTP/2 session.
#[derive(Debug, Default)]
struct H2Outcome {
    /// Streams that got a HEADERS answer.
    answered: std::collections::BTreeSet<u32>,
    /// Streams reset by the server, with the error code.
    reset: std::collections::BTreeMap<u32, u32>,
    /// GOAWAY error code, if the server sent one.
    goaway: Option<u32>,
    closed: bool,
}

impl H2Outcome {
    /// Streams the server did something with (answered, reset, or both).
    fn settled(&self) -> usize {
        self.answered
            .union(&self.reset.keys().copied().collect())
            .count()
    }

    /// Streams reset before any answer, with REFUSED_STREAM.
    fn refused(&self) -> usize {
        self.reset
            .iter()
            .filter(|&(id, &code)| code == 0x7 && !self.answered.contains(id))
            .count()
    }
}

/// Reads frames until `done` says so, the server closes, or the bound.
/// Answers SETTINGS and PING as a client must.
async fn read_h2<S>(io: &mut S, done: impl Fn(&H2Outcome) -> bool) -> H2Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use frames::*;
    let mut out = H2Outcome::default();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(BOUND, async {
        loop {
            while let Some((kind, flags, stream, payload)) = parse(&mut buf) {
                match kind {
                    HEADERS => {
                        out.answered.insert(stream);
                    }
                    RST_STREAM if payload.len() == 4 => {
                        let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                        out.reset.insert(stream, code);
                    }
                    GOAWAY if payload.len() >= 8 => {
                        out.goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                    }
                    SETTINGS if flags & ACK == 0 => {
                        let _ = io.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                    }
                    PING if flags & ACK == 0 => {
                        let _ = io.write_all(&frame(PING, ACK, 0, &payload)).await;
                    }
                    _ => {}
                }
            }
            if done(&out) {
                return;
            }
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    out.closed = true;
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    out
}

fn h2_post_headers(port: u16, sig: &str) -> Vec<u8> {
    let authority = format!("localhost:{port}");
    frames::hpack(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":path", ROUTE),
        (":authority", &authority),
        ("content-type", "application/json"),
        ("x-coolpopup-signature", sig),
    ])
}

/// 200 streams opened at once, ignoring `max_concurrent_streams = 64`: the
/// server refuses the excess cleanly (REFUSED_STREAM or GOAWAY), answers
/// every stream it accepted, forwards nothing unsigned, and stays up.
#[tokio::test]
async fn http2_streams_beyond_max_concurrent_are_refused_cleanly() {
    use frames::*;
    let (upstream, sidecar) = start_with("body_read_timeout = \"1s\"").await;
    let mut tls = sidecar.connect(Version::H2).await;
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let block = h2_post_headers(sidecar.addr.port(), &sign(b"other", SECRET));
    let streams: Vec<u32> = (0..200).map(|i| 1 + 2 * i).collect();
    for &id in &streams {
        // Open (no END_STREAM): each stream waits for a body that never comes.
        out.extend(frame(HEADERS, END_HEADERS, id, &block));
    }
    tls.write_all(&out).await.unwrap();
    let total = streams.len();
    let outcome = read_h2(&mut tls, |o| o.goaway.is_some() || o.settled() >= total).await;
    let accepted = outcome.answered.len();
    assert!(
        accepted <= 64,
        "more than 64 streams served at once: {accepted}"
    );
    match outcome.goaway {
        // The connection was closed as a whole: everything accepted before
        // it is answered or reset.
        Some(code) => assert!(code == 0x1 || code == 0xb, "GOAWAY code {code:#x}"),
        None => {
            let refused = outcome.refused();
            assert_eq!(
                accepted + refused,
                total,
                "every stream answered or refused: {outcome:?}"
            );
            assert!(refused >= total - 64);
        }
    }
    upstream.assert_nothing();
    assert_still_serving(&upstream, &sidecar).await;
}

/// Rapid reset (CVE-2023-44487): open and cancel streams as fast as
/// possible. The server stops the connection (GOAWAY) or absorbs it, forwards
/// nothing, and stays responsive to others.
#[tokio::test]
async fn http2_rapid_reset_is_contained() {
    let (upstream, sidecar) = world().await;
    let tls = sidecar.connect(Version::H2).await;
    let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let started = Instant::now();
    let url = sidecar.url(ROUTE);
    let mut sent = 0usize;
    for _ in 0..5_000 {
        let Ok(ready) = tokio::time::timeout(BOUND, client.clone().ready()).await else {
            panic!("the client was never ready again")
        };
        let Ok(c) = ready else { break };
        client = c;
        let req = http::Request::post(&url)
            .header("content-type", "application/json")
            .header("x-coolpopup-signature", sign(b"other", SECRET))
            .body(())
            .unwrap();
        let Ok((_resp, mut stream)) = client.send_request(req, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    drop(client);
    let _ = tokio::time::timeout(BOUND, conn).await;
    eprintln!(
        "rapid reset: {sent} streams opened and cancelled in {:?} before the connection ended",
        started.elapsed()
    );
    assert!(sent > 0);
    assert!(started.elapsed() < Duration::from_secs(30));
    upstream.assert_nothing();
    // Others are still served, promptly.
    assert_still_serving(&upstream, &sidecar).await;
}

// === connections that hold a permit without making progress ===

/// An HTTP/2 connection with no stream open, whose client answers every
/// PING: the server closes it (GOAWAY) after `idle_timeout`.
#[tokio::test]
async fn idle_http2_connection_is_closed() {
    use frames::*;
    let (upstream, sidecar) = start_with("idle_timeout = \"1s\"").await;
    let mut tls = sidecar.connect(Version::H2).await;
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    tls.write_all(&out).await.unwrap();
    let outcome = read_h2(&mut tls, |_| false).await;
    assert_eq!(
        outcome.goaway,
        Some(0),
        "GOAWAY(NO_ERROR) first: {outcome:?}"
    );
    assert!(
        outcome.closed,
        "an idle HTTP/2 connection was kept for {BOUND:?}"
    );
    upstream.assert_nothing();
}

/// `max_connections` idle HTTP/2 connections do not lock honest clients out
/// for longer than `idle_timeout`: with both permits held by idle HTTP/2
/// clients (which answer PINGs), a third client is served within the bound.
#[tokio::test]
async fn idle_http2_connections_do_not_exhaust_permits() {
    let (upstream, sidecar) = start_with("max_connections = 2\nidle_timeout = \"1s\"").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let tls = sidecar.connect(Version::H2).await;
        let (client, conn) = h2::client::handshake(tls).await.unwrap();
        held.push((client, tokio::spawn(conn)));
    }
    let reply = tokio::time::timeout(BOUND, sidecar.post(ROUTE, &body_of("popup.shown")))
        .await
        .expect("idle HTTP/2 connections locked out an honest client");
    assert_eq!(reply.status, 200);
    upstream.only_one();
    drop(held);
}

// === regressions: connections that held a permit forever ===

/// After the TLS handshake, a client that sends nothing at all (or half an
/// HTTP/2 preface): hyper-util waits for the first bytes without a timer, so
/// this used to be bounded only by `idle_timeout` (60 s by default) while a
/// connection permit was held. Before its first request a connection now gets
/// `header_read_timeout` (2 s here), like any slow head.
#[tokio::test]
async fn silent_client_after_handshake_is_closed() {
    let (upstream, sidecar) = world().await;
    for v in [Version::H1, Version::H2] {
        let mut tls = sidecar.connect(v).await;
        let ex = read_until_closed(&mut tls, BOUND).await;
        assert!(
            ex.closed,
            "{v:?}: a silent connection was kept for {BOUND:?}"
        );
    }
    // A partial HTTP/2 preface then silence.
    let mut tls = sidecar.connect(Version::H2).await;
    tls.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let ex = read_until_closed(&mut tls, BOUND).await;
    assert!(
        ex.closed,
        "a partial preface kept the connection for {BOUND:?}"
    );
    upstream.assert_nothing();
}

/// An HTTP/2 client that never opens its flow-control window: the answer to
/// its request can never be sent, so the idle connection's graceful close
/// (GOAWAY, then wait for open streams) never completed and the connection
/// and its permit were pinned forever. It is now dropped `idle_timeout`
/// after the GOAWAY.
#[tokio::test]
async fn http2_zero_window_does_not_pin_the_connection() {
    use frames::*;
    let (upstream, sidecar) = start_with("idle_timeout = \"1s\"").await;
    let mut tls = sidecar.connect(Version::H2).await;
    let mut out = PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE = 0.
    out.extend(frame(SETTINGS, 0, 0, &[0x00, 0x04, 0, 0, 0, 0]));
    let authority = format!("localhost:{}", sidecar.addr.port());
    let get = hpack(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", ROUTE),
        (":authority", &authority),
    ]);
    out.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &get));
    tls.write_all(&out).await.unwrap();
    let outcome = read_h2(&mut tls, |_| false).await;
    assert!(outcome.answered.contains(&1), "{outcome:?}");
    assert!(
        outcome.closed,
        "a zero-window stream pinned the connection for {BOUND:?}: {outcome:?}"
    );
    upstream.assert_nothing();
}

/// A client that resets its HTTP/2 stream while hookgate waits for the
/// upstream: hyper drops the request's future. The request used to stay
/// counted as in flight, so the connection never idled out and held its
/// permit forever; now it idles out (GOAWAY, close) after `idle_timeout`.
#[tokio::test]
async fn http2_stream_reset_mid_request_does_not_keep_the_connection_busy() {
    use frames::*;
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes = vec![route("coolpopup", ROUTE, "/slow/3000")];
    opts.upstream_timeout = "4s";
    opts.server = "idle_timeout = \"1s\"".to_owned();
    let sidecar = Sidecar::start(opts).await;
    let mut tls = sidecar.connect(Version::H2).await;
    let body = body_of("popup.shown");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let block = h2_post_headers(sidecar.addr.port(), &sign(&body, SECRET));
    out.extend(frame(HEADERS, END_HEADERS, 1, &block));
    out.extend(frame(DATA, END_STREAM, 1, &body));
    tls.write_all(&out).await.unwrap();
    // The request is at the upstream (which answers only after 3 s): cancel it.
    upstream.arrival().await;
    tls.write_all(&frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()))
        .await
        .unwrap();
    let outcome = read_h2(&mut tls, |_| false).await;
    assert!(
        outcome.closed,
        "a reset stream left the connection busy for {BOUND:?}: {outcome:?}"
    );
    assert_eq!(upstream.take().len(), 1, "forwarded once, before the reset");
}

// === requests at the edges (SPEC, second part) ===

/// RFC 9112 §3.2: an HTTP/1.1 request names exactly one host. Two `Host`
/// lines, or none, are 400 `invalid_request` and reach nobody; HTTP/1.0
/// may go without one.
#[tokio::test]
async fn http1_host_must_be_unambiguous() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let sig = format!("X-CoolPopup-Signature: {}", sign(&body, SECRET));
    let len = format!("Content-Length: {}", body.len());
    for (what, head) in [
        (
            "two Host lines",
            format!(
                "POST {ROUTE} HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\
                 Content-Type: application/json\r\n{sig}\r\n{len}\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "no Host",
            format!(
                "POST {ROUTE} HTTP/1.1\r\nContent-Type: application/json\r\n{sig}\r\n{len}\r\n\
                 Connection: close\r\n\r\n"
            ),
        ),
    ] {
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&body);
        let ex = exchange(&sidecar, &raw).await;
        assert_eq!(ex.only_status(), 400, "{what}:\n{}", ex.text);
        assert!(
            ex.has("\"error\":\"invalid_request\""),
            "{what}:\n{}",
            ex.text
        );
        upstream.assert_nothing();
    }
    // HTTP/1.0 without Host: accepted, no X-Forwarded-Host to set.
    let mut raw = format!(
        "POST {ROUTE} HTTP/1.0\r\nContent-Type: application/json\r\n{sig}\r\n{len}\r\n\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let ex = exchange(&sidecar, &raw).await;
    assert_eq!(ex.only_status(), 200, "{}", ex.text);
    assert!(upstream.only_one().all("x-forwarded-host").is_empty());
}

/// RFC 9112 §3.2.2: with an absolute-form target, its authority is the
/// host; a different `Host` line does not reach the app.
#[tokio::test]
async fn absolute_form_target_names_the_host() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let mut raw = format!(
        "POST https://hooks.example.com{ROUTE} HTTP/1.1\r\nHost: evil.example\r\n\
         Content-Type: application/json\r\nX-CoolPopup-Signature: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        sign(&body, SECRET),
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let ex = exchange(&sidecar, &raw).await;
    assert_eq!(ex.only_status(), 200, "{}", ex.text);
    let got = upstream.only_one();
    assert_eq!(got.all("x-forwarded-host"), ["hooks.example.com"]);
    assert_eq!(got.body, body);
}

/// RFC 9113 §8.3.1: on HTTP/2 a `host` header, if sent, must equal
/// `:authority`.
#[tokio::test]
async fn http2_host_must_match_authority() {
    let (upstream, sidecar) = world().await;
    let body = Bytes::from(body_of("popup.shown"));
    let authority = format!("localhost:{}", sidecar.addr.port());
    let tls = sidecar.connect(Version::H2).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    for (host, want) in [
        (Some("evil.example"), 400),
        (Some(authority.as_str()), 200),
        (None, 200),
    ] {
        let mut client = client.clone().ready().await.unwrap();
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("https://{authority}{ROUTE}"))
            .header("content-type", "application/json")
            .header("x-coolpopup-signature", sign(&body, SECRET));
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let (answer, mut stream) = client.send_request(req.body(()).unwrap(), false).unwrap();
        stream.send_data(body.clone(), true).unwrap();
        let answer = answer.await.unwrap();
        let status = answer.status().as_u16();
        let mut data = answer.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = data.data().await {
            let chunk = chunk.unwrap();
            data.flow_control().release_capacity(chunk.len()).unwrap();
            got.extend_from_slice(&chunk);
        }
        assert_eq!(
            status,
            want,
            "host {host:?}: {}",
            String::from_utf8_lossy(&got)
        );
        if want == 400 {
            assert!(String::from_utf8_lossy(&got).contains("invalid_request"));
            upstream.assert_nothing();
        } else {
            assert_eq!(
                upstream.only_one().all("x-forwarded-host"),
                [authority.as_str()]
            );
        }
    }
}

/// `Expect: 100-continue` is answered by hookgate (it reads the body) and
/// never forwarded: an app that refuses `Expect` with 417 would make the
/// provider retry forever.
#[tokio::test]
async fn expect_is_never_forwarded() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let raw = signed_request(&body, &["Expect: 100-continue", "Connection: close"]);
    let ex = exchange(&sidecar, &raw).await;
    assert!(ex.text.starts_with("HTTP/1.1 100 Continue"), "{}", ex.text);
    assert!(ex.has("HTTP/1.1 200 OK"), "{}", ex.text);
    let got = upstream.only_one();
    assert!(got.all("expect").is_empty(), "Expect reached the app");
    assert_eq!(got.body, body);
}

/// serde_json's recursion limit: 127 levels (the top-level object is one)
/// are accepted, 128 are `invalid_json`; the README says the same.
#[tokio::test]
async fn nesting_127_is_accepted_and_128_is_not() {
    let (upstream, sidecar) = world().await;
    let nested = |depth: usize| {
        let shown = String::from_utf8(body_of("popup.shown")).unwrap();
        let inner = format!("{}{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        shown
            .replacen('{', &format!("{{\"deep\":{inner},"), 1)
            .into_bytes()
    };
    let ok = nested(127);
    assert_eq!(sidecar.post(ROUTE, &ok).await.status, 200);
    assert_eq!(upstream.only_one().body, ok);
    sidecar
        .post(ROUTE, &nested(128))
        .await
        .expect_error(400, "invalid_json");
    upstream.assert_nothing();
}
