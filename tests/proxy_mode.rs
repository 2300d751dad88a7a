//! TLS terminated in front of the pod: `[server.tls] enabled = false` serves
//! plain HTTP only to trusted proxies that say `X-Forwarded-Proto: https`;
//! a trusted proxy's `X-Forwarded-For` chain is kept with the peer appended.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns panic on a failed step"
)]

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::*;

async fn plain_sidecar(trusted: &str) -> (Upstream, Sidecar) {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.tls_extra = "enabled = false".to_owned();
    opts.server = format!("trusted_proxies = [{trusted:?}]");
    let sidecar = Sidecar::start(opts).await;
    (upstream, sidecar)
}

/// One plain HTTP/1.1 POST, signed, with extra headers.
async fn plain_post(sidecar: &Sidecar, extra: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let tcp = tokio::net::TcpStream::connect(sidecar.addr).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = body_of("popup.converted");
    let mut req = http::Request::post("/webhooks/coolpopup")
        .header("host", "hooks.example.com")
        .header("content-type", "application/json")
        .header("x-coolpopup-signature", sign(&body, SECRET));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = s
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn trusted_proxy_saying_https_is_served_and_its_chain_kept() {
    let (upstream, sidecar) = plain_sidecar("127.0.0.0/8").await;
    let (status, _) = plain_post(
        &sidecar,
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "203.0.113.7, 198.51.100.2"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let up = upstream.only_one();
    assert_eq!(
        up.all("x-forwarded-for"),
        ["203.0.113.7, 198.51.100.2, 127.0.0.1"]
    );
    assert_eq!(up.all("x-forwarded-proto"), ["https"]);
    assert_eq!(up.all("x-webhook-verified"), ["true"]);
}

#[tokio::test]
async fn trusted_proxy_without_forwarded_proto_https_is_403() {
    let (upstream, sidecar) = plain_sidecar("127.0.0.0/8").await;
    for extra in [vec![], vec![("x-forwarded-proto", "http")]] {
        let (status, json) = plain_post(&sidecar, &extra).await;
        assert_eq!(status, 403, "{extra:?}");
        assert_eq!(json["error"], "https_required");
    }
    upstream.assert_nothing();
}

#[tokio::test]
async fn untrusted_peer_gets_403_even_claiming_https() {
    let (upstream, sidecar) = plain_sidecar("10.0.0.0/8").await;
    let (status, json) = plain_post(&sidecar, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(status, 403);
    assert_eq!(json["error"], "https_required");
    upstream.assert_nothing();
    assert_eq!(
        sidecar
            .metric("hookgate_requests_total{route=\"coolpopup\",outcome=\"https_required\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn with_tls_an_untrusted_peers_forwarded_for_is_replaced_and_a_trusted_ones_kept() {
    for (trusted, want) in [
        ("10.0.0.0/8", "127.0.0.1"),
        ("127.0.0.1/32", "192.0.2.1, 127.0.0.1"),
    ] {
        let upstream = Upstream::start().await;
        let mut opts = Options::new(upstream.url());
        opts.server = format!("trusted_proxies = [{trusted:?}]");
        let sidecar = Sidecar::start(opts).await;
        let body = body_of("popup.shown");
        let sig = sign(&body, SECRET);
        let reply = sidecar
            .send(
                Version::H1,
                "POST",
                "/webhooks/coolpopup",
                &body,
                &[
                    ("content-type", "application/json"),
                    ("x-coolpopup-signature", &sig),
                    ("x-forwarded-for", "192.0.2.1"),
                ],
            )
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            upstream.only_one().all("x-forwarded-for"),
            [want],
            "trusted {trusted}"
        );
    }
}
