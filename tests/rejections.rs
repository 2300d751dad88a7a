//! Every rejection row of the spec's table, over real TLS sockets: the
//! status, the JSON error code, and that the upstream received nothing.

mod support;

use support::*;

const JSON: (&str, &str) = ("content-type", "application/json");

async fn post_with(sidecar: &Sidecar, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    sidecar.send(Version::H1, "POST", path, body, headers).await
}

#[tokio::test]
async fn unknown_path_is_404() {
    let (upstream, sidecar) = world().await;
    let reply = sidecar
        .post("/webhooks/nope", &body_of("popup.shown"))
        .await;
    reply.expect_error(404, "not_found");
    // Exact match: a trailing slash or a prefix is another path.
    sidecar
        .post("/webhooks/coolpopup/", &body_of("popup.shown"))
        .await
        .expect_error(404, "not_found");
    sidecar
        .post("/webhooks", &body_of("popup.shown"))
        .await
        .expect_error(404, "not_found");
    upstream.assert_nothing();
}

#[tokio::test]
async fn get_and_head_are_answered_locally() {
    let (upstream, sidecar) = world().await;
    for method in ["GET", "HEAD"] {
        let reply = sidecar
            .send(Version::H1, method, "/webhooks/coolpopup", b"", &[])
            .await;
        assert_eq!(reply.status, 200, "{method}");
        assert!(reply.headers.contains_key("x-request-id"));
    }
    upstream.assert_nothing();
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let (upstream, sidecar) = world().await;
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let body = body_of("popup.shown");
        let sig = sign(&body, SECRET);
        let reply = post_with_method(&sidecar, method, &body, &sig).await;
        reply.expect_error(405, "method_not_allowed");
        let allow = reply.headers["allow"].to_str().unwrap();
        assert!(allow.contains("POST"), "{method}: Allow {allow}");
    }
    upstream.assert_nothing();
}

async fn post_with_method(sidecar: &Sidecar, method: &str, body: &[u8], sig: &str) -> Reply {
    sidecar
        .send(
            Version::H1,
            method,
            "/webhooks/coolpopup",
            body,
            &[JSON, ("x-coolpopup-signature", sig)],
        )
        .await
}

#[tokio::test]
async fn oversized_body_is_413_by_content_length() {
    let (upstream, sidecar) = world().await;
    let mut body = body_of("popup.shown");
    body.splice(
        1..1,
        format!("\"padding\":\"{}\",", "x".repeat(70_000)).into_bytes(),
    );
    let reply = sidecar.post("/webhooks/coolpopup", &body).await;
    reply.expect_error(413, "payload_too_large");
    assert_eq!(
        reply.headers["connection"], "close",
        "the unread body ends the connection"
    );
    upstream.assert_nothing();
}

#[tokio::test]
async fn oversized_chunked_body_is_413_and_the_answer_arrives_intact() {
    let (upstream, sidecar) = world().await;
    // Chunked: no Content-Length to judge by, so the limit applies while streaming.
    let chunk = "x".repeat(16 * 1024);
    let mut raw = format!(
        "POST /webhooks/coolpopup HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         X-CoolPopup-Signature: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        "0".repeat(64)
    )
    .into_bytes();
    for _ in 0..6 {
        raw.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = sidecar.raw(&raw).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(text.contains("\"error\":\"payload_too_large\""), "{text}");
    upstream.assert_nothing();
}

#[tokio::test]
async fn content_type_must_be_json() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let sig = sign(&body, SECRET);
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonp",
    ] {
        let reply = post_with(
            &sidecar,
            "/webhooks/coolpopup",
            &body,
            &[("content-type", ct), ("x-coolpopup-signature", &sig)],
        )
        .await;
        reply.expect_error(415, "unsupported_media_type");
    }
    let reply = post_with(
        &sidecar,
        "/webhooks/coolpopup",
        &body,
        &[("x-coolpopup-signature", &sig)],
    )
    .await;
    reply.expect_error(415, "unsupported_media_type");
    upstream.assert_nothing();
    let reply = post_with(
        &sidecar,
        "/webhooks/coolpopup",
        &body,
        &[
            ("content-type", "Application/JSON; charset=utf-8"),
            ("x-coolpopup-signature", &sig),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "parameters and case are fine");
    upstream.only_one();
}

#[tokio::test]
async fn content_encoding_must_be_identity() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let sig = sign(&body, SECRET);
    let reply = post_with(
        &sidecar,
        "/webhooks/coolpopup",
        &body,
        &[
            JSON,
            ("content-encoding", "gzip"),
            ("x-coolpopup-signature", &sig),
        ],
    )
    .await;
    reply.expect_error(415, "unsupported_media_type");
    upstream.assert_nothing();
    let reply = post_with(
        &sidecar,
        "/webhooks/coolpopup",
        &body,
        &[
            JSON,
            ("content-encoding", "identity"),
            ("x-coolpopup-signature", &sig),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    upstream.only_one();
}

#[tokio::test]
async fn signature_problems_are_401() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.converted");
    let good = sign(&body, SECRET);
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("camp_abc123", "camp_abc124")
        .into_bytes();
    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        ("missing", body.clone(), vec![]),
        (
            "wrong secret",
            body.clone(),
            vec![("x-coolpopup-signature", sign(&body, b"not-the-secret"))],
        ),
        (
            "tampered body",
            tampered,
            vec![("x-coolpopup-signature", good.clone())],
        ),
        (
            "not hex",
            body.clone(),
            vec![("x-coolpopup-signature", "zz-not-hex".into())],
        ),
        (
            "truncated",
            body.clone(),
            vec![("x-coolpopup-signature", good[..62].to_owned())],
        ),
        (
            "doubled",
            body.clone(),
            vec![("x-coolpopup-signature", format!("{good}{good}"))],
        ),
        (
            "extra prefix",
            body.clone(),
            vec![("x-coolpopup-signature", format!("sha1={good}"))],
        ),
        (
            "inner space",
            body.clone(),
            vec![("x-coolpopup-signature", format!("sha256= {good}"))],
        ),
        (
            "repeated",
            body.clone(),
            vec![
                ("x-coolpopup-signature", good.clone()),
                ("x-coolpopup-signature", good.clone()),
            ],
        ),
    ];
    for (what, body, sigs) in cases {
        let mut headers: Vec<(&str, &str)> = vec![JSON];
        headers.extend(sigs.iter().map(|(k, v)| (*k, v.as_str())));
        let reply = post_with(&sidecar, "/webhooks/coolpopup", &body, &headers).await;
        assert_eq!(reply.status, 401, "{what}");
        assert_eq!(reply.error(), "invalid_signature", "{what}");
        let text = String::from_utf8_lossy(&reply.body);
        assert!(
            !text.contains(&good),
            "{what}: the expected signature leaked"
        );
        assert!(
            !text.contains(std::str::from_utf8(SECRET).unwrap()),
            "{what}: the secret leaked"
        );
    }
    upstream.assert_nothing();
}

#[tokio::test]
async fn signature_is_checked_before_the_body_is_parsed() {
    let (upstream, sidecar) = world().await;
    // Garbage that is not JSON, unsigned: the answer is 401, not 400.
    let reply = post_with(
        &sidecar,
        "/webhooks/coolpopup",
        b"{not json",
        &[JSON, ("x-coolpopup-signature", &sign(b"other", SECRET))],
    )
    .await;
    reply.expect_error(401, "invalid_signature");
    upstream.assert_nothing();
}

#[tokio::test]
async fn invalid_json_is_400() {
    let (upstream, sidecar) = world().await;
    let bodies: [&[u8]; 6] = [
        b"{\"event\": \"popup.shown\", ",
        b"{\"event\":\"popup.shown\",\"event\":\"popup.closed\"}",
        b"{\"a\":\"\xff\xfe\"}",
        b"{\"a\":\"\\ud800\"}",
        b"{} {}",
        b"",
    ];
    for body in bodies {
        let reply = sidecar.post("/webhooks/coolpopup", body).await;
        assert_eq!(reply.status, 400, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(reply.error(), "invalid_json");
    }
    let deep = vec![b'['; 100_000];
    let reply = sidecar.post("/webhooks/coolpopup", &deep[..60_000]).await;
    reply.expect_error(400, "invalid_json");
    upstream.assert_nothing();
}

#[tokio::test]
async fn schema_violations_are_422_with_every_path() {
    let (upstream, sidecar) = world().await;
    let body = br#"{"event":"popup.converted","campaign_id":"","campaign_name":"x","timestamp":"yesterday","page_url":"not a url","visitor":{"email":"nope","fields":{"ok":"1","bad":{"nested":true}}}}"#;
    let reply = sidecar.post("/webhooks/coolpopup", body).await;
    reply.expect_error(422, "invalid_payload");
    let json = reply.json();
    let paths: Vec<&str> = json["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/campaign_id",
            "/timestamp",
            "/page_url",
            "/visitor/email",
            "/visitor/fields/bad"
        ]
    );
    let text = String::from_utf8_lossy(&reply.body);
    assert!(!text.contains("nope"), "the visitor's value is not echoed");
    // A missing field is reported at its own path.
    let missing = br#"{"event":"popup.converted","campaign_id":"c","campaign_name":"n","timestamp":"2026-04-26T12:00:00Z","page_url":"https://a.example/"}"#;
    let reply = sidecar.post("/webhooks/coolpopup", missing).await;
    reply.expect_error(422, "invalid_payload");
    assert_eq!(reply.json()["details"][0]["path"], "/visitor");
    // Not an object.
    sidecar
        .post("/webhooks/coolpopup", b"[1,2]")
        .await
        .expect_error(422, "invalid_payload");
    // An event that is not a string is malformed, not unknown.
    for event in ["42", "null"] {
        let body = format!(r#"{{"event":{event},"campaign_id":"c"}}"#);
        sidecar
            .post("/webhooks/coolpopup", body.as_bytes())
            .await
            .expect_error(422, "invalid_payload");
    }
    upstream.assert_nothing();
}

#[tokio::test]
async fn event_not_enabled_on_route_is_422() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes = vec![
        route("leads", "/webhooks/leads", "/hooks/leads").with("events = [\"popup.converted\"]"),
    ];
    let sidecar = Sidecar::start(opts).await;
    sidecar
        .post("/webhooks/leads", &body_of("popup.shown"))
        .await
        .expect_error(422, "event_not_allowed");
    upstream.assert_nothing();
    assert_eq!(
        sidecar
            .post("/webhooks/leads", &body_of("popup.converted"))
            .await
            .status,
        200
    );
    assert_eq!(upstream.only_one().path, "/hooks/leads");
}

#[tokio::test]
async fn rejections_over_http2_too() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    let reply = sidecar
        .send(
            Version::H2,
            "POST",
            "/webhooks/coolpopup",
            &body,
            &[JSON, ("x-coolpopup-signature", &sign(&body, b"wrong"))],
        )
        .await;
    reply.expect_error(401, "invalid_signature");
    let mut big = body_of("popup.shown");
    big.splice(
        1..1,
        format!("\"p\":\"{}\",", "x".repeat(70_000)).into_bytes(),
    );
    let reply = sidecar
        .send(
            Version::H2,
            "POST",
            "/webhooks/coolpopup",
            &big,
            &[JSON, ("x-coolpopup-signature", &sign(&big, SECRET))],
        )
        .await;
    reply.expect_error(413, "payload_too_large");
    upstream.assert_nothing();
}

#[tokio::test]
async fn plaintext_http_on_the_tls_port_gets_https_required() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, sidecar) = world().await;
    let mut tcp = tokio::net::TcpStream::connect(sidecar.addr).await.unwrap();
    tcp.write_all(
        b"POST /webhooks/coolpopup HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut out),
    )
    .await
    .expect("the connection is closed after the answer")
    .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.to_lowercase().contains("https"), "{text}");
    upstream.assert_nothing();
}

#[tokio::test]
async fn tls_1_3_floor_refuses_tls_1_2_clients() {
    use rustls_pki_types::pem::PemObject;
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    let tls = make_tls();
    let pem = tls.cert_pem.clone();
    opts.tls = Some(tls);
    opts.tls_extra = "min_version = \"1.3\"".to_owned();
    let sidecar = Sidecar::start(opts).await;
    let connect = |versions: &'static [&'static rustls::SupportedProtocolVersion]| {
        let pem = pem.clone();
        let addr = sidecar.addr;
        async move {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let config = rustls::ClientConfig::builder_with_provider(
                rustls::crypto::ring::default_provider().into(),
            )
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(
                    rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .map(|s| s.get_ref().1.protocol_version())
        }
    };
    static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    assert!(
        connect(&TLS12_ONLY).await.is_err(),
        "TLS 1.2 must be refused"
    );
    assert_eq!(
        connect(&TLS13_ONLY).await.unwrap(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn request_head_over_16_kib_is_431() {
    let (upstream, sidecar) = world().await;
    let big = "x".repeat(17 * 1024);
    for v in [Version::H1, Version::H2] {
        let reply = sidecar
            .send(v, "GET", "/webhooks/coolpopup", b"", &[("x-big", &big)])
            .await;
        assert_eq!(reply.status, 431, "{v:?}");
    }
    let ok = "x".repeat(8 * 1024);
    let reply = sidecar
        .send(
            Version::H1,
            "GET",
            "/webhooks/coolpopup",
            b"",
            &[("x-big", &ok)],
        )
        .await;
    assert_eq!(reply.status, 200, "8 KiB of headers is fine");
    upstream.assert_nothing();
}

#[tokio::test]
async fn a_bodiless_early_rejection_keeps_the_connection_alive() {
    let (upstream, sidecar) = world().await;
    let reply = sidecar.send(Version::H1, "GET", "/nope", b"", &[]).await;
    reply.expect_error(404, "not_found");
    assert!(
        !reply.headers.contains_key("connection"),
        "{:?}",
        reply.headers
    );
    let reply = sidecar
        .send(Version::H1, "DELETE", "/webhooks/coolpopup", b"", &[])
        .await;
    reply.expect_error(405, "method_not_allowed");
    assert!(
        !reply.headers.contains_key("connection"),
        "{:?}",
        reply.headers
    );
    upstream.assert_nothing();
}
