//! [`Config::validate`]: checks what serde cannot (ranges, cross-field
//! rules, route sanity), reports every problem at once, and makes the
//! [`ValidConfig`] that loading takes: a config nobody validated cannot be
//! loaded, which the compiler checks.

use std::ops::Deref;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::{
    Config, ConfigErrors, Delivery, Problem, RouteConfig, RouteMode, StoreConfig, StoreEngine,
};
use crate::forward::upstream::UpstreamTarget;

/// A [`Config`] that passed [`Config::validate`], with what the checks
/// parsed. Only `validate` makes one; it reads as the `Config` it holds.
///
/// ```compile_fail
/// // Not without validate:
/// let valid = hookgate::ValidConfig { config: hookgate::Config::default() };
/// ```
#[derive(Debug, Clone)]
pub struct ValidConfig {
    config: Config,
    upstream: UpstreamTarget,
    /// One per route, in config order.
    route_headers: Vec<RouteHeaders>,
}

/// A route's name and signature header, as headers, and its upstream path
/// as a request target.
#[derive(Debug, Clone)]
pub(crate) struct RouteHeaders {
    /// `routes[].name`, for `X-Webhook-Route`.
    pub(crate) name: HeaderValue,
    /// `routes[].signature_header`.
    pub(crate) signature: HeaderName,
    /// `routes[].upstream_path` (or `path`), parsed once: a request without
    /// a query forwards to a clone of it.
    pub(crate) upstream_path: http::uri::PathAndQuery,
}

impl Deref for ValidConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

impl ValidConfig {
    /// `upstream.url`, parsed.
    pub(crate) fn upstream_target(&self) -> &UpstreamTarget {
        &self.upstream
    }

    /// Each route with its headers, in config order.
    pub(crate) fn routes(&self) -> impl Iterator<Item = (&RouteConfig, &RouteHeaders)> {
        self.config.routes.iter().zip(&self.route_headers)
    }
}

impl Config {
    /// Checks what serde cannot: ranges, cross-field rules, route sanity,
    /// and reports the bad names found while reading. Every problem is
    /// collected; none stops the others from being found. What a check
    /// parses (the upstream URL, the route's headers) is kept in the
    /// [`ValidConfig`], the only way to make one.
    pub fn validate(mut self) -> Result<ValidConfig, ConfigErrors> {
        let mut p = std::mem::take(&mut self.bad_names);
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
        let url_problems = p.len();
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
        let upstream = if p.len() == url_problems {
            let target = UpstreamTarget::parse(&self.upstream.url);
            if target.is_none() {
                p.push(Problem::new(
                    "upstream.url",
                    "is not a usable http://host:port URL",
                ));
            }
            target
        } else {
            None
        };
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
        let mut route_headers = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.iter().enumerate() {
            route_headers.push(validate_route(i, r, &self.routes[..i], &mut p));
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
        // A part that could not be parsed has its problem in `p`.
        let route_headers: Option<Vec<RouteHeaders>> = route_headers.into_iter().collect();
        match (upstream, route_headers) {
            (Some(upstream), Some(route_headers)) if p.is_empty() => Ok(ValidConfig {
                config: self,
                upstream,
                route_headers,
            }),
            _ => Err(ConfigErrors(p)),
        }
    }
}

/// Checks one route; returns its headers when its name and signature header
/// can be headers and its upstream path a request target.
fn validate_route(
    i: usize,
    r: &RouteConfig,
    earlier: &[RouteConfig],
    p: &mut Vec<Problem>,
) -> Option<RouteHeaders> {
    let key = |k: &str| format!("routes[{i}].{k}");
    let name_header = if r.name.is_empty() {
        p.push(Problem::new(key("name"), "is required"));
        None
    } else if !r
        .name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        p.push(Problem::new(
            key("name"),
            "may only contain letters, digits, '.', '_' and '-' (it becomes a header and a metric label)",
        ));
        None
    } else {
        if earlier.iter().any(|e| e.name == r.name) {
            p.push(Problem::new(
                key("name"),
                format!("{:?} is used by an earlier route", r.name),
            ));
        }
        match HeaderValue::from_str(&r.name) {
            Ok(h) => Some(h),
            Err(_) => {
                p.push(Problem::new(key("name"), "is not a valid header value"));
                None
            }
        }
    };
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
    let signature_header = match HeaderName::from_bytes(r.signature_header.as_bytes()) {
        Ok(h) => {
            if crate::forward::headers::is_managed(&r.signature_header) {
                p.push(Problem::new(
                    key("signature_header"),
                    "names a header hookgate sets or strips itself",
                ));
            }
            Some(h)
        }
        Err(_) => {
            p.push(Problem::new(
                key("signature_header"),
                "is not a valid header name",
            ));
            None
        }
    };
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
        if r.mode == RouteMode::Shadow {
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
    // Both paths were checked above; a failure here was reported there.
    let upstream_path = http::uri::PathAndQuery::try_from(r.upstream_path()).ok();
    Some(RouteHeaders {
        name: name_header?,
        signature: signature_header?,
        upstream_path: upstream_path?,
    })
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
                || s.schema.starts_with("pg_")
            {
                p.push(Problem::new(
                    "store.schema",
                    "must be 1 to 63 of a-z, 0-9 and '_', not starting with a digit or pg_",
                ));
            }
            if s.max_connections == 0 {
                p.push(Problem::new("store.max_connections", "must be at least 1"));
            }
        }
    }
}
