//! The command line: `serve`, `check`, `sign`, `send`, with the spec's exit
//! codes (0 ok, 2 bad usage — clap's own, 78 bad configuration, 1 other).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
pub(crate) mod events;
mod sample;
pub(crate) mod send;
mod serve;
mod sign;

use send::Trust;

use crate::config::ConfigErrors;
use crate::load::{self, Loaded};
use crate::observe::telemetry;
use crate::payload::EventKind;

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
        .chain([sample::PING])
        .collect::<Vec<_>>()
        .into()
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve::serve(config.as_deref()),
        Command::Check { config } => check::check(config.as_deref()),
        Command::Sign {
            secret_file,
            body_file,
        } => sign::sign(&secret_file, body_file.as_deref()),
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
            send::command(&url, &secret_file, &event, body.as_deref(), trust)
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
