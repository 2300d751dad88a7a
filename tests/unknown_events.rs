//! Test pings and events hookgate does not know (SPEC, second part): an
//! authentic JSON object whose `event` is absent or none of the four names
//! is acknowledged, forwarded or rejected as the route's `unknown_events`
//! says; schema leniency (`null` is absent) and `campaign_id` limits.

mod support;

use support::*;

/// Bodies the provider's undocumented test ping might have.
fn pings() -> Vec<Vec<u8>> {
    let shown = body_of("popup.shown");
    let exploded = String::from_utf8_lossy(&shown).replace("popup.shown", "popup.exploded");
    vec![
        br#"{"event":"ping"}"#.to_vec(),
        b"{}".to_vec(),
        br#"{"event":"test","nested":{"a":[1,2.5]}}"#.to_vec(),
        exploded.into_bytes(),
    ]
}

#[tokio::test]
async fn test_ping_is_acknowledged_and_not_forwarded() {
    let (upstream, sidecar) = world().await;
    for body in pings() {
        let reply = sidecar.post("/webhooks/coolpopup", &body).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.json()["status"], "acknowledged");
        assert!(reply.headers.contains_key("x-request-id"));
    }
    upstream.assert_nothing();
    assert_eq!(
        sidecar
            .metric(r#"hookgate_requests_total{route="coolpopup",outcome="acknowledged"}"#)
            .await,
        Some(4.0)
    );
}

#[tokio::test]
async fn unsigned_or_wrongly_signed_ping_is_still_401() {
    let (upstream, sidecar) = world().await;
    let body = br#"{"event":"ping"}"#;
    let reply = sidecar
        .post_signed(Version::H1, "/webhooks/coolpopup", body, &"0".repeat(64))
        .await;
    reply.expect_error(401, "invalid_signature");
    let reply = sidecar
        .client()
        .post_signed_with("/webhooks/coolpopup", body, SECRET_OLD)
        .await;
    reply.expect_error(401, "invalid_signature");
    upstream.assert_nothing();
}

#[tokio::test]
async fn forward_route_passes_unknown_events_with_their_name() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes =
        vec![route("fwd", "/webhooks/fwd", "/hooks/fwd").with("unknown_events = \"forward\"")];
    let sidecar = Sidecar::start(opts).await;
    for v in [Version::H1, Version::H2] {
        let body = b"{\t\"event\" : \"popup.hovered\", \"campaign_id\": \"camp_9\"}\r\n";
        let reply = sidecar
            .post_signed(v, "/webhooks/fwd", body, &sign(body, SECRET))
            .await;
        assert_eq!(reply.status, 200, "{v:?}: {:?}", reply.body);
        let got = upstream.only_one();
        assert_eq!(got.body, &body[..], "exact bytes");
        assert_eq!(got.all("x-webhook-event"), ["popup.hovered"]);
        assert_eq!(got.all("x-webhook-campaign-id"), ["camp_9"]);
        assert_eq!(got.all("x-webhook-verified"), ["true"]);
        assert_eq!(got.all("x-webhook-route"), ["fwd"]);
    }
    // A name that cannot be a header token, an over-long one, none at all,
    // and a campaign_id outside the limits: no such header.
    for body in [
        br#"{"event":"with space","campaign_id":" "}"#.to_vec(),
        format!(r#"{{"event":"{}"}}"#, "e".repeat(65)).into_bytes(),
        b"{}".to_vec(),
    ] {
        let reply = sidecar.post("/webhooks/fwd", &body).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let got = upstream.only_one();
        assert_eq!(got.body, body);
        assert!(got.all("x-webhook-event").is_empty(), "{body:?}");
        assert!(got.all("x-webhook-campaign-id").is_empty(), "{body:?}");
    }
    // A known event that breaks the schema is still refused.
    let bad = String::from_utf8(body_of("popup.shown"))
        .unwrap()
        .replace("https://yoursite.com/products/summer-sale", "not a url");
    sidecar
        .post("/webhooks/fwd", bad.as_bytes())
        .await
        .expect_error(422, "invalid_payload");
    upstream.assert_nothing();
}

#[tokio::test]
async fn reject_route_refuses_unknown_events_as_before() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes =
        vec![route("strict", "/webhooks/strict", "/hooks/s").with("unknown_events = \"reject\"")];
    let sidecar = Sidecar::start(opts).await;
    for body in pings() {
        let reply = sidecar.post("/webhooks/strict", &body).await;
        reply.expect_error(422, "invalid_payload");
        let paths: Vec<String> = reply.json()["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["path"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(paths[0], "/event", "{paths:?}");
    }
    upstream.assert_nothing();
}

#[tokio::test]
async fn null_optional_fields_are_absent() {
    let (upstream, sidecar) = world().await;
    let shown = String::from_utf8(body_of("popup.shown")).unwrap();
    let with_visitor = |v: &str| shown.replacen('{', &format!("{{\"visitor\":{v},"), 1);
    for visitor in ["null", r#"{"email":null,"fields":null}"#] {
        let body = with_visitor(visitor);
        let reply = sidecar.post("/webhooks/coolpopup", body.as_bytes()).await;
        assert_eq!(reply.status, 200, "{visitor}: {:?}", reply.body);
        assert_eq!(upstream.only_one().body, body.as_bytes());
    }
    let converted = String::from_utf8(body_of("popup.converted")).unwrap();
    let nulled = converted.replace(
        r#""email":"jane@example.com","fields""#,
        r#""email":null,"fields""#,
    );
    assert_ne!(nulled, converted, "test bug: nothing replaced");
    let reply = sidecar.post("/webhooks/coolpopup", nulled.as_bytes()).await;
    reply.expect_error(422, "invalid_payload");
    assert_eq!(reply.json()["details"][0]["path"], "/visitor/email");
    upstream.assert_nothing();
}

#[tokio::test]
async fn campaign_id_must_fit_a_header() {
    let (upstream, sidecar) = world().await;
    let shown = String::from_utf8(body_of("popup.shown")).unwrap();
    for bad in [" ".to_owned(), "x".repeat(5000), "a\\u0085b".to_owned()] {
        let body = shown.replace("camp_abc123", &bad);
        let reply = sidecar.post("/webhooks/coolpopup", body.as_bytes()).await;
        reply.expect_error(422, "invalid_payload");
        assert_eq!(reply.json()["details"][0]["path"], "/campaign_id");
    }
    upstream.assert_nothing();
    let body = shown.replace("camp_abc123", &"c".repeat(256));
    assert_eq!(
        sidecar
            .post("/webhooks/coolpopup", body.as_bytes())
            .await
            .status,
        200
    );
    assert_eq!(
        upstream.only_one().all("x-webhook-campaign-id"),
        ["c".repeat(256)]
    );
}
