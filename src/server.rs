//! The public listener's accept loop and per-connection work.
//!
//! A connection permit is taken *before* accepting (at most
//! `max_connections` at once; the rest wait in the kernel's backlog), the
//! socket gets `TCP_NODELAY`, and everything slow — waiting for the first
//! byte, refusing plaintext HTTP, the TLS handshake — runs in the spawned
//! task under `handshake_timeout`, so one slow client never stalls the loop.
//! Accept errors (e.g. out of file descriptors) back off instead of ending
//! the server. Connections are watched by hyper-util's `GracefulShutdown`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::pipeline::{self, App};
use crate::tls;

/// Largest request head accepted on HTTP/1.1 and HTTP/2 (bigger → 431).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Concurrent HTTP/2 streams per connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 64;

/// The HTTP/1.1 + HTTP/2 connection builder with hookgate's limits.
pub fn http_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
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
    pub app: Arc<App>,
    /// None: plain HTTP behind a TLS-terminating proxy (`server.tls.enabled = false`).
    pub acceptor: Option<TlsAcceptor>,
    pub builder: auto::Builder<TokioExecutor>,
    pub handshake_timeout: Duration,
}

/// Accepts until `stop` resolves, then returns (the listener is dropped by
/// the caller, which then waits for `graceful`).
pub(crate) async fn accept_loop(
    listener: &TcpListener,
    shared: Arc<Shared>,
    max_connections: usize,
    graceful: &GracefulShutdown,
    stop: impl std::future::Future<Output = ()>,
) {
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
        let shared = shared.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let metrics = &shared.app.metrics;
            metrics.connections_open.inc();
            serve_connection(stream, peer, &shared, watcher).await;
            metrics.connections_open.dec();
            drop(permit);
        });
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: &Shared, watcher: Watcher) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = &shared.acceptor else {
        // TLS is terminated in front; the pipeline checks who may speak plain HTTP.
        serve_http(TokioIo::new(stream), peer, shared, watcher).await;
        return;
    };
    let metrics = &shared.app.metrics;
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
    serve_http(TokioIo::new(tls), peer, shared, watcher).await;
}

/// HTTP/1.1 or HTTP/2 on an established (TLS or trusted plain) stream.
async fn serve_http<I>(io: TokioIo<I>, peer: SocketAddr, shared: &Shared, watcher: Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let app = shared.app.clone();
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(pipeline::handle(&app, req, peer).await) }
    });
    let conn = shared.builder.serve_connection(io, service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
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
