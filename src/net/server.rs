//! The accept loop shared by both listeners, and the public listener's
//! per-connection work.
//!
//! A connection permit is taken *before* accepting (at most
//! `max_connections` at once; the rest wait in the kernel's backlog), the
//! socket gets `TCP_NODELAY`, and everything slow — waiting for the first
//! byte, refusing plaintext HTTP, the TLS handshake — runs in the spawned
//! task under `handshake_timeout`, so one slow client never stalls the loop.
//! Accept errors (e.g. out of file descriptors) back off instead of ending
//! the server. Every connection task is tracked, so shutdown can wait for
//! them, and watched for idleness: a keep-alive connection with no request in
//! flight for `idle_timeout` is closed gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::ingress::{self, Gate};
use crate::net::tls;

/// Largest request head accepted on HTTP/1.1 and HTTP/2 (bigger → 431).
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Concurrent HTTP/2 streams per connection.
pub(crate) const MAX_CONCURRENT_STREAMS: u32 = 64;

/// The HTTP/1.1 + HTTP/2 connection builders with hookgate's limits.
pub(crate) struct Builders {
    /// Sniffs the first bytes for the HTTP/2 preface: for plain HTTP
    /// (`server.tls.enabled = false`), where nothing else says which.
    sniff: auto::Builder<TokioExecutor>,
    /// HTTP/1.1 only: a TLS client that did not pick `h2` by ALPN.
    h1: auto::Builder<TokioExecutor>,
    /// HTTP/2 only: a TLS client that picked `h2` by ALPN.
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    pub(crate) fn new(config: &ServerConfig) -> Self {
        let sniff = http_builder(config);
        Self {
            h1: sniff.clone().http1_only(),
            h2: sniff.clone().http2_only(),
            sniff,
        }
    }

    /// The builder for a TLS connection, by whether it negotiated `h2`. HTTP/2 over
    /// TLS is identified by ALPN `h2` (RFC 9113 §3.2); a client that offered
    /// no ALPN speaks HTTP/1.1, as nginx also assumes. Choosing here also
    /// skips reading the first bytes into a buffer of their own, which made
    /// hyper's read buffer grow to 16 KiB per HTTP/1.1 connection
    /// (`benches/RESULTS.md`, fifth round).
    fn for_tls(&self, h2: bool) -> &auto::Builder<TokioExecutor> {
        if h2 { &self.h2 } else { &self.h1 }
    }
}

/// The HTTP/1.1 + HTTP/2 connection builder with hookgate's limits.
fn http_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also bounds how long an idle keep-alive connection waits for its next request.
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) gate: Arc<Gate>,
    /// None: plain HTTP behind a TLS-terminating proxy (`server.tls.enabled = false`).
    pub(crate) acceptor: Option<TlsAcceptor>,
    pub(crate) builders: Builders,
    pub(crate) handshake_timeout: Duration,
    /// `server.idle_timeout`.
    pub(crate) idle_timeout: Duration,
    /// `server.header_read_timeout`: also how long a new connection may wait
    /// before its first request begins.
    pub(crate) header_read_timeout: Duration,
    /// Cancelled when draining ends: connections finish their current
    /// requests and close (HTTP/1.1 stops keep-alive, HTTP/2 sends GOAWAY).
    pub(crate) shutdown: CancellationToken,
}

/// Serves the public listener's connections until `stop` resolves.
pub(crate) async fn serve_public(
    listener: &TcpListener,
    shared: Arc<Shared>,
    max_connections: usize,
    tracker: &TaskTracker,
    stop: impl Future<Output = ()>,
) {
    accept_loop(
        listener,
        max_connections,
        tracker,
        stop,
        move |stream, peer| {
            let shared = shared.clone();
            async move {
                let metrics = &shared.gate.metrics;
                metrics.connections_open.inc();
                serve_connection(stream, peer, &shared).await;
                metrics.connections_open.dec();
            }
        },
    )
    .await;
}

/// Accepts until `stop` resolves, then returns (the listener is dropped by
/// the caller, which then waits for `tracker`). Each connection runs
/// `serve` in a tracked task holding one of `max_connections` permits.
pub(crate) async fn accept_loop<F, Fut>(
    listener: &TcpListener,
    max_connections: usize,
    tracker: &TaskTracker,
    stop: impl Future<Output = ()>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut stop = std::pin::pin!(stop);
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut stop => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // the semaphore is never closed
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut stop => return,
            r = listener.accept() => match r {
                Ok(conn) => {
                    backoff = Duration::from_millis(5);
                    conn
                }
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // `map`, not `async move { connection.await; drop(permit) }`: an
        // async block that awaits a future it captured holds that future
        // twice (the capture and the awaited copy), which doubled each
        // connection's task to 9.5 KiB (`benches/RESULTS.md`, fifth round).
        tracker.spawn(serve(stream, peer).map(move |()| drop(permit)));
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let Some(acceptor) = &shared.acceptor else {
        // TLS is terminated in front; the pipeline checks who may speak plain HTTP.
        serve_http(TokioIo::new(stream), peer, shared, &shared.builders.sniff).await;
        return;
    };
    let metrics = &shared.gate.metrics;
    let mut first = [0u8; 1];
    match tokio::time::timeout(shared.handshake_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1..)) => {}
        Ok(Ok(0) | Err(_)) => return, // closed before saying anything
        Err(_) => {
            metrics.tls_handshake_failures.inc();
            tracing::debug!(peer = %peer, "no data before handshake_timeout");
            return;
        }
    }
    if tls::looks_like_plaintext_http(first[0]) {
        metrics.tls_handshake_failures.inc();
        tracing::info!(peer = %peer, "plaintext HTTP on the HTTPS port refused");
        refuse_plaintext(stream, shared.handshake_timeout).await;
        return;
    }
    let tls = match tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            metrics.tls_handshake_failures.inc();
            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics.tls_handshake_failures.inc();
            tracing::debug!(peer = %peer, "TLS handshake timed out");
            return;
        }
    };
    let (tls, h2) = picked_h2(tls);
    serve_http(TokioIo::new(tls), peer, shared, shared.builders.for_tls(h2)).await;
}

/// Whether the client picked `h2` by ALPN. Takes and gives back the stream
/// so that the caller's local is only ever moved, never borrowed: the
/// compiler keeps a borrowed local's storage in the connection's future
/// for as long as it is in scope (1.2 KiB more per connection).
fn picked_h2<S>(
    tls: tokio_rustls::server::TlsStream<S>,
) -> (tokio_rustls::server::TlsStream<S>, bool) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    (tls, h2)
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    /// A request has begun on this connection (before that, the connection
    /// is waiting for its first request head, not idling).
    begun: AtomicBool,
    last_end: std::sync::Mutex<Instant>,
}

/// One request in flight; ends when dropped — also when hyper drops the
/// request's future because the client reset its HTTP/2 stream.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.begun.store(true, Ordering::Release);
        InFlight(self.clone())
    }

    fn end(&self) {
        if let Ok(mut last) = self.last_end.lock() {
            *last = Instant::now();
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Resolves once no request has been in flight for `idle` — or, while
    /// no request has begun yet, for `first` (at most `idle`): a client that
    /// connects and never sends a request is a slow head, not a keep-alive
    /// connection.
    async fn idle_for(&self, idle: Duration, first: Duration) {
        loop {
            let last = self
                .last_end
                .lock()
                .map(|l| *l)
                .unwrap_or_else(|_| Instant::now());
            let limit = if self.begun.load(Ordering::Acquire) {
                idle
            } else {
                first.min(idle)
            };
            let deadline = last + limit;
            if self.in_flight.load(Ordering::Acquire) == 0 && Instant::now() >= deadline {
                return;
            }
            // Busy or not yet idle long enough: look again at the deadline
            // (or a quarter period later if a request is running).
            let next = deadline.max(Instant::now() + limit / 4);
            tokio::time::sleep_until(next.into()).await;
        }
    }
}

/// HTTP/1.1 or HTTP/2 on an established (TLS or trusted plain) stream, until
/// the client closes, the connection idles out, or shutdown asks it to finish.
async fn serve_http<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    shared: &Shared,
    builder: &auto::Builder<TokioExecutor>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        begun: AtomicBool::new(false),
        last_end: std::sync::Mutex::new(Instant::now()),
    });
    let gate = shared.gate.clone();
    let client = Arc::new(gate.peer(peer));
    let tracked = activity.clone();
    let service = service_fn(move |req| {
        let gate = gate.clone();
        let client = client.clone();
        let in_flight = tracked.begin();
        async move {
            let response = ingress::handle(&gate, req, &client).await;
            drop(in_flight);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    // Once an idle connection is asked to close, it gets `idle_timeout` to
    // finish writing; then it is dropped. A client that never reads its
    // answer (or never opens its HTTP/2 flow-control window) would otherwise
    // keep a graceful close, and the connection permit, pending forever.
    let mut give_up: Option<tokio::time::Instant> = None;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            () = shared.shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(shared.idle_timeout, shared.header_read_timeout), if !closing => {
                tracing::debug!(peer = %peer, "idle connection closed");
                closing = true;
                // A connection that never began a request has nothing to
                // finish: `header_read_timeout` to close (an HTTP/2 client
                // that never sends its preface cannot be sent a GOAWAY).
                let finish = if activity.begun.load(Ordering::Acquire) {
                    shared.idle_timeout
                } else {
                    shared.header_read_timeout.min(shared.idle_timeout)
                };
                give_up = Some(tokio::time::Instant::now() + finish);
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(give_up.unwrap_or_else(tokio::time::Instant::now)), if give_up.is_some() => {
                tracing::debug!(peer = %peer, "idle connection did not finish closing; dropped");
                return;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}

/// Answers plaintext HTTP with a short 400, then closes without a reset:
/// read what the client sent, answer, half-close, and drain (all bounded).
async fn refuse_plaintext(mut stream: TcpStream, limit: Duration) {
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(limit, async {
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < buf.len() {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(limit, async {
        stream.write_all(tls::HTTPS_REQUIRED).await?;
        stream.shutdown().await?;
        let mut drained = 0usize;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    drained += n;
                    if drained > 1 << 20 {
                        break;
                    }
                }
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}
