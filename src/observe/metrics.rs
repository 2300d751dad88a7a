//! Prometheus metrics, in base units with low-cardinality labels, encoded
//! by the `prometheus-client` crate (OpenMetrics text) for `/metrics`.
//!
//! `route` is a configured route name or `-`; `outcome` is `forwarded`,
//! `upstream_error_status`, `ping`, or one of the spec's error codes: both
//! come from closed sets, so a client cannot grow the label space.

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
    pub route: String,
    /// What happened.
    pub outcome: &'static str,
    /// The route is in shadow mode.
    pub shadow: bool,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("route", self.route.as_str()).encode(encoder.encode_label())?;
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
    pub route: String,
}

/// Labels of `hookgate_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `tls` or `secrets`.
    pub kind: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// `route` and `event` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// Route name.
    pub route: String,
    /// Event name (one of the four, or `-`).
    pub event: &'static str,
}

/// Labels of `hookgate_queue_events`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Route name.
    pub route: String,
    /// `pending`, `delivered` or `dead`.
    pub state: &'static str,
}

/// Labels of `hookgate_delivery_attempts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// Route name.
    pub route: String,
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
    /// `hookgate_queue_events{route,state}`.
    pub queue_events: Family<QueueLabels, Gauge>,
    /// `hookgate_queue_oldest_pending_age_seconds{route}`.
    pub oldest_pending_age: Family<RouteLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `hookgate_delivery_attempts_total{route,result}`.
    pub delivery_attempts: Family<AttemptLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

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
            let batch_size = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
            registry.register(
                "store_batch_size",
                "Events per ingest commit (group commit)",
                batch_size.clone(),
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
                queue_events,
                oldest_pending_age,
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
    pub fn record_request(&self, route: &str, outcome: &'static str, shadow: bool, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                outcome,
                shadow,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
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

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names() {
        let m = Metrics::new();
        m.record_request("coolpopup", "forwarded", false, 0.002);
        m.record_request("new", "invalid_signature", true, 0.001);
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
            "hookgate_build_info{version=",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
