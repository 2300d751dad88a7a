//! What one delivery attempt's result means for the event (SPEC "Queued
//! delivery"): 2xx → delivered; 408, 429, 5xx, a failed connection or a
//! timeout → retried after the next step of `retry_schedule` (±20 %
//! jitter, the last step repeats) or after the app's `Retry-After`
//! (seconds or an HTTP date, capped at 1 h, no jitter); any other 4xx →
//! dead; older than `max_delivery_age` → dead.

use std::time::{Duration, SystemTime};

use http::{HeaderValue, StatusCode};

use crate::forward::upstream::TransportError;
use crate::load::QueueSettings;
use crate::store::{Millis, Settle};

/// The longest wait an app's `Retry-After` may ask for.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The shortest: `Retry-After: 0` would make a busy loop of a refusing app.
pub(crate) const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What came back from the app.
#[derive(Debug)]
pub(crate) enum Attempted {
    /// An answer, with its `Retry-After` if any.
    Answer(StatusCode, Option<HeaderValue>),
    /// No answer.
    Failed(TransportError),
}

/// The outcome label (`delivered`, `retry`, `dead`; `untried` for an event
/// given back, which is not an attempt) of a [`Settle`].
pub(crate) fn label(settle: &Settle) -> &'static str {
    match settle {
        Settle::Delivered => "delivered",
        Settle::Retry { .. } => "retry",
        Settle::Dead { .. } => "dead",
        Settle::Untried => "untried",
    }
}

/// Whether an event received at `received_at` is past `max_delivery_age` at `now`.
pub(crate) fn expired(q: &QueueSettings, received_at: Millis, now: Millis) -> bool {
    now.saturating_sub(received_at) > millis(q.max_delivery_age)
}

/// What to do after attempt number `attempt` (from 1) ended in `result`.
/// `jitter` is a uniform random number in [0, 1).
pub(crate) fn decide(
    q: &QueueSettings,
    attempt: u32,
    result: &Attempted,
    now: Millis,
    jitter: f64,
) -> Settle {
    let (error, retry_after) = match result {
        Attempted::Answer(status, _) if status.is_success() => return Settle::Delivered,
        Attempted::Answer(status, retry_after) => {
            let code = status.as_u16();
            let retryable = matches!(code, 408 | 429) || !status.is_client_error();
            let error = format!("the app answered {code}");
            if !retryable {
                return Settle::Dead {
                    error: format!("{error} (refused: not retried)"),
                };
            }
            (error, retry_after.as_ref())
        }
        Attempted::Failed(e) if !e.retryable() => {
            return Settle::Dead {
                error: e.to_string(),
            };
        }
        Attempted::Failed(e) => (e.to_string(), None),
    };
    let wait = retry_after
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
        .unwrap_or_else(|| step(&q.retry_schedule, attempt, jitter));
    Settle::Retry {
        at: now.saturating_add(millis(wait)),
        error,
    }
}

/// The wait after attempt `attempt` (from 1): its step of the schedule
/// (the last repeats) times a factor in [0.8, 1.2).
pub(crate) fn step(schedule: &[Duration], attempt: u32, jitter: f64) -> Duration {
    let i = (attempt.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    let base = schedule.get(i).copied().unwrap_or(Duration::from_secs(1));
    base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3),
/// clamped to [1 s, 1 h]; None when it is neither.
pub(crate) fn parse_retry_after(v: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    let wait = if let Ok(secs) = s.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(s).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER))
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> QueueSettings {
        QueueSettings {
            concurrency: 1,
            retry_schedule: vec![Duration::from_secs(1), Duration::from_secs(10)],
            max_delivery_age: Duration::from_secs(3600),
            retention_delivered: Duration::from_secs(60),
            retention_dead: Duration::from_secs(60),
        }
    }

    fn answer(code: u16) -> Attempted {
        Attempted::Answer(StatusCode::from_u16(code).unwrap(), None)
    }

    #[test]
    fn success_is_delivered_and_refusals_are_dead() {
        for code in [200, 201, 204] {
            assert_eq!(decide(&q(), 1, &answer(code), 0, 0.5), Settle::Delivered);
        }
        for code in [400, 401, 403, 404, 410, 413, 422] {
            assert!(
                matches!(decide(&q(), 1, &answer(code), 0, 0.5), Settle::Dead { .. }),
                "{code}"
            );
        }
    }

    #[test]
    fn transient_answers_are_retried_on_the_schedule() {
        for code in [408, 429, 500, 502, 503, 504, 302] {
            let Settle::Retry { at, error } = decide(&q(), 1, &answer(code), 1_000, 0.5) else {
                panic!("{code} must be retried")
            };
            assert_eq!(at, 2_000, "{code}: the first step, jitter factor 1.0");
            assert!(error.contains(&code.to_string()));
        }
        // The last step repeats; jitter stays within ±20 %.
        for attempt in [2, 3, 9] {
            for (jitter, want) in [(0.0, 8_000), (0.5, 10_000), (0.999_999, 11_999)] {
                let Settle::Retry { at, .. } = decide(&q(), attempt, &answer(503), 0, jitter)
                else {
                    panic!()
                };
                assert!(
                    (at - want).abs() <= 1,
                    "attempt {attempt} jitter {jitter}: {at}"
                );
            }
        }
    }

    #[test]
    fn retry_after_replaces_the_step_capped_at_an_hour() {
        let with = |v: &'static str| {
            Attempted::Answer(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(HeaderValue::from_static(v)),
            )
        };
        let at = |v| match decide(&q(), 1, &with(v), 0, 0.0) {
            Settle::Retry { at, .. } => at,
            other => panic!("{other:?}"),
        };
        assert_eq!(at("7"), 7_000, "seconds, no jitter");
        assert_eq!(at("86400"), 3_600_000, "capped at 1 h");
        assert_eq!(at("0"), 1_000, "at least 1 s");
        assert_eq!(at("soon"), 800, "unparsable: the schedule, with jitter");
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(61));
        let v = HeaderValue::from_str(&in_a_minute).unwrap();
        let wait = parse_retry_after(&v, SystemTime::now()).unwrap();
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(61),
            "{wait:?}"
        );
    }

    #[test]
    fn transport_failures_retry_unless_they_cannot_succeed() {
        let timeout = Attempted::Failed(TransportError::Timeout(Duration::from_secs(4)));
        assert!(matches!(
            decide(&q(), 1, &timeout, 0, 0.5),
            Settle::Retry { .. }
        ));
        let refused = Attempted::Failed(TransportError::Connect(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(
            decide(&q(), 1, &refused, 0, 0.5),
            Settle::Retry { .. }
        ));
        let large = Attempted::Failed(TransportError::TooLarge(10));
        assert!(matches!(
            decide(&q(), 1, &large, 0, 0.5),
            Settle::Dead { .. }
        ));
    }

    #[test]
    fn age_is_measured_from_receipt() {
        assert!(!expired(&q(), 0, 3_600_000));
        assert!(expired(&q(), 0, 3_600_001));
    }
}
