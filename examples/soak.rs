//! The soak of `benches/soak/run.sh` (issue 16): the recording app **and**
//! the load, in one process, so the end of a run can say exactly which
//! accepted event reached the app, how often.
//!
//!     soak --addr 127.0.0.1:8443 --secret-file F --app 127.0.0.1:8080 \
//!          [--direct-path /webhooks/direct] [--queued-path /webhooks/queued] \
//!          [--ca PEM|insecure] [--admin 127.0.0.1:9901] [--conns 32] \
//!          [--rate 0] [--duration 60] [--warmup 0] [--tag soak] \
//!          [--drain-timeout 300] [--body-bytes 1024] [--progress 60]
//!
//! - **The app** (hookgate's upstream): plain HTTP/1.1 on `--app` (port 0:
//!   any), answers `200 {"ok":true}`, and records every event by its
//!   `campaign_id`, which the load makes unique per request
//!   (`soak-<tag>-<connection>-<sequence>`); it counts events it cannot
//!   place (`foreign`) and ones without `X-Webhook-Verified: true`.
//! - **The load**: signed events over `--conns` TLS keep-alive HTTP/1.1
//!   connections to hookgate. `--rate` R > 0: open loop at R requests/s in
//!   all, each connection on its own schedule, latency counted from when a
//!   request was **due** (no coordinated omission); `--rate 0`: closed loop,
//!   the highest throughput (the calibration). Each connection cycles
//!   through its own shuffle of 40 slots: 14 `popup.converted` on the
//!   direct route, 14 on the queued one (35 % each), 3 + 3 other events
//!   (`popup.shown`/`clicked`/`closed`) on each route (15 %), and 6
//!   rejections and re-sends (15 %): 2 bad signatures (→ 401), 2 schema
//!   violations (→ 422), 2 re-sends of a conversion answered 200 less than
//!   30 s before (→ 200 `duplicate`), alternating between the routes.
//!   Every body is distinct and carries a fresh `timestamp`.
//! - **The end**: stop sending, wait until every event answered 200 reached
//!   the app (`drain.all_received_seconds`) and (with `--admin`) hookgate's `hookgate_queue_events{state=
//!   "pending"}` is 0, at most `--drain-timeout` s, wait 2 s more for late
//!   copies, then print one JSON object: requests sent and answers by kind,
//!   conversions answered 200 (direct, queued) and received, **lost**
//!   (answered 200, never received), **duplicated** (received more than
//!   once), **leaked** (a rejected event that reached the app), unexpected
//!   answers (a rejection answered 200, a valid event answered anything but
//!   its 200, a re-send not answered `duplicate`), transport errors, and
//!   latency percentiles (ms) by group. `--warmup` s: answers before it are
//!   left out of `per_second` and the latencies (never out of the checks).
//!   `slow_seconds`: each second of the load (counted from `started_unix`)
//!   whose slowest answer took 100 ms or more, with that answer's time.
//!
//! Exits 1 if anything was lost, duplicated, leaked, unexpected, a
//! transport error, a foreign or unverified event, or the drain timed out.
//! Never prints a secret, a body or an email address.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::{BoxError, Pace, Sender, connect, tls_connector};

/// What a request is, and what it must be answered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    DirectConverted,
    QueuedConverted,
    DirectOther,
    QueuedOther,
    BadSignature,
    Schema,
    Duplicate,
}

const KINDS: [Kind; 7] = [
    Kind::DirectConverted,
    Kind::QueuedConverted,
    Kind::DirectOther,
    Kind::QueuedOther,
    Kind::BadSignature,
    Kind::Schema,
    Kind::Duplicate,
];

/// The 40 slots each connection shuffles and cycles through.
const MIX: [(Kind, usize); 7] = [
    (Kind::DirectConverted, 14),
    (Kind::QueuedConverted, 14),
    (Kind::DirectOther, 3),
    (Kind::QueuedOther, 3),
    (Kind::BadSignature, 2),
    (Kind::Schema, 2),
    (Kind::Duplicate, 2),
];

/// A re-send only of a conversion answered less than this long ago (the
/// soak's routes have a short replay window).
const RESEND_WITHIN: Duration = Duration::from_secs(30);

/// A second of the load whose slowest answer took this long (ms) or more is
/// listed in `slow_seconds`.
const SLOW_MS: u32 = 100;

impl Kind {
    fn index(self) -> u8 {
        self as u8
    }
    fn from_index(i: u8) -> Kind {
        KINDS[usize::from(i) % KINDS.len()]
    }
    fn name(self) -> &'static str {
        match self {
            Kind::DirectConverted => "direct_converted",
            Kind::QueuedConverted => "queued_converted",
            Kind::DirectOther => "direct_other",
            Kind::QueuedOther => "queued_other",
            Kind::BadSignature => "bad_signature",
            Kind::Schema => "schema_violation",
            Kind::Duplicate => "duplicate_resend",
        }
    }
    fn converted(self) -> bool {
        matches!(self, Kind::DirectConverted | Kind::QueuedConverted)
    }
    /// An event hookgate must take (and deliver exactly once here).
    fn valid(self) -> bool {
        matches!(
            self,
            Kind::DirectConverted | Kind::QueuedConverted | Kind::DirectOther | Kind::QueuedOther
        )
    }
    fn rejected(self) -> bool {
        matches!(self, Kind::BadSignature | Kind::Schema)
    }
    /// The answer this kind must get: status and the body's `status` or
    /// `error` (`app` for the app's own `{"ok":true}`).
    fn expected(self) -> &'static str {
        match self {
            Kind::DirectConverted | Kind::DirectOther => "200 app",
            Kind::QueuedConverted | Kind::QueuedOther => "200 queued",
            Kind::BadSignature => "401 invalid_signature",
            Kind::Schema => "422 invalid_payload",
            Kind::Duplicate => "200 duplicate",
        }
    }
    /// Latency group.
    fn group(self, direct: bool) -> usize {
        match self {
            Kind::DirectConverted | Kind::DirectOther => 0,
            Kind::QueuedConverted | Kind::QueuedOther => 1,
            Kind::BadSignature | Kind::Schema => 2,
            Kind::Duplicate if direct => 3,
            Kind::Duplicate => 4,
        }
    }
}

const GROUPS: [&str; 5] = [
    "direct_200",
    "queued_200",
    "rejected",
    "duplicate_direct",
    "duplicate_queued",
];

/// A ledger byte: the kind in the low 4 bits, and what must happen to it.
const EXPECT: u8 = 0x10; // answered its 200: must reach the app exactly once
const MAYBE: u8 = 0x20; // no (expected) answer: may or may not have reached it

struct Args {
    addr: SocketAddr,
    direct_path: String,
    queued_path: String,
    secret: Vec<u8>,
    /// None: any certificate (`insecure`).
    ca: Option<Vec<u8>>,
    app: String,
    admin: Option<SocketAddr>,
    conns: usize,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    tag: String,
    drain_timeout: Duration,
    body_bytes: usize,
    progress: Duration,
}

const USAGE: &str = "usage: soak --addr ADDR --secret-file F --app ADDR [--direct-path P] [--queued-path P] [--ca PEM|insecure] [--admin ADDR] [--conns N] [--rate R] [--duration S] [--warmup S] [--tag T] [--drain-timeout S] [--body-bytes N] [--progress S]";

fn args() -> Result<Args, BoxError> {
    let mut kv = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let Some(name) = k.strip_prefix("--") else {
            return Err(format!("unexpected {k:?}; {USAGE}").into());
        };
        let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        kv.insert(name.to_owned(), v);
    }
    let take = |k: &str| kv.get(k).cloned();
    let need = |k: &str| take(k).ok_or_else(|| format!("--{k} is required; {USAGE}"));
    let secs = |k: &str, d: f64| -> Result<Duration, BoxError> {
        Ok(Duration::from_secs_f64(
            take(k).map_or(Ok(d), |v| v.parse())?,
        ))
    };
    let secret = std::fs::read(need("secret-file")?)?;
    let tag = take("tag").unwrap_or_else(|| "soak".to_owned());
    if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("--tag: letters and digits only".into());
    }
    let a = Args {
        addr: need("addr")?.parse()?,
        direct_path: take("direct-path").unwrap_or_else(|| "/webhooks/direct".to_owned()),
        queued_path: take("queued-path").unwrap_or_else(|| "/webhooks/queued".to_owned()),
        secret: secret.trim_ascii_end().to_vec(),
        ca: match take("ca").as_deref() {
            None | Some("insecure") => None,
            Some(file) => Some(std::fs::read(file)?),
        },
        app: need("app")?,
        admin: take("admin").map(|a| a.parse()).transpose()?,
        conns: take("conns").map_or(Ok(32), |v| v.parse())?,
        rate: take("rate").map_or(Ok(0.0), |v| v.parse())?,
        duration: secs("duration", 60.0)?,
        warmup: secs("warmup", 0.0)?,
        tag,
        drain_timeout: secs("drain-timeout", 300.0)?,
        body_bytes: take("body-bytes").map_or(Ok(1024), |v| v.parse())?,
        progress: secs("progress", 60.0)?,
    };
    if a.conns == 0 || a.secret.is_empty() || a.rate < 0.0 {
        return Err(format!("--conns > 0, a non-empty secret, --rate >= 0; {USAGE}").into());
    }
    Ok(a)
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "[soak] {line}");
}

// --- the app ------------------------------------------------------------------

/// What the app received.
struct App {
    /// `soak-<tag>-`
    prefix: String,
    /// Copies received per connection and sequence number (saturating).
    counts: Mutex<Vec<Vec<u8>>>,
    /// Requests by route and event (hookgate's `X-Webhook-Route` and
    /// `X-Webhook-Event`).
    by_route: Mutex<BTreeMap<String, u64>>,
    total: AtomicU64,
    foreign: AtomicU64,
    unverified: AtomicU64,
}

impl App {
    fn record(&self, id: Option<&str>) {
        let place = id
            .and_then(|id| id.strip_prefix(self.prefix.as_str()))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(c, s)| Some((c.parse::<usize>().ok()?, s.parse::<usize>().ok()?)));
        let Some((conn, seq)) = place else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() <= conn {
            counts.resize_with(conn + 1, Vec::new);
        }
        let row = &mut counts[conn];
        if row.len() <= seq {
            row.resize(seq + 1, 0);
        }
        row[seq] = row[seq].saturating_add(1);
    }
}

async fn answer(
    req: Request<Incoming>,
    app: Arc<App>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let verified = header("x-webhook-verified") == "true";
    let key = format!(
        "{} {}",
        header("x-webhook-route"),
        header("x-webhook-event")
    );
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    app.total.fetch_add(1, Ordering::Relaxed);
    if !verified {
        app.unverified.fetch_add(1, Ordering::Relaxed);
    }
    *app.by_route
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default() += 1;
    let doc: serde_json::Value = body
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    app.record(doc["campaign_id"].as_str());
    let mut r = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

async fn serve_app(listener: TcpListener, app: Arc<App>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, app.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

// --- the load -----------------------------------------------------------------

const OTHER_EVENTS: [&str; 3] = ["popup.shown", "popup.clicked", "popup.closed"];

fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A body with its own `campaign_id`, padded with a `note` to about
/// `size` bytes. `schema_violation`: a conversion without its visitor's
/// email (422 `invalid_payload`).
fn body(event: &str, id: &str, seq: u64, size: usize, schema_violation: bool) -> Vec<u8> {
    let ts = timestamp();
    let visitor = match (event, schema_violation) {
        (_, true) => r#","visitor":{"fields":{"name":"Soak Visitor"}}"#.to_owned(),
        ("popup.converted", false) => format!(
            r#","visitor":{{"email":"visitor@example.com","fields":{{"name":"Soak Visitor","n":{seq},"newsletter":true}}}}"#
        ),
        _ => String::new(),
    };
    let head = format!(
        r#"{{"event":"{event}","campaign_id":"{id}","campaign_name":"Soak Popup","timestamp":"{ts}","page_url":"https://example.com/landing"{visitor}"#
    );
    let pad = size.saturating_sub(head.len() + 12);
    format!(r#"{head},"note":"{}"}}"#, "x".repeat(pad)).into_bytes()
}

fn sign(key: &[u8], body: &[u8]) -> String {
    match <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// What one connection did.
#[derive(Default)]
struct Tally {
    /// One byte per request, indexed by its sequence number (see EXPECT).
    ledger: Vec<u8>,
    sent: [u64; 7],
    /// (kind, answer) → count.
    answers: BTreeMap<(u8, String), u64>,
    unexpected: u64,
    samples: Vec<String>,
    errors: u64,
    first_error: Option<String>,
    /// Answers within the measured window.
    counted: u64,
    /// Latencies (µs) by group, of expected answers in the measured window.
    latencies: [Vec<u32>; 5],
    /// The slowest answer (µs) of the requests due in each second of the
    /// load (index: seconds since its start), expected or not: when the
    /// tail happened, to set beside hookgate's log (its purges).
    slowest: Vec<u32>,
}

fn outcome(status: u16, bytes: &[u8]) -> String {
    let doc: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match status {
        200 => format!("200 {}", doc["status"].as_str().unwrap_or("app")),
        s => format!("{s} {}", doc["error"].as_str().unwrap_or("-")),
    }
}

/// A conversion answered 200 that can be sent again.
struct Sent {
    body: Bytes,
    sig: String,
    at: Instant,
}

async fn connection(
    args: Arc<Args>,
    tls: tokio_rustls::TlsConnector,
    conn_no: usize,
    start: Instant,
    answered: Arc<AtomicU64>,
) -> Tally {
    let mut tally = Tally::default();
    let mut rng = fastrand::Rng::with_seed(conn_no as u64 ^ 0x5eed);
    let mut slots: Vec<Kind> = MIX
        .iter()
        .flat_map(|&(k, n)| std::iter::repeat_n(k, n))
        .collect();
    rng.shuffle(&mut slots);
    let bad_key: Vec<u8> = args.secret.iter().rev().chain(b"-wrong").copied().collect();
    let end = start + args.duration;
    let counted_from = start + args.warmup;
    let mut pace = Pace::new(args.rate, args.conns, conn_no, start, end);
    let mut sender: Option<Sender> = None;
    let host = format!("localhost:{}", args.addr.port());
    // The latest conversion answered 200, per route (0 direct, 1 queued).
    let mut last: [Option<Sent>; 2] = [None, None];
    while let Some(sent_due) = pace.next().await {
        let seq = tally.ledger.len() as u64;
        let id = format!("soak-{}-{conn_no}-{seq}", args.tag);
        let mut kind = slots[(seq % slots.len() as u64) as usize];
        let side = (seq / slots.len() as u64 + seq) % 2; // which route a rejection/re-send uses
        let mut resend = None;
        if kind == Kind::Duplicate {
            let fresh =
                |s: &Option<Sent>| s.as_ref().is_some_and(|s| s.at.elapsed() < RESEND_WITHIN);
            let pick = if fresh(&last[side as usize]) {
                Some(side as usize)
            } else if fresh(&last[1 - side as usize]) {
                Some(1 - side as usize)
            } else {
                None
            };
            match pick {
                Some(r) => resend = Some(r),
                None => kind = Kind::DirectConverted, // nothing to re-send yet
            }
        }
        let (direct, bytes, sig) = match (kind, resend) {
            (Kind::Duplicate, Some(r)) => match &last[r] {
                Some(s) => (r == 0, s.body.clone(), s.sig.clone()),
                None => continue,
            },
            _ => {
                let direct = match kind {
                    Kind::DirectConverted | Kind::DirectOther => true,
                    Kind::QueuedConverted | Kind::QueuedOther => false,
                    _ => side == 0,
                };
                let event = match kind {
                    Kind::DirectOther | Kind::QueuedOther => {
                        OTHER_EVENTS[(seq as usize / 2) % OTHER_EVENTS.len()]
                    }
                    _ => "popup.converted",
                };
                let b = body(event, &id, seq, args.body_bytes, kind == Kind::Schema);
                let key = if kind == Kind::BadSignature {
                    &bad_key
                } else {
                    &args.secret
                };
                let sig = sign(key, &b);
                (direct, Bytes::from(b), sig)
            }
        };
        tally.sent[usize::from(kind.index())] += 1;
        let path = if direct {
            &args.direct_path
        } else {
            &args.queued_path
        };
        let request = http::Request::post(path.as_str())
            .header("host", host.as_str())
            .header("content-type", "application/json")
            .header("x-coolpopup-signature", sig.as_str())
            .body(Full::new(bytes.clone()));
        let Ok(request) = request else {
            tally.ledger.push(kind.index() | MAYBE);
            tally.errors += 1;
            continue;
        };
        // A connection the server closed while idle is replaced before the
        // request is sent (nothing was sent on it: not an error).
        let mut attempts = 0;
        let ready = loop {
            attempts += 1;
            if sender.as_ref().is_some_and(|s| s.is_closed()) {
                sender = None;
            }
            if sender.is_none() {
                match connect(args.addr, &tls).await {
                    Ok(s) => sender = Some(s),
                    Err(e) => {
                        tally.first_error.get_or_insert(format!("connect: {e}"));
                        if attempts < 3 {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                        break false;
                    }
                }
            }
            match sender.as_mut() {
                Some(s) => match s.ready().await {
                    Ok(()) => break true,
                    Err(_) if attempts < 3 => sender = None,
                    Err(e) => {
                        tally.first_error.get_or_insert(format!("ready: {e}"));
                        break false;
                    }
                },
                None => break false,
            }
        };
        let answer = match (ready, sender.as_mut()) {
            (true, Some(s)) => async {
                let resp = s.send_request(request).await?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            }
            .await
            .map_err(|e| e.to_string()),
            _ => Err("no connection".to_owned()),
        };
        let done = Instant::now();
        answered.fetch_add(1, Ordering::Relaxed);
        let second = sent_due.saturating_duration_since(start).as_secs() as usize;
        if tally.slowest.len() <= second {
            tally.slowest.resize(second + 1, 0);
        }
        let took = done.saturating_duration_since(sent_due).as_micros() as u32;
        tally.slowest[second] = tally.slowest[second].max(took);
        let counted = done >= counted_from && done <= end + Duration::from_secs(5);
        if counted {
            tally.counted += 1;
        }
        match answer {
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(format!("request: {e}"));
                tally.ledger.push(kind.index() | MAYBE);
                *tally
                    .answers
                    .entry((kind.index(), "error".to_owned()))
                    .or_default() += 1;
                sender = None;
            }
            Ok((status, resp)) => {
                let got = outcome(status, &resp);
                let ok = got == kind.expected();
                let mark = match (ok, kind.valid()) {
                    (true, true) => EXPECT,
                    (true, false) => 0,
                    // A rejection answered 200 was forwarded: it may arrive
                    // (counted as leaked); a valid event answered 503 may
                    // have been stored.
                    (false, _) => MAYBE,
                };
                tally.ledger.push(kind.index() | mark);
                if ok {
                    if counted {
                        tally.latencies[kind.group(direct)].push(took);
                    }
                    if kind.converted() {
                        last[usize::from(!direct)] = Some(Sent {
                            body: bytes,
                            sig,
                            at: done,
                        });
                    }
                } else {
                    tally.unexpected += 1;
                    if tally.samples.len() < 5 {
                        tally.samples.push(format!(
                            "{} on {}: got {got:?}, want {:?}",
                            kind.name(),
                            if direct { "direct" } else { "queued" },
                            kind.expected()
                        ));
                    }
                }
                *tally.answers.entry((kind.index(), got)).or_default() += 1;
            }
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

/// The sum of `hookgate_queue_events{…state="pending"}` over routes.
async fn pending(admin: SocketAddr) -> Result<f64, BoxError> {
    let tcp = TcpStream::connect(admin).await?;
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/metrics")
        .header("host", admin.to_string())
        .body(Full::new(Bytes::new()))?;
    let resp = s.send_request(req).await?;
    let text = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text);
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with("hookgate_queue_events{") && line.contains("state=\"pending\"") {
            sum += line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    Ok(sum)
}

/// Tallies against what the app received.
#[derive(Default)]
struct Check {
    answered_200: [u64; 7],
    received: [u64; 7],
    lost: [u64; 7],
    duplicated: [u64; 7],
    leaked: u64,
    /// EXPECT entries not received yet (for the drain).
    missing: u64,
}

fn check(tallies: &[Tally], app: &App) -> Check {
    let mut c = Check::default();
    let counts = app.counts.lock().unwrap_or_else(|e| e.into_inner());
    for (conn, t) in tallies.iter().enumerate() {
        let row = counts.get(conn).map_or(&[][..], Vec::as_slice);
        for (seq, &entry) in t.ledger.iter().enumerate() {
            let k = usize::from(entry & 0x0f);
            let n = row.get(seq).copied().unwrap_or(0);
            let kind = Kind::from_index(entry & 0x0f);
            if entry & EXPECT != 0 {
                c.answered_200[k] += 1;
                if n == 0 {
                    c.lost[k] += 1;
                    c.missing += 1;
                }
            }
            if n >= 1 {
                c.received[k] += 1;
            }
            if n > 1 {
                c.duplicated[k] += 1;
            }
            if n >= 1 && kind.rejected() {
                c.leaked += 1;
            }
        }
    }
    c
}

fn main() -> Result<(), BoxError> {
    let args = Arc::new(args()?);
    let tls = tls_connector(args.ca.clone())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args, tls))
}

async fn run(args: Arc<Args>, tls: tokio_rustls::TlsConnector) -> Result<(), BoxError> {
    let app = Arc::new(App {
        prefix: format!("soak-{}-", args.tag),
        counts: Mutex::new(Vec::new()),
        by_route: Mutex::new(BTreeMap::new()),
        total: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        unverified: AtomicU64::new(0),
    });
    let listener = TcpListener::bind(args.app.as_str()).await?;
    say(&format!(
        "app on http://{}; load: {} connections, {} for {:?}",
        listener.local_addr()?,
        args.conns,
        if args.rate > 0.0 {
            format!("{} requests/s", args.rate)
        } else {
            "closed loop".to_owned()
        },
        args.duration
    ));
    tokio::spawn(serve_app(listener, app.clone()));

    let answered = Arc::new(AtomicU64::new(0));
    if !args.progress.is_zero() {
        let (answered, app, every) = (answered.clone(), app.clone(), args.progress);
        tokio::spawn(async move {
            let begin = Instant::now();
            let mut tick = tokio::time::interval_at((begin + every).into(), every);
            loop {
                tick.tick().await;
                say(&format!(
                    "{:.0} s: {} answered, the app got {}",
                    begin.elapsed().as_secs_f64(),
                    answered.load(Ordering::Relaxed),
                    app.total.load(Ordering::Relaxed)
                ));
            }
        });
    }

    let start = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let tasks: Vec<_> = (0..args.conns)
        .map(|c| {
            tokio::spawn(connection(
                args.clone(),
                tls.clone(),
                c,
                start,
                answered.clone(),
            ))
        })
        .collect();
    let mut tallies = Vec::new();
    for t in tasks {
        // A task that panicked is an error (its ledger, so its checks, are gone).
        tallies.push(t.await.unwrap_or_else(|e| Tally {
            errors: 1,
            first_error: Some(format!("load task: {e}")),
            ..Tally::default()
        }));
    }
    let load_secs = start.elapsed().as_secs_f64();

    // The drain: every event answered 200 at the app, nothing pending.
    let drain_start = Instant::now();
    let mut drained = false;
    let mut last_pending = None;
    let mut all_received = None;
    while drain_start.elapsed() < args.drain_timeout {
        if check(&tallies, &app).missing == 0 {
            all_received.get_or_insert(drain_start.elapsed().as_secs_f64());
            last_pending = match args.admin {
                Some(a) => pending(a).await.ok(),
                None => Some(0.0),
            };
            if last_pending == Some(0.0) {
                drained = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    // Late copies (a second delivery) would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let c = check(&tallies, &app);
    let mut all = Tally::default();
    for t in tallies {
        for (i, n) in t.sent.iter().enumerate() {
            all.sent[i] += n;
        }
        for (k, n) in t.answers {
            *all.answers.entry(k).or_default() += n;
        }
        all.unexpected += t.unexpected;
        all.errors += t.errors;
        all.counted += t.counted;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
        for s in t.samples {
            if all.samples.len() < 10 {
                all.samples.push(s);
            }
        }
        for (g, l) in t.latencies.into_iter().enumerate() {
            all.latencies[g].extend(l);
        }
        if all.slowest.len() < t.slowest.len() {
            all.slowest.resize(t.slowest.len(), 0);
        }
        for (a, s) in all.slowest.iter_mut().zip(&t.slowest) {
            *a = (*a).max(*s);
        }
    }
    // Seconds of the load whose slowest answer took over SLOW_MS.
    let slow_seconds: Vec<serde_json::Value> = all
        .slowest
        .iter()
        .enumerate()
        .filter(|(_, us)| **us >= SLOW_MS * 1000)
        .map(|(s, us)| serde_json::json!([s, f64::from(*us / 1000)]))
        .collect();
    let by_kind = |v: &[u64; 7]| -> serde_json::Value {
        KINDS
            .iter()
            .map(|k| {
                (
                    k.name().to_owned(),
                    serde_json::json!(v[usize::from(k.index())]),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut answers = serde_json::Map::new();
    for ((k, got), n) in &all.answers {
        let entry = answers
            .entry(Kind::from_index(*k).name().to_owned())
            .or_insert_with(|| serde_json::json!({}));
        entry[got.as_str()] = serde_json::json!(n);
    }
    let mut latency = serde_json::Map::new();
    for (g, l) in all.latencies.iter_mut().enumerate() {
        l.sort_unstable();
        latency.insert(
            GROUPS[g].to_owned(),
            serde_json::json!({
                "n": l.len(),
                "p50": percentile(l, 50.0),
                "p90": percentile(l, 90.0),
                "p99": percentile(l, 99.0),
                "p999": percentile(l, 99.9),
                "max": l.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
            }),
        );
    }
    let dc = usize::from(Kind::DirectConverted.index());
    let qc = usize::from(Kind::QueuedConverted.index());
    let sum = |v: &[u64; 7], f: fn(Kind) -> bool| -> u64 {
        KINDS
            .iter()
            .filter(|k| f(**k))
            .map(|k| v[usize::from(k.index())])
            .sum()
    };
    let other = |k: Kind| k.valid() && !k.converted();
    let lost = sum(&c.lost, Kind::valid);
    let duplicated: u64 = c.duplicated.iter().sum();
    let foreign = app.foreign.load(Ordering::Relaxed);
    let unverified = app.unverified.load(Ordering::Relaxed);
    let measured = (args.duration.saturating_sub(args.warmup)).as_secs_f64();
    let doc = serde_json::json!({
        "tag": args.tag,
        "conns": args.conns,
        "rate": args.rate,
        "seconds": args.duration.as_secs_f64(),
        "load_seconds": load_secs,
        // When the load began (Unix seconds), to place slow_seconds in time.
        "started_unix": started_unix,
        "per_second": if measured > 0.0 { all.counted as f64 / measured } else { 0.0 },
        "sent": by_kind(&all.sent),
        "sent_total": all.sent.iter().sum::<u64>(),
        "answers": answers,
        "converted": {
            "answered_200_direct": c.answered_200[dc],
            "answered_200_queued": c.answered_200[qc],
            "received_direct": c.received[dc],
            "received_queued": c.received[qc],
            "lost": c.lost[dc] + c.lost[qc],
            "duplicated": c.duplicated[dc] + c.duplicated[qc],
        },
        "other_events": {
            "answered_200": sum(&c.answered_200, other),
            "received": sum(&c.received, other),
            "lost": sum(&c.lost, other),
            "duplicated": sum(&c.duplicated, other),
        },
        "lost": lost,
        "duplicated": duplicated,
        "leaked": c.leaked,
        "unexpected": all.unexpected,
        "unexpected_samples": all.samples,
        "errors": all.errors,
        "first_error": all.first_error,
        "app": {
            "requests": app.total.load(Ordering::Relaxed),
            "foreign": foreign,
            "unverified": unverified,
            "by_route_event": app.by_route.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        },
        "drain": {
            "drained": drained,
            "seconds": drain_secs,
            // When the app had every event answered 200 (the rest of
            // "seconds" is waiting for the pending gauge, refreshed every second).
            "all_received_seconds": all_received,
            "pending_at_end": last_pending,
        },
        "latency_ms": latency,
        // [second since the load began, its slowest answer in ms], for the
        // seconds over SLOW_MS.
        "slow_seconds": slow_seconds,
    });
    writeln!(std::io::stdout(), "{doc}")?;
    let clean = lost == 0
        && duplicated == 0
        && c.leaked == 0
        && all.unexpected == 0
        && all.errors == 0
        && foreign == 0
        && unverified == 0
        && drained;
    if !clean {
        say("FAILED: see lost, duplicated, leaked, unexpected, errors, app, drain");
        std::process::exit(1);
    }
    Ok(())
}
