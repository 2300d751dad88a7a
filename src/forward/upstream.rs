//! The HTTP/1.1 client to the app, with its own keep-alive pool. Failures
//! are a [`TransportError`] that keeps its cause and says whether trying
//! again may help; the request pipeline maps them to the provider-facing
//! answer (refused, reset or unreachable → 502 `upstream_unavailable`; no
//! complete answer within `upstream.timeout` → 504 `upstream_timeout`), and
//! the queued-delivery worker to a retry or a dead letter.
//!
//! The pool is a stack of idle `hyper::client::conn::http1` connections to
//! the one upstream: the most recently used is reused first, one that was
//! idle for `upstream.pool_idle_timeout` is closed (by a task that looks
//! every half of it), one the app closed is dropped when met, and a request
//! that a reused connection could not take (the app closed it between two
//! requests) is sent again on a fresh one.
//! It replaced hyper-util's general-purpose pooled client, which pays per
//! request for a pool-key lookup, a URI rewrite and a spawned task that
//! hands the connection back (`benches/RESULTS.md`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::uri::PathAndQuery;
use http::{HeaderValue, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::ValidConfig;
use crate::forward::UpstreamRequest;

/// At most this many idle connections are kept.
const MAX_IDLE: usize = 512;

type Sender = SendRequest<Full<Bytes>>;

/// An idle keep-alive connection and since when it has been idle.
struct Idle {
    sender: Sender,
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
    /// HTTP/1.1 failed: handshake, sending, or reading the answer's head or body.
    #[error("HTTP exchange with the app failed: {0}")]
    Http(#[source] hyper::Error),
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
            let mut req = req.into_inner();
            let (response, sender) = loop {
                let (mut sender, reused) = match self.checkout().await {
                    Some(sender) => (sender, true),
                    None => (self.connect().await?, false),
                };
                match sender.try_send_request(req).await {
                    Ok(response) => break (response, sender),
                    Err(mut e) => match e.take_message() {
                        // Not sent: the app closed this idle connection. Try the next.
                        Some(unsent) if reused => req = unsent,
                        _ => return Err(TransportError::Http(e.into_error())),
                    },
                }
            };
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => TransportError::Http(*e),
                    Err(_) => TransportError::TooLarge(self.max_response_bytes),
                })?
                .to_bytes();
            self.checkin(sender);
            Ok(Response::from_parts(parts, body))
        };
        tokio::time::timeout(limit, exchange)
            .await
            .unwrap_or(Err(TransportError::Timeout(limit)))
    }

    /// The most recently used idle connection that is still open, fresh
    /// enough, and ready for a request.
    async fn checkout(&self) -> Option<Sender> {
        loop {
            let Idle { mut sender, since } = lock(&self.idle).pop()?;
            if sender.is_closed() || since.elapsed() >= self.pool_idle_timeout {
                continue; // dropped: the connection closes
            }
            // Ready at once unless its connection task has not yet seen the
            // end of the last answer.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Back into the pool after a complete answer (unless the connection is
    /// closing, e.g. after `Connection: close`).
    fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
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
    async fn connect(&self) -> Result<Sender, TransportError> {
        self.start_reaper();
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| TransportError::ConnectTimeout(self.connect_timeout))?
            .map_err(TransportError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(TransportError::Http)?;
        // `map` rather than an async block, which would hold the connection
        // future twice (see `net::server::accept_loop`).
        tokio::spawn(connection.map(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        }));
        Ok(sender)
    }
}

/// The idle stack; a panic while it was held leaves nothing half-done in it.
fn lock(idle: &Mutex<Vec<Idle>>) -> std::sync::MutexGuard<'_, Vec<Idle>> {
    idle.lock().unwrap_or_else(PoisonError::into_inner)
}
