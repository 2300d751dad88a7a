//! The admin console (SPEC "Admin console"): what `GET /` shows a person
//! and what `GET /api/status` and `GET /api/events` serve as JSON.
//!
//! This module builds that data from what hookgate already has — the
//! metrics ([`Metrics::traffic`]), the certificate expiry gauge, the
//! reloader's history, and the store's stats and records — as plain
//! serializable views; `net::admin` serves them and the page's assets.
//! The store-dependent views take `&[RouteStats]` and `&Record`, so they
//! are tested with hand-built records. An event view has no body, header,
//! email or form field: the store's [`Record`] has no field that could hold one.
//!
//! [`guard`] decides who may replay or drop.

mod guard;
mod rates;

use std::collections::BTreeMap;

use serde::Serialize;

pub use guard::TokenFile;
pub(crate) use guard::authorize;
pub(crate) use rates::{LastMinute, RateWindow, SAMPLE_EVERY, Tally, Window, tallies};

use crate::observe::metrics::{RouteTraffic, quantile};
use crate::reload::{History, Leaf};
use crate::store::{Filter, Millis, Record, Replayed, RouteStats, State};

/// The page, its script and its style sheet, served from the binary.
pub(crate) mod assets {
    /// `GET /`.
    pub(crate) const PAGE: &str = include_str!("assets/index.html");
    /// `GET /console.js`.
    pub(crate) const SCRIPT: &str = include_str!("assets/console.js");
    /// `GET /console.css`.
    pub(crate) const STYLE: &str = include_str!("assets/console.css");
    /// `GET /favicon.svg` (a browser would otherwise ask for `/favicon.ico`
    /// and log the 404).
    pub(crate) const ICON: &str = include_str!("assets/favicon.svg");
    /// Only this origin's script, style and `fetch`; no inline code, no
    /// frame, no form target, no `<base>`: nothing outside the binary runs.
    pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
         connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'";
}

/// `GET /api/status`.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    /// hookgate's version.
    pub(crate) version: &'static str,
    /// When this answer was made (Unix ms).
    pub(crate) now: Millis,
    /// When the sidecar started serving (Unix ms).
    pub(crate) started_at: Millis,
    /// Seconds since then.
    pub(crate) uptime_seconds: u64,
    /// What `/readyz` says.
    pub(crate) ready: bool,
    /// Configured routes in config order, then `-` (requests that matched
    /// no route) when there were any.
    pub(crate) routes: Vec<RouteView>,
    /// The certificate in service; null when TLS is terminated in front.
    pub(crate) certificate: Option<CertificateView>,
    /// The latest reloads.
    pub(crate) reloads: ReloadsView,
    /// What a replay or drop needs.
    pub(crate) actions: ActionsView,
    /// The queue; null when there is no `[store]`.
    pub(crate) store: Option<QueueView>,
}

/// One route's traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RouteView {
    /// The route's name, or `-`.
    pub(crate) name: String,
    /// Its path; null for `-`.
    pub(crate) path: Option<String>,
    /// Shadow mode.
    pub(crate) shadow: bool,
    /// Requests answered, all outcomes.
    pub(crate) total: u64,
    /// Requests answered by outcome (`forwarded`, `invalid_signature`…).
    pub(crate) outcomes: BTreeMap<String, u64>,
    /// Forwarded to the app or queued for it (`forwarded` + `queued`).
    pub(crate) forwarded: u64,
    /// Refused by hookgate with a 4xx of its own (`invalid_signature`,
    /// `invalid_payload`, `not_found`…).
    pub(crate) rejected: u64,
    /// `invalid_signature`: no secret of the route matched.
    pub(crate) signature_failures: u64,
    /// The same over the last minute (or the uptime, if shorter).
    pub(crate) last_minute: LastMinute,
    /// Time from request head to answer.
    pub(crate) latency_seconds: Quantiles,
    /// Time the app took to answer forwarded requests.
    pub(crate) upstream_latency_seconds: Quantiles,
}

/// Quantiles estimated from a histogram's buckets (null: no observation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Quantiles {
    /// Median.
    pub(crate) p50: Option<f64>,
    /// 99th percentile.
    pub(crate) p99: Option<f64>,
}

impl Quantiles {
    fn of(buckets: &[(f64, u64)]) -> Self {
        Self {
            p50: quantile(buckets, 0.5),
            p99: quantile(buckets, 0.99),
        }
    }
}

/// A configured route as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteInfo<'a> {
    /// Name.
    pub(crate) name: &'a str,
    /// Path.
    pub(crate) path: &'a str,
    /// Shadow mode.
    pub(crate) shadow: bool,
}

/// The routes' views: every configured route (with zeros when it has had
/// no request), then `-` if requests matched no route. `last_minute` is
/// [`RateWindow::last_minute`] of the same traffic.
pub(crate) fn route_views(
    routes: &[RouteInfo<'_>],
    mut traffic: BTreeMap<String, RouteTraffic>,
    last_minute: &Window,
) -> Vec<RouteView> {
    let view = |name: &str, path: Option<&str>, shadow: bool, t: RouteTraffic| {
        let tally = Tally::of(&t.outcomes);
        RouteView {
            name: name.to_owned(),
            path: path.map(str::to_owned),
            shadow,
            total: tally.requests,
            forwarded: tally.forwarded,
            rejected: tally.rejected,
            signature_failures: tally.signature_failures,
            last_minute: last_minute.route(name),
            latency_seconds: Quantiles::of(&t.latency),
            upstream_latency_seconds: Quantiles::of(&t.upstream_latency),
            outcomes: t.outcomes,
        }
    };
    let mut views: Vec<RouteView> = routes
        .iter()
        .map(|r| {
            let t = traffic.remove(r.name).unwrap_or_default();
            view(r.name, Some(r.path), r.shadow, t)
        })
        .collect();
    if let Some(t) = traffic.remove("-") {
        views.push(view("-", None, false, t));
    }
    views
}

/// The certificate in service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CertificateView {
    /// The leaf's subject (`CN=…`; empty when the certificate has only
    /// subject alternative names).
    pub(crate) subject: String,
    /// Its DNS names and IP addresses (subject alternative names).
    pub(crate) names: Vec<String>,
    /// Its notAfter (Unix ms).
    pub(crate) not_after: Millis,
    /// Seconds until then (negative once expired).
    pub(crate) expires_in_seconds: i64,
}

impl CertificateView {
    /// The reloader's leaf at `now`.
    pub(crate) fn new(leaf: Leaf, now: Millis) -> Self {
        let not_after = leaf.not_after.saturating_mul(1000);
        Self {
            subject: leaf.subject,
            names: leaf.names,
            not_after,
            expires_in_seconds: (not_after - now).div_euclid(1000),
        }
    }
}

/// The reloads of certificates, secrets and the admin token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ReloadsView {
    /// `[reload] interval` in seconds (0: only on SIGHUP).
    pub(crate) interval_seconds: u64,
    /// When the files were last checked (Unix ms); null before the first check.
    pub(crate) checked_at: Option<Millis>,
    /// The latest reloads that changed something or failed, newest first:
    /// `{at, result, tls_reloaded, secrets_reloaded, admin_token_reloaded, errors}`.
    pub(crate) recent: Vec<crate::reload::ReloadEvent>,
}

impl ReloadsView {
    /// From the reloader's history.
    pub(crate) fn new(interval: std::time::Duration, history: History) -> Self {
        Self {
            interval_seconds: interval.as_secs(),
            checked_at: history.checked_at,
            recent: history.events,
        }
    }
}

/// What `POST /api/events/{id}/replay|drop` needs besides a loopback peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ActionsView {
    /// The header every action carries.
    pub(crate) header: &'static str,
    /// `admin.token_file` is set: `Authorization: Bearer <token>` too.
    pub(crate) token_required: bool,
}

/// The queue by route and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct QueueView {
    /// The store answered.
    pub(crate) up: bool,
    /// Why not (the store's error, never event data).
    pub(crate) error: Option<String>,
    /// Counts over every route.
    pub(crate) totals: Counts,
    /// Seconds since the oldest pending event (of any route) was received.
    pub(crate) oldest_pending_age_seconds: Option<u64>,
    /// Per route that has events.
    pub(crate) routes: Vec<QueueRoute>,
}

/// Events by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Counts {
    /// Waiting for (or under) a delivery attempt.
    pub(crate) pending: u64,
    /// Delivered and not yet purged.
    pub(crate) delivered: u64,
    /// Dead and not yet purged.
    pub(crate) dead: u64,
}

/// One route's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct QueueRoute {
    /// The route's name.
    pub(crate) route: String,
    /// Events by state.
    #[serde(flatten)]
    pub(crate) counts: Counts,
    /// Seconds since its oldest pending event was received.
    pub(crate) oldest_pending_age_seconds: Option<u64>,
}

fn age_seconds(since: Option<Millis>, now: Millis) -> Option<u64> {
    since.map(|t| u64::try_from(now.saturating_sub(t)).unwrap_or(0) / 1000)
}

impl QueueView {
    /// From the store's stats at `now`.
    pub(crate) fn new(stats: &[RouteStats], now: Millis) -> Self {
        let mut totals = Counts::default();
        let mut routes = Vec::with_capacity(stats.len());
        for s in stats {
            totals.pending += s.pending;
            totals.delivered += s.delivered;
            totals.dead += s.dead;
            routes.push(QueueRoute {
                route: s.route.clone(),
                counts: Counts {
                    pending: s.pending,
                    delivered: s.delivered,
                    dead: s.dead,
                },
                oldest_pending_age_seconds: age_seconds(s.oldest_pending_received_at, now),
            });
        }
        let oldest = stats
            .iter()
            .filter_map(|s| s.oldest_pending_received_at)
            .min();
        Self {
            up: true,
            error: None,
            totals,
            oldest_pending_age_seconds: age_seconds(oldest, now),
            routes,
        }
    }

    /// The store did not answer (its error, or a timeout).
    pub(crate) fn unavailable(error: String) -> Self {
        Self {
            up: false,
            error: Some(error),
            totals: Counts::default(),
            oldest_pending_age_seconds: None,
            routes: Vec::new(),
        }
    }
}

/// `GET /api/events`: `{"events": [...]}`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct EventList {
    /// The events (empty without a store): the store's records as they
    /// are, which have no field that could hold a body, a header, an email
    /// or a form field.
    pub(crate) events: Vec<Record>,
}

impl EventList {
    /// From the store's records.
    pub(crate) fn new(records: &[Record]) -> Self {
        Self {
            events: records.to_vec(),
        }
    }
}

/// `GET /api/events` lists this many unless `limit` says otherwise.
pub(crate) const DEFAULT_LIMIT: u32 = 50;
/// The largest `limit`.
pub(crate) const MAX_LIMIT: u32 = 500;

/// The filter of `GET /api/events?state=dead&route=R&limit=N` (every
/// parameter optional; anything else is refused).
pub(crate) fn events_filter(query: Option<&str>) -> Result<Filter, String> {
    let mut filter = Filter {
        limit: Some(DEFAULT_LIMIT),
        ..Filter::default()
    };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "state" => {
                filter.state = Some(
                    State::parse(&value)
                        .ok_or_else(|| "state must be pending, delivered or dead".to_owned())?,
                );
            }
            "route" => filter.route = Some(value.into_owned()),
            "limit" => {
                filter.limit = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| format!("limit must be 1 to {MAX_LIMIT}"))?,
                );
            }
            other => return Err(format!("unknown parameter {other:?} (state, route, limit)")),
        }
    }
    Ok(filter)
}

/// `replay` or `drop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Back to pending, attempts from 1.
    Replay,
    /// Delete.
    Drop,
}

impl Action {
    /// From the last path segment.
    pub(crate) fn parse(segment: &str) -> Option<Self> {
        match segment {
            "replay" => Some(Self::Replay),
            "drop" => Some(Self::Drop),
            _ => None,
        }
    }
}

/// What an action on one id came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Acted {
    /// Done: the event after a replay, or as it was before a drop.
    Done(Record),
    /// No such event.
    NotFound,
    /// A replay of a delivered event (the console never forces one).
    AlreadyDelivered(Record),
}

impl Acted {
    /// From `Store::replay_ids` for one id.
    pub(crate) fn from_replay(mut answers: Vec<Replayed>) -> Self {
        match answers.pop() {
            Some(Replayed::Done(r)) => Self::Done(r),
            Some(Replayed::Delivered(r)) => Self::AlreadyDelivered(r),
            Some(Replayed::NotFound) | None => Self::NotFound,
        }
    }

    /// From `Store::drop_ids` for one id.
    pub(crate) fn from_drop(mut answers: Vec<Option<Record>>) -> Self {
        match answers.pop().flatten() {
            Some(r) => Self::Done(r),
            None => Self::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u128, state: State, last_error: Option<&str>) -> Record {
        Record {
            id: uuid::Uuid::from_u128(id),
            route: "coolpopup".to_owned(),
            event: "popup.converted".to_owned(),
            state,
            attempts: 3,
            received_at: 1_000_000,
            next_attempt_at: None,
            last_error: last_error.map(str::to_owned),
            updated_at: 1_005_000,
        }
    }

    fn traffic(outcomes: &[(&str, u64)], latency: &[(f64, u64)]) -> RouteTraffic {
        RouteTraffic {
            outcomes: outcomes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            latency: latency.to_vec(),
            upstream_latency: Vec::new(),
        }
    }

    #[test]
    fn routes_are_listed_in_config_order_with_zeros_and_unmatched_last() {
        let routes = [
            RouteInfo {
                name: "b",
                path: "/b",
                shadow: false,
            },
            RouteInfo {
                name: "a",
                path: "/a",
                shadow: true,
            },
        ];
        let mut t = BTreeMap::new();
        t.insert(
            "a".to_owned(),
            traffic(
                &[("forwarded", 9), ("invalid_signature", 1)],
                &[(0.001, 5), (0.01, 10), (f64::INFINITY, 10)],
            ),
        );
        t.insert("-".to_owned(), traffic(&[("not_found", 2)], &[]));
        let started = std::time::Instant::now();
        let window = RateWindow::new(started)
            .last_minute(started + std::time::Duration::from_secs(30), &tallies(&t));
        let views = route_views(&routes, t, &window);
        let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "-"]);
        assert_eq!(views[0].total, 0);
        assert_eq!(views[0].latency_seconds.p50, None);
        assert_eq!(views[1].total, 10);
        assert!(views[1].shadow);
        assert_eq!(views[1].outcomes["invalid_signature"], 1);
        assert_eq!(
            (
                views[1].forwarded,
                views[1].rejected,
                views[1].signature_failures
            ),
            (9, 1, 1)
        );
        assert_eq!(views[1].last_minute.counts.requests, 10);
        assert_eq!(views[1].last_minute.seconds, 30);
        assert_eq!(views[0].last_minute.per_second, Some(0.0));
        assert_eq!(views[2].rejected, 2);
        assert_eq!(views[1].latency_seconds.p50, Some(0.001));
        assert!(
            views[1]
                .latency_seconds
                .p99
                .is_some_and(|p| p > 0.009 && p <= 0.01)
        );
        assert_eq!(views[2].path, None);
    }

    #[test]
    fn certificate_shows_subject_names_and_expiry() {
        let leaf = |not_after| Leaf {
            subject: "CN=hooks.example.com".to_owned(),
            names: vec!["hooks.example.com".to_owned(), "127.0.0.1".to_owned()],
            not_after,
        };
        let c = CertificateView::new(leaf(100), 40_000);
        assert_eq!(c.subject, "CN=hooks.example.com");
        assert_eq!(c.names, ["hooks.example.com", "127.0.0.1"]);
        assert_eq!(c.not_after, 100_000);
        assert_eq!(c.expires_in_seconds, 60);
        assert_eq!(
            CertificateView::new(leaf(100), 101_500).expires_in_seconds,
            -2
        );
    }

    #[test]
    fn queue_adds_up_routes_and_ages_the_oldest_pending() {
        let stats = [
            RouteStats {
                route: "a".to_owned(),
                pending: 2,
                delivered: 10,
                dead: 1,
                oldest_pending_received_at: Some(40_000),
            },
            RouteStats {
                route: "b".to_owned(),
                pending: 1,
                delivered: 0,
                dead: 4,
                oldest_pending_received_at: Some(10_000),
            },
            RouteStats {
                route: "c".to_owned(),
                delivered: 7,
                ..RouteStats::default()
            },
        ];
        let q = QueueView::new(&stats, 70_000);
        assert!(q.up);
        assert_eq!(
            q.totals,
            Counts {
                pending: 3,
                delivered: 17,
                dead: 5
            }
        );
        assert_eq!(q.oldest_pending_age_seconds, Some(60));
        assert_eq!(q.routes[0].oldest_pending_age_seconds, Some(30));
        assert_eq!(q.routes[2].oldest_pending_age_seconds, None);
        let json = serde_json::to_value(&q).unwrap();
        assert_eq!(json["routes"][1]["dead"], 4, "{json}");
        // A clock behind another replica's never gives a negative age.
        assert_eq!(
            QueueView::new(&stats, 5_000).oldest_pending_age_seconds,
            Some(0)
        );
        let down = QueueView::unavailable(crate::store::StoreError::Closed.to_string());
        assert!(!down.up && down.error.is_some());
    }

    #[test]
    fn an_event_shows_its_fields_and_nothing_more() {
        let r = record(7, State::Dead, Some("HTTP 422"));
        let json = serde_json::to_value(EventList::new(&[r])).unwrap();
        let e = &json["events"][0];
        assert_eq!(e["id"], "00000000-0000-0000-0000-000000000007");
        assert_eq!(e["state"], "dead");
        assert_eq!(e["attempts"], 3);
        assert_eq!(e["last_error"], "HTTP 422");
        let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "attempts",
                "event",
                "id",
                "last_error",
                "next_attempt_at",
                "received_at",
                "route",
                "state",
                "updated_at"
            ]
        );
    }

    #[test]
    fn actions_map_the_store_answers() {
        let dead = record(1, State::Dead, Some("HTTP 500"));
        let mut replayed = dead.clone();
        replayed.state = State::Pending;
        replayed.attempts = 0;
        assert_eq!(
            Acted::from_replay(vec![Replayed::Done(replayed.clone())]),
            Acted::Done(replayed)
        );
        assert_eq!(
            Acted::from_replay(vec![Replayed::NotFound]),
            Acted::NotFound
        );
        assert!(matches!(
            Acted::from_replay(vec![Replayed::Delivered(record(2, State::Delivered, None))]),
            Acted::AlreadyDelivered(_)
        ));
        assert_eq!(
            Acted::from_drop(vec![Some(dead.clone())]),
            Acted::Done(dead)
        );
        assert_eq!(Acted::from_drop(vec![None]), Acted::NotFound);
        assert_eq!(Acted::from_drop(vec![]), Acted::NotFound);
    }

    #[test]
    fn events_filter_reads_state_route_and_limit() {
        let f = events_filter(None).unwrap();
        assert_eq!(f.limit, Some(DEFAULT_LIMIT));
        assert_eq!((f.state, f.route), (None, None));
        let f = events_filter(Some("state=dead&route=cool%2Dpopup&limit=20")).unwrap();
        assert_eq!(f.state, Some(State::Dead));
        assert_eq!(f.route.as_deref(), Some("cool-popup"));
        assert_eq!(f.limit, Some(20));
        for bad in ["state=gone", "limit=0", "limit=501", "limit=x", "body=1"] {
            assert!(events_filter(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for asset in [assets::PAGE, assets::SCRIPT, assets::STYLE] {
            let lower = asset.to_ascii_lowercase();
            for bad in [
                "http://",
                "https://",
                "//cdn",
                "innerhtml",
                "eval(",
                "@import",
            ] {
                assert!(!lower.contains(bad), "{bad} in an asset");
            }
        }
        assert!(assets::PAGE.contains(r#"src="/console.js""#));
        assert!(assets::PAGE.contains(r#"href="/console.css""#));
        assert!(!assets::PAGE.contains("<style") && !assets::PAGE.contains(" style="));
        let page = assets::PAGE.to_ascii_lowercase();
        for handler in ["onclick", "onload", "onerror", "onsubmit", "javascript:"] {
            assert!(!page.contains(handler), "{handler}: no inline code");
        }
    }
}
