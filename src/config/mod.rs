//! Configuration: plain, documented data with a default for every field.
//!
//! Loaded with figment in three layers — built-in defaults, then the TOML
//! file, then `HOOKGATE_SECTION__KEY` environment variables — and then
//! checked by [`Config::validate`], which collects *every* problem (unknown
//! keys included) so an operator fixes a broken config in one round trip.
//! Nothing here reads secrets or certificates: that is [`crate::load`]'s job,
//! and its problems are reported through the same [`ConfigErrors`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use http::HeaderName;
use serde::{Deserialize, Serialize};

use crate::named::Named;
use crate::payload::EventKind;

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

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// `store.engine`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreEngine {
    /// Embedded, one file (one pod).
    #[default]
    Sqlite,
    /// Shared by several replicas.
    Postgres,
}

impl StoreEngine {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// `store.tls` (postgres).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PgTlsMode {
    /// Plain TCP (a database on the pod's loopback or a trusted network).
    Disable,
    /// TLS, certificate not verified.
    #[default]
    Require,
    /// TLS, certificate and host name verified.
    VerifyFull,
}

/// `routes[].delivery`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// The provider's 200 means the app answered 2xx.
    #[default]
    Direct,
    /// 200 once the event is durably stored; hookgate delivers it.
    Queued,
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
    pub min_version: String,
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
            min_version: "1.2".to_owned(),
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
    pub format: String,
    /// A tracing filter: "info", "debug", "hookgate=debug,info", ...
    pub level: String,
    /// When lines reach stdout: "idle" (gathered while the runtime is busy,
    /// written when it has nothing else to do, before exit and on a panic) or
    /// "line" (one `write` per line, as it is logged).
    pub flush: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "json".to_owned(),
            level: "info".to_owned(),
            flush: "idle".to_owned(),
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
    pub events: Vec<String>,
    /// Header carrying the signature.
    pub signature_header: String,
    /// "hex" (either case, optional `sha256=` prefix) or "base64".
    pub signature_encoding: String,
    /// "enforce" (default): only verified events are forwarded. "shadow":
    /// every check runs, but failures are forwarded too, marked
    /// `X-Webhook-Verified: false` with `X-Webhook-Verdict: <error code>`.
    pub mode: String,
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
    pub dedup_events: Vec<String>,
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

/// `routes[].unknown_events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownEvents {
    /// 200 `{"status":"acknowledged"}`; nothing reaches the app.
    #[default]
    Acknowledge,
    /// Forwarded like a known event.
    Forward,
    /// 422 `invalid_payload`, as for any schema violation.
    Reject,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            path: String::new(),
            upstream_path: String::new(),
            secret_files: Vec::new(),
            secret_env: Vec::new(),
            events: EventKind::ALL
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
            signature_header: "X-CoolPopup-Signature".to_owned(),
            signature_encoding: "hex".to_owned(),
            mode: "enforce".to_owned(),
            unknown_events: UnknownEvents::default(),
            max_event_age: Duration::from_secs(72 * 3600),
            max_clock_skew: Duration::from_secs(5 * 60),
            dedup_events: vec![EventKind::Converted.as_str().to_owned()],
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
    /// key (and the first type error). Does not [`validate`](Self::validate):
    /// [`crate::load::load_all`] does, together with reading the files, so
    /// that all problems are reported at once.
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
        let mut problems = Vec::new();
        // Unknown keys: serde stops at the first one, so find them all first by
        // walking the merged tree against the struct with serde_ignored.
        match figment.extract::<figment::value::Value>() {
            Ok(tree) => {
                let _ = serde_ignored::deserialize(&tree, |path| {
                    problems.push(Problem::new(key_path(&path), "unknown key"));
                })
                .map(|_: Config| ());
            }
            Err(e) => problems.extend(figment_problems(e)),
        }
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        figment
            .extract()
            .map_err(|e| ConfigErrors(figment_problems(e)))
    }

    /// Checks what serde cannot: ranges, cross-field rules, route sanity.
    /// Every problem is collected; none stops the others from being found.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut p = Vec::new();
        let s = &self.server;
        if s.max_body_bytes == 0 {
            p.push(Problem::new("server.max_body_bytes", "must be at least 1"));
        }
        if s.max_connections == 0 {
            p.push(Problem::new("server.max_connections", "must be at least 1"));
        }
        for (key, d) in [
            ("server.header_read_timeout", s.header_read_timeout),
            ("server.body_read_timeout", s.body_read_timeout),
            ("server.handshake_timeout", s.handshake_timeout),
            ("server.idle_timeout", s.idle_timeout),
            ("upstream.timeout", self.upstream.timeout),
            ("upstream.connect_timeout", self.upstream.connect_timeout),
        ] {
            if d.is_zero() {
                p.push(Problem::new(key, "must be greater than 0"));
            }
        }
        if self.upstream.timeout >= Duration::from_secs(5) {
            p.push(Problem::new(
                "upstream.timeout",
                "must be under 5s, the provider's deadline (it would retry an event the app is still handling)",
            ));
        }
        if self.upstream.connect_timeout > self.upstream.timeout {
            p.push(Problem::new(
                "upstream.connect_timeout",
                "must not exceed upstream.timeout",
            ));
        }
        if !matches!(s.tls.min_version.as_str(), "1.2" | "1.3") {
            p.push(Problem::new(
                "server.tls.min_version",
                format!("must be \"1.2\" or \"1.3\", not {:?}", s.tls.min_version),
            ));
        }
        if !s.tls.enabled && s.trusted_proxies.is_empty() {
            p.push(Problem::new(
                "server.trusted_proxies",
                "must list the TLS-terminating proxies (CIDRs) when server.tls.enabled = false",
            ));
        }
        if s.listen == self.admin.listen && s.listen.port() != 0 {
            p.push(Problem::new(
                "admin.listen",
                "must differ from server.listen",
            ));
        }
        match url::Url::parse(&self.upstream.url) {
            Ok(u) => {
                if u.scheme() != "http" {
                    p.push(Problem::new(
                        "upstream.url",
                        "must be an http:// URL (the app is on the pod's loopback)",
                    ));
                }
                if u.host().is_none() {
                    p.push(Problem::new("upstream.url", "has no host"));
                }
                if !(u.path() == "/" || u.path().is_empty())
                    || u.query().is_some()
                    || u.fragment().is_some()
                {
                    p.push(Problem::new(
                        "upstream.url",
                        "must be a base URL without path or query; put the path in routes[].upstream_path",
                    ));
                }
                if !u.username().is_empty() || u.password().is_some() {
                    p.push(Problem::new("upstream.url", "must not carry credentials"));
                }
            }
            Err(e) => p.push(Problem::new(
                "upstream.url",
                format!("is not a valid URL: {e}"),
            )),
        }
        if !matches!(self.log.format.as_str(), "json" | "pretty") {
            p.push(Problem::new(
                "log.format",
                format!("must be \"json\" or \"pretty\", not {:?}", self.log.format),
            ));
        }
        if !matches!(self.log.flush.as_str(), "idle" | "line") {
            p.push(Problem::new(
                "log.flush",
                format!("must be \"idle\" or \"line\", not {:?}", self.log.flush),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            p.push(Problem::new(
                "log.level",
                format!("is not a valid filter: {e}"),
            ));
        }
        if self.routes.is_empty() {
            p.push(Problem::new(
                "routes",
                "at least one [[routes]] is required",
            ));
        }
        for (i, r) in self.routes.iter().enumerate() {
            validate_route(i, r, &self.routes[..i], &mut p);
            if r.delivery == Delivery::Queued && self.store.is_none() {
                p.push(Problem::new(
                    "store",
                    format!(
                        "routes[{i}] ({:?}) has delivery = \"queued\", which needs a [store]",
                        r.name
                    ),
                ));
            }
        }
        if self.upstream.late_answer_window > Duration::from_secs(3600) {
            p.push(Problem::new(
                "upstream.late_answer_window",
                "must be at most 1h",
            ));
        }
        if self.dedup.max_keys == 0 {
            p.push(Problem::new("dedup.max_keys", "must be at least 1"));
        }
        if let Some(store) = &self.store {
            validate_store(store, &mut p);
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(p))
        }
    }
}

fn validate_route(i: usize, r: &RouteConfig, earlier: &[RouteConfig], p: &mut Vec<Problem>) {
    let key = |k: &str| format!("routes[{i}].{k}");
    if r.name.is_empty() {
        p.push(Problem::new(key("name"), "is required"));
    } else if !r
        .name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        p.push(Problem::new(
            key("name"),
            "may only contain letters, digits, '.', '_' and '-' (it becomes a header and a metric label)",
        ));
    } else if earlier.iter().any(|e| e.name == r.name) {
        p.push(Problem::new(
            key("name"),
            format!("{:?} is used by an earlier route", r.name),
        ));
    }
    if !r.path.starts_with('/') || r.path.contains(['?', '#']) {
        p.push(Problem::new(
            key("path"),
            "must start with '/' and carry no query or fragment",
        ));
    } else if http::uri::PathAndQuery::try_from(r.path.as_str()).is_err() {
        p.push(Problem::new(key("path"), "is not a valid URI path"));
    } else if earlier.iter().any(|e| e.path == r.path) {
        p.push(Problem::new(
            key("path"),
            format!("{:?} is used by an earlier route", r.path),
        ));
    }
    if !r.upstream_path.is_empty()
        && (!r.upstream_path.starts_with('/')
            || r.upstream_path.contains(['?', '#'])
            || http::uri::PathAndQuery::try_from(r.upstream_path.as_str()).is_err())
    {
        p.push(Problem::new(
            key("upstream_path"),
            "must be a URI path starting with '/' without query or fragment",
        ));
    }
    if r.secret_files.is_empty() && r.secret_env.is_empty() {
        p.push(Problem::new(
            key("secret_files"),
            "the route has no secret: set secret_files or secret_env",
        ));
    }
    for (j, name) in r.secret_env.iter().enumerate() {
        if name.is_empty() {
            p.push(Problem::new(
                format!("routes[{i}].secret_env[{j}]"),
                "is empty",
            ));
        }
    }
    if r.events.is_empty() {
        p.push(Problem::new(
            key("events"),
            "at least one event is required",
        ));
    }
    for (j, e) in r.events.iter().enumerate() {
        if EventKind::from_name(e).is_none() {
            p.push(Problem::new(
                format!("routes[{i}].events[{j}]"),
                format!("{e:?} is not one of {}", EventKind::NAMES.join(", ")),
            ));
        }
    }
    if HeaderName::from_bytes(r.signature_header.as_bytes()).is_err() {
        p.push(Problem::new(
            key("signature_header"),
            "is not a valid header name",
        ));
    } else if crate::forward::headers::is_managed(&r.signature_header) {
        p.push(Problem::new(
            key("signature_header"),
            "names a header hookgate sets or strips itself",
        ));
    }
    for (j, e) in r.dedup_events.iter().enumerate() {
        if EventKind::from_name(e).is_none() {
            p.push(Problem::new(
                format!("routes[{i}].dedup_events[{j}]"),
                format!("{e:?} is not one of {}", EventKind::NAMES.join(", ")),
            ));
        }
    }
    if let Some(w) = r.dedup_window()
        && !r.max_event_age.is_zero()
        && w < r.max_event_age
    {
        p.push(Problem::new(
            key("dedup_window"),
            "must not be shorter than max_event_age (a replay of a forgotten event would get through the gap)",
        ));
    }
    if r.delivery == Delivery::Queued {
        if r.mode == "shadow" {
            p.push(Problem::new(
                key("delivery"),
                "\"queued\" cannot be combined with mode = \"shadow\" (only verified events are stored)",
            ));
        }
        if r.delivery_concurrency == 0 {
            p.push(Problem::new(
                key("delivery_concurrency"),
                "must be at least 1",
            ));
        }
        if r.retry_schedule.is_empty() {
            p.push(Problem::new(
                key("retry_schedule"),
                "must have at least one step",
            ));
        } else if r.retry_schedule.iter().any(Duration::is_zero) {
            p.push(Problem::new(
                key("retry_schedule"),
                "steps must be greater than 0",
            ));
        }
        for (k, d) in [
            ("max_delivery_age", r.max_delivery_age),
            ("retention_delivered", r.retention_delivered),
            ("retention_dead", r.retention_dead),
        ] {
            if d.is_zero() {
                p.push(Problem::new(key(k), "must be greater than 0"));
            }
        }
    }
    if !matches!(r.mode.as_str(), "enforce" | "shadow") {
        p.push(Problem::new(
            key("mode"),
            format!("must be \"enforce\" or \"shadow\", not {:?}", r.mode),
        ));
    }
    if !matches!(r.signature_encoding.as_str(), "hex" | "base64") {
        p.push(Problem::new(
            key("signature_encoding"),
            format!(
                "must be \"hex\" or \"base64\", not {:?}",
                r.signature_encoding
            ),
        ));
    }
}

fn validate_store(s: &StoreConfig, p: &mut Vec<Problem>) {
    if s.timeout.is_zero() {
        p.push(Problem::new("store.timeout", "must be greater than 0"));
    }
    match s.engine {
        StoreEngine::Sqlite => {
            if s.path.as_os_str().is_empty() {
                p.push(Problem::new(
                    "store.path",
                    "is required for engine = \"sqlite\"",
                ));
            }
        }
        StoreEngine::Postgres => {
            if s.url_file.is_none() && s.url.is_none() {
                p.push(Problem::new(
                    "store.url_file",
                    "is required for engine = \"postgres\" (or set HOOKGATE_STORE__URL)",
                ));
            }
            if s.schema.is_empty()
                || s.schema.len() > 63
                || !s
                    .schema
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                || s.schema.as_bytes()[0].is_ascii_digit()
            {
                p.push(Problem::new(
                    "store.schema",
                    "must be 1 to 63 of a-z, 0-9 and '_', not starting with a digit",
                ));
            }
            if s.max_connections == 0 {
                p.push(Problem::new("store.max_connections", "must be at least 1"));
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

    fn load(toml: &str) -> Result<Config, ConfigErrors> {
        let c = Config::from_figment(&Figment::new().merge(Toml::string(toml)))?;
        c.validate().map(|()| c)
    }

    const GOOD: &str = r#"
        [[routes]]
        name = "coolpopup"
        path = "/webhooks/coolpopup"
        secret_env = ["X"]
    "#;

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
