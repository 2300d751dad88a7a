//! The queued-delivery scenarios (SPEC, second part, "Queued delivery"),
//! written once and run on each store engine: `tests/queued.rs` runs them
//! on SQLite, `tests/queued_postgres.rs` on a throwaway PostgreSQL cluster
//! (`hookgate::testing::pg`). [`scenarios!`] declares one `#[tokio::test]`
//! per scenario for an [`Engine`], so a scenario added here runs on both.
//!
//! Each scenario: 200 `queued` once stored, then delivered by hookgate with
//! `X-Webhook-Id/-Attempt/-Received-At`; retried while the app is down and
//! kept over a restart; a refused event is dead; a store that cannot be
//! opened answers 503 `store_unavailable` until it can.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "shared test scenarios and helpers, each crate uses part of them; \
              a failed step should panic the test with its message"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hookgate::testing::pg;

use crate::support::*;

/// The queued route's path.
pub const PATH: &str = "/webhooks/queued";

/// The store engine a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A fresh database file in a temporary directory.
    Sqlite,
    /// A fresh schema on the test process's shared cluster.
    Postgres,
}

/// A store for a test: the `[store]` text naming it, and what keeps it
/// alive (a temporary directory; for PostgreSQL, maybe a private cluster).
pub struct TestStore {
    pub engine: Engine,
    /// Holds the SQLite file or the PostgreSQL URL file.
    pub dir: tempfile::TempDir,
    /// The `[store]` table (more keys may be appended to it).
    pub toml: String,
    /// PostgreSQL: the schema.
    pub schema: Option<String>,
    /// A private cluster (stopped, started, restarted by the test).
    pub cluster: Option<Arc<pg::Cluster>>,
    /// SQLite made unopenable: the missing directory of its file.
    missing_dir: Option<PathBuf>,
}

impl Engine {
    /// A fresh, empty store that opens.
    pub fn store(self) -> TestStore {
        match self {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let toml = sqlite_toml(&dir.path().join("events.db"));
                TestStore {
                    engine: self,
                    dir,
                    toml,
                    schema: None,
                    cluster: None,
                    missing_dir: None,
                }
            }
            Engine::Postgres => postgres_store(pg::shared(), None),
        }
    }

    /// A store that cannot be opened yet; [`TestStore::make_openable`]
    /// fixes that (SQLite: its directory is missing; PostgreSQL: its
    /// private cluster is stopped).
    pub fn closed_store(self) -> TestStore {
        match self {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let missing = dir.path().join("not-yet");
                let toml = sqlite_toml(&missing.join("events.db"));
                TestStore {
                    engine: self,
                    dir,
                    toml,
                    schema: None,
                    cluster: None,
                    missing_dir: Some(missing),
                }
            }
            Engine::Postgres => {
                let store = private_postgres_store();
                store.cluster.as_ref().unwrap().stop().unwrap();
                store
            }
        }
    }

    /// How long a store may take to be seen open again after
    /// [`TestStore::make_openable`] (the sidecar retries every 2 s).
    pub fn reopen_within(self) -> Duration {
        match self {
            Engine::Sqlite => Duration::from_secs(10),
            Engine::Postgres => Duration::from_secs(20),
        }
    }
}

/// A fresh schema on a private cluster of its own, for tests that stop or
/// restart the database.
pub fn private_postgres_store() -> TestStore {
    let cluster = pg::Cluster::new(pg::ClusterOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let cluster = Arc::new(cluster);
    postgres_store(&cluster, Some(cluster.clone()))
}

fn sqlite_toml(db: &std::path::Path) -> String {
    format!(
        "[store]\nengine = \"sqlite\"\npath = {:?}\n",
        db.display().to_string()
    )
}

/// A fresh schema on `cluster`, reached over TCP with the password, the
/// URL in a `url_file` as an operator would give it.
fn postgres_store(cluster: &pg::Cluster, own: Option<Arc<pg::Cluster>>) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let schema = pg::unique_name("hg");
    let url_file = dir.path().join("store-url");
    std::fs::write(&url_file, format!("{}\n", cluster.url("postgres"))).unwrap();
    let toml = format!(
        "[store]\nengine = \"postgres\"\nurl_file = {:?}\ntls = \"disable\"\nschema = {schema:?}\n",
        url_file.display().to_string()
    );
    TestStore {
        engine: Engine::Postgres,
        dir,
        toml,
        schema: Some(schema),
        cluster: own,
        missing_dir: None,
    }
}

impl TestStore {
    /// Makes a [`Engine::closed_store`] openable.
    pub fn make_openable(&self) {
        if let Some(missing) = &self.missing_dir {
            std::fs::create_dir(missing).unwrap();
        }
        if let Some(cluster) = &self.cluster {
            cluster.start().unwrap();
        }
    }

    /// PostgreSQL: runs `sql` in this store's database, `{s}` replaced by
    /// the quoted schema; psql's unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let schema = self.schema.as_ref().expect("a PostgreSQL store");
        let cluster: &pg::Cluster = self.cluster.as_deref().unwrap_or_else(|| pg::shared());
        cluster
            .psql("postgres", &sql.replace("{s}", &format!("\"{schema}\"")))
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A distinct `popup.converted` (deduplicated by default; the campaign id
/// keeps two events apart), stamped with the test process's start.
pub fn converted(tag: &str) -> Vec<u8> {
    String::from_utf8_lossy(&body_of("popup.converted"))
        .replace("camp_abc123", &format!("camp_{tag}"))
        .into_bytes()
}

/// A sidecar with one queued route (retried every 100 ms) on `store`,
/// delivering to `app` at `upstream_path`, and one direct route.
pub fn queued(app: String, store: &TestStore, upstream_path: &str) -> Options {
    let mut opts = Options::new(app);
    opts.routes = vec![
        route("queued", PATH, upstream_path)
            .with("delivery = \"queued\"\nretry_schedule = [\"100ms\"]\n"),
        route("direct", "/webhooks/direct", "/hooks/direct"),
    ];
    opts.extra = store.toml.clone();
    opts
}

/// The id of a 200 `queued` answer, checked to be a UUIDv7.
pub fn queued_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let doc = reply.json();
    assert_eq!(doc["status"], "queued", "{doc}");
    let id = doc["id"].as_str().unwrap().to_owned();
    let parsed = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(parsed.get_version_num(), 7, "{id} is not a UUIDv7");
    id
}

/// An address on 127.0.0.1 with nothing listening (an app that is down).
pub fn nothing_listening() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Waits (bounded by `secs`) until `series` in the sidecar's /metrics
/// satisfies `ok`; panics with `what` otherwise.
pub async fn wait_metric(
    sidecar: &Sidecar,
    series: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(Option<f64>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let value = sidecar.metric(series).await;
        if ok(value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {secs} s ({series} = {value:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Declares the scenarios as `#[tokio::test]`s on `$engine`.
#[allow(
    unused_macros,
    reason = "tests/crash.rs takes the stores from this module, not the scenarios"
)]
macro_rules! scenarios {
    ($engine:expr) => {
        #[tokio::test]
        async fn a_queued_event_is_stored_then_delivered_with_its_id() {
            $crate::queued_suite::stored_then_delivered_with_its_id($engine).await;
        }

        #[tokio::test]
        async fn events_wait_while_the_app_is_down_and_survive_a_restart() {
            $crate::queued_suite::wait_while_the_app_is_down_and_survive_a_restart($engine).await;
        }

        #[tokio::test]
        async fn a_refused_event_is_dead_and_not_retried() {
            $crate::queued_suite::refused_is_dead_and_not_retried($engine).await;
        }

        #[tokio::test]
        async fn events_leased_ahead_are_given_back_untried_at_shutdown() {
            $crate::queued_suite::leased_ahead_given_back_at_shutdown($engine).await;
        }

        #[tokio::test]
        async fn a_store_that_cannot_open_answers_503_until_it_can() {
            $crate::queued_suite::cannot_open_answers_503_until_it_can($engine).await;
        }
    };
}
#[allow(
    unused_imports,
    reason = "tests/crash.rs takes the stores from this module, not the scenarios"
)]
pub(crate) use scenarios;

pub async fn stored_then_delivered_with_its_id(engine: Engine) {
    let store = engine.store();
    let app = Upstream::start().await;
    let sidecar = Sidecar::start(queued(app.url(), &store, "/hooks/q")).await;
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
    assert_eq!(
        sidecar
            .metric(r#"hookgate_requests_total{route="queued",outcome="duplicate"}"#)
            .await,
        Some(1.0)
    );
    sidecar.stop().await;
    assert_eq!(app.take().len(), 1, "delivered once");
}

pub async fn wait_while_the_app_is_down_and_survive_a_restart(engine: Engine) {
    let store = engine.store();
    // An address with nothing listening yet: the app is down.
    let app_addr = nothing_listening();
    let url = format!("http://{app_addr}");
    let sidecar = Sidecar::start(queued(url.clone(), &store, "/hooks/q")).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(queued_id(
            &sidecar.post(PATH, &converted(&format!("down{i}"))).await,
        ));
    }
    // Retried while down (connection refused), then the sidecar stops.
    wait_metric(
        &sidecar,
        r#"hookgate_delivery_attempts_total{route="queued",result="retry"}"#,
        10,
        "5 retries recorded",
        |v| v.unwrap_or(0.0) >= 5.0,
    )
    .await;
    sidecar.stop().await;
    // The app comes up; a new sidecar on the same store delivers everything.
    let app = Upstream::start_at(app_addr).await;
    let sidecar = Sidecar::start(queued(url, &store, "/hooks/q")).await;
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

pub async fn refused_is_dead_and_not_retried(engine: Engine) {
    let store = engine.store();
    let app = Upstream::start().await;
    let sidecar = Sidecar::start(queued(app.url(), &store, "/status/422")).await;
    queued_id(&sidecar.post(PATH, &converted("refused")).await);
    app.wait_for(1, 10).await;
    wait_metric(
        &sidecar,
        r#"hookgate_delivery_attempts_total{route="queued",result="dead"}"#,
        10,
        "the refused event is dead",
        |v| v == Some(1.0),
    )
    .await;
    // Gauges follow within a second or two.
    wait_metric(
        &sidecar,
        r#"hookgate_queue_events{route="queued",state="dead"}"#,
        5,
        "hookgate_queue_events shows the dead event",
        |v| v == Some(1.0),
    )
    .await;
    assert_eq!(sidecar.metric("hookgate_store_up").await, Some(1.0));
    // How long the gauges' count took: a few events count in well under
    // the second between refreshes.
    let took = sidecar.metric("hookgate_store_stats_seconds").await;
    assert!(took.is_some_and(|s| s > 0.0 && s < 1.0), "{took:?}");
    // The one attempt's result was recorded in one store transaction
    // (SQLite gathers concurrent results; PostgreSQL records each on its
    // own and leaves the histogram empty).
    let recorded = match engine {
        Engine::Sqlite => Some(1.0),
        Engine::Postgres => Some(0.0),
    };
    for series in [
        "hookgate_store_settle_batch_size_sum",
        "hookgate_store_settle_batch_size_count",
    ] {
        assert_eq!(sidecar.metric(series).await, recorded, "{series}");
    }
    sidecar.stop().await;
    assert_eq!(app.take().len(), 1, "a refused event is not retried");
}

/// `(pending events with one attempt counted, with none)` in `/api/events`.
async fn leased_and_untouched(sidecar: &Sidecar) -> (usize, usize) {
    let reply = sidecar.admin_send("GET", "/api/events", &[]).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let doc = reply.json();
    let pending: Vec<u64> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "pending")
        .map(|e| e["attempts"].as_u64().unwrap())
        .collect();
    (
        pending.iter().filter(|&&a| a == 1).count(),
        pending.iter().filter(|&&a| a == 0).count(),
    )
}

/// With one permit and an app that takes its time, the worker leases the
/// next events ahead on SQLite (each shows its attempt counted while the
/// app has seen one); at shutdown the running attempt finishes and the
/// events leased ahead are given back untried, so the next sidecar
/// delivers them as attempt 1. On PostgreSQL (no leasing ahead) only the
/// running attempt is leased, and the rest arrive as attempt 1 as well.
pub async fn leased_ahead_given_back_at_shutdown(engine: Engine) {
    let store = engine.store();
    let app = Upstream::start().await;
    let mut opts = queued(app.url(), &store, "/slow/2000");
    opts.upstream_timeout = "3s";
    opts.routes[0].extra.push_str("delivery_concurrency = 1\n");
    let sidecar = Sidecar::start(opts).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(queued_id(
            &sidecar.post(PATH, &converted(&format!("ahead{i}"))).await,
        ));
    }
    app.wait_for(1, 10).await;
    // SQLite leases ahead: one running, two waiting for the permit (a lease
    // waits until half of the route's 4 slots are free, so the fourth stays
    // untouched). PostgreSQL does not: one leased, three untouched.
    let want = match engine {
        Engine::Sqlite => (3, 1),
        Engine::Postgres => (1, 3),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut seen = leased_and_untouched(&sidecar).await;
    while seen != want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = leased_and_untouched(&sidecar).await;
    }
    assert_eq!(
        seen, want,
        "(leased, untouched) while the app holds the first"
    );
    let held = app.take();
    assert_eq!(held.len(), 1, "one attempt at a time");
    let held = held[0].all("x-webhook-id").concat();
    sidecar.stop().await;
    let first = app.take();
    assert!(
        first.is_empty(),
        "nothing else reached the app: {}",
        first.len()
    );

    let sidecar = Sidecar::start(queued(app.url(), &store, "/hooks/q")).await;
    let got = app.wait_for(3, 10).await;
    let attempts: Vec<String> = got
        .iter()
        .map(|r| r.all("x-webhook-attempt").concat())
        .collect();
    assert_eq!(attempts, ["1", "1", "1"], "given back untried, not counted");
    let mut delivered: Vec<String> = got.iter().map(|r| r.all("x-webhook-id").concat()).collect();
    delivered.sort();
    delivered.dedup();
    delivered.push(held);
    delivered.sort();
    ids.sort();
    assert_eq!(
        delivered, ids,
        "the held one before the stop, the others after"
    );
    sidecar.stop().await;
}

pub async fn cannot_open_answers_503_until_it_can(engine: Engine) {
    let store = engine.closed_store();
    let app = Upstream::start().await;
    let sidecar = Sidecar::start(queued(app.url(), &store, "/hooks/q")).await;
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
    // The store becomes openable (a volume mounted late, the database
    // up): the sidecar opens it by itself.
    store.make_openable();
    let body = converted("late");
    let within = engine.reopen_within();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let reply = sidecar.post(PATH, &body).await;
        if reply.status == 200 {
            queued_id(&reply);
            break;
        }
        reply.expect_error(503, "store_unavailable");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store did not open within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.wait_for(1, 10).await[0].body, body);
    assert_eq!(sidecar.metric("hookgate_store_up").await, Some(1.0));
    sidecar.stop().await;
}
