//! `hookgate events`: the stored events of the store the config names, for
//! an operator next to a running sidecar (`kubectl exec POD -c hookgate --
//! hookgate events list`). SPEC "`hookgate events`": exit 0 on success, 1
//! when an id does not exist, 78 when the config has no store.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use uuid::Uuid;

use super::{EXIT_CONFIG, config_fail, fail};
use crate::config::Config;
use crate::store::now_ms;
use crate::store::{Filter, Millis, Record, Replayed, RouteStats, State, Store};

/// `hookgate events ...`.
#[derive(Debug, Args)]
pub struct Events {
    /// Config file [default: $HOOKGATE_CONFIG, else config.toml]; before or
    /// after the subcommand.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: EventsCommand,
}

/// The `events` subcommands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events, newest first (never their bodies).
    List {
        /// Which events.
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One event; `--body` also prints the stored bytes (personal data).
    Show {
        /// The event's id.
        id: Uuid,
        /// Print the stored body too.
        #[arg(long)]
        body: bool,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Back to pending, attempts from 1: the given ids, or every event
    /// matching a filter (with --yes).
    Replay {
        /// Event ids.
        ids: Vec<Uuid>,
        /// Which events, instead of ids.
        #[command(flatten)]
        filter: FilterArgs,
        /// Also replay delivered events.
        #[arg(long)]
        force: bool,
        /// Confirms a filter (not needed with ids).
        #[arg(long)]
        yes: bool,
    },
    /// Delete events: the given ids, or every event matching a filter (with --yes).
    Drop {
        /// Event ids.
        ids: Vec<Uuid>,
        /// Which events, instead of ids.
        #[command(flatten)]
        filter: FilterArgs,
        /// Confirms a filter (not needed with ids).
        #[arg(long)]
        yes: bool,
    },
    /// Counts by route and state, and the oldest pending age.
    Stats {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// A filter on the command line.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Only this route.
    #[arg(long, value_name = "R")]
    route: Option<String>,
    /// Only this state.
    #[arg(long, value_name = "S")]
    state: Option<StateArg>,
    /// Received at or after T (RFC 3339, or a duration back from now: 2h).
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Received before T (RFC 3339, or a duration back from now).
    #[arg(long, value_name = "T")]
    until: Option<String>,
}

/// `--state`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StateArg {
    Pending,
    Delivered,
    Dead,
}

impl From<StateArg> for State {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Pending => State::Pending,
            StateArg::Delivered => State::Delivered,
            StateArg::Dead => State::Dead,
        }
    }
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.route.is_none() && self.state.is_none() && self.since.is_none() && self.until.is_none()
    }

    fn to_filter(&self, now: Millis, limit: Option<u32>) -> Result<Filter, String> {
        Ok(Filter {
            route: self.route.clone(),
            state: self.state.map(State::from),
            since: self
                .since
                .as_deref()
                .map(|t| parse_time(t, now))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|t| parse_time(t, now))
                .transpose()?,
            limit,
        })
    }
}

/// RFC 3339, or a duration back from `now` (`90m`, `2h`, `7d`).
fn parse_time(t: &str, now: Millis) -> Result<Millis, String> {
    if let Ok(at) = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        return Ok((at.unix_timestamp_nanos() / 1_000_000) as Millis);
    }
    match humantime::parse_duration(t) {
        Ok(d) => Ok(now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!(
            "{t:?} is neither an RFC 3339 time nor a duration such as 2h"
        )),
    }
}

/// Unix ms as RFC 3339 (UTC, milliseconds).
pub(crate) fn rfc3339(ms: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// A record as the CLI and the console print it: times in RFC 3339, never
/// a body.
pub(crate) fn record_json(r: &Record) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "route": r.route,
        "event": r.event,
        "state": r.state,
        "attempts": r.attempts,
        "received_at": rfc3339(r.received_at),
        "next_attempt_at": r.next_attempt_at.map(rfc3339),
        "last_error": r.last_error,
        "updated_at": rfc3339(r.updated_at),
    })
}

/// Runs `hookgate events`.
pub(crate) fn run(events: Events) -> ExitCode {
    let path = Config::path_from(events.config.as_deref());
    let config = match Config::load(&path).and_then(Config::validate) {
        Ok(c) => c,
        Err(e) => return config_fail(&e),
    };
    let Some(store_config) = config.store.clone() else {
        let _ = writeln!(
            std::io::stderr(),
            "hookgate: {} has no [store]: `events` works on the store of queued delivery",
            path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    // `events` reads what the sidecar stored: a mistyped path must not
    // create (and then list) an empty store.
    if store_config.engine == crate::config::StoreEngine::Sqlite && !store_config.path.exists() {
        let _ = writeln!(
            std::io::stderr(),
            "hookgate: store: {} does not exist (store.path; the sidecar creates it when it starts)",
            store_config.path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    runtime.block_on(async move {
        let store = match Store::open(&store_config, None).await {
            Ok(s) => s,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "hookgate: store: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let mut out = std::io::stdout().lock();
        match execute(&store, events.command, now_ms(), &mut out).await {
            Ok(code) => code,
            Err(e) => fail(e),
        }
    })
}

async fn execute(
    store: &Store,
    command: EventsCommand,
    now: Millis,
    out: &mut impl Write,
) -> Result<ExitCode, String> {
    let w = |e: std::io::Error| e.to_string();
    match command {
        EventsCommand::List {
            filter,
            limit,
            json,
        } => {
            let records = store
                .list(&filter.to_filter(now, Some(limit))?)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                for r in &records {
                    writeln!(out, "{}", record_json(r)).map_err(w)?;
                }
            } else {
                writeln!(
                    out,
                    "{:<36}  {:<16}  {:<16}  {:<9}  {:>8}  {:<24}  {:<24}  LAST ERROR",
                    "ID", "ROUTE", "EVENT", "STATE", "ATTEMPTS", "RECEIVED", "NEXT ATTEMPT"
                )
                .map_err(w)?;
                for r in &records {
                    writeln!(
                        out,
                        "{:<36}  {:<16}  {:<16}  {:<9}  {:>8}  {:<24}  {:<24}  {}",
                        r.id,
                        r.route,
                        r.event,
                        r.state.as_str(),
                        r.attempts,
                        rfc3339(r.received_at),
                        r.next_attempt_at.map_or_else(|| "-".to_owned(), rfc3339),
                        r.last_error.as_deref().unwrap_or("-")
                    )
                    .map_err(w)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Show { id, body, json } => {
            let Some((record, stored)) = store.get(id, body).await.map_err(|e| e.to_string())?
            else {
                return Ok(not_found(&[id]));
            };
            if json {
                let mut doc = record_json(&record);
                if let Some(bytes) = &stored {
                    match std::str::from_utf8(bytes) {
                        Ok(text) => doc["body"] = text.into(),
                        Err(_) => {
                            use base64::Engine as _;
                            doc["body_base64"] = base64::engine::general_purpose::STANDARD
                                .encode(bytes)
                                .into();
                        }
                    }
                }
                writeln!(out, "{doc}").map_err(w)?;
            } else {
                let doc = record_json(&record);
                if let Some(map) = doc.as_object() {
                    for (k, v) in map {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        writeln!(out, "{k}: {v}").map_err(w)?;
                    }
                }
                if let Some(bytes) = &stored {
                    writeln!(out, "body:").map_err(w)?;
                    out.write_all(bytes).map_err(w)?;
                    writeln!(out).map_err(w)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Replay {
            ids,
            filter,
            force,
            yes,
        } => {
            if ids.is_empty() {
                let filter = confirmed(&filter, yes, "replay")?;
                let n = store
                    .replay_matching(&filter.to_filter(now, None)?, force, now)
                    .await
                    .map_err(|e| e.to_string())?;
                writeln!(out, "replayed {n} event(s)").map_err(w)?;
                return Ok(ExitCode::SUCCESS);
            }
            if !filter.is_empty() {
                return Err("give event ids or a filter, not both".to_owned());
            }
            let results = store
                .replay_ids(&ids, force, now)
                .await
                .map_err(|e| e.to_string())?;
            let mut missing = Vec::new();
            let mut refused = false;
            for (id, r) in ids.iter().zip(results) {
                match r {
                    Replayed::Done(_) => writeln!(out, "{id}: replayed").map_err(w)?,
                    Replayed::NotFound => missing.push(*id),
                    Replayed::Delivered(_) => {
                        refused = true;
                        writeln!(out, "{id}: delivered already; not replayed (use --force)")
                            .map_err(w)?;
                    }
                }
            }
            if !missing.is_empty() {
                return Ok(not_found(&missing));
            }
            Ok(if refused {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        EventsCommand::Drop { ids, filter, yes } => {
            if ids.is_empty() {
                let filter = confirmed(&filter, yes, "drop")?;
                let n = store
                    .drop_matching(&filter.to_filter(now, None)?)
                    .await
                    .map_err(|e| e.to_string())?;
                writeln!(out, "dropped {n} event(s)").map_err(w)?;
                return Ok(ExitCode::SUCCESS);
            }
            if !filter.is_empty() {
                return Err("give event ids or a filter, not both".to_owned());
            }
            let results = store.drop_ids(&ids).await.map_err(|e| e.to_string())?;
            let mut missing = Vec::new();
            for (id, r) in ids.iter().zip(results) {
                match r {
                    Some(_) => writeln!(out, "{id}: dropped").map_err(w)?,
                    None => missing.push(*id),
                }
            }
            Ok(if missing.is_empty() {
                ExitCode::SUCCESS
            } else {
                not_found(&missing)
            })
        }
        EventsCommand::Stats { json } => {
            let stats = store.stats().await.map_err(|e| e.to_string())?;
            if json {
                writeln!(out, "{}", stats_json(&stats, now)).map_err(w)?;
            } else {
                writeln!(
                    out,
                    "{:<16}  {:>9}  {:>9}  {:>9}  OLDEST PENDING",
                    "ROUTE", "PENDING", "DELIVERED", "DEAD"
                )
                .map_err(w)?;
                for s in &stats {
                    let age = s
                        .oldest_pending_received_at
                        .map_or_else(|| "-".to_owned(), |t| age_text(now - t));
                    writeln!(
                        out,
                        "{:<16}  {:>9}  {:>9}  {:>9}  {age}",
                        s.route, s.pending, s.delivered, s.dead
                    )
                    .map_err(w)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `events stats --json` (and the console's queue): per route counts and
/// the oldest pending age in seconds.
pub(crate) fn stats_json(stats: &[RouteStats], now: Millis) -> serde_json::Value {
    let routes: Vec<serde_json::Value> = stats
        .iter()
        .map(|s| {
            serde_json::json!({
                "route": s.route,
                "pending": s.pending,
                "delivered": s.delivered,
                "dead": s.dead,
                "oldest_pending_age_seconds": s
                    .oldest_pending_received_at
                    .map(|t| (now - t).max(0) as f64 / 1000.0),
            })
        })
        .collect();
    serde_json::json!({ "routes": routes })
}

fn age_text(ms: Millis) -> String {
    humantime::format_duration(std::time::Duration::from_secs((ms.max(0) / 1000) as u64))
        .to_string()
}

fn confirmed<'a>(filter: &'a FilterArgs, yes: bool, what: &str) -> Result<&'a FilterArgs, String> {
    if filter.is_empty() {
        return Err(format!(
            "{what} needs event ids or a filter (--state, --route, --since, --until)"
        ));
    }
    if !yes {
        return Err(format!(
            "{what} with a filter applies to every matching event: add --yes to confirm"
        ));
    }
    Ok(filter)
}

fn not_found(ids: &[Uuid]) -> ExitCode {
    for id in ids {
        let _ = writeln!(std::io::stderr(), "hookgate: no event {id}");
    }
    ExitCode::FAILURE
}
