//! `hookgate serve`: the runtime, the signal handlers, the sidecar.

use std::path::Path;
use std::process::ExitCode;

use super::{fail, load};
use crate::observe::telemetry;
use crate::{Hookgate, Listeners};

pub(super) fn serve(path: Option<&Path>) -> ExitCode {
    let loaded = match load(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    telemetry::init(&loaded.config.log);
    if let Some(pem) = &loaded.tls.dev_cert_pem {
        tracing::warn!(
            "server.tls.self_signed = true: serving a throwaway self-signed certificate for localhost. \
             DEVELOPMENT ONLY: never use this in production"
        );
        tracing::debug!(cert = %pem, "development certificate");
    }
    let runtime = match runtime(loaded.config.server.worker_threads).build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let code = runtime.block_on(async move {
        let listeners = match Listeners::bind(&loaded.config).await {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        let hookgate = match Hookgate::new(loaded).map(Hookgate::reload_on_sighup) {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return fail(format!("cannot install the SIGHUP handler: {e}")),
            Err(e) => return fail(e),
        };
        // Signal handlers go in before the listener reports ready.
        let shutdown = match shutdown_signal() {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot install signal handlers: {e}")),
        };
        hookgate.run(listeners, shutdown).await;
        ExitCode::SUCCESS
    });
    drop(runtime);
    telemetry::flush();
    code
}

/// The runtime for `server.worker_threads` (0: one per CPU this process may
/// use). One thread gets the single-threaded scheduler: connections then run
/// on the thread that polls the sockets, with no hand-off between threads.
fn runtime(worker_threads: usize) -> tokio::runtime::Builder {
    let workers = match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    // With `log.flush = "idle"`: a thread with nothing left to do writes
    // the lines logged while it was busy.
    builder.enable_all().on_thread_park(telemetry::flush);
    builder
}

/// Installs the SIGTERM and SIGINT handlers now (before the listener is
/// ready, so a signal can never hit the default action) and returns a future
/// that resolves on the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
        }
    })
}
