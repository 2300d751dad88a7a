//! hookgate: a webhook verification sidecar for Cool Popup.
//!
//! It terminates HTTPS, checks the HMAC-SHA256 signature over the raw body,
//! validates the event against the Cool Popup schema, and forwards only
//! authentic, well-formed events to the app on localhost, byte for byte,
//! with normalized headers. The contract is `SPEC.md` in the shared folder;
//! the README documents everything beyond it.
//!
//! The library holds all the logic so tests drive it over real sockets:
//! [`Hookgate::run`] takes already-bound listeners and a shutdown future.

mod cli;
mod config;
mod dedup;
mod delivery;
mod error;
mod forward;
mod ingress;
mod load;
mod named;
mod net;
mod observe;
mod payload;
mod reload;
#[allow(
    dead_code,
    reason = "the engines and their callers land in the next commits"
)]
mod store;
mod verify;

#[cfg(feature = "testing")]
pub mod testing;

pub use cli::send::{ClientError, Trust, tls_config};
pub use cli::{Cli, run};
pub use config::{Config, ConfigErrors, Problem, UnknownEvents, ValidConfig};
pub use load::{Loaded, load, load_all};
pub use observe::metrics::Metrics;
pub use reload::{Reloader, Summary as ReloadSummary};

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::dedup::Dedup;
use crate::delivery::Queue;
use crate::forward::upstream::Upstream;
use crate::ingress::Gate;
use crate::net::admin::{self, AdminState};
use crate::net::console::{self, TokenFile};
use crate::net::server::{self, Shared};
use crate::net::tls;

/// The two listeners, bound by the caller (tests bind `127.0.0.1:0`).
#[derive(Debug)]
pub struct Listeners {
    /// The public HTTPS listener.
    pub public: TcpListener,
    /// The admin plain-HTTP listener.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds both addresses of a config.
    pub async fn bind(config: &config::Config) -> std::io::Result<Self> {
        let public = TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| with_addr(e, "server.listen", config.server.listen))?;
        let admin = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|e| with_addr(e, "admin.listen", config.admin.listen))?;
        Ok(Self { public, admin })
    }
}

fn with_addr(e: std::io::Error, key: &str, addr: std::net::SocketAddr) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({key}): {e}"))
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS config could not be built.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A ready-to-run sidecar.
pub struct Hookgate {
    gate: Arc<Gate>,
    reloader: Arc<Reloader>,
    ready: Arc<AtomicBool>,
    /// None: plain HTTP behind a TLS-terminating proxy.
    acceptor: Option<TlsAcceptor>,
    server: ServerConfig,
    reload_interval: Duration,
    /// `admin.token_file`'s token, for the console's actions.
    admin_token: Option<Arc<TokenFile>>,
    /// SIGHUP, when the CLI asked for it: reload at once.
    sighup: Option<tokio::signal::unix::Signal>,
}

impl std::fmt::Debug for Hookgate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hookgate")
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl Hookgate {
    /// Builds the sidecar from loaded material; binds nothing.
    pub fn new(loaded: Loaded) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::with_store(loaded.config.store.is_some()));
        let upstream = Arc::new(Upstream::new(&loaded.config));
        let queue = loaded
            .config
            .store
            .clone()
            .map(|store| Arc::new(Queue::new(store)));
        let dedup = Arc::new(Dedup::new(
            loaded.config.dedup.max_keys,
            metrics.dedup_evictions.clone(),
            queue.clone(),
        ));
        let acceptor = match &loaded.tls.store {
            Some(store) => Some(TlsAcceptor::from(Arc::new(tls::server_config(
                &loaded.config.server.tls,
                store.clone(),
            )?))),
            None => None,
        };
        let reloader = Arc::new(
            Reloader::new(loaded.routes.clone(), &loaded.tls, metrics.clone())
                .with_admin_token(loaded.admin_token.clone()),
        );
        let gate = Arc::new(Gate {
            routes: loaded.routes,
            upstream,
            dedup,
            late_answer_window: loaded.config.upstream.late_answer_window,
            queue,
            metrics,
            max_body_bytes: loaded.config.server.max_body_bytes,
            trusted_proxies: loaded.config.server.trusted_proxies.clone(),
            tls: loaded.tls.store.is_some(),
            body_read_timeout: loaded.config.server.body_read_timeout,
        });
        Ok(Self {
            gate,
            reloader,
            ready: Arc::new(AtomicBool::new(false)),
            acceptor,
            server: loaded.config.server.clone(),
            reload_interval: loaded.config.reload.interval,
            admin_token: loaded.admin_token,
            sighup: None,
        })
    }

    /// Also reloads on SIGHUP. The handler is installed now, so a SIGHUP
    /// that arrives once the sidecar is ready never hits the default action.
    pub fn reload_on_sighup(mut self) -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        self.sighup = Some(signal(SignalKind::hangup())?);
        Ok(self)
    }

    /// The reloader (tests call it directly).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// The metrics registry (tests read it).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.gate.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then drains: `/readyz` turns 503 at
    /// once, the listener keeps accepting for `drain_delay`, then closes, and
    /// in-flight requests get `shutdown_grace` to finish.
    pub async fn run(mut self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let stopped = CancellationToken::new();
        let admin_addr = listeners
            .admin
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let admin = tokio::spawn(admin::serve(
            listeners.admin,
            AdminState {
                ready: self.ready.clone(),
                metrics: self.gate.metrics.clone(),
                routes: self.gate.routes.clone(),
                reloader: self.reloader.clone(),
                reload_interval: self.reload_interval,
                token: self.admin_token.clone(),
                store: self.gate.queue.clone(),
                started_at: crate::store::now_ms(),
                started: Instant::now(),
                rates: console::RateWindow::starting_now(),
            },
            stopped.clone().cancelled_owned(),
        ));
        // The store opens before the sidecar reports ready; one that cannot
        // be opened now keeps being tried in the background while queued
        // routes answer 503 (direct routes and /readyz do not wait for it).
        let mut opener = None;
        if let Some(queue) = self.gate.queue.clone() {
            let routes: Vec<Arc<crate::load::Route>> = self.gate.routes.iter().cloned().collect();
            let (upstream, metrics) = (self.gate.upstream.clone(), self.gate.metrics.clone());
            let limit = queue.timeout.max(Duration::from_secs(5));
            if let Err(e) = queue.open_once(&routes, &upstream, &metrics, limit).await {
                tracing::error!(
                    error = %e,
                    "cannot open the event store; queued routes answer 503 until it opens (retried every 2 s)"
                );
                let stop = stopped.clone();
                opener = Some(tokio::spawn(async move {
                    queue.keep_opening(&routes, upstream, metrics, stop).await
                }));
            }
        }
        let reloads = tokio::spawn(reload::watch(
            self.reloader.clone(),
            self.reload_interval,
            self.sighup.take(),
        ));
        let shared = Arc::new(Shared {
            gate: self.gate.clone(),
            acceptor: self.acceptor.clone(),
            builders: server::Builders::new(&self.server),
            handshake_timeout: self.server.handshake_timeout,
            idle_timeout: self.server.idle_timeout,
            header_read_timeout: self.server.header_read_timeout,
            shutdown: CancellationToken::new(),
        });
        let tracker = TaskTracker::new();
        let ready = self.ready.clone();
        let drain_delay = self.server.drain_delay;
        let stop = async move {
            shutdown.await;
            ready.store(false, Ordering::Release);
            tracing::info!(
                drain_delay_ms = drain_delay.as_millis() as u64,
                "shutdown requested; draining"
            );
            tokio::time::sleep(drain_delay).await;
        };
        self.ready.store(true, Ordering::Release);
        tracing::info!(
            listen = %listeners.public.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            admin = %admin_addr,
            "hookgate ready"
        );
        server::serve_public(
            &listeners.public,
            shared.clone(),
            self.server.max_connections,
            &tracker,
            stop,
        )
        .await;
        drop(listeners.public);
        tracker.close();
        shared.shutdown.cancel();
        tracing::info!(
            open_connections = tracker.len(),
            "listener closed; finishing in-flight requests"
        );
        let grace = self.server.shutdown_grace;
        let connections = async {
            if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
                tracing::warn!(
                    open_connections = tracker.len(),
                    "shutdown_grace elapsed with connections still open; closing them"
                );
            }
        };
        let deliveries = async {
            if let Some(queue) = &self.gate.queue {
                queue.shutdown(grace).await;
            }
        };
        tokio::join!(connections, deliveries);
        if let Some(opener) = opener {
            opener.abort();
        }
        reloads.abort();
        stopped.cancel();
        let _ = admin.await;
        tracing::info!("hookgate stopped");
    }
}
