//! The store proven by `kill -9` mid-load (SPEC, second part, "Queued
//! delivery"), on each engine (SQLite: a file in a temp dir; PostgreSQL: a
//! fresh schema on a throwaway cluster, `hookgate::testing::pg`): the real
//! binary takes signed events from several keep-alive connections at once
//! and is killed with SIGKILL while requests are still in flight. A new
//! process on the same store then delivers every event that was answered
//! 200 `queued` before the kill (at least once), the provider's retries of
//! the requests cut off by the kill are each either stored anew or a
//! duplicate of a stored event, and `hookgate events list` ends with every
//! answered id delivered.
//!
//! Everything waits on a signal (the /readyz answer, the recording app's
//! arrivals, the CLI's listing), each bounded; nothing sleeps a fixed time
//! to let something happen.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a setup failure should panic with its message"
)]

mod queued_suite;
mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use queued_suite::{Engine, TestStore, converted};
use support::*;

const PATH: &str = "/webhooks/queued";
/// Concurrent senders, each on its own keep-alive connection.
const TASKS: usize = 8;
/// Events each sender would send if it were not cut off.
const PER_TASK: usize = 50;
/// The kill comes once this many events were answered 200 `queued`.
const KILL_AFTER: usize = 100;
/// No single request may take longer than this (store.timeout is 2 s).
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// TLS material, the secret and the store, which outlive every process of
/// the test.
struct Material {
    tls: TlsFiles,
    secret: PathBuf,
    store: TestStore,
}

impl Material {
    fn new(engine: Engine) -> Self {
        let tls = make_tls();
        let secret = tls.dir.path().join("secret");
        std::fs::write(&secret, [SECRET, b"\n"].concat()).unwrap();
        Self {
            tls,
            secret,
            store: engine.store(),
        }
    }

    fn trust(&self) -> hookgate::Trust {
        hookgate::Trust::Pem(self.tls.cert_pem.clone().into_bytes())
    }

    /// A config for one queued route on the test's store, retried every
    /// 100 ms; `upstream.timeout` 1 s, so a lease lasts 14 s on SQLite (it leases
    /// ahead: 4 × 1 s + 10 s), 11 s on PostgreSQL.
    fn config(&self, port: u16, admin: u16, app: &str) -> PathBuf {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [server.tls]\ncert_file = {:?}\nkey_file = {:?}\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [upstream]\nurl = {app:?}\ntimeout = \"1s\"\n\
             [log]\nformat = \"json\"\n\
             [reload]\ninterval = \"0s\"\n\
             {}timeout = \"2s\"\n\
             [[routes]]\nname = \"queued\"\npath = \"{PATH}\"\nupstream_path = \"/hooks/q\"\n\
             secret_files = [{:?}]\ndelivery = \"queued\"\nretry_schedule = [\"100ms\"]\n",
            self.tls.cert.display().to_string(),
            self.tls.key.display().to_string(),
            self.store.toml,
            self.secret.display().to_string(),
        );
        let path = self.tls.dir.path().join(format!("serve-{port}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// `hookgate serve` as a child process; killed on drop if still running.
struct Served {
    child: Option<Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Served {
    /// Starts `serve -c CONFIG` on fresh ports and waits (bounded 20 s)
    /// until /readyz answers 200 (the store opens before that).
    async fn start(m: &Material, app: &str, name: &str) -> Self {
        // Port 0: the ready line names the listeners (no free-port race).
        let config = m.config(0, 0, app);
        let log = m.tls.dir.path().join(format!("{name}.log"));
        let spawned = spawn_serve(&config, &log, 20).await;
        let served = Self {
            child: Some(spawned.child),
            addr: spawned.addr,
            admin: spawned.admin,
            config,
            log,
        };
        assert_eq!(
            admin_get(served.admin, "/readyz").await.map(|r| r.0),
            Some(200),
            "{}",
            served.log()
        );
        served
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (std's `Child::kill`), then reaps the process.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("already killed");
        child.kill().expect("kill -9 failed");
        let status = child.wait().unwrap();
        assert!(!status.success(), "hookgate exited on its own: {status}");
    }

    /// The value of one sample line in /metrics (None: no such line, or no answer).
    async fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = admin_get(self.admin, "/metrics").await?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
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

/// GET on the admin listener: (status, body), or None if it does not answer.
async fn admin_get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(admin).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The answer to one request, or why there was none.
enum Sent {
    /// 200 `queued` with this id.
    Queued(String),
    /// 200 `duplicate` (a retry of an event already stored).
    Duplicate,
    /// 503 `store_unavailable`: not stored; the provider sends it again.
    Unavailable,
    /// The connection failed or closed before an answer (the kill).
    Failed(String),
    /// No answer within [`REQUEST_LIMIT`].
    Hung,
    /// Anything else: a bug.
    Other(u16, Bytes),
}

/// One keep-alive HTTP/1.1 connection over TLS.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    port: u16,
}

impl Conn {
    async fn open(addr: SocketAddr, trust: &hookgate::Trust) -> Result<Self, String> {
        let tls = connect_tls(addr, trust).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Self {
            sender,
            port: addr.port(),
        })
    }

    async fn post(&mut self, body: &[u8]) -> Sent {
        let exchange = async {
            self.sender.ready().await.map_err(|e| e.to_string())?;
            let resp = self
                .sender
                .send_request(signed_post(self.port, PATH, body, SECRET))
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, bytes))
        };
        let (status, bytes) = match tokio::time::timeout(REQUEST_LIMIT, exchange).await {
            Err(_) => return Sent::Hung,
            Ok(Err(e)) => return Sent::Failed(e),
            Ok(Ok(answer)) => answer,
        };
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        match (status, doc["status"].as_str(), doc["error"].as_str()) {
            (200, Some("queued"), _) => match doc["id"].as_str() {
                Some(id) => Sent::Queued(id.to_owned()),
                None => Sent::Other(status, bytes),
            },
            (200, Some("duplicate"), _) => Sent::Duplicate,
            (503, _, Some("store_unavailable")) => Sent::Unavailable,
            _ => Sent::Other(status, bytes),
        }
    }
}

/// What one sender saw.
#[derive(Default)]
struct Sender {
    /// (id, body) of every event answered 200 `queued`.
    queued: Vec<(String, Vec<u8>)>,
    /// Bodies the provider would send again: cut off by the kill, or 503.
    retry: Vec<Vec<u8>>,
    /// Events never sent (the connection was gone).
    unsent: usize,
    /// Requests cut off by the kill (connection error, no answer).
    cut_off: usize,
    /// 503 `store_unavailable` answers.
    unavailable: usize,
    /// Wrong answers and hangs: must stay empty.
    wrong: Vec<String>,
}

/// Sends `PER_TASK` distinct events on one keep-alive connection until the
/// connection fails (the kill), counting each 200 `queued` in `answered`.
async fn send_events(
    addr: SocketAddr,
    trust: hookgate::Trust,
    task: usize,
    answered: Arc<AtomicUsize>,
    progress: Arc<tokio::sync::Notify>,
) -> Sender {
    let mut seen = Sender::default();
    let mut conn = match Conn::open(addr, &trust).await {
        Ok(c) => Some(c),
        Err(e) => {
            seen.wrong.push(format!("task {task}: cannot connect: {e}"));
            None
        }
    };
    for i in 0..PER_TASK {
        let Some(c) = conn.as_mut() else {
            seen.unsent += 1;
            continue;
        };
        let body = converted(&format!("crash_{task}_{i}"));
        match c.post(&body).await {
            Sent::Queued(id) => {
                seen.queued.push((id, body));
                answered.fetch_add(1, Ordering::SeqCst);
                progress.notify_one();
            }
            Sent::Unavailable => {
                seen.unavailable += 1;
                seen.retry.push(body);
            }
            Sent::Failed(_) => {
                // The kill: this request may or may not have been stored.
                seen.cut_off += 1;
                seen.retry.push(body);
                conn = None;
            }
            Sent::Hung => {
                seen.wrong.push(format!(
                    "task {task} event {i}: no answer within {REQUEST_LIMIT:?}"
                ));
                seen.retry.push(body);
                conn = None;
            }
            Sent::Duplicate => seen.wrong.push(format!(
                "task {task} event {i}: a new event answered duplicate"
            )),
            Sent::Other(status, bytes) => seen
                .wrong
                .push(format!("task {task} event {i}: {status} {bytes:?}")),
        }
    }
    seen
}

/// The `X-Webhook-Id` of each delivery.
fn delivered_ids(got: &[Recorded]) -> Vec<String> {
    got.iter().map(|r| r.all("x-webhook-id").concat()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_answered_queued_before_kill_9_is_delivered_after_restart() {
    kill_9_mid_load(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_answered_queued_before_kill_9_is_delivered_after_restart_on_postgres() {
    kill_9_mid_load(Engine::Postgres).await;
}

#[expect(
    clippy::print_stderr,
    reason = "the test's counts, for whoever reads a run (`--nocapture`)"
)]
async fn kill_9_mid_load(engine: Engine) {
    let m = Material::new(engine);
    let app = Upstream::start().await;
    let mut first = Served::start(&m, &app.url(), "first").await;

    // Load from TASKS keep-alive connections at once.
    let answered = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let senders: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(send_events(
                first.addr,
                m.trust(),
                task,
                answered.clone(),
                progress.clone(),
            ))
        })
        .collect();

    // Kill -9 once KILL_AFTER events are answered, while the rest are in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < KILL_AFTER {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {KILL_AFTER} events answered within 60 s:\n{}",
            answered.load(Ordering::SeqCst),
            first.log()
        );
        let _ = tokio::time::timeout(left, progress.notified()).await;
    }
    // The senders move in step (one group commit answers them together), so
    // the kill comes at a random point in the next 20 ms: some runs catch a
    // commit whose answers were not written yet. This varies the moment;
    // nothing waits on it.
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..20_000))).await;
    first.kill9();
    let answered_at_kill = answered.load(Ordering::SeqCst);
    // What the app had by then (a snapshot, nothing forgotten).
    let delivered_at_kill = app.wait_until(0, |_| true).await.unwrap_or_default().len();

    let mut sent = Sender::default();
    for s in senders {
        let s = tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .expect("a sender did not finish within 30 s of the kill")
            .unwrap();
        sent.queued.extend(s.queued);
        sent.retry.extend(s.retry);
        sent.unsent += s.unsent;
        sent.cut_off += s.cut_off;
        sent.unavailable += s.unavailable;
        sent.wrong.extend(s.wrong);
    }
    assert!(sent.wrong.is_empty(), "wrong answers: {:#?}", sent.wrong);
    assert!(
        sent.cut_off > 0 && sent.unsent > 0,
        "the kill did not come mid-load: {} cut off, {} unsent",
        sent.cut_off,
        sent.unsent
    );
    let answered_before_kill = sent.queued.len();

    // A new process on the same database.
    let second = Served::start(&m, &app.url(), "second").await;

    // The provider sends again what got no 200: each is stored anew, or is a
    // duplicate of the event stored before the kill.
    let (mut requeued, mut duplicates) = (0, 0);
    let mut conn = Conn::open(second.addr, &m.trust()).await.unwrap();
    for body in &sent.retry {
        match conn.post(body).await {
            Sent::Queued(id) => {
                requeued += 1;
                sent.queued.push((id, body.clone()));
            }
            Sent::Duplicate => duplicates += 1,
            Sent::Failed(e) => panic!("a retry failed: {e}"),
            Sent::Hung => panic!("a retry got no answer within {REQUEST_LIMIT:?}"),
            Sent::Unavailable => panic!("a retry was answered 503 store_unavailable"),
            Sent::Other(status, bytes) => panic!("a retry was answered {status} {bytes:?}"),
        }
    }

    // Every id answered 200 reaches the app (the events under lease at the
    // kill come back when their lease runs out: 14 s on SQLite, 11 s on
    // PostgreSQL), and every body.
    let want_ids: HashSet<String> = sent.queued.iter().map(|(id, _)| id.clone()).collect();
    let want_bodies: HashSet<Vec<u8>> = sent
        .queued
        .iter()
        .map(|(_, b)| b.clone())
        .chain(sent.retry.iter().cloned())
        .collect();
    app.wait_until(60, |got| {
        let ids: HashSet<String> = delivered_ids(got).into_iter().collect();
        let bodies: HashSet<&[u8]> = got.iter().map(|r| r.body.as_ref()).collect();
        want_ids.is_subset(&ids) && want_bodies.iter().all(|b| bodies.contains(b.as_slice()))
    })
    .await
    .unwrap_or_else(|got| {
        let ids: HashSet<String> = delivered_ids(&got).into_iter().collect();
        let missing: Vec<&String> = want_ids.difference(&ids).collect();
        panic!(
            "{} of {} answered ids not delivered within 60 s after the restart: {missing:?}\n{}",
            missing.len(),
            want_ids.len(),
            second.log()
        )
    });

    // The listing agrees once the last settles are written: every answered
    // id, and every other stored event, delivered. An event the app got just
    // before the kill whose settle was lost shows pending until its lease
    // runs out and it is delivered again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let states = loop {
        let states = listed_states(second.config.clone()).await;
        let mut not_yet: Vec<(&String, Option<&String>)> = want_ids
            .iter()
            .map(|id| (id, states.get(id)))
            .chain(states.iter().map(|(id, s)| (id, Some(s))))
            .filter(|(_, s)| s.map(String::as_str) != Some("delivered"))
            .collect();
        if not_yet.is_empty() {
            break states;
        }
        not_yet.sort();
        not_yet.dedup();
        assert!(
            Instant::now() < deadline,
            "events list does not show {} stored events as delivered within 30 s: {:?}",
            not_yet.len(),
            &not_yet[..not_yet.len().min(10)]
        );
        // Polling the CLI, as an operator would.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Count every delivery, before and after the kill (a delivery is
    // recorded by the app before hookgate can settle it, so all are in).
    let got = app.wait_until(0, |_| true).await.unwrap_or_default();
    let ids = delivered_ids(&got);
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *per_id.entry(id.as_str()).or_default() += 1;
    }
    let repeated: usize = per_id.values().map(|n| n - 1).sum();
    let stored_unanswered = states.len() - want_ids.len();
    let attempts_after = second
        .metric(r#"hookgate_delivery_attempts_total{route="queued",result="delivered"}"#)
        .await;
    eprintln!(
        "{engine:?}: kill -9 after {answered_at_kill} answered (app had {delivered_at_kill} deliveries); \
         answered 200 before the kill: {answered_before_kill}; cut off: {}; never sent: {}; \
         503 before the kill: {}; retried after restart: {} ({requeued} queued anew, {duplicates} duplicate); \
         stored in all: {} ({stored_unanswered} stored without a 200 reaching the client); \
         deliveries in all: {} for {} ids ({repeated} repeated); \
         delivered attempts recorded by the second process: {attempts_after:?}",
        sent.cut_off,
        sent.unsent,
        sent.unavailable,
        sent.retry.len(),
        states.len(),
        ids.len(),
        per_id.len(),
    );
    assert!(
        answered_before_kill >= KILL_AFTER,
        "{answered_before_kill} answered before the kill"
    );
    assert!(
        states.values().all(|s| s == "delivered"),
        "every stored event ends delivered: {states:?}"
    );
    assert_eq!(
        states.len(),
        want_ids.len() + duplicates,
        "stored = answered 200 + the cut-off requests whose retry was a duplicate \
         (each of those was stored once, before the kill)"
    );
    drop(second);
}
