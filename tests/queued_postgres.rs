//! Queued delivery on the PostgreSQL store, end to end over real sockets
//! against a real cluster (`hookgate::testing::pg`): the issue "the same
//! store on PostgreSQL, shared by every replica" (SPEC, second part,
//! "Queued delivery", "Duplicates").
//!
//! - The scenarios of `tests/queued.rs` (`queued_suite`), on a fresh schema
//!   of the shared cluster (a private, stopped cluster for the one whose
//!   store cannot be opened at start).
//! - Two replicas on one schema: the same conversion posted to both at
//!   once is stored by exactly one (the other answers `duplicate`) and
//!   delivered exactly once.
//! - An event taken in by a replica whose app is down is delivered by
//!   another replica, to that replica's app.
//! - `kill -9` of a replica (the real binary) while its app hangs: another
//!   replica delivers the events it held, once their lease has run out.
//! - The database restarted (`pg_ctl stop -m fast`, then start), and
//!   crashed (`-m immediate`: recovery from the WAL), under load: every
//!   request answers 200 `queued` or 503 `store_unavailable` in bounded
//!   time, every id answered 200 is delivered, and `hookgate_store_up`
//!   goes 0 and back to 1.

mod queued_suite;
mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use queued_suite::{Engine, PATH, TestStore, converted, nothing_listening, queued, queued_id};
use support::*;

queued_suite::scenarios!(queued_suite::Engine::Postgres);

/// `store.timeout` (the default): an ingest slower than this answers 503.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// No request may take longer than `store.timeout` plus this.
const MARGIN: Duration = Duration::from_millis(1500);

/// Now, in Unix milliseconds (the clock hookgate stores times in).
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `hookgate serve` as a child process on fresh ports; killed on drop.
struct Served {
    child: Option<Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    tls: TlsFiles,
    config: PathBuf,
    log: PathBuf,
}

impl Served {
    /// Writes `opts` as a config file, starts `serve -c` on it, and waits
    /// (bounded 20 s) until `/readyz` answers 200 (the store opens first).
    #[expect(clippy::unwrap_used, reason = "a test helper: setup failures panic")]
    async fn start(mut opts: Options, name: &str) -> Self {
        let tls = opts.tls.take().unwrap_or_else(make_tls);
        let secret = tls.dir.path().join("secret");
        std::fs::write(&secret, [SECRET, b"\n"].concat()).unwrap();
        let config = tls.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, config_text(&opts, &tls, &secret)).unwrap();
        let log = tls.dir.path().join(format!("{name}.log"));
        // Port 0: the ready line names the listeners (no free-port race).
        let spawned = spawn_serve(&config, &log, 20).await;
        let served = Self {
            child: Some(spawned.child),
            addr: spawned.addr,
            admin: spawned.admin,
            tls,
            config,
            log,
        };
        assert_eq!(
            admin_status(served.admin, "/readyz").await,
            Some(200),
            "{}",
            served.log()
        );
        served
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn client(&self) -> Client {
        Client {
            addr: self.addr,
            trust: hookgate::Trust::Pem(self.tls.cert_pem.clone().into_bytes()),
        }
    }

    /// SIGKILL, then reaps the process.
    #[expect(clippy::unwrap_used, reason = "a test helper: failures panic")]
    fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "hookgate exited on its own: {status}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The status of a GET on an admin listener, or None if it does not answer.
async fn admin_status(admin: SocketAddr, path: &str) -> Option<u16> {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let tcp = tokio::net::TcpStream::connect(admin).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "admin")
        .body(Full::new(bytes::Bytes::new()))
        .ok()?;
    Some(sender.send_request(req).await.ok()?.status().as_u16())
}

/// The `X-Webhook-Id` of a delivery.
fn id_of(r: &Recorded) -> String {
    r.all("x-webhook-id").concat()
}

/// The `X-Webhook-Attempt` of a delivery.
fn attempt_of(r: &Recorded) -> u32 {
    r.all("x-webhook-attempt").concat().parse().unwrap_or(0)
}

/// Waits (bounded by `secs`) until `app` has received every id in `want`;
/// returns every delivery with the wall-clock time (Unix ms) it was seen
/// arriving (woken by each arrival, so within a few ms).
async fn deliveries_of(app: &Upstream, want: &HashSet<String>, secs: u64) -> Vec<(Recorded, i64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut timed: Vec<(Recorded, i64)> = Vec::new();
    loop {
        let got = app.wait_for(timed.len(), 0).await;
        let now = unix_ms();
        timed.extend(got[timed.len()..].iter().map(|r| (r.clone(), now)));
        let ids: HashSet<String> = timed.iter().map(|(r, _)| id_of(r)).collect();
        if want.is_subset(&ids) {
            return timed;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "{} of {} ids not delivered within {secs} s: {:?}",
            want.difference(&ids).count(),
            want.len(),
            want.difference(&ids).collect::<Vec<_>>()
        );
        // The next arrival, or a bounded wait.
        let next = timed.len() + 1;
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), async {
            loop {
                if app.wait_for(0, 0).await.len() >= next {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}

/// Waits until the sidecar reports the store open (bounded 20 s).
async fn store_open(sidecar: &Sidecar) {
    queued_suite::wait_metric(sidecar, "hookgate_store_up", 20, "the store opens", |v| {
        v == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_schema_store_and_deliver_each_event_exactly_once() {
    const ROUNDS: usize = 30;
    let store = Engine::Postgres.store();
    let (app_a, app_b) = (Upstream::start().await, Upstream::start().await);
    // Both start at once: both migrate the new schema (under its advisory
    // lock), then share it.
    let (a, b) = tokio::join!(
        Sidecar::start(queued(app_a.url(), &store, "/hooks/a")),
        Sidecar::start(queued(app_b.url(), &store, "/hooks/b")),
    );
    store_open(&a).await;
    store_open(&b).await;

    let mut queued_ids = HashMap::new();
    let (mut stored_by_a, mut stored_by_b) = (0, 0);
    for round in 0..ROUNDS {
        // The provider's retry reaching the other replica at the same time.
        let body = converted(&format!("both_{round}"));
        let (ra, rb) = tokio::join!(a.post(PATH, &body), b.post(PATH, &body));
        let status = |r: &Reply| r.json()["status"].as_str().unwrap_or("").to_owned();
        let id = match (status(&ra).as_str(), status(&rb).as_str()) {
            ("queued", "duplicate") => {
                stored_by_a += 1;
                queued_id(&ra)
            }
            ("duplicate", "queued") => {
                stored_by_b += 1;
                queued_id(&rb)
            }
            _ => panic!(
                "round {round}: want one `queued` and one `duplicate`, got A {} {:?}, B {} {:?}",
                ra.status, ra.body, rb.status, rb.body
            ),
        };
        queued_ids.insert(id, body);
    }

    // Every stored event reaches one app or the other...
    let want: HashSet<String> = queued_ids.keys().cloned().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ids: HashSet<String> = app_a
            .wait_for(0, 0)
            .await
            .iter()
            .chain(app_b.wait_for(0, 0).await.iter())
            .map(id_of)
            .collect();
        if want.is_subset(&ids) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {ROUNDS} events not delivered within 30 s",
            want.difference(&ids).count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and once every one is settled delivered, nothing more can come.
    queued_suite::wait_metric(
        &a,
        r#"hookgate_queue_events{route="queued",state="delivered"}"#,
        10,
        "every event settled delivered",
        |v| v == Some(ROUNDS as f64),
    )
    .await;
    let (got_a, got_b) = (app_a.take(), app_b.take());
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in got_a.iter().chain(&got_b) {
        *per_id.entry(id_of(r)).or_default() += 1;
        assert_eq!(
            r.body,
            queued_ids[&id_of(r)],
            "the stored bytes of the event"
        );
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(per_id.len(), ROUNDS);
    const DUPLICATES: &str = r#"hookgate_requests_total{route="queued",outcome="duplicate"}"#;
    let dup_a = a.metric(DUPLICATES).await.unwrap_or(0.0);
    let dup_b = b.metric(DUPLICATES).await.unwrap_or(0.0);
    assert_eq!(dup_a + dup_b, ROUNDS as f64);
    eprintln!(
        "{ROUNDS} rounds: stored by A {stored_by_a}, by B {stored_by_b}; \
         delivered to A's app {}, to B's app {}; each exactly once",
        got_a.len(),
        got_b.len()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_taken_in_by_a_replica_whose_app_is_down_is_delivered_by_another_to_its_app() {
    let store = Engine::Postgres.store();
    // A's app: nothing listening. B's app is up.
    // Both replicas run the same config but for the app's address, as in
    // a deployment where each pod's app is its own.
    let a = Sidecar::start(queued(
        format!("http://{}", nothing_listening()),
        &store,
        "/hooks/q",
    ))
    .await;
    let app_b = Upstream::start().await;
    let b = Sidecar::start(queued(app_b.url(), &store, "/hooks/q")).await;
    store_open(&a).await;
    store_open(&b).await;

    let mut bodies = HashMap::new();
    for i in 0..5 {
        let body = converted(&format!("a_down_{i}"));
        let id = queued_id(&a.post(PATH, &body).await);
        bodies.insert(id, body);
    }
    let want: HashSet<String> = bodies.keys().cloned().collect();
    let got = deliveries_of(&app_b, &want, 20).await;
    for (r, _) in &got {
        assert_eq!(r.path, "/hooks/q");
        assert_eq!(r.body, bodies[&id_of(r)], "the bytes A stored");
        assert_eq!(r.all("x-webhook-verified"), ["true"]);
    }
    let retries_a = a
        .metric(r#"hookgate_delivery_attempts_total{route="queued",result="retry"}"#)
        .await
        .unwrap_or(0.0);
    let delivered_a = a
        .metric(r#"hookgate_delivery_attempts_total{route="queued",result="delivered"}"#)
        .await;
    assert!(retries_a >= 1.0, "A tried its own (down) app first");
    assert_eq!(delivered_a, None, "A delivered nothing");
    eprintln!(
        "5 events taken in by A (app down): A's failed attempts {retries_a}; \
         B delivered them at attempts {:?}",
        got.iter().map(|(r, _)| attempt_of(r)).collect::<Vec<_>>()
    );
    a.stop().await;
    b.stop().await;
}

/// SPEC: "any replica may deliver any pending event of a route it serves,
/// to its own app". The delivering replica rebuilds the request target from
/// its own `upstream_path` (keeping the stored query) and sends its own
/// app's `Host`, not the ingesting replica's (which the stored head holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_delivers_another_replicas_event_to_its_own_upstream_path_and_host() {
    let store = Engine::Postgres.store();
    let a = Sidecar::start(queued(
        format!("http://{}", nothing_listening()),
        &store,
        "/hooks/a",
    ))
    .await;
    let app_b = Upstream::start().await;
    let b = Sidecar::start(queued(app_b.url(), &store, "/hooks/b")).await;
    store_open(&a).await;
    store_open(&b).await;
    let id = queued_id(&a.post(PATH, &converted("own_app")).await);
    let got = deliveries_of(&app_b, &HashSet::from([id]), 20).await;
    let (r, _) = &got[0];
    assert_eq!(r.path, "/hooks/b", "B's own upstream_path");
    assert_eq!(
        r.all("host"),
        [app_b.addr.to_string()],
        "B's own app's Host"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_delivery_leaves_its_events_to_another_once_the_lease_runs_out() {
    const N: usize = 8;
    let store = Engine::Postgres.store();
    // A: the real binary; its app takes every request and never answers.
    // upstream.timeout 1 s: a lease lasts 11 s (PostgreSQL does not lease ahead).
    let hanging = HangingApp::start().await;
    let mut a_opts = queued(hanging.url(), &store, "/hooks/q");
    a_opts.upstream_timeout = "1s";
    a_opts.routes[0]
        .extra
        .push_str("delivery_concurrency = 16\n");
    let mut a = Served::start(a_opts, "replica-a").await;

    // N distinct events at once, all answered 200 queued.
    let client = a.client();
    let posts: Vec<_> = (0..N)
        .map(|i| {
            let client = client.clone();
            let body = converted(&format!("killed_{i}"));
            tokio::spawn(async move {
                let reply = client.post_signed_with(PATH, &body, SECRET).await;
                (reply, body)
            })
        })
        .collect();
    let mut bodies = HashMap::new();
    for post in posts {
        let (reply, body) = post.await.unwrap();
        bodies.insert(queued_id(&reply), body);
    }
    let want: HashSet<String> = bodies.keys().cloned().collect();

    // A's app holds every event (A leased each one), then A is killed.
    let at_a = hanging.wait_for_ids(&want, 10).await;
    a.kill9();
    let killed_at = unix_ms();
    // The leases A held at the kill, from the database: id -> lease_until.
    let leases: HashMap<String, i64> = store
        .psql("SELECT id, lease_until FROM {s}.events WHERE state = 'pending' AND lease_until IS NOT NULL")
        .lines()
        .filter_map(|l| {
            let (id, until) = l.split_once('|')?;
            Some((id.to_owned(), until.parse().ok()?))
        })
        .filter(|(_, until)| *until > killed_at)
        .collect();
    assert!(
        !leases.is_empty(),
        "no event was under A's lease at the kill (A's log:\n{})",
        a.log()
    );
    let last_attempt_at_a: HashMap<String, u32> =
        at_a.iter().fold(HashMap::new(), |mut m, (id, attempt)| {
            let e = m.entry(id.clone()).or_insert(0);
            *e = (*e).max(*attempt);
            m
        });

    // B: in-process, its own app. It delivers every event, those A held
    // only once their lease has run out (11 s after A took them).
    let app_b = Upstream::start().await;
    let b = Sidecar::start(queued(app_b.url(), &store, "/hooks/q")).await;
    let at_b = deliveries_of(&app_b, &want, 30).await;
    let mut first_at_b: HashMap<String, (i64, u32)> = HashMap::new();
    for (r, at) in &at_b {
        assert_eq!(r.body, bodies[&id_of(r)], "the bytes A stored");
        first_at_b
            .entry(id_of(r))
            .and_modify(|e| {
                if *at < e.0 {
                    *e = (*at, attempt_of(r));
                }
            })
            .or_insert((*at, attempt_of(r)));
    }
    let mut early = Vec::new();
    for (id, until) in &leases {
        let (at, attempt) = first_at_b[id];
        if at < *until {
            early.push((id.clone(), until - at));
        }
        let before = last_attempt_at_a.get(id).copied().unwrap_or(0);
        assert!(
            attempt > before,
            "{id}: B's attempt {attempt} does not follow A's {before}"
        );
    }
    assert!(
        early.is_empty(),
        "delivered by B before A's lease ran out (id, ms early): {early:?}"
    );

    // The listing agrees: everything delivered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let states = listed_states(a.config.clone()).await;
        let not_yet: Vec<_> = want
            .iter()
            .filter(|id| states.get(*id).map(String::as_str) != Some("delivered"))
            .collect();
        if not_yet.is_empty() && states.len() == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events list does not show every event delivered within 10 s: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waits: Vec<i64> = leases
        .keys()
        .map(|id| first_at_b[id].0 - killed_at)
        .collect();
    eprintln!(
        "kill -9 of A with {} of {N} events under lease (A's app got {} attempts); \
         B delivered every event, the leased ones {:?} ms after the kill",
        leases.len(),
        at_a.len(),
        waits
    );
    b.stop().await;
}

/// An app that takes every request and never answers (hung), recording
/// each delivery's `X-Webhook-Id` and `X-Webhook-Attempt`.
struct HangingApp {
    addr: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<(String, u32)>>>,
    arrived: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl HangingApp {
    #[expect(clippy::unwrap_used, reason = "a test helper: setup failures panic")]
    async fn start() -> Self {
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let (seen2, arrived2) = (seen.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, arrived) = (seen2.clone(), arrived2.clone());
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let attempt = header("x-webhook-attempt").parse().unwrap_or(0);
                        if let Ok(mut seen) = seen.lock() {
                            seen.push((header("x-webhook-id"), attempt));
                        }
                        arrived.notify_waiters();
                        std::future::pending::<
                            Result<http::Response<String>, std::convert::Infallible>,
                        >()
                    });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            arrived,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (bounded by `secs`) until every id in `want` arrived; returns
    /// every (id, attempt) so far.
    async fn wait_for_ids(&self, want: &HashSet<String>, secs: u64) -> Vec<(String, u32)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let arrived = self.arrived.notified();
            let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
            if want.is_subset(&seen.iter().map(|(id, _)| id.clone()).collect()) {
                return seen;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "the hanging app got {} requests within {secs} s, want the {} ids",
                seen.len(),
                want.len()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), arrived).await;
        }
    }
}

impl Drop for HangingApp {
    fn drop(&mut self) {
        // Its connection tasks live in the JoinSet inside the task.
        self.task.abort();
    }
}

/// What one request of the load got.
enum Answer {
    Queued(String),
    Unavailable,
    Wrong(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_answers_queued_or_503_and_delivers_every_queued_event() {
    down_under_load(Down::Restart).await;
}

/// The database crashes (`pg_ctl stop -m immediate`) instead: what it had
/// not flushed to its WAL is gone after the recovery, so this fails if a
/// 200 `queued` were ever answered before the commit was on disk (a
/// session with `synchronous_commit` off, say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_under_load_answers_queued_or_503_and_delivers_every_queued_event() {
    down_under_load(Down::Crash).await;
}

/// How the database goes down in [`down_under_load`].
#[derive(Debug, Clone, Copy)]
enum Down {
    /// `pg_ctl stop -m fast`: a restart or a failover.
    Restart,
    /// `pg_ctl stop -m immediate`: a crash; the start recovers from the WAL.
    Crash,
}

#[expect(
    clippy::print_stderr,
    clippy::unwrap_used,
    reason = "the test's body: a failed step panics it; its counts are for whoever reads a run (`--nocapture`)"
)]
async fn down_under_load(how: Down) {
    const SENDERS: usize = 4;
    let store: TestStore = queued_suite::private_postgres_store();
    let cluster = store.cluster.clone().unwrap();
    let app = Upstream::start().await;
    let sidecar = Sidecar::start(queued(app.url(), &store, "/hooks/q")).await;
    store_open(&sidecar).await;

    // The load: SENDERS tasks, each posting fresh events one after another.
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|task| {
            let client = sidecar.client();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen: Vec<(Vec<u8>, Answer, Duration)> = Vec::new();
                for n in 0..5_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let body = converted(&format!("restart_{task}_{n}"));
                    let started = Instant::now();
                    let reply = tokio::time::timeout(
                        STORE_TIMEOUT + MARGIN,
                        client.post_signed_with(PATH, &body, SECRET),
                    )
                    .await;
                    let took = started.elapsed();
                    let answer = match reply {
                        Err(_) => Answer::Wrong(format!("no answer within {took:?}")),
                        Ok(r) => {
                            let doc: serde_json::Value =
                                serde_json::from_slice(&r.body).unwrap_or_default();
                            match (r.status, doc["status"].as_str(), doc["error"].as_str()) {
                                (200, Some("queued"), _) => {
                                    Answer::Queued(doc["id"].as_str().unwrap_or("").to_owned())
                                }
                                (503, _, Some("store_unavailable"))
                                    if r.headers.contains_key("retry-after") =>
                                {
                                    Answer::Unavailable
                                }
                                _ => Answer::Wrong(format!("{} {:?}", r.status, r.body)),
                            }
                        }
                    };
                    seen.push((body, answer, took));
                }
                seen
            })
        })
        .collect();
    // hookgate_store_up, sampled every 100 ms.
    let samples = {
        let admin = sidecar.admin;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut up = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Some(v) = metric_at(admin, "hookgate_store_up").await
                    && up.last() != Some(&v)
                {
                    up.push(v);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            up
        })
    };

    // A second of load, the restart (down 2 s), and load until the store
    // takes events again, plus a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || match how {
        Down::Restart => c.stop(),
        Down::Crash => c.crash(),
    })
    .await
    .unwrap()
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start())
        .await
        .unwrap()
        .unwrap();
    let restarted = Instant::now();
    let queued_before = sidecar
        .metric(r#"hookgate_requests_total{route="queued",outcome="queued"}"#)
        .await
        .unwrap_or(0.0);
    queued_suite::wait_metric(
        &sidecar,
        r#"hookgate_requests_total{route="queued",outcome="queued"}"#,
        20,
        "events stored again after the restart",
        |v| v.unwrap_or(0.0) > queued_before,
    )
    .await;
    let back_after = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);

    let mut sent = Vec::new();
    for s in senders {
        sent.extend(s.await.unwrap());
    }
    let up = samples.await.unwrap();
    let wrong: Vec<&String> = sent
        .iter()
        .filter_map(|(_, a, _)| match a {
            Answer::Wrong(w) => Some(w),
            _ => None,
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "answers other than 200 queued / 503 store_unavailable: {wrong:?}"
    );
    let slowest = sent.iter().map(|(_, _, t)| *t).max().unwrap_or_default();
    let mut ids: HashMap<String, Vec<u8>> = HashMap::new();
    let mut refused = Vec::new();
    for (body, answer, _) in &sent {
        match answer {
            Answer::Queued(id) => {
                ids.insert(id.clone(), body.clone());
            }
            Answer::Unavailable => refused.push(body.clone()),
            Answer::Wrong(_) => {}
        }
    }
    assert!(
        !refused.is_empty(),
        "no request was answered 503 while the database was down"
    );
    assert!(
        up.windows(2).any(|w| w == [1.0, 0.0]),
        "hookgate_store_up did not go from 1 to 0: {up:?}"
    );
    queued_suite::wait_metric(
        &sidecar,
        "hookgate_store_up",
        10,
        "hookgate_store_up back to 1",
        |v| v == Some(1.0),
    )
    .await;

    // The provider sends the refused ones again: each is stored now, or is a
    // duplicate of a copy whose commit went through after all.
    let (mut requeued, mut duplicates) = (0, 0);
    for body in &refused {
        let reply = sidecar.post(PATH, body).await;
        match reply.json()["status"].as_str() {
            Some("queued") => {
                requeued += 1;
                ids.insert(queued_id(&reply), body.clone());
            }
            Some("duplicate") => duplicates += 1,
            _ => panic!(
                "a retry after the restart: {} {:?}",
                reply.status, reply.body
            ),
        }
    }

    // Every id answered 200 is delivered at least once, and every body.
    let want: HashSet<String> = ids.keys().cloned().collect();
    let got = deliveries_of(&app, &want, 60).await;
    let bodies: HashSet<&[u8]> = got.iter().map(|(r, _)| r.body.as_ref()).collect();
    let lost: Vec<_> = refused
        .iter()
        .filter(|b| !bodies.contains(b.as_slice()))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(
        lost.is_empty(),
        "refused then duplicate, never delivered: {lost:?}"
    );
    let repeated = got.len()
        - got
            .iter()
            .map(|(r, _)| id_of(r))
            .collect::<HashSet<_>>()
            .len();
    eprintln!(
        "{how:?} under load: {} requests ({} queued, {} answered 503), slowest {slowest:?}; \
         storing again {back_after:?} after the start; hookgate_store_up {up:?}; \
         the 503s sent again: {requeued} queued, {duplicates} duplicate; \
         {} deliveries for {} ids ({repeated} repeated)",
        sent.len(),
        sent.len() - refused.len(),
        refused.len(),
        got.len(),
        want.len()
    );
    sidecar.stop().await;
}

/// The value of one sample line in the /metrics of the admin listener at
/// `admin` (None: no such line or no answer).
async fn metric_at(admin: SocketAddr, series: &str) -> Option<f64> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let tcp = tokio::net::TcpStream::connect(admin).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = http::Request::get("/metrics")
        .header("host", "admin")
        .body(Full::new(bytes::Bytes::new()))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
