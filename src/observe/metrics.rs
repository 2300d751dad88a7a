//! Prometheus metrics, in base units with low-cardinality labels, encoded
//! by the `prometheus-client` crate (OpenMetrics text) for `/metrics`.
//!
//! `route` is a configured route name or `-`; `outcome` is `forwarded`,
//! `upstream_error_status`, `ping`, or one of the spec's error codes: both
//! come from closed sets, so a client cannot grow the label space.
//!
//! The admin console reads the request counters and latency histograms back
//! with [`Metrics::traffic`]. prometheus-client offers no way to read a
//! family's series or a histogram's buckets, so it parses this registry's
//! own exposition: the console then shows exactly what a scrape would see,
//! and the request path pays nothing for it.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Latency buckets from 100 µs to 5 s (the provider's deadline).
pub const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Labels of `hookgate_requests_total`: `route`, `outcome`, and
/// `shadow="true"` only on routes in shadow mode (enforcing routes' series
/// keep just `{route,outcome}`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RequestLabels {
    /// Route name, or `-`.
    pub route: Arc<str>,
    /// What happened.
    pub outcome: &'static str,
    /// The route is in shadow mode.
    pub shadow: bool,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("route", &*self.route).encode(encoder.encode_label())?;
        ("outcome", self.outcome).encode(encoder.encode_label())?;
        if self.shadow {
            ("shadow", "true").encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// A `route` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route name, or `-`.
    pub route: Arc<str>,
}

/// The `route` label of a request no route matched.
pub fn no_route() -> &'static Arc<str> {
    static NO_ROUTE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));
    &NO_ROUTE
}

/// Labels of `hookgate_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `tls`, `secrets` or `admin_token`.
    pub kind: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// `route` and `event` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// Route name.
    pub route: Arc<str>,
    /// Event name (one of the four, or `-`).
    pub event: &'static str,
}

/// Labels of `hookgate_queue_events`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Route name.
    pub route: Arc<str>,
    /// `pending`, `delivered` or `dead`.
    pub state: &'static str,
}

/// Labels of `hookgate_delivery_attempts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// Route name.
    pub route: Arc<str>,
    /// `delivered`, `retry` or `dead`.
    pub result: &'static str,
}

/// The metrics that exist only with a `[store]`.
#[derive(Debug)]
pub struct StoreMetrics {
    /// `hookgate_store_up`: 1 when the last store operation or probe
    /// succeeded.
    pub up: Gauge,
    /// `hookgate_store_commit_seconds`: one ingest commit (a batch).
    pub commit_seconds: Histogram,
    /// `hookgate_store_batch_size`: events per ingest commit.
    pub batch_size: Histogram,
    /// `hookgate_store_settle_batch_size`: delivery results recorded per
    /// store transaction (SQLite; PostgreSQL records each on its own).
    pub settle_batch_size: Histogram,
    /// `hookgate_queue_events{route,state}`.
    pub queue_events: Family<QueueLabels, Gauge>,
    /// `hookgate_queue_oldest_pending_age_seconds{route}`.
    pub oldest_pending_age: Family<RouteLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `hookgate_store_stats_seconds`: how long the last count of the
    /// queue (the queue gauges' source) took.
    pub stats_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `hookgate_delivery_attempts_total{route,result}`.
    pub delivery_attempts: Family<AttemptLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Buckets for a count of items per store transaction.
pub fn batch_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every metric hookgate exports, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `hookgate_requests_total{route,outcome}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `hookgate_request_duration_seconds{route}`.
    pub request_duration: HistogramFamily,
    /// `hookgate_upstream_duration_seconds{route}`.
    pub upstream_duration: HistogramFamily,
    /// `hookgate_connections_open`.
    pub connections_open: Gauge,
    /// `hookgate_tls_handshake_failures_total`.
    pub tls_handshake_failures: Counter,
    /// `hookgate_tls_cert_expiry_timestamp_seconds`.
    pub cert_expiry: Gauge,
    /// `hookgate_reloads_total{kind,result}`.
    pub reloads: Family<ReloadLabels, Counter>,
    /// `hookgate_duplicates_total{route,event}`.
    pub duplicates: Family<EventLabels, Counter>,
    /// `hookgate_dedup_evictions_total`.
    pub dedup_evictions: Counter,
    /// `hookgate_late_answers_total{route}`: a 2xx that came after the 504
    /// (within `upstream.late_answer_window`) and was remembered.
    pub late_answers: Family<RouteLabels, Counter>,
    /// Present when there is a `[store]`.
    pub store: Option<StoreMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric of a sidecar without a store.
    pub fn new() -> Self {
        Self::with_store(false)
    }

    /// Creates and registers every metric; the store's only when `store`.
    pub fn with_store(store: bool) -> Self {
        let mut registry = Registry::with_prefix("hookgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Webhook requests answered, by route and outcome",
            requests.clone(),
        );
        let request_duration = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from request head to response, by route",
            Unit::Seconds,
            request_duration.clone(),
        );
        let upstream_duration = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "upstream_duration",
            "Time the upstream took to answer a forwarded request, by route",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections currently open on the public listener",
            connections_open.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out (plaintext HTTP included)",
            tls_handshake_failures.clone(),
        );
        let cert_expiry = Gauge::default();
        registry.register_with_unit(
            "tls_cert_expiry_timestamp",
            "Expiry (notAfter) of the certificate in service, Unix time",
            Unit::Seconds,
            cert_expiry.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "reloads",
            "Hot reloads of changed TLS or secret files, by result",
            reloads.clone(),
        );
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "hookgate build information", build_info);
        let duplicates = Family::<EventLabels, Counter>::default();
        registry.register(
            "duplicates",
            "Requests answered as duplicates (nothing forwarded), by route and event",
            duplicates.clone(),
        );
        let dedup_evictions = Counter::default();
        registry.register(
            "dedup_evictions",
            "Duplicate keys forgotten before their window ended because [dedup] max_keys was reached",
            dedup_evictions.clone(),
        );
        let late_answers = Family::<RouteLabels, Counter>::default();
        registry.register(
            "late_answers",
            "2xx answers from the app after hookgate had answered 504, remembered for deduplication",
            late_answers.clone(),
        );
        let store = store.then(|| {
            let up = Gauge::default();
            registry.register(
                "store_up",
                "1 when the event store answers, 0 when it does not",
                up.clone(),
            );
            let commit_seconds = Histogram::new(BUCKETS);
            registry.register_with_unit(
                "store_commit",
                "Time of one ingest commit (one batch of events), fsync included",
                Unit::Seconds,
                commit_seconds.clone(),
            );
            let batch_size = batch_histogram();
            registry.register(
                "store_batch_size",
                "Events per ingest commit (group commit)",
                batch_size.clone(),
            );
            let settle_batch_size = batch_histogram();
            registry.register(
                "store_settle_batch_size",
                "Delivery results recorded per store transaction (SQLite)",
                settle_batch_size.clone(),
            );
            let queue_events = Family::<QueueLabels, Gauge>::default();
            registry.register(
                "queue_events",
                "Stored events by route and state",
                queue_events.clone(),
            );
            let oldest_pending_age =
                Family::<RouteLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
            registry.register_with_unit(
                "queue_oldest_pending_age",
                "Age of the oldest pending event, by route",
                Unit::Seconds,
                oldest_pending_age.clone(),
            );
            let stats_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            registry.register_with_unit(
                "store_stats",
                "Time the last count of the queue took; the queue gauges are refreshed every max(1 s, 20 times this)",
                Unit::Seconds,
                stats_seconds.clone(),
            );
            let delivery_attempts = Family::<AttemptLabels, Counter>::default();
            registry.register(
                "delivery_attempts",
                "Queued delivery attempts by route and result (delivered, retry, dead)",
                delivery_attempts.clone(),
            );
            StoreMetrics {
                up,
                commit_seconds,
                batch_size,
                settle_batch_size,
                queue_events,
                oldest_pending_age,
                stats_seconds,
                delivery_attempts,
            }
        });
        Self {
            registry,
            requests,
            request_duration,
            upstream_duration,
            connections_open,
            tls_handshake_failures,
            cert_expiry,
            reloads,
            duplicates,
            dedup_evictions,
            late_answers,
            store,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one answered request and its latency.
    pub fn record_request(
        &self,
        route: &Arc<str>,
        outcome: &'static str,
        shadow: bool,
        seconds: f64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                outcome,
                shadow,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(seconds);
    }

    /// Creates `hookgate_reloads_total{kind}`'s `ok` and `error` series at
    /// 0, so that a fresh scrape has them (the alert on refused reloads uses
    /// the name, and `increase()` then sees the first refusal too).
    pub fn declare_reloads(&self, kind: &'static str) {
        for result in ["ok", "error"] {
            drop(self.reloads.get_or_create(&ReloadLabels { kind, result }));
        }
    }

    /// Counts one reload attempt.
    pub fn record_reload(&self, kind: &'static str, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                kind,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }
}

/// Request counts and latency buckets of one route, read back from the
/// exposition (see [`Metrics::traffic`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RouteTraffic {
    /// `hookgate_requests_total` by outcome (shadow and enforcing series added up).
    pub(crate) outcomes: BTreeMap<String, u64>,
    /// `hookgate_request_duration_seconds` buckets: (upper bound, cumulative count),
    /// ascending, `+Inf` last.
    pub(crate) latency: Vec<(f64, u64)>,
    /// `hookgate_upstream_duration_seconds` buckets, likewise.
    pub(crate) upstream_latency: Vec<(f64, u64)>,
}

impl Metrics {
    /// Per route (by name, `-` for requests that matched none): counts by
    /// outcome and latency buckets, as the exposition shows them.
    pub(crate) fn traffic(&self) -> BTreeMap<String, RouteTraffic> {
        parse_traffic(&self.encode())
    }
}

fn parse_traffic(text: &str) -> BTreeMap<String, RouteTraffic> {
    let mut routes: BTreeMap<String, RouteTraffic> = BTreeMap::new();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = series.strip_suffix('}').and_then(|s| s.split_once('{')) else {
            continue;
        };
        let labels = parse_labels(labels);
        let label = |key: &str| {
            labels
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        let Some(route) = label("route") else {
            continue;
        };
        // Counters and bucket counts are integers; a float form is tolerated.
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let count = value as u64;
        let bucket = || label("le").and_then(|le| le.parse::<f64>().ok());
        match name {
            "hookgate_requests_total" => {
                if let Some(outcome) = label("outcome") {
                    *routes
                        .entry(route.to_owned())
                        .or_default()
                        .outcomes
                        .entry(outcome.to_owned())
                        .or_default() += count;
                }
            }
            "hookgate_request_duration_seconds_bucket" => {
                if let Some(le) = bucket() {
                    let r = routes.entry(route.to_owned()).or_default();
                    r.latency.push((le, count));
                }
            }
            "hookgate_upstream_duration_seconds_bucket" => {
                if let Some(le) = bucket() {
                    let r = routes.entry(route.to_owned()).or_default();
                    r.upstream_latency.push((le, count));
                }
            }
            _ => {}
        }
    }
    for r in routes.values_mut() {
        r.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
        r.upstream_latency.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    routes
}

/// `k="v",k2="v2"` (values with `\\`, `\"` and `\n` escapes).
fn parse_labels(text: &str) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = i + 1;
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').trim(), value));
        rest = &after[end..];
    }
    out
}

/// The `q`-quantile (0..=1) of a histogram from its cumulative buckets, as
/// Prometheus' `histogram_quantile` estimates it: linear inside the bucket
/// the rank falls in; the highest finite bound when it falls in `+Inf`.
/// None when nothing was observed.
pub(crate) fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let i = buckets.iter().position(|&(_, c)| c as f64 >= rank)?;
    let (upper, count) = buckets[i];
    let (lower, below) = if i == 0 { (0.0, 0) } else { buckets[i - 1] };
    if upper.is_infinite() {
        return Some(lower);
    }
    let inside = count.saturating_sub(below);
    if inside == 0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below as f64) / inside as f64)
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names() {
        let m = Metrics::new();
        m.record_request(&"coolpopup".into(), "forwarded", false, 0.002);
        m.record_request(&"new".into(), "invalid_signature", true, 0.001);
        m.declare_reloads("secrets");
        m.record_reload("tls", true);
        m.upstream_duration
            .get_or_create(&RouteLabels {
                route: "coolpopup".into(),
            })
            .observe(0.001);
        let text = m.encode();
        for want in [
            "hookgate_requests_total{route=\"coolpopup\",outcome=\"forwarded\"} 1",
            "hookgate_requests_total{route=\"new\",outcome=\"invalid_signature\",shadow=\"true\"} 1",
            "# TYPE hookgate_request_duration_seconds histogram",
            "hookgate_request_duration_seconds_bucket{le=\"0.0025\",route=\"coolpopup\"} 1",
            "# TYPE hookgate_upstream_duration_seconds histogram",
            "hookgate_connections_open 0",
            "hookgate_tls_handshake_failures_total 0",
            "# TYPE hookgate_tls_cert_expiry_timestamp_seconds gauge",
            "hookgate_reloads_total{kind=\"tls\",result=\"ok\"} 1",
            "hookgate_reloads_total{kind=\"secrets\",result=\"error\"} 0",
            "hookgate_build_info{version=",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }

    #[test]
    fn traffic_reads_back_counts_and_buckets_per_route() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.record_request(&"coolpopup".into(), "forwarded", false, 0.002);
        }
        m.record_request(&"coolpopup".into(), "invalid_signature", false, 0.0003);
        m.record_request(&"new".into(), "invalid_signature", true, 0.7);
        m.record_request(&"-".into(), "not_found", false, 0.0001);
        m.upstream_duration
            .get_or_create(&RouteLabels {
                route: "coolpopup".into(),
            })
            .observe(0.0015);
        let t = m.traffic();
        assert_eq!(t.keys().collect::<Vec<_>>(), ["-", "coolpopup", "new"]);
        let c = &t["coolpopup"];
        assert_eq!(c.outcomes["forwarded"], 3);
        assert_eq!(c.outcomes["invalid_signature"], 1);
        assert_eq!(c.latency.len(), BUCKETS.len() + 1);
        assert_eq!(c.latency.last(), Some(&(f64::INFINITY, 4)));
        assert_eq!(c.upstream_latency.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(
            t["new"].outcomes["invalid_signature"], 1,
            "shadow series count too"
        );
        assert!(t["new"].upstream_latency.is_empty());
        assert_eq!(t["-"].outcomes["not_found"], 1);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        // 10 in (0, 1], 80 in (1, 2], 10 in (2, 5], none above.
        let b = [(1.0, 10), (2.0, 90), (5.0, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile(&b, 0.5), Some(1.5));
        assert_eq!(quantile(&b, 0.05), Some(0.5));
        let p99 = quantile(&b, 0.99).unwrap();
        assert!((p99 - 4.7).abs() < 1e-9, "{p99}");
        // Observations past the last bound: the highest finite bound.
        let over = [(1.0, 0), (2.0, 0), (f64::INFINITY, 4)];
        assert_eq!(quantile(&over, 0.5), Some(2.0));
        assert_eq!(quantile(&[(1.0, 0), (f64::INFINITY, 0)], 0.5), None);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn label_values_are_unescaped() {
        let l = parse_labels(r#"route="a\"b\\c",outcome="x\ny""#);
        assert_eq!(
            l,
            [
                ("route", "a\"b\\c".to_owned()),
                ("outcome", "x\ny".to_owned())
            ]
        );
    }
}
