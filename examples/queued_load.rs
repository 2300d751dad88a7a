//! The load client of `benches/queued/postgres.sh`: signed `popup.converted`
//! POSTs over TLS keep-alive connections, **every body distinct** (its own
//! `campaign_id`, so deduplication stores each one: wrk and h2load can only
//! repeat one body, which a queued route answers `duplicate` from the
//! second request on), each signed with HMAC-SHA256 as the provider does.
//!
//!     queued_load ADDR PATH SECRET_FILE CA_PEM CONNS WARMUP_S DURATION_S RATE TAG [EVENT] [BODY_BYTES]
//!
//! `CA_PEM`: the PEM the server's certificate must chain to, or `insecure`
//! (any certificate: a loopback benchmark against a certificate openssl
//! made as a CA, which rustls refuses as a server's own).
//!
//! `EVENT` (default `popup.converted`, deduplicated: each request claims a
//! key in the store too) may be `popup.shown` (not deduplicated), as
//! benches/queued/run.sh's wrk body is. `BODY_BYTES` defaults to 1024.
//!
//! - `RATE` 0: closed loop (each connection sends its next request when
//!   the previous one is answered): the highest throughput.
//! - `RATE` R > 0: open loop at R requests/s in all, each connection on its
//!   own schedule (R / CONNS); a request's latency runs from when it was
//!   **due**, not from when it was sent, so a stall counts against every
//!   request it delays (no coordinated omission), as long as the server
//!   keeps up.
//! - Requests answered in the first `WARMUP_S` seconds are not counted.
//!
//! Prints one JSON object: answers by kind (`queued`, `ok` (any other
//! 200, e.g. a direct route's app answer), `duplicate`, `unavailable`
//! (503), `other`, `errors` (connection failures)), the measured
//! throughput of 200s, and latency percentiles in ms. Exits 1 if any answer
//! was not a 200 or a connection failed.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};

mod common;

use common::{BoxError, Pace, Sender, connect, tls_connector};

struct Args {
    addr: SocketAddr,
    path: String,
    secret: Vec<u8>,
    /// None: any certificate (`insecure`).
    ca: Option<Vec<u8>>,
    conns: usize,
    warmup: Duration,
    duration: Duration,
    rate: f64,
    tag: String,
    event: String,
    body_bytes: usize,
}

fn args() -> Result<Args, BoxError> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 9 {
        return Err("usage: queued_load ADDR PATH SECRET_FILE CA_PEM CONNS WARMUP_S DURATION_S RATE TAG [EVENT] [BODY_BYTES]".into());
    }
    let secret = std::fs::read(&a[2])?;
    let secret = secret.trim_ascii_end().to_vec();
    Ok(Args {
        addr: a[0].parse()?,
        path: a[1].clone(),
        secret,
        ca: match a[3].as_str() {
            "insecure" => None,
            file => Some(std::fs::read(file)?),
        },
        conns: a[4].parse()?,
        warmup: Duration::from_secs_f64(a[5].parse()?),
        duration: Duration::from_secs_f64(a[6].parse()?),
        rate: a[7].parse()?,
        tag: a[8].clone(),
        event: a
            .get(9)
            .cloned()
            .unwrap_or_else(|| "popup.converted".to_owned()),
        body_bytes: a.get(10).map_or(Ok(1024), |s| s.parse())?,
    })
}

/// A `popup.converted` body of exactly `size` bytes (as
/// benches/load/body.py makes them) whose `campaign_id` is
/// `camp_` + 24 placeholder bytes at the returned offset.
fn template(event: &str, size: usize) -> Result<(Vec<u8>, usize), BoxError> {
    let campaign_id = format!("camp_{}", "0".repeat(24));
    let body =
        hookgate::testing::sized_body(event, &campaign_id, size).ok_or("BODY_BYTES too small")?;
    let at = body
        .windows(5)
        .position(|w| w == b"camp_")
        .ok_or("no campaign id")?
        + 5;
    Ok((body, at))
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    queued: u64,
    ok: u64,
    duplicate: u64,
    unavailable: u64,
    other: u64,
    errors: u64,
    /// Latencies (µs) of the counted 200s.
    latencies: Vec<u64>,
    first_other: Option<String>,
}

async fn connection(
    args: Arc<Args>,
    tls: tokio_rustls::TlsConnector,
    conn_no: usize,
    start: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let (mut body, at) = match template(&args.event, args.body_bytes) {
        Ok(t) => t,
        Err(e) => {
            tally.errors += 1;
            tally.first_other = Some(e.to_string());
            return tally;
        }
    };
    let end = start + args.warmup + args.duration;
    let counted_from = start + args.warmup;
    let mut pace = Pace::new(args.rate, args.conns, conn_no, start, end);
    let mut sender: Option<Sender> = None;
    let mut n: u64 = 0;
    let host = format!("localhost:{}", args.addr.port());
    while let Some(sent_due) = pace.next().await {
        // This request's own campaign id: tag, connection, sequence.
        let id = format!("{:0>24}", format!("{}{conn_no:x}x{n:x}", args.tag));
        n += 1;
        body[at..at + 24].copy_from_slice(&id.as_bytes()[id.len() - 24..]);
        let mut mac = match <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&args.secret) {
            Ok(m) => m,
            Err(_) => return tally,
        };
        mac.update(&body);
        let sig = hex::encode(mac.finalize().into_bytes());
        if sender.is_none() {
            match connect(args.addr, &tls).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    tally.errors += 1;
                    tally.first_other.get_or_insert(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let request = http::Request::post(args.path.as_str())
            .header("host", host.as_str())
            .header("content-type", "application/json")
            .header("x-coolpopup-signature", sig)
            .body(Full::new(Bytes::copy_from_slice(&body)));
        let Ok(request) = request else { return tally };
        let answer = async {
            s.ready().await?;
            let resp = s.send_request(request).await?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, bytes))
        }
        .await;
        let done = Instant::now();
        let counted = done >= counted_from && done <= end + Duration::from_secs(5);
        match answer {
            Err(e) => {
                tally.errors += 1;
                tally.first_other.get_or_insert(format!("request: {e}"));
                sender = None;
            }
            Ok((status, bytes)) => {
                let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let kind = (status, doc["status"].as_str());
                if !counted && status == 200 {
                    continue;
                }
                match kind {
                    (200, Some("queued")) => tally.queued += 1,
                    (200, Some("duplicate")) => tally.duplicate += 1,
                    (200, _) => tally.ok += 1,
                    (503, _) => tally.unavailable += 1,
                    _ => {
                        tally.other += 1;
                        tally
                            .first_other
                            .get_or_insert(format!("{status} {}", String::from_utf8_lossy(&bytes)));
                    }
                }
                if status == 200 && kind.1 != Some("duplicate") {
                    tally
                        .latencies
                        .push(done.saturating_duration_since(sent_due).as_micros() as u64);
                }
            }
        }
    }
    tally
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() -> Result<(), BoxError> {
    let args = Arc::new(args()?);
    let tls = tls_connector(args.ca.clone())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tallies = runtime.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..args.conns)
            .map(|c| tokio::spawn(connection(args.clone(), tls.clone(), c, start)))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            if let Ok(t) = t.await {
                out.push(t);
            }
        }
        out
    });
    let mut all = Tally::default();
    for t in tallies {
        all.queued += t.queued;
        all.ok += t.ok;
        all.duplicate += t.duplicate;
        all.unavailable += t.unavailable;
        all.other += t.other;
        all.errors += t.errors;
        all.latencies.extend(t.latencies);
        if all.first_other.is_none() {
            all.first_other = t.first_other;
        }
    }
    all.latencies.sort_unstable();
    let secs = args.duration.as_secs_f64();
    let good = all.queued + all.ok;
    let doc = serde_json::json!({
        "conns": args.conns,
        "rate": args.rate,
        "seconds": secs,
        "queued": all.queued,
        "ok": all.ok,
        "duplicate": all.duplicate,
        "unavailable": all.unavailable,
        "other": all.other,
        "errors": all.errors,
        "first_problem": all.first_other,
        "per_second": good as f64 / secs,
        "p50_ms": percentile(&all.latencies, 50.0),
        "p90_ms": percentile(&all.latencies, 90.0),
        "p99_ms": percentile(&all.latencies, 99.0),
        "p999_ms": percentile(&all.latencies, 99.9),
        "max_ms": all.latencies.last().map_or(0.0, |&m| m as f64 / 1000.0),
    });
    writeln!(std::io::stdout(), "{doc}")?;
    if all.duplicate + all.unavailable + all.other + all.errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}
