//! Hot reload of the TLS certificate, of every secret file and of the admin
//! token file, without a restart: on SIGHUP and every `[reload] interval`.
//!
//! Files are re-read and compared by content (a SHA-256 digest), so it works
//! with a Kubernetes Secret volume, where the kubelet swaps the `..data`
//! symlink atomically and file mtimes say nothing. A replacement that cannot
//! be read, is empty, does not parse, or (for TLS) whose key does not match
//! its certificate is refused: the old material stays in service, an error
//! is logged once per distinct failure, and `result="error"` is counted.
//!
//! The passes that changed something or met a new failure are kept (the
//! last [`HISTORY`]) for the admin console.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::load::{Routes, SecretSet, TlsState};
use crate::net::console::TokenFile;
use crate::net::tls::{self, CertStore};
use crate::observe::metrics::Metrics;

/// Re-reads TLS and secret files and swaps in what changed.
#[derive(Debug)]
pub struct Reloader {
    routes: Arc<Routes>,
    store: Option<Arc<CertStore>>,
    tls_files: Option<(PathBuf, PathBuf)>,
    admin_token: Option<Arc<TokenFile>>,
    metrics: Arc<Metrics>,
    memory: Mutex<Memory>,
}

/// How many reloads the console can list.
pub(crate) const HISTORY: usize = 16;

#[derive(Debug, Default)]
struct Memory {
    /// Digest of the cert+key files in service (or last refused).
    tls_seen: Option<[u8; 32]>,
    /// Per route: the last secret error reported, to log it once.
    secret_errors: Vec<Option<String>>,
    /// The last admin token error reported, to log it once.
    token_error: Option<String>,
    /// This pass counted a failure it had not reported before.
    new_failure: bool,
    /// When the files were last checked (Unix ms).
    checked_at: Option<i64>,
    /// The latest reloads, newest first.
    history: VecDeque<ReloadEvent>,
}

/// One reload pass that put something new in service or met a new failure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ReloadEvent {
    /// When (Unix ms).
    pub(crate) at: i64,
    /// `ok`, or `error` when a replacement was refused.
    pub(crate) result: &'static str,
    /// What the pass did.
    #[serde(flatten)]
    pub(crate) summary: Summary,
}

/// The reload history, for the admin console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct History {
    /// When the files were last checked (Unix ms), if ever.
    pub(crate) checked_at: Option<i64>,
    /// The latest reloads, newest first.
    pub(crate) events: Vec<ReloadEvent>,
}

/// The certificate in service, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leaf {
    /// Its subject, e.g. `CN=hooks.example.com`.
    pub(crate) subject: String,
    /// Its DNS names and IP addresses (subject alternative names).
    pub(crate) names: Vec<String>,
    /// Its notAfter (Unix seconds).
    pub(crate) not_after: i64,
}

/// What one reload pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// A new certificate was put in service.
    pub tls_reloaded: bool,
    /// Routes whose secrets were replaced.
    pub secrets_reloaded: Vec<String>,
    /// A new admin token was put in service.
    pub admin_token_reloaded: bool,
    /// Replacements refused, one line each.
    pub errors: Vec<String>,
}

impl Reloader {
    /// A reloader for the material `tls` and `routes` were loaded from.
    pub fn new(routes: Arc<Routes>, tls: &TlsState, metrics: Arc<Metrics>) -> Self {
        let tls_seen = tls.files.as_ref().and_then(|(c, k)| file_digest(&[c, k]));
        if let Some(store) = &tls.store {
            set_expiry(&metrics, store);
        }
        // What this reloader watches has its reload series from the start.
        if tls.files.is_some() {
            metrics.declare_reloads("tls");
        }
        metrics.declare_reloads("secrets");
        let secret_errors = routes.iter().map(|_| None).collect();
        Self {
            routes,
            store: tls.store.clone(),
            tls_files: tls.files.clone(),
            admin_token: None,
            metrics,
            memory: Mutex::new(Memory {
                tls_seen,
                secret_errors,
                ..Memory::default()
            }),
        }
    }

    /// Also re-reads `admin.token_file`.
    pub(crate) fn with_admin_token(mut self, token: Option<Arc<TokenFile>>) -> Self {
        if token.is_some() {
            self.metrics.declare_reloads("admin_token");
        }
        self.admin_token = token;
        self
    }

    /// When the files were last checked and the latest reloads.
    pub(crate) fn history(&self) -> History {
        match self.memory.lock() {
            Ok(m) => History {
                checked_at: m.checked_at,
                events: m.history.iter().cloned().collect(),
            },
            Err(_) => History {
                checked_at: None,
                events: Vec::new(),
            },
        }
    }

    /// The leaf certificate in service; `None` when TLS is terminated in
    /// front (or the leaf does not parse).
    pub(crate) fn certificate(&self) -> Option<Leaf> {
        let ck = self.store.as_ref()?.current();
        let leaf = ck.cert.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        names.push((*dns).to_owned());
                    }
                    x509_parser::extensions::GeneralName::IPAddress(ip) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*ip) {
                            names.push(std::net::IpAddr::from(v4).to_string());
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*ip) {
                            names.push(std::net::IpAddr::from(v6).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(Leaf {
            subject: cert.subject().to_string(),
            names,
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Checks every file once; swaps in what changed and is valid.
    pub fn reload(&self) -> Summary {
        let mut summary = Summary::default();
        let Ok(mut memory) = self.memory.lock() else {
            return summary; // a panic elsewhere poisoned it; nothing sane to do
        };
        memory.new_failure = false;
        self.reload_tls(&mut memory, &mut summary);
        self.reload_secrets(&mut memory, &mut summary);
        self.reload_admin_token(&mut memory, &mut summary);
        let now = crate::store::now_ms();
        memory.checked_at = Some(now);
        let changed = summary.tls_reloaded
            || !summary.secrets_reloaded.is_empty()
            || summary.admin_token_reloaded;
        if changed || memory.new_failure {
            if memory.history.len() == HISTORY {
                memory.history.pop_back();
            }
            memory.history.push_front(ReloadEvent {
                at: now,
                result: if summary.errors.is_empty() {
                    "ok"
                } else {
                    "error"
                },
                summary: summary.clone(),
            });
        }
        summary
    }

    fn reload_admin_token(&self, memory: &mut Memory, summary: &mut Summary) {
        let Some(token) = &self.admin_token else {
            return;
        };
        match token.reload() {
            Ok(changed) => {
                memory.token_error = None;
                if changed {
                    self.metrics.record_reload("admin_token", true);
                    summary.admin_token_reloaded = true;
                    tracing::info!(file = %token.path().display(), "admin token reloaded");
                }
            }
            Err(reason) => {
                if memory.token_error.as_deref() != Some(reason.as_str()) {
                    self.metrics.record_reload("admin_token", false);
                    memory.new_failure = true;
                    tracing::error!(error = %reason,
                        "new admin token refused; the previous token stays in service");
                    memory.token_error = Some(reason.clone());
                }
                summary.errors.push(reason);
            }
        }
    }

    fn reload_tls(&self, memory: &mut Memory, summary: &mut Summary) {
        let (Some((cert, key)), Some(store)) = (&self.tls_files, &self.store) else {
            return;
        };
        let digest = file_digest(&[cert, key]);
        if digest.is_some() && digest == memory.tls_seen {
            return;
        }
        match tls::load_certified_key(cert, key) {
            Ok(ck) => {
                store.replace(ck);
                memory.tls_seen = digest;
                set_expiry(&self.metrics, store);
                self.metrics.record_reload("tls", true);
                summary.tls_reloaded = true;
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                // Report each distinct failure once (unreadable = no digest).
                if digest != memory.tls_seen {
                    memory.tls_seen = digest;
                    memory.new_failure = true;
                    self.metrics.record_reload("tls", false);
                    tracing::error!(error = %e, "new TLS material refused; the previous certificate stays in service");
                }
                summary.errors.push(e.to_string());
            }
        }
    }

    fn reload_secrets(&self, memory: &mut Memory, summary: &mut Summary) {
        for (i, route) in self.routes.iter().enumerate() {
            let current = route.secrets();
            let mut read = Vec::with_capacity(route.sources.len());
            let mut failure = None;
            for source in &route.sources {
                match source.read() {
                    Ok(pair) => read.push(pair),
                    Err(reason) => {
                        failure = Some(reason);
                        break;
                    }
                }
            }
            let new_failure = &mut memory.new_failure;
            let last_error = memory.secret_errors.get_mut(i);
            match failure {
                Some(reason) => {
                    if let Some(last) = last_error
                        && last.as_deref() != Some(reason.as_str())
                    {
                        self.metrics.record_reload("secrets", false);
                        *new_failure = true;
                        tracing::error!(route = %route.name, error = %reason,
                                "new secret refused; the previous secrets stay in service");
                        *last = Some(reason.clone());
                    }
                    summary.errors.push(reason);
                }
                None => {
                    if let Some(last) = last_error {
                        *last = None;
                    }
                    let digests: Vec<[u8; 32]> = read.iter().map(|(_, d)| *d).collect();
                    if digests == current.digests {
                        continue;
                    }
                    let secrets = read.into_iter().map(|(s, _)| s).collect();
                    route.replace_secrets(SecretSet { secrets, digests });
                    self.metrics.record_reload("secrets", true);
                    summary.secrets_reloaded.push(route.name.to_string());
                    tracing::info!(route = %route.name, "secrets reloaded");
                }
            }
        }
    }
}

/// The one reload task: every `interval` ("0s": never by itself) and on
/// each SIGHUP. Files are read on a blocking thread.
pub(crate) async fn watch(
    reloader: Arc<Reloader>,
    interval: Duration,
    mut sighup: Option<tokio::signal::unix::Signal>,
) {
    let mut tick = (!interval.is_zero()).then(|| {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    loop {
        tokio::select! {
            _ = async { tick.as_mut()?.tick().await; Some(()) }, if tick.is_some() => {}
            Some(()) = async { sighup.as_mut()?.recv().await }, if sighup.is_some() => {
                tracing::info!("SIGHUP: reloading certificate and secrets");
            }
            else => return,
        }
        let r = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || r.reload()).await;
    }
}

fn file_digest(paths: &[&PathBuf]) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    for p in paths {
        h.update(std::fs::read(p).ok()?);
        h.update([0]);
    }
    Some(h.finalize().into())
}

/// Publishes the leaf certificate's notAfter.
fn set_expiry(metrics: &Metrics, store: &CertStore) {
    let ck = store.current();
    let Some(leaf) = ck.cert.first() else { return };
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) {
        metrics
            .cert_expiry
            .set(cert.validity().not_after.timestamp());
    }
}
