//! Queued delivery on the embedded SQLite store (SPEC, second part,
//! "Queued delivery"), over real sockets: 200 `queued` once stored, then
//! delivered by hookgate with `X-Webhook-Id/-Attempt/-Received-At`, retried
//! while the app is down, kept over a restart, and 503
//! `store_unavailable` while the store cannot be opened.

mod support;

use std::path::Path;

use support::*;

const PATH: &str = "/webhooks/queued";

fn converted(tag: &str) -> Vec<u8> {
    String::from_utf8_lossy(&body_of("popup.converted"))
        .replace("camp_abc123", &format!("camp_{tag}"))
        .into_bytes()
}

/// A sidecar with one queued route on the store at `db`, delivering to `app`.
fn queued(app: String, db: &Path, upstream_path: &str) -> Options {
    let mut opts = Options::new(app);
    opts.routes = vec![
        route("queued", PATH, upstream_path)
            .with("delivery = \"queued\"\nretry_schedule = [\"100ms\"]\n"),
        route("direct", "/webhooks/direct", "/hooks/direct"),
    ];
    opts.extra = format!(
        "[store]\nengine = \"sqlite\"\npath = {:?}\n",
        db.display().to_string()
    );
    opts
}

#[expect(
    clippy::unwrap_used,
    reason = "a test helper: a wrong answer should panic"
)]
fn queued_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let doc = reply.json();
    assert_eq!(doc["status"], "queued", "{doc}");
    let id = doc["id"].as_str().unwrap().to_owned();
    let parsed = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(parsed.get_version_num(), 7, "{id} is not a UUIDv7");
    id
}

#[tokio::test]
async fn a_queued_event_is_stored_then_delivered_with_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let app = Upstream::start().await;
    let sidecar =
        Sidecar::start(queued(app.url(), &dir.path().join("events.db"), "/hooks/q")).await;
    let body = converted("one");
    let id = queued_id(&sidecar.post(PATH, &body).await);
    let got = app.wait_for(1, 10).await;
    let up = &got[0];
    assert_eq!(up.body, body, "the stored bytes, exactly");
    assert_eq!(up.path, "/hooks/q");
    assert_eq!(up.all("x-webhook-id"), [id.as_str()]);
    assert_eq!(up.all("x-webhook-attempt"), ["1"]);
    assert_eq!(up.all("x-webhook-verified"), ["true"]);
    assert_eq!(up.all("x-webhook-event"), ["popup.converted"]);
    assert_eq!(up.all("content-length"), [body.len().to_string()]);
    let received = up.all("x-webhook-received-at");
    assert_eq!(received.len(), 1);
    time::OffsetDateTime::parse(&received[0], &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{:?} is not RFC 3339: {e}", received[0]));
    assert!(up.all("x-coolpopup-signature").is_empty());
    // The provider's retry of a stored conversion is a duplicate.
    let again = sidecar.post(PATH, &body).await;
    assert_eq!(again.json()["status"], "duplicate", "{:?}", again.body);
    assert_eq!(
        sidecar
            .metric(r#"hookgate_requests_total{route="queued",outcome="queued"}"#)
            .await,
        Some(1.0)
    );
    sidecar.stop().await;
    assert_eq!(app.take().len(), 1, "delivered once");
}

#[tokio::test]
async fn events_wait_while_the_app_is_down_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    // An address with nothing listening yet: the app is down.
    let app_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{app_addr}");
    let sidecar = Sidecar::start(queued(url.clone(), &db, "/hooks/q")).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(queued_id(
            &sidecar.post(PATH, &converted(&format!("down{i}"))).await,
        ));
    }
    // Retried while down (connection refused), then the sidecar stops.
    let mut waited = 0;
    while sidecar
        .metric(r#"hookgate_delivery_attempts_total{route="queued",result="retry"}"#)
        .await
        .unwrap_or(0.0)
        < 5.0
    {
        assert!(waited < 100, "no retries recorded within 10 s");
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    sidecar.stop().await;
    // The app comes up; a new sidecar on the same store delivers everything.
    let app = Upstream::start_at(app_addr).await;
    let sidecar = Sidecar::start(queued(url, &db, "/hooks/q")).await;
    let got = app.wait_for(5, 20).await;
    let mut delivered: Vec<String> = got.iter().map(|r| r.all("x-webhook-id").concat()).collect();
    delivered.sort();
    delivered.dedup();
    ids.sort();
    assert_eq!(delivered, ids);
    assert!(
        got.iter()
            .all(|r| r.all("x-webhook-attempt").concat().parse::<u32>().unwrap() > 1),
        "each delivery came after failed attempts"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn a_refused_event_is_dead_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let app = Upstream::start().await;
    let sidecar = Sidecar::start(queued(
        app.url(),
        &dir.path().join("events.db"),
        "/status/422",
    ))
    .await;
    queued_id(&sidecar.post(PATH, &converted("refused")).await);
    app.wait_for(1, 10).await;
    let mut waited = 0;
    while sidecar
        .metric(r#"hookgate_delivery_attempts_total{route="queued",result="dead"}"#)
        .await
        != Some(1.0)
    {
        assert!(waited < 100, "not dead within 10 s");
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Gauges follow within a second or two.
    let mut waited = 0;
    while sidecar
        .metric(r#"hookgate_queue_events{route="queued",state="dead"}"#)
        .await
        != Some(1.0)
    {
        assert!(
            waited < 50,
            "hookgate_queue_events does not show the dead event"
        );
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sidecar.metric("hookgate_store_up").await, Some(1.0));
    sidecar.stop().await;
    assert_eq!(app.take().len(), 1, "a refused event is not retried");
}

#[tokio::test]
async fn a_store_that_cannot_open_answers_503_until_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-yet");
    let app = Upstream::start().await;
    let sidecar = Sidecar::start(queued(app.url(), &missing.join("events.db"), "/hooks/q")).await;
    let reply = sidecar.post(PATH, &converted("early")).await;
    reply.expect_error(503, "store_unavailable");
    assert!(reply.headers.contains_key("retry-after"));
    // Direct routes and readiness do not depend on the store.
    assert_eq!(
        sidecar
            .post("/webhooks/direct", &converted("d"))
            .await
            .status,
        200
    );
    assert_eq!(sidecar.admin_get("/readyz").await.0, 200);
    assert_eq!(sidecar.metric("hookgate_store_up").await, Some(0.0));
    app.take();
    // The directory appears (a volume mounted late): the store opens.
    std::fs::create_dir(&missing).unwrap();
    let body = converted("late");
    let mut waited = 0;
    loop {
        let reply = sidecar.post(PATH, &body).await;
        if reply.status == 200 {
            queued_id(&reply);
            break;
        }
        reply.expect_error(503, "store_unavailable");
        assert!(waited < 100, "the store did not open within 10 s");
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.wait_for(1, 10).await[0].body, body);
    sidecar.stop().await;
}
