//! What each route did over the last minute, for the console.
//!
//! The request counters only ever grow, so a rate is a difference of two
//! readings. [`RateWindow`] keeps a reading of every route's counters every
//! few seconds (the admin listener's sampler, [`SAMPLE_EVERY`]) for the last
//! [`SPAN`], and [`RateWindow::last_minute`] subtracts the oldest reading
//! still inside the span from the current one. The counters start at zero
//! with the process, so the window starts with a reading of zeros at the
//! start: right after a start the "last minute" is the uptime, and says so
//! (`seconds`).
//!
//! The outcomes fall into four classes ([`class`]): forwarded (to the app,
//! or stored for it), rejected by hookgate (a 4xx of its own), failed (the
//! app or the store failed: 5xx), and answered locally (ping, acknowledged,
//! duplicate). The console's chart plots forwarded against rejected.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::observe::metrics::RouteTraffic;

/// How far back "the last minute" reaches.
pub(crate) const SPAN: Duration = Duration::from_secs(60);
/// How often the sampler reads the counters.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// What a request's outcome counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Handed to the app (`forwarded`), or stored for it (`queued`).
    Forwarded,
    /// Refused by hookgate with a 4xx of its own (`invalid_signature`,
    /// `invalid_payload`, `not_found`, …). On a shadow route these requests
    /// were forwarded all the same: the outcome is what enforcing would do.
    Rejected,
    /// The app or the store failed (`upstream_*`, `store_unavailable`,
    /// `internal_error`).
    Failed,
    /// Answered by hookgate alone with a 200 (`ping`, `acknowledged`,
    /// `duplicate`).
    Answered,
}

/// The class of an `outcome` label.
pub(crate) fn class(outcome: &str) -> Class {
    match outcome {
        "forwarded" | "queued" => Class::Forwarded,
        "ping" | "acknowledged" | "duplicate" => Class::Answered,
        "upstream_error_status"
        | "upstream_unavailable"
        | "upstream_timeout"
        | "store_unavailable"
        | "internal_error" => Class::Failed,
        _ => Class::Rejected,
    }
}

/// One route's counters, summed by what the console shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Tally {
    /// Every request answered.
    pub(crate) requests: u64,
    /// Forwarded or queued for the app.
    pub(crate) forwarded: u64,
    /// Refused by hookgate (4xx).
    pub(crate) rejected: u64,
    /// Of those, `invalid_signature`.
    pub(crate) signature_failures: u64,
}

impl Tally {
    /// From one route's counts by outcome.
    pub(crate) fn of(outcomes: &BTreeMap<String, u64>) -> Self {
        let mut t = Self::default();
        for (outcome, &n) in outcomes {
            t.requests += n;
            match class(outcome) {
                Class::Forwarded => t.forwarded += n,
                Class::Rejected => t.rejected += n,
                Class::Failed | Class::Answered => {}
            }
            if outcome == "invalid_signature" {
                t.signature_failures += n;
            }
        }
        t
    }

    fn minus(self, earlier: Self) -> Self {
        Self {
            requests: self.requests.saturating_sub(earlier.requests),
            forwarded: self.forwarded.saturating_sub(earlier.forwarded),
            rejected: self.rejected.saturating_sub(earlier.rejected),
            signature_failures: self
                .signature_failures
                .saturating_sub(earlier.signature_failures),
        }
    }
}

/// Every route's tally, by route name.
pub(crate) type Tallies = BTreeMap<String, Tally>;

/// The tallies of the metrics' traffic.
pub(crate) fn tallies(traffic: &BTreeMap<String, RouteTraffic>) -> Tallies {
    traffic
        .iter()
        .map(|(route, t)| (route.clone(), Tally::of(&t.outcomes)))
        .collect()
}

/// One route over the last minute (or the uptime, if shorter).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct LastMinute {
    /// The seconds these counts cover: 60, or fewer right after the start.
    pub(crate) seconds: u64,
    /// The counts over those seconds.
    #[serde(flatten)]
    pub(crate) counts: Tally,
    /// Requests per second over them; null while they are under a second.
    pub(crate) per_second: Option<f64>,
}

#[derive(Debug)]
struct Reading {
    at: Instant,
    tallies: Tallies,
}

/// The readings of the last [`SPAN`].
#[derive(Debug)]
pub(crate) struct RateWindow {
    readings: Mutex<VecDeque<Reading>>,
}

impl RateWindow {
    /// A window whose first reading is all zeros at `started` (when the
    /// counters started counting).
    pub(crate) fn new(started: Instant) -> Self {
        let mut readings = VecDeque::new();
        readings.push_back(Reading {
            at: started,
            tallies: Tallies::new(),
        });
        Self {
            readings: Mutex::new(readings),
        }
    }

    /// A window whose counters start now.
    pub(crate) fn starting_now() -> Self {
        Self::new(Instant::now())
    }

    /// Keeps a reading taken at `at`, and forgets those older than the span
    /// (the newest reading stays, however old).
    pub(crate) fn record(&self, at: Instant, tallies: Tallies) {
        let Ok(mut readings) = self.readings.lock() else {
            return;
        };
        readings.push_back(Reading { at, tallies });
        while readings.len() > 1
            && readings
                .front()
                .is_some_and(|r| at.saturating_duration_since(r.at) > SPAN)
        {
            readings.pop_front();
        }
    }

    /// What each route in `now_tallies` did since the oldest reading within
    /// the span of `now` (the newest reading, if none is). A route that had
    /// no reading then started at zero.
    pub(crate) fn last_minute(&self, now: Instant, now_tallies: &Tallies) -> Window {
        let Ok(readings) = self.readings.lock() else {
            return Window::default();
        };
        let base = readings
            .iter()
            .find(|r| now.saturating_duration_since(r.at) <= SPAN)
            .or(readings.back());
        let Some(base) = base else {
            return Window::default();
        };
        Window {
            elapsed: now.saturating_duration_since(base.at),
            counts: now_tallies
                .iter()
                .map(|(route, t)| {
                    let then = base.tallies.get(route).copied().unwrap_or_default();
                    (route.clone(), t.minus(then))
                })
                .collect(),
        }
    }
}

/// Every route's counts over one stretch of time.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Window {
    elapsed: Duration,
    counts: Tallies,
}

impl Window {
    /// One route's counts; zeros for a route with no request.
    pub(crate) fn route(&self, name: &str) -> LastMinute {
        let counts = self.counts.get(name).copied().unwrap_or_default();
        let seconds = self.elapsed.as_secs_f64();
        LastMinute {
            seconds: self.elapsed.as_secs(),
            counts,
            per_second: (seconds >= 1.0).then(|| counts.requests as f64 / seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tallies_of(route: &str, outcomes: &[(&str, u64)]) -> Tallies {
        let outcomes = outcomes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        [(route.to_owned(), Tally::of(&outcomes))]
            .into_iter()
            .collect()
    }

    #[test]
    fn outcomes_fall_into_their_class() {
        for o in ["forwarded", "queued"] {
            assert_eq!(class(o), Class::Forwarded, "{o}");
        }
        for o in [
            "invalid_signature",
            "invalid_json",
            "invalid_payload",
            "event_not_allowed",
            "event_too_old",
            "not_found",
            "payload_too_large",
            "https_required",
        ] {
            assert_eq!(class(o), Class::Rejected, "{o}");
        }
        for o in [
            "upstream_unavailable",
            "upstream_error_status",
            "store_unavailable",
        ] {
            assert_eq!(class(o), Class::Failed, "{o}");
        }
        for o in ["ping", "acknowledged", "duplicate"] {
            assert_eq!(class(o), Class::Answered, "{o}");
        }
        let t = tallies_of(
            "a",
            &[
                ("forwarded", 5),
                ("queued", 2),
                ("invalid_signature", 3),
                ("invalid_json", 1),
                ("upstream_timeout", 4),
                ("ping", 1),
            ],
        );
        assert_eq!(
            t["a"],
            Tally {
                requests: 16,
                forwarded: 7,
                rejected: 4,
                signature_failures: 3
            }
        );
    }

    #[test]
    fn right_after_the_start_the_window_is_the_uptime() {
        let t0 = Instant::now();
        let w = RateWindow::new(t0);
        let now = tallies_of("a", &[("forwarded", 10), ("invalid_signature", 2)]);
        let m = w.last_minute(t0 + Duration::from_secs(20), &now);
        assert_eq!(m.route("a").seconds, 20);
        assert_eq!(m.route("a").counts.requests, 12);
        assert_eq!(m.route("a").counts.signature_failures, 2);
        assert_eq!(m.route("a").per_second, Some(0.6));
        // A route without requests: zeros over the same seconds.
        assert_eq!(m.route("b").per_second, Some(0.0));
        assert_eq!(m.route("b").seconds, 20);
        // Under a second: counts, but no rate yet.
        assert_eq!(w.last_minute(t0, &now).route("a").per_second, None);
    }

    #[test]
    fn later_it_covers_the_last_minute_only() {
        let t0 = Instant::now();
        let w = RateWindow::new(t0);
        // 1 request a second for 2 minutes, read every 5 s.
        for s in (5..=120).step_by(5) {
            w.record(
                t0 + Duration::from_secs(s),
                tallies_of("a", &[("forwarded", s)]),
            );
        }
        let now = t0 + Duration::from_secs(122);
        let m = w.last_minute(now, &tallies_of("a", &[("forwarded", 122)]));
        // The oldest reading within 60 s of 122 s is the one at 65 s.
        assert_eq!(m.route("a").seconds, 57);
        assert_eq!(m.route("a").counts.forwarded, 57);
        assert_eq!(m.route("a").per_second, Some(1.0));
        // Readings older than the span were forgotten.
        assert!(w.readings.lock().unwrap().len() <= 14);
    }

    #[test]
    fn a_new_route_counts_from_zero_and_a_quiet_sampler_still_answers() {
        let t0 = Instant::now();
        let w = RateWindow::new(t0);
        w.record(
            t0 + Duration::from_secs(5),
            tallies_of("a", &[("forwarded", 3)]),
        );
        let now = t0 + Duration::from_secs(10);
        let mut current = tallies_of("a", &[("forwarded", 4)]);
        current.extend(tallies_of("b", &[("not_found", 2)]));
        let m = w.last_minute(now, &current);
        // The zero reading at the start is still within the span.
        assert_eq!(m.route("a").counts.forwarded, 4);
        assert_eq!(m.route("b").counts.rejected, 2);
        // No reading within the span (the sampler stopped): the newest one.
        let late = t0 + Duration::from_secs(600);
        let m = w.last_minute(late, &tallies_of("a", &[("forwarded", 4)]));
        assert_eq!(m.route("a").seconds, 595);
        assert_eq!(m.route("a").counts.forwarded, 1);
    }
}
