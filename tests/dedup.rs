//! Duplicates in direct delivery (SPEC, second part, "Duplicates"): a
//! `popup.converted` the app took (2xx) is remembered for the route's
//! window; the provider's retry of it is 200 `{"status":"duplicate"}` and
//! never reaches the app. Other events are not deduplicated by default.

mod support;

use std::time::Duration;

use support::*;

/// A `popup.converted` body unique to `tag` (the key is over the exact bytes).
fn converted(tag: &str) -> Vec<u8> {
    String::from_utf8_lossy(&body_of("popup.converted"))
        .replace("camp_abc123", &format!("camp_{tag}"))
        .into_bytes()
}

const PATH: &str = "/webhooks/coolpopup";

#[tokio::test]
async fn a_resent_conversion_is_a_duplicate_and_not_forwarded() {
    let (upstream, sidecar) = world().await;
    let body = converted("resent");
    let first = sidecar.post(PATH, &body).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(upstream.only_one().body, body);
    for v in [Version::H1, Version::H2] {
        let again = sidecar
            .post_signed(v, PATH, &body, &sign(&body, SECRET))
            .await;
        assert_eq!(again.status, 200, "{:?}", again.body);
        assert_eq!(again.json()["status"], "duplicate");
        upstream.assert_nothing();
    }
    // The same event in other bytes is another key.
    let respaced = String::from_utf8_lossy(&body)
        .replacen(",\"", ", \"", 1)
        .into_bytes();
    assert_eq!(sidecar.post(PATH, &respaced).await.status, 200);
    assert_eq!(upstream.only_one().body, respaced);
    assert_eq!(
        sidecar
            .metric(r#"hookgate_duplicates_total{route="coolpopup",event="popup.converted"}"#)
            .await,
        Some(2.0)
    );
    assert_eq!(
        sidecar
            .metric(r#"hookgate_requests_total{route="coolpopup",outcome="duplicate"}"#)
            .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn identical_shown_events_are_both_forwarded_by_default() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.shown");
    for _ in 0..2 {
        assert_eq!(sidecar.post(PATH, &body).await.status, 200);
        assert_eq!(upstream.only_one().body, body);
    }
}

#[tokio::test]
async fn only_a_2xx_is_remembered() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes = vec![
        route("failing", "/webhooks/failing", "/status/503"),
        route("ok", "/webhooks/ok", "/hooks/ok"),
    ];
    let sidecar = Sidecar::start(opts).await;
    let body = converted("failing");
    for _ in 0..2 {
        let r = sidecar.post("/webhooks/failing", &body).await;
        assert_eq!(
            r.status, 503,
            "the app's refusal is passed on, not remembered"
        );
        assert_eq!(upstream.only_one().body, body);
    }
    // Keys are per route: the same bytes on another route are forwarded.
    assert_eq!(sidecar.post("/webhooks/ok", &body).await.status, 200);
    assert_eq!(upstream.only_one().body, body);
    assert_eq!(
        sidecar.post("/webhooks/ok", &body).await.json()["status"],
        "duplicate"
    );
    upstream.assert_nothing();
}

#[tokio::test]
async fn dedup_events_and_window_choose_what_is_deduplicated() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes = vec![
        route("shown", "/webhooks/shown", "/hooks/shown").with(r#"dedup_events = ["popup.shown"]"#),
        route("off", "/webhooks/off", "/hooks/off").with(r#"dedup_window = "0s""#),
    ];
    let sidecar = Sidecar::start(opts).await;
    let shown = body_of("popup.shown");
    assert_eq!(sidecar.post("/webhooks/shown", &shown).await.status, 200);
    assert_eq!(
        sidecar.post("/webhooks/shown", &shown).await.json()["status"],
        "duplicate"
    );
    assert_eq!(upstream.take().len(), 1);
    let conv = converted("notlisted");
    for path in ["/webhooks/shown", "/webhooks/off"] {
        for _ in 0..2 {
            assert_eq!(sidecar.post(path, &conv).await.status, 200);
            assert_eq!(upstream.only_one().body, conv, "{path}");
        }
    }
}

#[tokio::test]
async fn a_late_2xx_after_the_504_is_remembered() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    // The app takes 1.5 s; hookgate answers 504 at 1 s and keeps waiting.
    opts.routes = vec![route("slow", "/webhooks/slow", "/slow/1500")];
    opts.upstream_timeout = "1s";
    let sidecar = Sidecar::start(opts).await;
    let body = converted("late");
    let first = sidecar.post("/webhooks/slow", &body).await;
    first.expect_error(504, "upstream_timeout");
    assert_eq!(upstream.only_one().body, body);
    // The app's late 200 is counted once it arrived.
    let series = r#"hookgate_late_answers_total{route="slow"}"#;
    let mut waited = 0;
    while sidecar.metric(series).await != Some(1.0) {
        assert!(waited < 100, "the late answer was not recorded within 10 s");
        waited += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The provider's retry of the event the slow app did take.
    let retry = sidecar.post("/webhooks/slow", &body).await;
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    assert_eq!(retry.json()["status"], "duplicate");
    upstream.assert_nothing();
}

#[tokio::test]
async fn a_copy_in_flight_waits_for_the_first_answer() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes = vec![route("slowish", "/webhooks/slowish", "/slow/400")];
    opts.upstream_timeout = "3s";
    let sidecar = Sidecar::start(opts).await;
    let body = converted("inflight");
    let first = sidecar.post("/webhooks/slowish", &body);
    let second = async {
        // The second copy goes out once the first is at the app.
        upstream.arrival().await;
        sidecar.post("/webhooks/slowish", &body).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.json()["status"], "duplicate");
    assert_eq!(upstream.take().len(), 1, "the app got the event once");
}

#[tokio::test]
async fn max_keys_bounds_memory_and_counts_evictions() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.extra = "[dedup]\nmax_keys = 1\n".to_owned();
    let sidecar = Sidecar::start(opts).await;
    let (a, b) = (converted("a"), converted("b"));
    for body in [&a, &b, &a] {
        assert_eq!(sidecar.post(PATH, body).await.status, 200);
        assert_eq!(&upstream.only_one().body, body, "a was forgotten for b");
    }
    assert_eq!(
        sidecar.metric("hookgate_dedup_evictions_total").await,
        Some(2.0)
    );
}

#[tokio::test]
async fn a_window_shorter_than_the_replay_window_is_a_config_error() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.routes = vec![route("r", "/webhooks/r", "/hooks/r").with(r#"dedup_window = "1h""#)];
    let err = Sidecar::try_start(opts)
        .await
        .err()
        .expect("must not start");
    assert!(err.contains("routes[0].dedup_window"), "{err}");
}
