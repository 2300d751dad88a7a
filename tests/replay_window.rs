//! The replay window (SPEC, second part): a known event's signed
//! `timestamp` must be within `max_event_age` of now (default 72 h, "0s"
//! off) and not later than now plus `max_clock_skew` (default 5 min).

mod support;

use support::*;

/// A `popup.shown` body whose timestamp is now plus `offset_secs`.
#[expect(
    clippy::unwrap_used,
    reason = "a test fixture: formatting now cannot fail"
)]
fn shown_at(offset_secs: i64) -> Vec<u8> {
    let at = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        + time::Duration::seconds(offset_secs);
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    String::from_utf8(body_of("popup.shown"))
        .unwrap()
        .replace(fixture_time(), &at)
        .into_bytes()
}

const HOUR: i64 = 3600;

#[tokio::test]
async fn default_window_refuses_old_and_future_events() {
    let (upstream, sidecar) = world().await;
    for (offset, status, code) in [
        (-73 * HOUR, 422, Some("event_too_old")),
        (-71 * HOUR, 200, None),
        (6 * 60, 422, Some("event_from_future")),
        (4 * 60, 200, None),
    ] {
        for v in [Version::H1, Version::H2] {
            let body = shown_at(offset);
            let reply = sidecar
                .post_signed(v, "/webhooks/coolpopup", &body, &sign(&body, SECRET))
                .await;
            match code {
                Some(code) => {
                    reply.expect_error(status, code);
                    upstream.assert_nothing();
                }
                None => {
                    assert_eq!(reply.status, 200, "{offset}: {:?}", reply.body);
                    assert_eq!(upstream.only_one().body, body);
                }
            }
        }
    }
    assert_eq!(
        sidecar
            .metric(r#"hookgate_requests_total{route="coolpopup",outcome="event_too_old"}"#)
            .await,
        Some(2.0)
    );
    assert_eq!(
        sidecar
            .metric(r#"hookgate_requests_total{route="coolpopup",outcome="event_from_future"}"#)
            .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn window_is_per_route_and_can_be_turned_off() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes = vec![
        route("short", "/webhooks/short", "/hooks/short")
            .with("max_event_age = \"10m\"\nmax_clock_skew = \"30s\""),
        route("off", "/webhooks/off", "/hooks/off").with("max_event_age = \"0s\""),
    ];
    let sidecar = Sidecar::start(opts).await;
    sidecar
        .post("/webhooks/short", &shown_at(-11 * 60))
        .await
        .expect_error(422, "event_too_old");
    sidecar
        .post("/webhooks/short", &shown_at(60))
        .await
        .expect_error(422, "event_from_future");
    upstream.assert_nothing();
    assert_eq!(
        sidecar
            .post("/webhooks/short", &shown_at(-9 * 60))
            .await
            .status,
        200
    );
    upstream.only_one();
    let year_old = shown_at(-365 * 24 * HOUR);
    assert_eq!(sidecar.post("/webhooks/off", &year_old).await.status, 200);
    assert_eq!(upstream.only_one().body, year_old);
}

#[tokio::test]
async fn unknown_events_are_outside_the_window() {
    let (upstream, sidecar) = world().await;
    let ping = br#"{"event":"ping","timestamp":"2020-01-01T00:00:00Z"}"#;
    let reply = sidecar.post("/webhooks/coolpopup", ping).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["status"], "acknowledged");
    upstream.assert_nothing();
}
