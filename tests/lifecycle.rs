//! The sidecar's life over real sockets: probes, draining on shutdown,
//! in-flight requests surviving it, the listener closing, and /metrics
//! counting what happened.

mod support;

use std::time::{Duration, Instant};

use support::*;

const ROUTE: &str = "/webhooks/coolpopup";

/// Polls the admin `path` every 20 ms until it answers `want` (bounded 10 s).
async fn wait_for_admin_status(sidecar: &Sidecar, path: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = sidecar.admin_get(path).await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {status} after 10 s, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn probes_are_200_while_serving() {
    let (_upstream, sidecar) = world().await;
    let (status, body) = sidecar.admin_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sidecar.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    sidecar.stop().await;
}

#[tokio::test]
async fn draining_turns_readyz_503_while_the_listener_keeps_serving() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.server = "drain_delay = \"2s\"".to_owned();
    let mut sidecar = Sidecar::start(opts).await;
    assert_eq!(sidecar.admin_get("/readyz").await.0, 200);

    sidecar.begin_shutdown();
    wait_for_admin_status(&sidecar, "/readyz", 503).await;
    // Liveness stays green: a draining pod must not be restarted.
    assert_eq!(sidecar.admin_get("/healthz").await.0, 200);

    // Within drain_delay, a new connection is still accepted and served.
    let reply = sidecar.post(ROUTE, &body_of("popup.shown")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(upstream.only_one().all("x-webhook-event"), ["popup.shown"]);

    sidecar.stop().await;
}

#[tokio::test]
async fn in_flight_request_survives_shutdown() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes = vec![route("coolpopup", ROUTE, "/slow/800")];
    // Room for the upstream's 800 ms on a busy machine.
    opts.upstream_timeout = "4s";
    let mut sidecar = Sidecar::start(opts).await;

    let client = sidecar.client();
    let request = tokio::spawn(async move {
        client
            .post_signed_with(ROUTE, &body_of("popup.clicked"), SECRET)
            .await
    });
    // The request is now inside hookgate, waiting for the upstream.
    upstream.arrival().await;
    sidecar.begin_shutdown();

    let task = sidecar.task.take().expect("the sidecar task is running");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("hookgate did not stop within 30 s")
        .expect("hookgate's run task panicked");
    // `run` returned only after the in-flight request was answered: the
    // binary exits right after `run`, so nothing may be pending by then.
    // (The counter is recorded before the answer is written.)
    let text = sidecar.metrics.encode();
    assert!(
        text.contains(r#"hookgate_requests_total{route="coolpopup",outcome="forwarded"} 1"#),
        "run returned before the in-flight request was answered:\n{text}"
    );

    let reply = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("the in-flight request did not finish within 30 s")
        .expect("the request task panicked");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.body, "{\"ok\":true}",
        "the upstream's answer is passed on"
    );
}

#[tokio::test]
async fn listener_refuses_connections_after_shutdown() {
    let (_upstream, sidecar) = world().await;
    let addr = sidecar.addr;
    let trust = sidecar.trust();
    // Served before...
    assert!(connect_tls(addr, &trust).await.is_ok());
    sidecar.stop().await;
    // ...and not after: refused at TCP, or at worst no TLS handshake.
    let after = connect_tls(addr, &trust).await;
    assert!(
        after.is_err(),
        "a TLS connection was accepted after shutdown"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_outcome() {
    let (upstream, sidecar) = world().await;
    for event in ["popup.shown", "popup.closed"] {
        assert_eq!(sidecar.post(ROUTE, &body_of(event)).await.status, 200);
    }
    sidecar
        .post_signed_with(ROUTE, &body_of("popup.shown"), SECRET_OLD)
        .await
        .expect_error(401, "invalid_signature");
    sidecar
        .post("/webhooks/elsewhere", &body_of("popup.shown"))
        .await
        .expect_error(404, "not_found");
    assert_eq!(upstream.take().len(), 2);

    let (status, text) = sidecar.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let version = env!("CARGO_PKG_VERSION");
    for (series, want) in [
        (
            r#"hookgate_requests_total{route="coolpopup",outcome="forwarded"}"#.to_owned(),
            2.0,
        ),
        (
            r#"hookgate_requests_total{route="coolpopup",outcome="invalid_signature"}"#.to_owned(),
            1.0,
        ),
        (
            r#"hookgate_requests_total{route="-",outcome="not_found"}"#.to_owned(),
            1.0,
        ),
        (
            r#"hookgate_request_duration_seconds_count{route="coolpopup"}"#.to_owned(),
            3.0,
        ),
        (
            r#"hookgate_request_duration_seconds_count{route="-"}"#.to_owned(),
            1.0,
        ),
        (
            r#"hookgate_upstream_duration_seconds_count{route="coolpopup"}"#.to_owned(),
            2.0,
        ),
        (
            format!(r#"hookgate_build_info{{version="{version}"}}"#),
            1.0,
        ),
    ] {
        let got = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(series.as_str())
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert_eq!(got, Some(want), "{series} in\n{text}");
    }
    // A rejected request never reaches the upstream, so it is not timed there.
    assert!(
        !text.contains(r#"hookgate_upstream_duration_seconds_count{route="-"}"#),
        "{text}"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn get_and_head_pings_are_answered_locally_and_counted() {
    let (upstream, sidecar) = world().await;
    for method in ["GET", "HEAD"] {
        let reply = sidecar.send(Version::H1, method, ROUTE, b"", &[]).await;
        assert_eq!(reply.status, 200, "{method}: {:?}", reply.body);
    }
    upstream.assert_nothing();
    assert_eq!(
        sidecar
            .metric(r#"hookgate_requests_total{route="coolpopup",outcome="ping"}"#)
            .await,
        Some(2.0)
    );
    assert_eq!(
        sidecar
            .metric(r#"hookgate_requests_total{route="coolpopup",outcome="forwarded"}"#)
            .await,
        None,
        "nothing was forwarded"
    );
    sidecar.stop().await;
}

/// Waits (bounded) for the server to close a TLS connection; true if it did.
async fn closed_by_server(mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. HTTP/2 SETTINGS or GOAWAY frames
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn idle_connections_are_closed_after_idle_timeout() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    // header_read_timeout also bounds an idle HTTP/1.1 connection; make it
    // far longer than the 10 s bound below so only idle_timeout can act.
    opts.server = "idle_timeout = \"300ms\"\nheader_read_timeout = \"60s\"".to_owned();
    let sidecar = Sidecar::start(opts).await;
    for v in [Version::H1, Version::H2] {
        let tls = sidecar.connect(v).await;
        assert!(
            closed_by_server(tls).await,
            "{v:?}: idle connection left open"
        );
    }
    upstream.assert_nothing();
}

#[tokio::test]
async fn a_request_longer_than_idle_timeout_is_not_cut() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.server = "idle_timeout = \"200ms\"".to_owned();
    opts.routes = vec![route("slow", "/webhooks/slow", "/slow/700")];
    let sidecar = Sidecar::start(opts).await;
    for v in [Version::H1, Version::H2] {
        let body = body_of("popup.shown");
        let sig = sign(&body, SECRET);
        let reply = sidecar.post_signed(v, "/webhooks/slow", &body, &sig).await;
        assert_eq!(reply.status, 200, "{v:?}");
        upstream.only_one();
    }
}

#[tokio::test]
async fn tls_metrics_report_handshake_failures_expiry_and_open_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_upstream, sidecar) = world().await;
    assert_eq!(
        sidecar
            .metric("hookgate_tls_handshake_failures_total")
            .await,
        Some(0.0)
    );
    // Plaintext HTTP on the TLS port counts as a failed handshake.
    let mut tcp = tokio::net::TcpStream::connect(sidecar.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;
    assert!(sink.starts_with(b"HTTP/1.1 400"), "{sink:?}");
    drop(tcp);
    assert_eq!(
        sidecar
            .metric("hookgate_tls_handshake_failures_total")
            .await,
        Some(1.0)
    );
    // The certificate's notAfter, in Unix seconds, lies in the future.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expiry = sidecar
        .metric("hookgate_tls_cert_expiry_timestamp_seconds")
        .await
        .unwrap();
    assert!(expiry > now, "expiry {expiry} not after now {now}");
    // An open TLS connection is counted while it is open.
    let tls = sidecar.connect(Version::H2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sidecar.metric("hookgate_connections_open").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "connections_open never reached 1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tls);
}
