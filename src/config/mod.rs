//! Configuration: plain, documented data with a default for every field.
//!
//! Loaded with figment in three layers — built-in defaults, then the TOML
//! file, then `HOOKGATE_SECTION__KEY` environment variables — and then
//! checked by [`Config::validate`] (in `validate.rs`), which collects *every*
//! problem (unknown keys and bad names included) so an operator fixes a
//! broken config in one round trip, and turns it into the [`ValidConfig`]
//! that is the only thing [`crate::load`] accepts. Nothing here reads
//! secrets or certificates: that is [`crate::load`]'s job, and its problems
//! are reported through the same [`ConfigErrors`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use figment::value::Value;
use serde::{Deserialize, Serialize};

mod validate;

pub(crate) use validate::RouteHeaders;
pub use validate::ValidConfig;

use crate::named::{Named, alternatives, named_enum};
use crate::payload::EventKind;
use crate::verify::signature::Encoding;

/// The environment variable that names the config file (not a config key).
pub const CONFIG_ENV: &str = "HOOKGATE_CONFIG";
/// Prefix of the environment layer: `HOOKGATE_UPSTREAM__URL` sets `upstream.url`.
pub const ENV_PREFIX: &str = "HOOKGATE_";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The public HTTPS listener.
    pub server: ServerConfig,
    /// The pod-local plain HTTP listener for probes and metrics.
    pub admin: AdminConfig,
    /// The app hookgate forwards verified events to.
    pub upstream: UpstreamConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// Hot reload of certificates and secret files.
    pub reload: ReloadConfig,
    /// Duplicate detection without a store.
    pub dedup: DedupConfig,
    /// The event store (queued delivery, dedup keys shared by replicas);
    /// absent = none.
    pub store: Option<StoreConfig>,
    /// Webhook endpoints; the request path picks one by exact match.
    pub routes: Vec<RouteConfig>,
    /// Values found while reading that name none of their key's choices
    /// (each read as the first choice instead, so that the rest can still
    /// be checked): [`validate`](Self::validate) reports them with its own.
    #[serde(skip)]
    bad_names: Vec<Problem>,
}

/// `[dedup]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DedupConfig {
    /// Without a `[store]`: at most this many keys in memory, oldest
    /// forgotten first (and counted in `hookgate_dedup_evictions_total`).
    pub max_keys: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            max_keys: 1_000_000,
        }
    }
}

/// `[store]`. Its `Debug` redacts `url` (it holds a password), as
/// serializing skips it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// "sqlite" (embedded) or "postgres".
    pub engine: StoreEngine,
    /// sqlite: the database file (its directory must exist).
    pub path: PathBuf,
    /// postgres: a file holding a libpq URL with its password (trailing
    /// whitespace trimmed); `HOOKGATE_STORE__URL` may give the URL instead.
    pub url_file: Option<PathBuf>,
    /// postgres: the URL itself, from the environment only (never put a
    /// password in the config file).
    #[serde(skip_serializing)]
    pub url: Option<String>,
    /// postgres: "disable", "require" (default) or "verify-full".
    pub tls: PgTlsMode,
    /// postgres, verify-full: a PEM file of CA certificates (default: the
    /// Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// postgres: the schema hookgate's tables live in.
    pub schema: String,
    /// postgres: the connection pool's size.
    pub max_connections: usize,
    /// A write that takes longer answers 503 `store_unavailable`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("engine", &self.engine)
            .field("path", &self.path)
            .field("url_file", &self.url_file)
            .field("url", &self.url.as_ref().map(|_| "[redacted]"))
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            engine: StoreEngine::Sqlite,
            path: PathBuf::from("/var/lib/hookgate/events.db"),
            url_file: None,
            url: None,
            tls: PgTlsMode::Require,
            ca_file: None,
            schema: "hookgate".to_owned(),
            max_connections: 8,
            timeout: Duration::from_secs(2),
        }
    }
}

named_enum! {
    /// `store.engine`.
    #[derive(Default)]
    pub enum StoreEngine {
        /// Embedded, one file (one pod).
        #[default]
        Sqlite = "sqlite",
        /// Shared by several replicas.
        Postgres = "postgres",
    }
}

named_enum! {
    /// `store.tls` (postgres).
    #[derive(Default)]
    pub enum PgTlsMode {
        /// Plain TCP (a database on the pod's loopback or a trusted network).
        Disable = "disable",
        /// TLS, certificate not verified.
        #[default]
        Require = "require",
        /// TLS, certificate and host name verified.
        VerifyFull = "verify-full",
    }
}

named_enum! {
    /// `routes[].delivery`.
    #[derive(Default)]
    pub enum Delivery {
        /// The provider's 200 means the app answered 2xx.
        #[default]
        Direct = "direct",
        /// 200 once the event is durably stored; hookgate delivers it.
        Queued = "queued",
    }
}

named_enum! {
    /// `routes[].mode`.
    #[derive(Default)]
    pub enum RouteMode {
        /// Only verified events are forwarded.
        #[default]
        Enforce = "enforce",
        /// Every check runs, but failures are forwarded too, marked
        /// `X-Webhook-Verified: false` with `X-Webhook-Verdict: <error code>`.
        Shadow = "shadow",
    }
}

named_enum! {
    /// `server.tls.min_version`: the lowest TLS version accepted.
    #[derive(Default)]
    pub enum TlsVersion {
        /// TLS 1.2 and 1.3.
        #[default]
        V1_2 = "1.2",
        /// TLS 1.3 only.
        V1_3 = "1.3",
    }
}

named_enum! {
    /// `log.format`.
    #[derive(Default)]
    pub enum LogFormat {
        /// One JSON object per line.
        #[default]
        Json = "json",
        /// For a terminal.
        Pretty = "pretty",
    }
}

named_enum! {
    /// `log.flush`: when lines reach stdout.
    #[derive(Default)]
    pub enum LogFlush {
        /// Gathered while the runtime is busy, written when it has nothing
        /// else to do (also before exit and on a panic).
        #[default]
        Idle = "idle",
        /// One `write` per line, as it is logged.
        Line = "line",
    }
}

/// `[server]`: the public listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address of the public HTTPS listener.
    pub listen: SocketAddr,
    /// Larger bodies get 413 before they are buffered.
    pub max_body_bytes: usize,
    /// A client must send its whole request head within this time.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A client must send its whole body within this time (slow bodies are cut off).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// The TLS handshake (and the first byte) must complete within this time.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Keep-alive connections with no request in flight are closed after this time.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// At most this many client connections at once; more wait in the kernel backlog.
    pub max_connections: usize,
    /// Threads that run connections: 0 = one per CPU this process may use
    /// (CPU affinity and cgroup quota respected). With one, everything runs
    /// on a single-threaded runtime, which saves the hand-offs between threads.
    pub worker_threads: usize,
    /// After SIGTERM: keep serving this long (while /readyz says 503) before closing the listener.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// After the listener closes: in-flight requests get this long to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Peers (CIDRs) trusted to have terminated TLS in front of hookgate:
    /// their `X-Forwarded-For` is kept (the peer appended), and with
    /// `tls.enabled = false` only they may send plain HTTP.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// TLS material and protocol floor.
    pub tls: TlsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            max_body_bytes: 65536,
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            worker_threads: 0,
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(20),
            trusted_proxies: Vec::new(),
            tls: TlsConfig::default(),
        }
    }
}

/// `[server.tls]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// Terminate TLS here (default). `false` is only for a listener behind a
    /// TLS-terminating proxy and requires `server.trusted_proxies`.
    pub enabled: bool,
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Lowest TLS version accepted: "1.2" or "1.3".
    pub min_version: TlsVersion,
    /// Development only: ignore the files and serve a throwaway self-signed
    /// certificate for `localhost`, made in memory at start-up.
    pub self_signed: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cert_file: PathBuf::from("/etc/hookgate/tls/tls.crt"),
            key_file: PathBuf::from("/etc/hookgate/tls/tls.key"),
            min_version: TlsVersion::V1_2,
            self_signed: false,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    /// Plain HTTP, pod-local: /healthz /readyz /metrics and the console.
    pub listen: SocketAddr,
    /// A file whose content (trailing whitespace trimmed) is the bearer
    /// token the console's actions (replay, drop) must carry as
    /// `Authorization: Bearer <token>`. Unset: loopback and the action
    /// header suffice. Re-read on reload like the secret files.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token_file: None,
        }
    }
}

/// `[upstream]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UpstreamConfig {
    /// Base URL of the app (`http://host:port`, no path).
    pub url: String,
    /// The upstream must answer (head and body) within this time; must stay under the provider's 5 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Connecting to the upstream must succeed within this time, or the answer is 502.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Idle pooled upstream connections are closed after this time.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Upstream answers with a larger body get 502 instead of being passed on.
    pub max_response_bytes: usize,
    /// After answering 504 at `timeout`, keep waiting this long for the
    /// app's answer, so a late 2xx still marks a deduplicated event as
    /// delivered.
    #[serde(with = "humantime_serde")]
    pub late_answer_window: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".to_owned(),
            timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(30),
            max_response_bytes: 1024 * 1024,
            late_answer_window: Duration::from_secs(60),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// "json" (one object per line) or "pretty" (for a terminal).
    pub format: LogFormat,
    /// A tracing filter: "info", "debug", "hookgate=debug,info", ...
    pub level: String,
    /// When lines reach stdout: "idle" (gathered while the runtime is busy,
    /// written when it has nothing else to do, before exit and on a panic) or
    /// "line" (one `write` per line, as it is logged).
    pub flush: LogFlush,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
            flush: LogFlush::Idle,
        }
    }
}

/// `[reload]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadConfig {
    /// How often certificate and secret files are re-read and compared; "0s" = only on SIGHUP.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
        }
    }
}

/// `[[routes]]`: one webhook endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteConfig {
    /// Name used in logs, metrics and `X-Webhook-Route`.
    pub name: String,
    /// Exact request path that selects this route.
    pub path: String,
    /// Path on the upstream; empty = the same as `path`.
    pub upstream_path: String,
    /// Files holding one secret each (trailing whitespace trimmed).
    pub secret_files: Vec<PathBuf>,
    /// Names of environment variables holding one secret each.
    pub secret_env: Vec<String>,
    /// Events this route accepts; others get 422 `event_not_allowed`.
    pub events: Vec<EventKind>,
    /// Header carrying the signature.
    pub signature_header: String,
    /// "hex" (either case, optional `sha256=` prefix) or "base64".
    pub signature_encoding: Encoding,
    /// "enforce" (default): only verified events are forwarded. "shadow":
    /// every check runs, but failures are forwarded too, marked
    /// `X-Webhook-Verified: false` with `X-Webhook-Verdict: <error code>`.
    pub mode: RouteMode,
    /// What happens to an authentic JSON object whose `event` is absent or
    /// none of the four (the provider's test ping): "acknowledge" (200
    /// `{"status":"acknowledged"}`, nothing forwarded), "forward" (forwarded
    /// like a known event) or "reject" (422 `invalid_payload`).
    pub unknown_events: UnknownEvents,
    /// Replay window: a known event whose signed `timestamp` is older than
    /// now minus this gets 422 `event_too_old`; "0s" turns the check off.
    #[serde(with = "humantime_serde")]
    pub max_event_age: Duration,
    /// A `timestamp` later than now plus this gets 422 `event_from_future`.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Events deduplicated on this route.
    pub dedup_events: Vec<EventKind>,
    /// How long a delivered key is remembered; unset = `max_event_age`, or
    /// 24h when the age check is off; "0s" turns deduplication off.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Option<Duration>,
    /// "direct" (the app's answer is the provider's) or "queued" (stored,
    /// then delivered by hookgate).
    pub delivery: Delivery,
    /// Queued: attempts in flight at once for this route.
    pub delivery_concurrency: usize,
    /// Queued: the waits between attempts (±20% jitter; the last repeats).
    #[serde(with = "humantime_serde_vec")]
    pub retry_schedule: Vec<Duration>,
    /// Queued: an event older than this is dead.
    #[serde(with = "humantime_serde")]
    pub max_delivery_age: Duration,
    /// Queued: delivered events are deleted this long after delivery.
    #[serde(with = "humantime_serde")]
    pub retention_delivered: Duration,
    /// Queued: dead events are deleted this long after they died.
    #[serde(with = "humantime_serde")]
    pub retention_dead: Duration,
}

/// `Vec<Duration>` as a list of humantime strings.
mod humantime_serde_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct D(#[serde(with = "humantime_serde")] Duration);

    pub(super) fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|d| D(*d)).collect::<Vec<_>>().serialize(s)
    }

    pub(super) fn deserialize<'de, De: Deserializer<'de>>(
        d: De,
    ) -> Result<Vec<Duration>, De::Error> {
        Ok(Vec::<D>::deserialize(d)?
            .into_iter()
            .map(|D(d)| d)
            .collect())
    }
}

named_enum! {
    /// `routes[].unknown_events`.
    #[derive(Default)]
    pub enum UnknownEvents {
        /// 200 `{"status":"acknowledged"}`; nothing reaches the app.
        #[default]
        Acknowledge = "acknowledge",
        /// Forwarded like a known event.
        Forward = "forward",
        /// 422 `invalid_payload`, as for any schema violation.
        Reject = "reject",
    }
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            path: String::new(),
            upstream_path: String::new(),
            secret_files: Vec::new(),
            secret_env: Vec::new(),
            events: EventKind::ALL.to_vec(),
            signature_header: "X-CoolPopup-Signature".to_owned(),
            signature_encoding: Encoding::Hex,
            mode: RouteMode::Enforce,
            unknown_events: UnknownEvents::default(),
            max_event_age: Duration::from_secs(72 * 3600),
            max_clock_skew: Duration::from_secs(5 * 60),
            dedup_events: vec![EventKind::Converted],
            dedup_window: None,
            delivery: Delivery::Direct,
            delivery_concurrency: 4,
            retry_schedule: [1, 5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            max_delivery_age: Duration::from_secs(72 * 3600),
            retention_delivered: Duration::from_secs(24 * 3600),
            retention_dead: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

impl RouteConfig {
    /// How long a delivered key is remembered; `None` = deduplication off.
    pub fn dedup_window(&self) -> Option<Duration> {
        let w = match self.dedup_window {
            Some(w) => w,
            None if self.max_event_age.is_zero() => Duration::from_secs(24 * 3600),
            None => self.max_event_age,
        };
        (!w.is_zero() && !self.dedup_events.is_empty()).then_some(w)
    }

    /// The path on the upstream (defaults to the route's own path).
    pub fn upstream_path(&self) -> &str {
        if self.upstream_path.is_empty() {
            &self.path
        } else {
            &self.upstream_path
        }
    }
}

/// One problem with the configuration: the key it concerns and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `upstream.timeout` or `routes[0].secret_files`.
    pub key: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl Problem {
    /// A problem at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Every problem found; shown one per line. `main` exits 78 on it.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem", self.0.len())?;
        if self.0.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str("):")?;
        for p in &self.0 {
            write!(f, "\n  {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Where the config file is: `-c FILE`, else `$HOOKGATE_CONFIG`, else `config.toml`.
    pub fn path_from(cli: Option<&Path>) -> PathBuf {
        if let Some(p) = cli {
            return p.to_owned();
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from("config.toml"),
        }
    }

    /// Loads defaults, the file, then the environment; reports every unknown
    /// key and bad name (and the first type error). Does not
    /// [`validate`](Self::validate): [`crate::load::load_all`] does, together
    /// with reading the files, so that all problems are reported at once.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        if !path.is_file() {
            return Err(ConfigErrors(vec![Problem::new(
                "config",
                format!("cannot read config file {}", path.display()),
            )]));
        }
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(
            Env::prefixed(ENV_PREFIX)
                .ignore(&["config"])
                .split("__")
                .lowercase(true),
        );
        Self::from_figment(&figment)
    }

    /// Loads from an already assembled figment (tests use this with inline TOML).
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigErrors> {
        let mut tree = figment
            .extract::<Value>()
            .map_err(|e| ConfigErrors(figment_problems(e)))?;
        // serde stops at the first value it cannot take: check the values of
        // the keys that are names first, all of them, and read a bad one as
        // its key's first choice so that the rest is still checked.
        let bad_names = check_names(&mut tree);
        // Unknown keys: serde stops at the first one too, so find them all
        // first by walking the merged tree against the struct with serde_ignored.
        let mut problems = Vec::new();
        let _ = serde_ignored::deserialize(&tree, |path| {
            problems.push(Problem::new(key_path(&path), "unknown key"));
        })
        .map(|_: Config| ());
        if !problems.is_empty() {
            problems.extend(bad_names);
            return Err(ConfigErrors(problems));
        }
        let extracted = match tree.into_dict() {
            Some(dict) if !bad_names.is_empty() => figment.clone().merge(Replaced(dict)).extract(),
            _ => figment.extract(),
        };
        match extracted {
            Ok(config) => Ok(Config {
                bad_names,
                ..config
            }),
            Err(e) => {
                let mut problems = figment_problems(e);
                problems.extend(bad_names);
                Err(ConfigErrors(problems))
            }
        }
    }
}

/// `routes[0].secret_file` from serde_ignored's path (it would print `routes.0.secret_file`).
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        P::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            key_path(parent)
        }
    }
}

/// The keys whose values are names: every value that is none of its key's
/// names is reported (with the names) and replaced by the first of them. A
/// named key missing here is still refused by serde, with its path and its
/// names, but that stops the reading like any type error.
fn check_names(tree: &mut Value) -> Vec<Problem> {
    let mut p = Vec::new();
    if let Some(tls) = child(tree, "server").and_then(|s| child(s, "tls")) {
        name_at::<TlsVersion>(tls, "server.tls", "min_version", &mut p);
    }
    if let Some(log) = child(tree, "log") {
        name_at::<LogFormat>(log, "log", "format", &mut p);
        name_at::<LogFlush>(log, "log", "flush", &mut p);
    }
    if let Some(store) = child(tree, "store") {
        name_at::<StoreEngine>(store, "store", "engine", &mut p);
        name_at::<PgTlsMode>(store, "store", "tls", &mut p);
    }
    if let Some(Value::Array(_, routes)) = child(tree, "routes") {
        for (i, route) in routes.iter_mut().enumerate() {
            let prefix = format!("routes[{i}]");
            names_at::<EventKind>(route, &prefix, "events", &mut p);
            names_at::<EventKind>(route, &prefix, "dedup_events", &mut p);
            name_at::<Encoding>(route, &prefix, "signature_encoding", &mut p);
            name_at::<RouteMode>(route, &prefix, "mode", &mut p);
            name_at::<UnknownEvents>(route, &prefix, "unknown_events", &mut p);
            name_at::<Delivery>(route, &prefix, "delivery", &mut p);
        }
    }
    p
}

/// The merged config with the bad names replaced, merged over the layers it
/// came from: each value keeps its tag, so an error still names the layer
/// (file or environment) that gave it.
struct Replaced(figment::value::Dict);

impl figment::Provider for Replaced {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("the config, bad names replaced")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.0.clone()))
    }
}

/// `dict[key]`, if `dict` is a table that has it.
fn child<'v>(dict: &'v mut Value, key: &str) -> Option<&'v mut Value> {
    match dict {
        Value::Dict(_, d) => d.get_mut(key),
        _ => None,
    }
}

/// A string at `dict[key]` that is none of `T`'s names: `must be "a" or "b", not "c"`.
/// (Another type is left to serde, which reports it.)
fn name_at<T: Named>(dict: &mut Value, prefix: &str, key: &str, p: &mut Vec<Problem>) {
    if let Some(Value::String(_, s)) = child(dict, key)
        && !T::NAMES.contains(&s.as_str())
    {
        p.push(Problem::new(
            format!("{prefix}.{key}"),
            format!("must be {}, not {s:?}", alternatives(T::NAMES)),
        ));
        *s = T::NAMES[0].to_owned();
    }
}

/// Each string in the list at `dict[key]` that is none of `T`'s names:
/// `"c" is not one of a, b`.
fn names_at<T: Named>(dict: &mut Value, prefix: &str, key: &str, p: &mut Vec<Problem>) {
    let Some(Value::Array(_, items)) = child(dict, key) else {
        return;
    };
    for (j, item) in items.iter_mut().enumerate() {
        if let Value::String(_, s) = item
            && !T::NAMES.contains(&s.as_str())
        {
            p.push(Problem::new(
                format!("{prefix}.{key}[{j}]"),
                format!("{s:?} is not one of {}", T::NAMES.join(", ")),
            ));
            *s = T::NAMES[0].to_owned();
        }
    }
}

/// Turns figment's error chain into problems keyed by their path.
fn figment_problems(e: figment::Error) -> Vec<Problem> {
    e.into_iter()
        .map(|e| {
            let key = dotted(&e.path);
            let mut message = e.kind.to_string();
            if let Some(meta) = &e.metadata {
                message.push_str(&format!(" (from {})", meta.name));
            }
            Problem::new(
                if key.is_empty() {
                    "config".to_owned()
                } else {
                    key
                },
                message,
            )
        })
        .collect()
}

/// figment paths are `["routes", "0", "name"]`; show `routes[0].name`.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if part.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Format;

    fn load(toml: &str) -> Result<ValidConfig, ConfigErrors> {
        Config::from_figment(&Figment::new().merge(Toml::string(toml)))?.validate()
    }

    const GOOD: &str = r#"
        [[routes]]
        name = "coolpopup"
        path = "/webhooks/coolpopup"
        secret_env = ["X"]
    "#;

    #[test]
    fn the_store_url_never_prints() {
        let store = StoreConfig {
            url: Some("postgresql://hookgate:s3cret-pw@db/hookgate".to_owned()),
            ..StoreConfig::default()
        };
        let text = format!("{store:?}");
        assert!(
            !text.contains("s3cret-pw") && text.contains("[redacted]"),
            "{text}"
        );
        assert!(!toml::to_string(&store).unwrap().contains("s3cret-pw"));
    }

    #[test]
    fn minimal_config_gets_spec_defaults() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(c.server.max_body_bytes, 65536);
        assert_eq!(c.upstream.timeout, Duration::from_secs(4));
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9901");
        assert_eq!(c.routes[0].upstream_path(), "/webhooks/coolpopup");
        assert_eq!(c.routes[0].signature_header, "X-CoolPopup-Signature");
        assert_eq!(c.routes[0].events.len(), 4);
    }

    #[test]
    fn durations_are_strings() {
        let c = load(&format!(
            "[upstream]\ntimeout = \"1500ms\"\nconnect_timeout = \"250ms\"\n{GOOD}"
        ))
        .unwrap();
        assert_eq!(c.upstream.timeout, Duration::from_millis(1500));
        assert_eq!(c.upstream.connect_timeout, Duration::from_millis(250));
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_path() {
        let e = load(&format!(
            "[upstream]\ntimout = \"3s\"\n[server]\nlisen = \"x\"\n{GOOD}secret_file = \"a\"\n"
        ))
        .unwrap_err();
        let keys: Vec<_> = e.0.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"upstream.timout"), "{keys:?}");
        assert!(keys.contains(&"server.lisen"), "{keys:?}");
        assert!(keys.contains(&"routes[0].secret_file"), "{keys:?}");
    }

    #[test]
    fn type_errors_name_their_key() {
        let e = load(&format!("[upstream]\ntimeout = \"soon\"\n{GOOD}")).unwrap_err();
        assert_eq!(e.0[0].key, "upstream.timeout", "{e}");
    }

    #[test]
    fn validate_reports_all_problems_at_once() {
        let e = load(
            r#"
            [upstream]
            url = "https://app/x"
            timeout = "6s"
            [server.tls]
            min_version = "1.1"
            [[routes]]
            name = "a b"
            path = "nope"
            events = ["popup.exploded"]
            signature_encoding = "hexx"
            "#,
        )
        .unwrap_err();
        let keys: Vec<_> = e.0.iter().map(|p| p.key.as_str()).collect();
        for want in [
            "upstream.url",
            "upstream.timeout",
            "server.tls.min_version",
            "routes[0].name",
            "routes[0].path",
            "routes[0].secret_files",
            "routes[0].events[0]",
            "routes[0].signature_encoding",
        ] {
            assert!(keys.contains(&want), "{want} missing from {keys:?}");
        }
    }

    /// Every key whose value is a name, all wrong at once: each is reported
    /// with its path and the names it may take, together with the problems
    /// `validate` finds in the rest.
    #[test]
    fn every_bad_name_is_reported_with_its_key_and_choices() {
        let e = load(
            r#"
            [server.tls]
            min_version = "1.1"
            [log]
            format = "xml"
            flush = "never"
            [store]
            engine = "mysql"
            tls = "prefer"
            [[routes]]
            name = "a b"
            path = "/a"
            secret_env = ["X"]
            mode = "audit"
            signature_encoding = "hexx"
            events = ["popup.shown", "popup.exploded"]
            dedup_events = ["popup.converted", "popup.closed", "converted"]
            unknown_events = "ignore"
            delivery = "later"
            "#,
        )
        .unwrap_err();
        let got: Vec<(&str, &str)> =
            e.0.iter()
                .map(|p| (p.key.as_str(), p.message.as_str()))
                .collect();
        let events = "popup.shown, popup.clicked, popup.converted, popup.closed";
        for want in [
            (
                "server.tls.min_version",
                r#"must be "1.2" or "1.3", not "1.1""#.to_owned(),
            ),
            (
                "log.format",
                r#"must be "json" or "pretty", not "xml""#.to_owned(),
            ),
            (
                "log.flush",
                r#"must be "idle" or "line", not "never""#.to_owned(),
            ),
            (
                "store.engine",
                r#"must be "sqlite" or "postgres", not "mysql""#.to_owned(),
            ),
            (
                "store.tls",
                r#"must be "disable", "require" or "verify-full", not "prefer""#.to_owned(),
            ),
            (
                "routes[0].mode",
                r#"must be "enforce" or "shadow", not "audit""#.to_owned(),
            ),
            (
                "routes[0].signature_encoding",
                r#"must be "hex" or "base64", not "hexx""#.to_owned(),
            ),
            (
                "routes[0].events[1]",
                format!(r#""popup.exploded" is not one of {events}"#),
            ),
            (
                "routes[0].dedup_events[2]",
                format!(r#""converted" is not one of {events}"#),
            ),
            (
                "routes[0].unknown_events",
                r#"must be "acknowledge", "forward" or "reject", not "ignore""#.to_owned(),
            ),
            (
                "routes[0].delivery",
                r#"must be "direct" or "queued", not "later""#.to_owned(),
            ),
        ] {
            assert!(
                got.contains(&(want.0, want.1.as_str())),
                "{want:?} missing from {got:#?}"
            );
        }
        // validate's own problems come along; the good names are not reported.
        assert!(got.iter().any(|p| p.0 == "routes[0].name"), "{got:#?}");
        assert_eq!(got.len(), 12, "{got:#?}");
    }

    /// A bad name is read as its key's first choice only so that the rest
    /// can be checked: the config still fails.
    #[test]
    fn a_bad_name_alone_still_fails() {
        let e = load(&format!("{GOOD}mode = \"Shadow\"\n")).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].key, "routes[0].mode");
    }

    /// Names are checked in every layer (here one merged over the file).
    #[test]
    fn bad_names_from_any_layer_are_reported() {
        let figment = Figment::new()
            .merge(Toml::string(GOOD))
            .merge(figment::providers::Serialized::default("log.format", "xml"));
        let c = Config::from_figment(&figment).unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.0[0].key, "log.format", "{e}");
    }

    /// Found together with a bad name: a value of the wrong type (which
    /// still stops the reading) and unknown keys, each with its source.
    #[test]
    fn bad_names_come_with_type_errors_and_unknown_keys() {
        let e = load(&format!(
            "[upstream]\ntimeout = \"soon\"\n{GOOD}mode = \"audit\"\n"
        ))
        .unwrap_err();
        let keys: Vec<_> = e.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["upstream.timeout", "routes[0].mode"], "{e}");
        assert!(e.0[0].message.contains("TOML"), "the source is named: {e}");
        let e = load(&format!(
            "[upstream]\ntimout = \"3s\"\n{GOOD}mode = \"audit\"\n"
        ))
        .unwrap_err();
        let keys: Vec<_> = e.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["upstream.timout", "routes[0].mode"], "{e}");
        // A name of the wrong type is a type error that names the choices.
        let e = load(&format!("{GOOD}mode = 5\n")).unwrap_err();
        assert_eq!(e.0[0].key, "routes[0].mode", "{e}");
        assert!(e.0[0].message.contains(r#""enforce" or "shadow""#), "{e}");
    }

    #[test]
    fn names_are_read_into_their_enums() {
        let c = load(&format!(
            "[server.tls]\nmin_version = \"1.3\"\n[log]\nformat = \"pretty\"\nflush = \"line\"\n\
             {GOOD}mode = \"shadow\"\nsignature_encoding = \"base64\"\n\
             events = [\"popup.closed\"]\ndedup_events = []\n"
        ))
        .unwrap();
        assert_eq!(c.server.tls.min_version, TlsVersion::V1_3);
        assert_eq!(c.log.format, LogFormat::Pretty);
        assert_eq!(c.log.flush, LogFlush::Line);
        let r = &c.routes[0];
        assert_eq!(r.mode, RouteMode::Shadow);
        assert_eq!(r.signature_encoding, Encoding::Base64);
        assert_eq!(r.events, [EventKind::Closed]);
        assert!(r.dedup_events.is_empty());
        // And printed back (by `check`) as the same names.
        let printed = toml::to_string(&*c).unwrap();
        for line in [
            r#"min_version = "1.3""#,
            r#"format = "pretty""#,
            r#"mode = "shadow""#,
            r#"events = ["popup.closed"]"#,
        ] {
            assert!(printed.contains(line), "{line} not in\n{printed}");
        }
    }

    /// `validate` parses `upstream.url` once, for the client: the URL
    /// parser it checks with and the client's must both take it.
    #[test]
    fn upstream_url_is_parsed_for_the_client() {
        let c = load(&format!(
            "[upstream]\nurl = \"http://App.local:8080/\"\n{GOOD}"
        ))
        .unwrap();
        let target = format!("{:?}", c.upstream_target());
        assert!(
            target.contains(r#"authority: "App.local:8080""#),
            "{target}"
        );
        assert!(target.contains(r#"host: "App.local:8080""#), "{target}");
        // Accepted by the URL check (IDNA) but not a usable authority.
        let e = load(&format!("[upstream]\nurl = \"http://exämple.com\"\n{GOOD}")).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].key, "upstream.url");
        assert_eq!(e.0[0].message, "is not a usable http://host:port URL");
        // Already reported by the URL check: not twice.
        let e = load(&format!("[upstream]\nurl = \"https://app\"\n{GOOD}")).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
    }

    /// Every route of a valid config comes with its headers.
    #[test]
    fn valid_routes_carry_their_headers() {
        let c = load(&format!(
            "{GOOD}{}signature_header = \"X-Other-Signature\"\n",
            GOOD.replace("coolpopup", "second")
        ))
        .unwrap();
        let routes: Vec<_> = c
            .routes()
            .map(|(r, h)| (r.name.as_str(), h.name.clone(), h.signature.clone()))
            .collect();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].0, "coolpopup");
        assert_eq!(routes[0].1, "coolpopup");
        assert_eq!(routes[0].2, "x-coolpopup-signature");
        assert_eq!(routes[1].1, "second");
        assert_eq!(routes[1].2, "x-other-signature");
    }

    #[test]
    fn plain_http_requires_trusted_proxies() {
        let e = load(&format!("[server.tls]\nenabled = false\n{GOOD}")).unwrap_err();
        assert_eq!(e.0[0].key, "server.trusted_proxies", "{e}");
        let c = load(&format!(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]\n[server.tls]\nenabled = false\n{GOOD}"
        ))
        .unwrap();
        assert_eq!(c.server.trusted_proxies.len(), 2);
        let e = load(&format!("[server]\ntrusted_proxies = [\"nope\"]\n{GOOD}")).unwrap_err();
        assert!(e.0[0].key.starts_with("server.trusted_proxies"), "{e}");
    }

    #[test]
    fn no_routes_is_a_problem() {
        let e = load("").unwrap_err();
        assert_eq!(e.0[0].key, "routes");
    }

    #[test]
    fn duplicate_route_paths_are_rejected() {
        let e = load(&format!(
            "{GOOD}{}",
            GOOD.replace("name = \"coolpopup\"", "name = \"other\"")
        ))
        .unwrap_err();
        assert!(e.0.iter().any(|p| p.key == "routes[1].path"), "{e}");
    }

    #[test]
    fn signature_header_cannot_be_a_managed_header() {
        let e = load(&format!(
            "{GOOD}signature_header = \"X-Webhook-Verified\"\n"
        ))
        .unwrap_err();
        assert!(
            e.0.iter().any(|p| p.key == "routes[0].signature_header"),
            "{e}"
        );
    }
}
