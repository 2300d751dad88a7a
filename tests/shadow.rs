//! Shadow mode: every check runs, failures are forwarded anyway but marked,
//! and outcomes are counted with `shadow="true"`; enforcing routes are
//! untouched.

mod support;

use support::*;

async fn shadow_world() -> (Upstream, Sidecar) {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes
        .push(route("trial", "/webhooks/trial", "/hooks/trial").with("mode = \"shadow\""));
    let sidecar = Sidecar::start(opts).await;
    (upstream, sidecar)
}

#[tokio::test]
async fn shadow_route_forwards_a_bad_signature_marked_unverified() {
    let (upstream, sidecar) = shadow_world().await;
    let body = body_of("popup.converted");
    let sig = sign(&body, b"not-the-secret");
    let reply = sidecar
        .post_signed(Version::H1, "/webhooks/trial", &body, &sig)
        .await;
    assert_eq!(
        reply.status, 200,
        "the app's answer is passed on: {:?}",
        reply.body
    );
    let up = upstream.only_one();
    assert_eq!(up.body, body);
    assert_eq!(up.all("x-webhook-verified"), ["false"]);
    assert_eq!(up.all("x-webhook-verdict"), ["invalid_signature"]);
    assert!(
        up.all("x-webhook-event").is_empty(),
        "nothing is claimed about an unverified body"
    );
    assert!(up.all("x-coolpopup-signature").is_empty());
    assert_eq!(
        sidecar.metric("hookgate_requests_total{route=\"trial\",outcome=\"invalid_signature\",shadow=\"true\"}").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn shadow_route_marks_passing_requests_verified() {
    let (upstream, sidecar) = shadow_world().await;
    let reply = sidecar
        .post("/webhooks/trial", &body_of("popup.clicked"))
        .await;
    assert_eq!(reply.status, 200);
    let up = upstream.only_one();
    assert_eq!(up.all("x-webhook-verified"), ["true"]);
    assert_eq!(up.all("x-webhook-event"), ["popup.clicked"]);
    assert!(up.all("x-webhook-verdict").is_empty());
    assert_eq!(
        sidecar
            .metric(
                "hookgate_requests_total{route=\"trial\",outcome=\"forwarded\",shadow=\"true\"}"
            )
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn shadow_verdicts_cover_json_schema_and_media_type() {
    let (upstream, sidecar) = shadow_world().await;
    let cases: [(&[u8], &str, &str); 3] = [
        (b"{not json", "application/json", "invalid_json"),
        (
            br#"{"event":"popup.converted"}"#,
            "application/json",
            "invalid_payload",
        ),
        (b"{}", "text/plain", "unsupported_media_type"),
    ];
    for (body, ct, verdict) in cases {
        let sig = sign(body, SECRET);
        let reply = sidecar
            .send(
                Version::H1,
                "POST",
                "/webhooks/trial",
                body,
                &[("content-type", ct), ("x-coolpopup-signature", &sig)],
            )
            .await;
        assert_eq!(reply.status, 200, "{verdict}");
        let up = upstream.only_one();
        assert_eq!(up.all("x-webhook-verdict"), [verdict]);
        assert_eq!(up.all("x-webhook-verified"), ["false"]);
    }
}

#[tokio::test]
async fn shadow_route_still_enforces_method_and_size() {
    let (upstream, sidecar) = shadow_world().await;
    let mut big = body_of("popup.shown");
    big.splice(
        1..1,
        format!("\"p\":\"{}\",", "x".repeat(70_000)).into_bytes(),
    );
    sidecar
        .post("/webhooks/trial", &big)
        .await
        .expect_error(413, "payload_too_large");
    let body = body_of("popup.shown");
    let reply = sidecar
        .send(
            Version::H1,
            "PUT",
            "/webhooks/trial",
            &body,
            &[("content-type", "application/json")],
        )
        .await;
    reply.expect_error(405, "method_not_allowed");
    upstream.assert_nothing();
}

#[tokio::test]
async fn enforcing_route_beside_a_shadow_one_still_rejects() {
    let (upstream, sidecar) = shadow_world().await;
    let body = body_of("popup.shown");
    let sig = sign(&body, b"wrong");
    sidecar
        .post_signed(Version::H1, "/webhooks/coolpopup", &body, &sig)
        .await
        .expect_error(401, "invalid_signature");
    upstream.assert_nothing();
    assert_eq!(
        sidecar
            .metric("hookgate_requests_total{route=\"coolpopup\",outcome=\"invalid_signature\"}")
            .await,
        Some(1.0),
        "enforcing routes carry no shadow label"
    );
}
