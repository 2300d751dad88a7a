//! The command line: `serve`, `check`, `sign`, `send`, with the spec's exit
//! codes (0 ok, 2 bad usage — clap's own, 78 bad configuration, 1 other).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{HeaderValue, Method, Request, header};
use http_body_util::Full;

pub(crate) mod events;
pub(crate) mod send;

use send::Trust;

use crate::config::ConfigErrors;
use crate::load::{self, Loaded, SecretSource};
use crate::observe::telemetry;
use crate::payload::EventKind;
use crate::verify::secret::Secret;
use crate::verify::signature;
use crate::{Hookgate, Listeners};

/// EX_CONFIG from sysexits.h.
pub const EXIT_CONFIG: u8 = 78;

/// hookgate: verifies Cool Popup webhooks and forwards only authentic ones.
#[derive(Debug, Parser)]
#[command(name = "hookgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar.
    Serve {
        /// Config file [default: $HOOKGATE_CONFIG, else config.toml].
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Load and validate the config, read every secret and certificate, and
    /// print the effective config (secrets redacted). Exit 0 if usable.
    Check {
        /// Config file [default: $HOOKGATE_CONFIG, else config.toml].
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the signature (lowercase hex HMAC-SHA256) of a body.
    Sign {
        /// File holding the webhook secret (trailing whitespace trimmed).
        #[arg(long, value_name = "F")]
        secret_file: PathBuf,
        /// The body; stdin if omitted.
        #[arg(value_name = "BODY_FILE")]
        body_file: Option<PathBuf>,
    },
    /// Sign and POST a sample (or given) event; print the status and the
    /// response body. Exits 0 on HTTP 200, 1 otherwise.
    Send {
        /// Where to send it, e.g. https://localhost:8443/webhooks/coolpopup
        url: String,
        /// File holding the webhook secret.
        #[arg(long, value_name = "F")]
        secret_file: PathBuf,
        /// Which sample event to send; `ping` sends a test ping (an event
        /// hookgate does not know), as the provider does when an endpoint is saved.
        #[arg(long, value_name = "E", default_value = EventKind::Converted.as_str(),
              value_parser = sample_events())]
        event: String,
        /// Send this file's bytes instead of a sample event.
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
        /// Trust this PEM certificate (CA or the server's own).
        #[arg(long, value_name = "PEM", conflicts_with = "insecure")]
        cacert: Option<PathBuf>,
        /// Do not verify the server certificate (development only).
        #[arg(long)]
        insecure: bool,
    },
    /// The stored events of queued delivery: list, show, replay, drop, stats.
    Events(events::Events),
}

/// `send --event`: the four event names, and `ping`.
fn sample_events() -> clap::builder::PossibleValuesParser {
    EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .chain([PING])
        .collect::<Vec<_>>()
        .into()
}

/// `send --event ping`: a test ping, an event hookgate does not know.
const PING: &str = "ping";

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Check { config } => check(config.as_deref()),
        Command::Sign {
            secret_file,
            body_file,
        } => sign(&secret_file, body_file.as_deref()),
        Command::Events(e) => events::run(e),
        Command::Send {
            url,
            secret_file,
            event,
            body,
            cacert,
            insecure,
        } => {
            let trust = match (cacert, insecure) {
                (Some(path), _) => match Trust::from_file(&path) {
                    Ok(t) => t,
                    Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
                },
                (None, true) => Trust::Insecure,
                (None, false) => Trust::WebPki,
            };
            send(&url, &secret_file, &event, body.as_deref(), trust)
        }
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    telemetry::flush();
    let _ = writeln!(std::io::stderr(), "hookgate: {message}");
    ExitCode::FAILURE
}

fn config_fail(errors: &ConfigErrors) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "hookgate: {errors}");
    ExitCode::from(EXIT_CONFIG)
}

fn load(path: Option<&Path>) -> Result<Loaded, ExitCode> {
    let path = crate::config::Config::path_from(path);
    load::load_all(&path).map_err(|e| config_fail(&e))
}

fn serve(path: Option<&Path>) -> ExitCode {
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

fn check(path: Option<&Path>) -> ExitCode {
    let loaded = match load(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let toml = match toml::to_string_pretty(&*loaded.config) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot print the config: {e}")),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "# effective configuration (defaults, file, environment)\n{toml}"
    );
    let _ = writeln!(out, "# loaded material");
    match &loaded.tls.files {
        Some((cert, _)) => {
            let _ = writeln!(
                out,
                "# tls: certificate from {} (key matches)",
                cert.display()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# tls: self-signed development certificate (never in production)"
            );
        }
    }
    if let Some(token) = &loaded.admin_token {
        let _ = writeln!(
            out,
            "# admin: console actions need the bearer token [redacted] from {}",
            token.path().display()
        );
    }
    for route in loaded.routes.iter() {
        let secrets = route.secrets();
        let origins: Vec<&str> = secrets.secrets.iter().map(Secret::origin).collect();
        let _ = writeln!(
            out,
            "# route {} {} -> {}: {} secret(s) [redacted] from {}",
            route.name,
            route.path,
            route.upstream_path,
            secrets.secrets.len(),
            origins.join(", ")
        );
    }
    if let Some(store) = &loaded.config.store {
        // Opening it creates and migrates the schema, as serve would.
        let opened = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(crate::store::Store::open(store, None))
                    .map_err(|e| e.to_string())
            });
        match opened {
            Ok(_) => {
                let _ = writeln!(out, "# store: {} opened", store.engine.as_str());
            }
            Err(e) => {
                drop(out);
                let _ = writeln!(std::io::stderr(), "hookgate: store: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let _ = writeln!(out, "# configuration OK");
    ExitCode::SUCCESS
}

fn read_secret(path: &Path) -> Result<Secret, String> {
    SecretSource::File(path.to_owned())
        .read()
        .map(|(secret, _digest)| secret)
}

fn read_body(path: Option<&Path>) -> Result<Vec<u8>, String> {
    match path {
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            Ok(buf)
        }
    }
}

fn sign(secret_file: &Path, body_file: Option<&Path>) -> ExitCode {
    let secret = match read_secret(secret_file) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let body = match read_body(body_file) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let _ = writeln!(std::io::stdout(), "{}", signature::sign_hex(&body, &secret));
    ExitCode::SUCCESS
}

/// A sample body for `event` (one of the four, or `ping`), timestamped now.
pub fn sample_event(event: &str) -> Result<Vec<u8>, String> {
    // To the microsecond: two samples are two events, not duplicates.
    let t = time::OffsetDateTime::now_utc();
    let now = t
        .replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .map_err(|e| e.to_string())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| format!("cannot timestamp the sample event: {e}"))?;
    let doc = if event == PING {
        serde_json::json!({ "event": PING, "timestamp": now })
    } else {
        let kind = EventKind::from_name(event)
            .ok_or_else(|| format!("there is no sample {event:?} event"))?;
        let mut doc = serde_json::json!({
            "event": kind,
            "campaign_id": "camp_hookgate_sample",
            "campaign_name": "hookgate send sample",
            "timestamp": now,
            "page_url": "https://example.com/landing",
        });
        if kind == EventKind::Converted {
            doc["visitor"] = serde_json::json!({
                "email": "visitor@example.com",
                "fields": { "name": "Sample Visitor", "newsletter": true }
            });
        }
        doc
    };
    serde_json::to_vec(&doc).map_err(|e| format!("cannot write the sample event: {e}"))
}

fn send(
    url: &str,
    secret_file: &Path,
    event: &str,
    body_file: Option<&Path>,
    trust: Trust,
) -> ExitCode {
    let secret = match read_secret(secret_file) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let body = match body_file {
        Some(_) => match read_body(body_file) {
            Ok(b) => b,
            Err(e) => return fail(e),
        },
        None => match sample_event(event) {
            Ok(b) => b,
            Err(e) => return fail(e),
        },
    };
    let signature = signature::sign_hex(&body, &secret);
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("hookgate-send/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            "x-coolpopup-signature",
            HeaderValue::from_str(&signature).unwrap_or(HeaderValue::from_static("")),
        )
        .body(Full::new(Bytes::from(body)));
    let request = match request {
        Ok(r) => r,
        Err(e) => return fail(format!("invalid URL {url:?}: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(send::send(request, &trust)) {
        Ok(response) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", response.status());
            let _ = out.write_all(response.body());
            if !response.body().ends_with(b"\n") {
                let _ = writeln!(out);
            }
            if response.status() == http::StatusCode::OK {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Validated, validate};

    #[test]
    fn every_sample_event_is_valid() {
        for kind in EventKind::ALL {
            let body = sample_event(kind.as_str()).unwrap();
            match validate(&body) {
                Ok(Validated::Known(e)) => assert_eq!(e.kind, kind),
                other => panic!("{kind}: {other:?}"),
            }
        }
        let ping = sample_event(PING).unwrap();
        assert!(matches!(validate(&ping), Ok(Validated::Unknown(_))));
    }

    #[test]
    fn there_is_no_sample_of_an_unknown_event() {
        assert_eq!(
            sample_event("popup.hovered").unwrap_err(),
            r#"there is no sample "popup.hovered" event"#
        );
    }
}
