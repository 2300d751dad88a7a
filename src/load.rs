//! What a validated config turns into at start-up: routes with their keyed
//! secrets, the certificate store, and the admin console's token. Every file is read here, and every
//! problem (a missing secret file, a bad certificate) is collected into the
//! same [`ConfigErrors`] as the config's own, keyed by the config key that
//! named the file — so `hookgate check` and `serve` fail the same way.
//!
//! Secrets read from files and the certificate can be re-read later by
//! [`crate::reload`]; each route keeps its secret list behind an `ArcSwap`.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::config::{
    Config, ConfigErrors, Problem, RouteConfig, RouteHeaders, RouteMode, ValidConfig,
};
use crate::net::console::TokenFile;
use crate::net::tls::{self, CertStore};
use crate::payload::EventKind;
use crate::verify::secret::Secret;
use crate::verify::signature::Encoding;

/// Where one secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file (re-read on reload).
    File(PathBuf),
    /// An environment variable (read once).
    Env(String),
}

impl SecretSource {
    /// Reads the secret; the error is a one-line reason that names the source,
    /// never the value.
    pub fn read(&self) -> Result<(Secret, [u8; 32]), String> {
        let (raw, origin) = match self {
            Self::File(path) => (
                std::fs::read(path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?,
                format!("file {}", path.display()),
            ),
            Self::Env(name) => (
                std::env::var_os(name)
                    .ok_or_else(|| format!("environment variable {name} is not set"))?
                    .into_encoded_bytes(),
                format!("env {name}"),
            ),
        };
        let digest: [u8; 32] = Sha256::digest(raw.trim_ascii_end()).into();
        let secret = Secret::new(&raw, origin).map_err(|e| match self {
            Self::File(path) => format!("secret file {}: {e}", path.display()),
            Self::Env(name) => format!("environment variable {name}: {e}"),
        })?;
        Ok((secret, digest))
    }
}

/// A route's secrets in service, with a digest of each to notice changes.
#[derive(Debug)]
pub struct SecretSet {
    /// The keyed secrets, in config order.
    pub secrets: Vec<Secret>,
    /// SHA-256 of each trimmed secret, to compare on reload without keeping the bytes.
    pub digests: Vec<[u8; 32]>,
}

/// One webhook endpoint, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// Name for logs, metrics and `X-Webhook-Route`.
    /// Shared: every request's metric labels take it without copying.
    pub name: std::sync::Arc<str>,
    /// The name as a header value.
    pub name_header: HeaderValue,
    /// Exact request path.
    pub path: String,
    /// Path on the upstream.
    pub upstream_path: http::uri::PathAndQuery,
    /// The signature header.
    pub signature_header: HeaderName,
    /// Its encoding.
    pub encoding: Encoding,
    /// Events accepted.
    pub events: Vec<EventKind>,
    /// Shadow mode: failures are forwarded too, marked unverified.
    pub shadow: bool,
    /// What happens to events hookgate does not know.
    pub unknown_events: crate::config::UnknownEvents,
    /// Replay window: oldest accepted `timestamp` (zero: no limit).
    pub max_event_age: std::time::Duration,
    /// Replay window: how far in the future a `timestamp` may be.
    pub max_clock_skew: std::time::Duration,
    /// Deduplication: which events, and how long a key is remembered
    /// (None: off on this route).
    pub dedup: Option<RouteDedup>,
    /// Queued delivery's settings (None: direct delivery).
    pub queue: Option<QueueSettings>,
    /// Where the secrets come from (config order: files, then env).
    pub sources: Vec<SecretSource>,
    secrets: ArcSwap<SecretSet>,
}

/// `routes[].dedup_events` and the effective `dedup_window`.
#[derive(Debug, Clone)]
pub struct RouteDedup {
    /// Events deduplicated.
    pub events: Vec<EventKind>,
    /// How long a delivered key is remembered.
    pub window: std::time::Duration,
}

/// A queued route's delivery settings.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// Waits between attempts (the last repeats).
    pub retry_schedule: Vec<std::time::Duration>,
    /// Older events are dead.
    pub max_delivery_age: std::time::Duration,
    /// Delivered events are deleted after this.
    pub retention_delivered: std::time::Duration,
    /// Dead events are deleted after this.
    pub retention_dead: std::time::Duration,
}

impl Route {
    /// The secrets in service now.
    pub fn secrets(&self) -> arc_swap::Guard<Arc<SecretSet>> {
        self.secrets.load()
    }

    /// Puts a new secret set in service.
    pub fn replace_secrets(&self, set: SecretSet) {
        self.secrets.store(Arc::new(set));
    }

    /// How long to remember a delivered `kind` event (None: not deduplicated).
    pub fn dedup_window(&self, kind: Option<EventKind>) -> Option<std::time::Duration> {
        let d = self.dedup.as_ref()?;
        d.events.contains(&kind?).then_some(d.window)
    }

    /// Whether the route accepts `kind`.
    pub fn allows(&self, kind: EventKind) -> bool {
        self.events.contains(&kind)
    }
}

/// Every route, looked up by exact path.
#[derive(Debug, Default)]
pub struct Routes(Vec<Arc<Route>>);

impl Routes {
    /// The route whose path is exactly `path`.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.0.iter().find(|r| r.path == path)
    }

    /// All routes.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.0.iter()
    }
}

/// The TLS side: the store in service and where it was loaded from.
#[derive(Debug)]
pub struct TlsState {
    /// The certificate in service; None when TLS is terminated in front.
    pub store: Option<Arc<CertStore>>,
    /// The files it came from, or None for the self-signed development certificate.
    pub files: Option<(PathBuf, PathBuf)>,
    /// The development certificate's PEM (to print for clients); None otherwise.
    pub dev_cert_pem: Option<String>,
}

/// Everything loaded from the config.
#[derive(Debug)]
pub struct Loaded {
    /// The validated config.
    pub config: ValidConfig,
    /// Routes with secrets.
    pub routes: Arc<Routes>,
    /// TLS material.
    pub tls: TlsState,
    /// `admin.token_file`'s token, when set.
    pub admin_token: Option<Arc<TokenFile>>,
}

/// Loads the config file, validates it, reads every secret and the
/// certificate, and reports every problem found along the way at once.
pub fn load_all(path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    let config = Config::load(path)?;
    // The files are read even when the config is invalid, so that their
    // problems are reported with its own.
    let material = read_material(&config);
    match (config.validate(), material) {
        (Ok(config), Ok(material)) => Ok(assemble(config, material)),
        (Ok(_), Err(problems)) => Err(ConfigErrors(problems)),
        (Err(mut errors), material) => {
            errors.0.extend(material.err().unwrap_or_default());
            Err(errors)
        }
    }
}

/// Reads every secret and the certificate of a validated config; reports
/// every problem at once.
///
/// Only a [`ValidConfig`] is accepted:
///
/// ```compile_fail,E0308
/// // A config nobody validated does not compile:
/// let _ = hookgate::load(hookgate::Config::default());
/// ```
pub fn load(config: ValidConfig) -> Result<Loaded, ConfigErrors> {
    let material = read_material(&config).map_err(ConfigErrors)?;
    Ok(assemble(config, material))
}

/// What the config's files hold.
struct Material {
    /// Each route's secret sources and secrets, in config order.
    secrets: Vec<(Vec<SecretSource>, SecretSet)>,
    tls: TlsState,
    admin_token: Option<Arc<TokenFile>>,
}

/// Reads the files a config names (validated or not: only the paths and
/// variable names are used); every problem, or all of it.
fn read_material(config: &Config) -> Result<Material, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut secrets = Vec::new();
    for (i, rc) in config.routes.iter().enumerate() {
        match read_secrets(i, rc) {
            Ok(s) => secrets.push(s),
            Err(p) => problems.extend(p),
        }
    }
    let tls = load_tls(config).map_err(|p| problems.extend(p)).ok();
    let admin_token = match &config.admin.token_file {
        Some(path) => match TokenFile::load(path) {
            Ok(t) => Some(Arc::new(t)),
            Err(reason) => {
                problems.push(Problem::new("admin.token_file", reason));
                None
            }
        },
        None => None,
    };
    match tls {
        Some(tls) if problems.is_empty() => Ok(Material {
            secrets,
            tls,
            admin_token,
        }),
        _ => Err(problems),
    }
}

fn assemble(config: ValidConfig, material: Material) -> Loaded {
    let routes = config
        .routes()
        .zip(material.secrets)
        .map(|((rc, headers), (sources, set))| Arc::new(build_route(rc, headers, sources, set)))
        .collect();
    Loaded {
        config,
        routes: Arc::new(Routes(routes)),
        tls: material.tls,
        admin_token: material.admin_token,
    }
}

/// A route's secret sources (files, then environment variables) and the
/// secrets they hold.
fn read_secrets(
    i: usize,
    rc: &RouteConfig,
) -> Result<(Vec<SecretSource>, SecretSet), Vec<Problem>> {
    let mut sources = Vec::new();
    let mut keys = Vec::new();
    for (j, path) in rc.secret_files.iter().enumerate() {
        sources.push(SecretSource::File(path.clone()));
        keys.push(format!("routes[{i}].secret_files[{j}]"));
    }
    for (j, name) in rc.secret_env.iter().enumerate() {
        sources.push(SecretSource::Env(name.clone()));
        keys.push(format!("routes[{i}].secret_env[{j}]"));
    }
    let mut secrets = Vec::new();
    let mut digests = Vec::new();
    let mut problems = Vec::new();
    for (source, key) in sources.iter().zip(keys) {
        match source.read() {
            Ok((s, d)) => {
                secrets.push(s);
                digests.push(d);
            }
            Err(reason) => problems.push(Problem::new(key, reason)),
        }
    }
    if problems.is_empty() {
        Ok((sources, SecretSet { secrets, digests }))
    } else {
        Err(problems)
    }
}

fn build_route(
    rc: &RouteConfig,
    headers: &RouteHeaders,
    sources: Vec<SecretSource>,
    secrets: SecretSet,
) -> Route {
    Route {
        name: rc.name.as_str().into(),
        name_header: headers.name.clone(),
        path: rc.path.clone(),
        upstream_path: headers.upstream_path.clone(),
        signature_header: headers.signature.clone(),
        encoding: rc.signature_encoding,
        events: rc.events.clone(),
        shadow: rc.mode == RouteMode::Shadow,
        unknown_events: rc.unknown_events,
        max_event_age: rc.max_event_age,
        max_clock_skew: rc.max_clock_skew,
        dedup: rc.dedup_window().map(|window| RouteDedup {
            events: rc.dedup_events.clone(),
            window,
        }),
        queue: (rc.delivery == crate::config::Delivery::Queued).then(|| QueueSettings {
            concurrency: rc.delivery_concurrency,
            retry_schedule: rc.retry_schedule.clone(),
            max_delivery_age: rc.max_delivery_age,
            retention_delivered: rc.retention_delivered,
            retention_dead: rc.retention_dead,
        }),
        sources,
        secrets: ArcSwap::from_pointee(secrets),
    }
}

fn load_tls(config: &Config) -> Result<TlsState, Vec<Problem>> {
    let tls = &config.server.tls;
    if !tls.enabled {
        return Ok(TlsState {
            store: None,
            files: None,
            dev_cert_pem: None,
        });
    }
    if tls.self_signed {
        let (key, pem) = tls::self_signed()
            .map_err(|e| vec![Problem::new("server.tls.self_signed", e.to_string())])?;
        return Ok(TlsState {
            store: Some(CertStore::new(key)),
            files: None,
            dev_cert_pem: Some(pem),
        });
    }
    match tls::load_certified_key(&tls.cert_file, &tls.key_file) {
        Ok(key) => Ok(TlsState {
            store: Some(CertStore::new(key)),
            files: Some((tls.cert_file.clone(), tls.key_file.clone())),
            dev_cert_pem: None,
        }),
        Err(e) => {
            let key = match &e {
                tls::TlsError::Key { .. } => "server.tls.key_file",
                tls::TlsError::Cert { .. }
                | tls::TlsError::Mismatch(_)
                | tls::TlsError::SelfSigned(_) => "server.tls.cert_file",
            };
            Err(vec![Problem::new(key, e.to_string())])
        }
    }
}
