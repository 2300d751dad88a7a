//! Authentic events reach the upstream byte for byte, with normalized
//! headers, over HTTP/1.1 and HTTP/2; upstream answers map as the spec says.

mod support;

use support::*;

#[tokio::test]
async fn forwards_exact_bytes() {
    let (upstream, sidecar) = world().await;
    // A layout no serializer reproduces: tabs, " : ", an escaped non-ASCII
    // character, a trailing CRLF.
    let body = format!(
        "{{\t\"event\" : \"popup.converted\",\"campaign_id\":\"camp_abc123\",\"campaign_name\" : \"\\u00e9t\\u00e9\",\n\"timestamp\":\"{}\",\"visitor\":{{\"email\":\"jane@example.com\",\"fields\":{{}}}},\"page_url\":\"https://yoursite.com/x\"}}\r\n",
        fixture_time()
    );
    let body = body.as_bytes();
    let reply = sidecar.post("/webhooks/coolpopup", body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let up = upstream.only_one();
    assert_eq!(&up.body[..], body);
    assert_eq!(up.method, "POST");
    assert_eq!(up.path, "/hooks/popup");
    assert_eq!(up.all("content-length"), [body.len().to_string()]);
    assert_eq!(
        reply.body, "{\"ok\":true}",
        "the upstream body is passed on"
    );
}

#[tokio::test]
async fn every_event_type_is_forwarded() {
    let (upstream, sidecar) = world().await;
    for event in [
        "popup.shown",
        "popup.clicked",
        "popup.converted",
        "popup.closed",
    ] {
        let reply = sidecar.post("/webhooks/coolpopup", &body_of(event)).await;
        assert_eq!(reply.status, 200, "{event}: {:?}", reply.body);
        assert_eq!(upstream.only_one().all("x-webhook-event"), [event]);
    }
}

#[tokio::test]
async fn headers_are_normalized() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.converted");
    let sig = sign(&body, SECRET);
    let reply = sidecar
        .send(
            Version::H1,
            "POST",
            "/webhooks/coolpopup",
            &body,
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("x-coolpopup-signature", &sig),
                ("user-agent", "CoolPopup-Webhooks/1.0"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("x-webhook-verified", "false"),
                ("x-webhook-event", "popup.shown"),
                ("x-webhook-admin", "1"),
                ("forwarded", "for=203.0.113.9"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "evil.example"),
                ("x-custom", "kept"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200);
    let up = upstream.only_one();
    let port = sidecar.addr.port();
    for (name, want) in [
        ("host", upstream.addr.to_string()),
        ("content-type", "application/json".to_owned()),
        ("x-forwarded-for", "127.0.0.1".to_owned()),
        ("x-forwarded-proto", "https".to_owned()),
        ("x-forwarded-host", format!("localhost:{port}")),
        ("x-webhook-verified", "true".to_owned()),
        ("x-webhook-route", "coolpopup".to_owned()),
        ("x-webhook-event", "popup.converted".to_owned()),
        ("x-webhook-campaign-id", "camp_abc123".to_owned()),
        ("user-agent", "CoolPopup-Webhooks/1.0".to_owned()),
        ("x-custom", "kept".to_owned()),
    ] {
        assert_eq!(up.all(name), [want], "{name}");
    }
    for gone in [
        "x-coolpopup-signature",
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "x-webhook-admin",
        "forwarded",
    ] {
        assert!(
            up.all(gone).is_empty(),
            "{gone} reached the upstream: {:?}",
            up.all(gone)
        );
    }
    let rid = up.all("x-request-id");
    assert_eq!(rid.len(), 1);
    assert_eq!(rid[0].len(), 32, "a fresh id");
    assert_eq!(
        reply.headers["x-request-id"],
        rid[0].as_str(),
        "returned to the caller"
    );
}

#[tokio::test]
async fn well_formed_request_id_is_kept_and_bad_one_replaced() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let sig = sign(&body, SECRET);
    for (sent, kept) in [("req-42.abc_DEF", true), ("no spaces allowed", false)] {
        let reply = sidecar
            .send(
                Version::H1,
                "POST",
                "/webhooks/coolpopup",
                &body,
                &[
                    ("content-type", "application/json"),
                    ("x-coolpopup-signature", &sig),
                    ("x-request-id", sent),
                ],
            )
            .await;
        let up = upstream.only_one();
        let got = &up.all("x-request-id")[0];
        assert_eq!(got == sent, kept, "{sent:?} -> {got:?}");
        assert_eq!(reply.headers["x-request-id"], got.as_str());
    }
}

#[tokio::test]
async fn query_string_is_forwarded() {
    let (upstream, sidecar) = world().await;
    let reply = sidecar
        .post(
            "/webhooks/coolpopup?tenant=7&x=a%20b",
            &body_of("popup.clicked"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.only_one().path, "/hooks/popup?tenant=7&x=a%20b");
}

#[tokio::test]
async fn http2_is_accepted_and_forwarded_as_http1() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.converted");
    let sig = sign(&body, SECRET);
    let reply = sidecar
        .post_signed(Version::H2, "/webhooks/coolpopup", &body, &sig)
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let up = upstream.only_one();
    assert_eq!(up.body, body);
    assert_eq!(up.version, http::Version::HTTP_11);
    assert_eq!(
        up.all("x-forwarded-host"),
        [format!("localhost:{}", sidecar.addr.port())],
        ":authority"
    );
    assert!(!reply.headers["x-request-id"].is_empty());
}

#[tokio::test]
async fn rotation_accepts_every_configured_secret() {
    let upstream = Upstream::start().await;
    let tls = make_tls();
    // The harness writes SECRET to <tls dir>/secret; add the previous one beside it.
    let primary = tls.dir.path().join("secret");
    let previous = tls.dir.path().join("previous");
    std::fs::write(&previous, SECRET_OLD).unwrap();
    let mut opts = Options::new(upstream.url());
    opts.routes = vec![
        route("coolpopup", "/webhooks/coolpopup", "/hooks/popup").with(&format!(
            "secret_files = [{:?}, {:?}]",
            primary.display().to_string(),
            previous.display().to_string()
        )),
    ];
    opts.tls = Some(tls);
    let sidecar = Sidecar::start(opts).await;
    let body = body_of("popup.clicked"); // not deduplicated: the same bytes go twice on purpose
    for secret in [SECRET, SECRET_OLD] {
        let sig = sign(&body, secret);
        let reply = sidecar
            .post_signed(Version::H1, "/webhooks/coolpopup", &body, &sig)
            .await;
        assert_eq!(reply.status, 200);
        upstream.only_one();
    }
    let sig = sign(&body, b"a third secret");
    let reply = sidecar
        .post_signed(Version::H1, "/webhooks/coolpopup", &body, &sig)
        .await;
    reply.expect_error(401, "invalid_signature");
    upstream.assert_nothing();
}

#[tokio::test]
async fn signature_encodings() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes
        .push(route("b64", "/webhooks/b64", "/hooks/b64").with("signature_encoding = \"base64\""));
    let sidecar = Sidecar::start(opts).await;
    let body = body_of("popup.shown");
    let hex_sig = sign(&body, SECRET);
    let raw = hex::decode(&hex_sig).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    let cases = [
        ("/webhooks/coolpopup", hex_sig.clone(), 200),
        ("/webhooks/coolpopup", hex_sig.to_uppercase(), 200),
        ("/webhooks/coolpopup", format!("sha256={hex_sig}"), 200),
        ("/webhooks/coolpopup", b64.clone(), 401),
        ("/webhooks/b64", b64.clone(), 200),
        ("/webhooks/b64", b64.trim_end_matches('=').to_owned(), 200),
        ("/webhooks/b64", hex_sig.clone(), 401),
    ];
    for (path, sig, want) in cases {
        let reply = sidecar.post_signed(Version::H1, path, &body, &sig).await;
        assert_eq!(reply.status, want, "{path} {sig}");
        if want == 200 {
            upstream.only_one();
        } else {
            upstream.assert_nothing();
        }
    }
}

#[tokio::test]
async fn upstream_2xx_becomes_200_and_errors_pass_through() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes = [201u16, 202, 204, 404, 500, 503]
        .iter()
        .map(|s| {
            let name: &'static str = Box::leak(format!("s{s}").into_boxed_str());
            let path: &'static str = Box::leak(format!("/webhooks/s{s}").into_boxed_str());
            route(name, path, &format!("/status/{s}"))
        })
        .collect();
    let sidecar = Sidecar::start(opts).await;
    for (code, want) in [
        (201, 200),
        (202, 200),
        (204, 200),
        (404, 404),
        (500, 500),
        (503, 503),
    ] {
        let reply = sidecar
            .post(&format!("/webhooks/s{code}"), &body_of("popup.shown"))
            .await;
        assert_eq!(reply.status, want, "upstream {code}");
        let up = upstream.only_one();
        assert_eq!(up.path, format!("/status/{code}"));
        if code != 204 {
            assert_eq!(
                reply.body, "{\"ok\":true}",
                "upstream body passed on for {code}"
            );
        }
        // The app's headers stay inside but for Content-Type and Retry-After.
        for inside in ["x-upstream", "server", "set-cookie", "location"] {
            assert!(
                !reply.headers.contains_key(inside),
                "{code}: {inside} leaked"
            );
        }
        if code != 204 {
            assert_eq!(reply.headers["content-type"], "application/json", "{code}");
        }
        assert_eq!(
            reply
                .headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            (code == 503).then_some("7"),
            "{code}: Retry-After"
        );
        assert!(reply.headers.contains_key("x-request-id"));
    }
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes = vec![route("slow", "/webhooks/slow", "/slow/3000")];
    opts.upstream_timeout = "600ms";
    let sidecar = Sidecar::start(opts).await;
    let reply = sidecar
        .post("/webhooks/slow", &body_of("popup.shown"))
        .await;
    reply.expect_error(504, "upstream_timeout");
    upstream.only_one();
}

#[tokio::test]
async fn dead_upstream_is_502() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sidecar = Sidecar::start(Options::new(format!("http://127.0.0.1:{port}"))).await;
    let reply = sidecar
        .post("/webhooks/coolpopup", &body_of("popup.shown"))
        .await;
    reply.expect_error(502, "upstream_unavailable");
}

#[tokio::test]
async fn keep_alive_connection_serves_many_requests() {
    use http_body_util::{BodyExt, Full};
    let (upstream, sidecar) = world().await;
    let stream = sidecar.connect(Version::H1).await;
    let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..5 {
        let body = body_of("popup.clicked");
        let req = http::Request::post("/webhooks/coolpopup")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("x-coolpopup-signature", sign(&body, SECRET))
            .body(Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(upstream.take().len(), 5);
}

/// What a [`raw_upstream`] saw, by connection number (1, 2, ...).
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Request(usize),
    /// hookgate closed the connection.
    Closed(usize),
}

/// An HTTP/1.1 app written on raw TCP, so the test controls when a
/// connection ends and what the answer's bytes are: it answers `answer` to
/// each request and, with `close_after_answer`, ends the connection right
/// after the first answer; otherwise it serves the next request on it.
// (clippy's allow-unwrap-in-tests does not reach into this async helper.)
#[allow(clippy::unwrap_used)]
async fn raw_upstream(
    close_after_answer: bool,
    answer: &'static [u8],
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for n in 1.. {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request head and its Content-Length body.
                    let body_start = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let got = tcp.read(&mut chunk).await.unwrap_or(0);
                        if got == 0 {
                            let _ = tx.send(Seen::Closed(n));
                            return;
                        }
                        buf.extend_from_slice(&chunk[..got]);
                    };
                    let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap();
                    while buf.len() < body_start + length {
                        let got = tcp.read(&mut chunk).await.unwrap();
                        assert!(got > 0, "body cut short");
                        buf.extend_from_slice(&chunk[..got]);
                    }
                    buf.drain(..body_start + length);
                    tx.send(Seen::Request(n)).unwrap();
                    tcp.write_all(answer).await.unwrap();
                    if close_after_answer {
                        return; // no `Connection: close`: the connection just ends
                    }
                }
            });
        }
    });
    (url, seen)
}

/// `200 ok` with a length and nothing about the connection.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// hookgate reads the app's answer however HTTP/1.1 frames it, over a real
/// socket: chunked (with an extension and a trailer) after an interim
/// `100 Continue`, and delimited by the connection's end (HTTP/1.0, no
/// length). Status, `Content-Type`, `Retry-After` and the body reach the
/// provider; a connection whose answer ran to its end is not reused, and
/// a chunked one is.
#[tokio::test]
async fn answers_framed_every_http1_way_reach_the_provider() {
    let (url, mut seen) = raw_upstream(
        false,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\nRetry-After: 9\r\nX-Internal: no\r\n\r\n7;ext=1\r\n{\"busy\"\r\n5\r\n:true\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .await;
    let sidecar = Sidecar::start(Options::new(url)).await;
    for _ in 0..2 {
        let reply = sidecar
            .post("/webhooks/coolpopup", &body_of("popup.shown"))
            .await;
        assert_eq!(reply.status, 503);
        assert_eq!(&reply.body[..], b"{\"busy\":true}");
        assert_eq!(reply.headers["retry-after"], "9");
        assert_eq!(reply.headers["content-type"], "application/json");
        assert!(reply.headers.get("x-internal").is_none());
        assert_eq!(seen.recv().await, Some(Seen::Request(1)), "chunked: reused");
    }

    let (url, mut seen) = raw_upstream(true, b"HTTP/1.0 200 OK\r\n\r\n{\"ok\":1}").await;
    let sidecar = Sidecar::start(Options::new(url)).await;
    for n in 1..=2 {
        let reply = sidecar
            .post("/webhooks/coolpopup", &body_of("popup.shown"))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(&reply.body[..], b"{\"ok\":1}");
        assert_eq!(
            seen.recv().await,
            Some(Seen::Request(n)),
            "to the end: not reused"
        );
    }
}

/// An answer that is not HTTP/1.1 hookgate can read is the app failing:
/// 502 `upstream_unavailable`, and the connection is not reused.
#[tokio::test]
async fn unreadable_answer_is_502() {
    let (url, mut seen) = raw_upstream(
        false,
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok!",
    )
    .await;
    let sidecar = Sidecar::start(Options::new(url)).await;
    for n in 1..=2 {
        let reply = sidecar
            .post("/webhooks/coolpopup", &body_of("popup.shown"))
            .await;
        reply.expect_error(502, "upstream_unavailable");
        let mut next = seen.recv().await;
        if next == Some(Seen::Closed(n - 1)) {
            next = seen.recv().await; // hookgate dropped the connection before
        }
        assert_eq!(next, Some(Seen::Request(n)), "a new connection each time");
    }
}

/// hookgate keeps upstream connections alive between requests. An app that
/// closes each connection right after answering (without saying
/// `Connection: close`) must not cost any request: a pooled connection the
/// app closed is skipped, or, if the close is noticed only when the next
/// request is handed to it, the request is sent again on a fresh one.
/// Every request is answered 200 and reaches the app exactly once.
#[tokio::test]
async fn upstream_closing_kept_alive_connections_loses_no_request() {
    let (url, mut seen) = raw_upstream(true, OK).await;
    let sidecar = Sidecar::start(Options::new(url)).await;
    for i in 0..20 {
        let reply = sidecar
            .post("/webhooks/coolpopup", &body_of("popup.clicked"))
            .await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.error());
    }
    let mut requests = Vec::new();
    while let Ok(event) = seen.try_recv() {
        if let Seen::Request(n) = event {
            requests.push(n);
        }
    }
    assert_eq!(requests.len(), 20, "each request reached the app once");
    requests.dedup();
    assert_eq!(requests.len(), 20, "each on its own connection");
}

/// Kept-alive upstream connections are reused, and one idle for
/// `upstream.pool_idle_timeout` is closed by hookgate; the next request
/// opens a new one.
#[tokio::test]
async fn idle_upstream_connections_are_reused_then_closed_after_pool_idle_timeout() {
    let (url, mut seen) = raw_upstream(false, OK).await;
    let mut opts = Options::new(url);
    opts.upstream_extra = "pool_idle_timeout = \"300ms\"\n".to_owned();
    let sidecar = Sidecar::start(opts).await;
    for _ in 0..3 {
        let reply = sidecar
            .post("/webhooks/coolpopup", &body_of("popup.shown"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.error());
        assert_eq!(seen.recv().await, Some(Seen::Request(1)), "reused");
    }
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), seen.recv())
        .await
        .expect("the idle connection was not closed within 10 s");
    assert_eq!(closed, Some(Seen::Closed(1)));
    let reply = sidecar
        .post("/webhooks/coolpopup", &body_of("popup.shown"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.error());
    assert_eq!(seen.recv().await, Some(Seen::Request(2)));
}

/// The protocol follows ALPN (RFC 9113 §3.2): a TLS client that offered no
/// ALPN, or `http/1.1`, speaks HTTP/1.1 and is served; an HTTP/2 preface
/// from it is not taken as HTTP/2 (and nothing reaches the app). Only ALPN
/// `h2` gets HTTP/2 (the `Version::H2` cases of the other tests).
#[tokio::test]
async fn protocol_follows_alpn() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let sig = sign(&body, SECRET);
    let mut request = format!(
        "POST /webhooks/coolpopup HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         X-CoolPopup-Signature: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let bound = std::time::Duration::from_secs(10);
    let read_all = |mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>| async move {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(bound, tls.read_to_end(&mut out)).await;
        out
    };

    let mut tls = sidecar.connect_alpn(&[]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    tls.write_all(&request).await.unwrap();
    let answer = read_all(tls).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 "), "no ALPN: {text}");
    upstream.only_one();

    // The HTTP/2 preface and an empty SETTINGS frame, without ALPN `h2`.
    let mut h2_attempt = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2_attempt.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    for alpn in [&[][..], &[&b"http/1.1"[..]][..]] {
        let mut tls = sidecar.connect_alpn(alpn).await;
        tls.write_all(&h2_attempt).await.unwrap();
        let answer = read_all(tls).await;
        // An HTTP/2 server's first frame is its SETTINGS (type 4 at byte 3).
        assert!(
            answer.get(3) != Some(&4) || answer.starts_with(b"HTTP/1.1 "),
            "ALPN {alpn:?}: answered as HTTP/2: {:?}",
            &answer[..answer.len().min(16)]
        );
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
            "ALPN {alpn:?}: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    upstream.assert_nothing();
}
