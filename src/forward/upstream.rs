//! The HTTP/1.1 client to the app, with its own keep-alive pool. Failures
//! are a [`TransportError`] that keeps its cause and says whether trying
//! again may help; the request pipeline maps them to the provider-facing
//! answer (refused, reset or unreachable → 502 `upstream_unavailable`; no
//! complete answer within `upstream.timeout` → 504 `upstream_timeout`), and
//! the queued-delivery worker to a retry or a dead letter.
//!
//! The pool is a stack of idle keep-alive connections to the one upstream:
//! the most recently used is reused first, one that was idle for
//! `upstream.pool_idle_timeout` is closed (by a task that looks every half
//! of it), one the app closed is dropped when met, and a request that a
//! reused connection could not take (the app closed it between two
//! requests) is sent again on a fresh one.
//!
//! An exchange runs in the task of the request it carries: the request's
//! head and body go out in one vectored write, the answer is read and
//! framed by [`h1`](super::h1) on the same task, so an exchange costs no
//! hand-over between tasks. It replaced hyper's `client::conn::http1`
//! (a task per connection, a channel and a oneshot per request), which
//! had replaced hyper-util's general-purpose pooled client
//! (`benches/RESULTS.md`).

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderValue, Response, Uri, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::h1;
use crate::config::ValidConfig;
use crate::forward::UpstreamRequest;

/// At most this many idle connections are kept.
const MAX_IDLE: usize = 512;

/// A connection to the app and its read buffer (empty between exchanges).
struct Conn {
    tcp: TcpStream,
    buf: BytesMut,
}

/// An idle keep-alive connection and since when it has been idle.
struct Idle {
    conn: Conn,
    since: Instant,
}

/// The app behind hookgate.
pub struct Upstream {
    /// `host:port`, to connect to.
    authority: String,
    /// Oldest first (a connection goes back on top when its answer is read).
    idle: Arc<Mutex<Vec<Idle>>>,
    reaper_started: AtomicBool,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    host: HeaderValue,
    timeout: Duration,
    max_response_bytes: usize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("authority", &self.authority)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `upstream.url` as the client uses it, parsed once by
/// [`Config::validate`](crate::config::Config::validate).
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// `host:port`, to connect to.
    authority: String,
    /// The URL's authority as written, for the `Host` header.
    host: HeaderValue,
}

impl UpstreamTarget {
    /// From an `http://host[:port]` URL; None if it is not one.
    pub(crate) fn parse(url: &str) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let authority = uri.authority()?;
        let host = HeaderValue::from_str(authority.as_str()).ok()?;
        let port = authority.port_u16().unwrap_or(80);
        Some(Self {
            authority: format!("{}:{port}", authority.host()),
            host,
        })
    }
}

/// Why an exchange with the app failed, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TCP connection was refused or failed.
    #[error("cannot connect to the app: {0}")]
    Connect(#[source] std::io::Error),
    /// The TCP connection did not complete within `upstream.connect_timeout`.
    #[error("connecting to the app took longer than {0:?}")]
    ConnectTimeout(Duration),
    /// HTTP/1.1 failed: sending, or reading the answer's head or body.
    #[error("HTTP exchange with the app failed: {0}")]
    Http(#[source] h1::Error),
    /// The answer's body was larger than `upstream.max_response_bytes`.
    #[error("the app's answer is larger than {0} bytes")]
    TooLarge(usize),
    /// No complete answer within `upstream.timeout`.
    #[error("the app did not answer within {0:?}")]
    Timeout(Duration),
    /// The route's path and the query did not make a request target.
    #[error("cannot build the request target")]
    Target,
}

impl TransportError {
    /// Trying again later may succeed: the app was down, slow or cut the
    /// connection. Not for an answer that was too large or a target that
    /// cannot be built: those fail the same way every time.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Self::Connect(_) | Self::ConnectTimeout(_) | Self::Http(_) | Self::Timeout(_) => true,
            Self::TooLarge(_) | Self::Target => false,
        }
    }

    /// The app did not answer in time (504 rather than 502).
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

impl Upstream {
    /// A client for `upstream.url` with a keep-alive pool.
    pub fn new(config: &ValidConfig) -> Self {
        let UpstreamTarget { authority, host } = config.upstream_target().clone();
        let config = &config.upstream;
        Self {
            authority,
            idle: Arc::default(),
            reaper_started: AtomicBool::new(false),
            connect_timeout: config.connect_timeout,
            pool_idle_timeout: config.pool_idle_timeout,
            host,
            timeout: config.timeout,
            max_response_bytes: config.max_response_bytes,
        }
    }

    /// The upstream's authority, for the `Host` header.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// The request target: the route's upstream path + `?query` (origin
    /// form; the upstream's authority goes in `Host`). Without a query, a
    /// clone of the parsed path (no allocation).
    pub(crate) fn uri_for(
        &self,
        path: &PathAndQuery,
        query: Option<&str>,
    ) -> Result<Uri, TransportError> {
        let Some(q) = query else {
            return Ok(Uri::from(path.clone()));
        };
        let path = path.as_str();
        let mut s = String::with_capacity(path.len() + q.len() + 1);
        s.push_str(path);
        s.push('?');
        s.push_str(q);
        // Both parts were valid URI components on their own.
        s.parse().map_err(|_| TransportError::Target)
    }

    /// Sends a request and reads the whole answer, within `upstream.timeout`.
    pub(crate) async fn send(
        &self,
        req: UpstreamRequest,
    ) -> Result<Response<Bytes>, TransportError> {
        self.send_within(req, self.timeout).await
    }

    /// `upstream.timeout`.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request and reads the whole answer, within `limit` (which
    /// may be longer than `upstream.timeout`: a deduplicated event keeps
    /// waiting for a late answer).
    pub(crate) async fn send_within(
        &self,
        req: UpstreamRequest,
        limit: Duration,
    ) -> Result<Response<Bytes>, TransportError> {
        let exchange = async {
            let mut head = Vec::with_capacity(256 + 64 * req.headers.len());
            h1::encode_head(&mut head, &req.target, &req.headers);
            let mut conn = loop {
                let (mut conn, reused) = match self.checkout() {
                    Some(conn) => (conn, true),
                    None => (self.connect().await?, false),
                };
                match write_all(&mut conn.tcp, &head, &req.body).await {
                    Ok(()) => break conn,
                    // The app closed this idle connection: it cannot have
                    // read a whole request from it. Try the next.
                    Err(_) if reused => {}
                    Err(e) => return Err(TransportError::Http(h1::Error::Io(e))),
                }
            };
            let answer = h1::read_answer(&mut conn.tcp, &mut conn.buf, self.max_response_bytes)
                .await
                .map_err(|e| match e {
                    h1::Error::TooLarge => TransportError::TooLarge(self.max_response_bytes),
                    e => TransportError::Http(e),
                })?;
            if answer.keep_alive {
                self.checkin(conn);
            }
            let mut response = Response::new(answer.body);
            *response.status_mut() = answer.status;
            *response.version_mut() = Version::HTTP_11;
            *response.headers_mut() = answer.headers;
            Ok(response)
        };
        tokio::time::timeout(limit, exchange)
            .await
            .unwrap_or(Err(TransportError::Timeout(limit)))
    }

    /// The most recently used idle connection that is still open and fresh
    /// enough.
    fn checkout(&self) -> Option<Conn> {
        loop {
            let Idle { conn, since } = lock(&self.idle).pop()?;
            if since.elapsed() >= self.pool_idle_timeout {
                continue; // dropped: the connection closes
            }
            // Nothing may arrive on an idle connection: end of stream (the
            // app closed it) or stray bytes mean it cannot be used.
            match conn.tcp.try_read(&mut [0; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(conn),
                _ => continue,
            }
        }
    }

    /// Back into the pool after a complete answer that leaves the
    /// connection open.
    fn checkin(&self, conn: Conn) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Closes connections idle for `pool_idle_timeout`, checking every half
    /// of it: an idle connection lasts at most 1.5 × `pool_idle_timeout`.
    /// Started with the first connection (inside the runtime); ends when
    /// the `Upstream` is dropped.
    fn start_reaper(&self) {
        if self.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let idle = Arc::downgrade(&self.idle);
        let max_idle = self.pool_idle_timeout;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval((max_idle / 2).max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(idle) = idle.upgrade() else { return };
                let mut idle = lock(&idle);
                let stale = idle
                    .iter()
                    .take_while(|c| c.since.elapsed() >= max_idle)
                    .count();
                idle.drain(..stale);
            }
        });
    }

    /// A new connection, within `upstream.connect_timeout`.
    async fn connect(&self) -> Result<Conn, TransportError> {
        self.start_reaper();
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| TransportError::ConnectTimeout(self.connect_timeout))?
            .map_err(TransportError::Connect)?;
        let _ = tcp.set_nodelay(true);
        Ok(Conn {
            tcp,
            buf: BytesMut::new(),
        })
    }
}

/// Writes the head and the body, in one system call when the socket takes
/// them at once.
async fn write_all(tcp: &mut TcpStream, mut head: &[u8], mut body: &[u8]) -> std::io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let n = tcp
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    Ok(())
}

/// The idle stack; a panic while it was held leaves nothing half-done in it.
fn lock(idle: &Mutex<Vec<Idle>>) -> std::sync::MutexGuard<'_, Vec<Idle>> {
    idle.lock().unwrap_or_else(PoisonError::into_inner)
}
