//! What the load clients (`queued_load`, `soak`) share: one connection's
//! pacing and its TLS keep-alive HTTP/1.1 connection.

use std::error::Error;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type BoxError = Box<dyn Error + Send + Sync>;

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A TLS connection to `addr` (server name `localhost`), HTTP/1.1.
pub async fn connect(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
) -> Result<Sender, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let stream = tls.connect(name, tcp).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// When one connection sends its requests until `end`.
/// - `rate` 0: closed loop, each request as soon as the previous one was
///   answered; its latency counts from when it was sent.
/// - `rate` R > 0: open loop, R requests/s over `conns` connections, each
///   on its own schedule, the connections spread over one interval; a
///   request's latency counts from when it was **due** (no coordinated
///   omission).
pub struct Pace {
    interval: Option<Duration>,
    due: Instant,
    end: Instant,
}

impl Pace {
    pub fn new(rate: f64, conns: usize, conn_no: usize, start: Instant, end: Instant) -> Pace {
        let interval = (rate > 0.0).then(|| Duration::from_secs_f64(conns as f64 / rate));
        let due =
            start + interval.map_or(Duration::ZERO, |i| i.mul_f64(conn_no as f64 / conns as f64));
        Pace { interval, due, end }
    }

    /// Waits for the next request's turn and returns the instant its
    /// latency counts from; `None` once `end` has come.
    pub async fn next(&mut self) -> Option<Instant> {
        match self.interval {
            Some(i) => {
                if self.due >= self.end {
                    return None;
                }
                tokio::time::sleep_until(self.due.into()).await;
                let due = self.due;
                self.due += i;
                Some(due)
            }
            None => {
                let now = Instant::now();
                (now < self.end).then_some(now)
            }
        }
    }
}

/// A TLS client trusting the PEM `ca` (`None`: any certificate), offering
/// HTTP/1.1.
pub fn tls_connector(ca: Option<Vec<u8>>) -> Result<tokio_rustls::TlsConnector, BoxError> {
    let trust = ca.map_or(hookgate::Trust::Insecure, hookgate::Trust::Pem);
    let config = hookgate::tls_config(&trust, &[b"http/1.1"])?;
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}
