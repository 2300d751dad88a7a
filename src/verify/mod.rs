//! Is this request authentic, well formed, and wanted by its route?
//!
//! The types carry the answer: an [`Unverified`] request (head checked, body
//! read) goes through [`Unverified::check`] and comes out as a
//! [`Checked`]: [`Verified`] (the signature matched one of the route's
//! secrets, the body fits the schema, the route takes the event),
//! `Acknowledged` (authentic, but an event hookgate does not know, on a
//! route that acknowledges those), or — on a route in shadow mode only —
//! [`Shadowed`], a failed request that is forwarded marked unverified.
//! Only a `Verified` request can become an [`crate::forward::Envelope`],
//! the thing a delivery accepts. Nothing about the body is parsed before the
//! signature matched.

pub mod secret;
pub mod signature;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http::request::Parts;

use crate::config::UnknownEvents;
use crate::error::Rejection;
use crate::load::Route;
use crate::payload::{self, EventKind, PayloadError, Validated, Violation};
use signature::SignatureError;

/// A request whose head passed the checks and whose body was read, but whose
/// signature has not been checked yet.
pub(crate) struct Unverified {
    parts: Parts,
    body: Bytes,
    route: Arc<Route>,
}

/// What the event of a verified request is, for the headers hookgate sets
/// and the rules that follow (replay window, duplicates).
#[derive(Debug, Clone)]
pub(crate) struct EventInfo {
    /// One of the four, or None for an unknown event the route forwards.
    pub kind: Option<EventKind>,
    /// `X-Webhook-Event`: the event name where it can be a header.
    pub name: Option<HeaderValue>,
    /// `X-Webhook-Campaign-Id`, where the `campaign_id` meets its limits.
    pub campaign_id: Option<HeaderValue>,
    /// The signed `timestamp` of a known event.
    #[expect(
        dead_code,
        reason = "read by queued delivery (received_at), the next change"
    )]
    pub timestamp: Option<time::OffsetDateTime>,
}

/// A request whose signature matched one of its route's secrets, whose body
/// fits the schema, and whose event the route accepts. Only
/// [`Unverified::check`] makes one.
///
/// Its fields are private: only [`Unverified::check`] makes one, and
/// [`Verified::into_parts`] is the one way out (used by `Envelope::new`).
pub(crate) struct Verified {
    parts: Parts,
    body: Bytes,
    route: Arc<Route>,
    event: EventInfo,
}

impl Verified {
    /// The exact bytes the provider sent.
    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }

    /// What the event is.
    pub(crate) fn event(&self) -> &EventInfo {
        &self.event
    }

    /// The request head, body, route and event, for the envelope.
    pub(crate) fn into_parts(self) -> (Parts, Bytes, Arc<Route>, EventInfo) {
        (self.parts, self.body, self.route, self.event)
    }
}

/// Shadow mode: a request that failed `code`, forwarded anyway, marked
/// `X-Webhook-Verified: false`. It can never become an `Envelope`.
///
/// Private fields: only [`Unverified::check`] makes one.
pub(crate) struct Shadowed {
    parts: Parts,
    body: Bytes,
    route: Arc<Route>,
    code: &'static str,
}

impl Shadowed {
    /// The error code the request failed with.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// The request head, body, route and error code, for the marked request.
    pub(crate) fn into_parts(self) -> (Parts, Bytes, Arc<Route>, &'static str) {
        (self.parts, self.body, self.route, self.code)
    }
}

/// The result of the checks for a request that is not simply refused.
pub(crate) enum Checked {
    /// Authentic and well formed: forward it.
    Verified(Verified),
    /// Authentic, an event hookgate does not know, on a route that
    /// acknowledges those: answer 200, forward nothing.
    Acknowledged,
    /// Failed, on a route in shadow mode: forward it marked unverified.
    Shadowed(Shadowed),
}

impl fmt::Debug for Unverified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unverified")
            .field("route", &self.route.name)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("route", &self.route.name)
            .field("event", &self.event.kind)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Shadowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shadowed")
            .field("route", &self.route.name)
            .field("code", &self.code)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Verified(v) => v.fmt(f),
            Self::Acknowledged => f.write_str("Acknowledged"),
            Self::Shadowed(s) => s.fmt(f),
        }
    }
}

impl Unverified {
    /// A request for `route` with its head and complete body.
    pub(crate) fn new(parts: Parts, body: Bytes, route: Arc<Route>) -> Self {
        Self { parts, body, route }
    }

    /// Checks the signature over the raw bytes, then the schema, then the
    /// route's event list. `prior` is a rejection the head already earned
    /// on a shadow route (a wrong media type): on such a route every failure
    /// becomes [`Checked::Shadowed`]; on an enforcing route `prior` is None
    /// and a failure is the rejection.
    /// `now` is the time the replay window is measured from.
    pub(crate) fn check(
        self,
        prior: Option<Rejection>,
        now: time::OffsetDateTime,
    ) -> Result<Checked, Rejection> {
        let verdict = match prior {
            Some(rejection) => Err(rejection),
            None => self.verdict(now),
        };
        match verdict {
            Ok(Passed::Event(event)) => Ok(Checked::Verified(Verified {
                parts: self.parts,
                body: self.body,
                route: self.route,
                event,
            })),
            Ok(Passed::Acknowledged) => Ok(Checked::Acknowledged),
            Err(rejection) if self.route.shadow => Ok(Checked::Shadowed(Shadowed {
                parts: self.parts,
                body: self.body,
                route: self.route,
                code: rejection.code(),
            })),
            Err(rejection) => Err(rejection),
        }
    }

    fn verdict(&self, now: time::OffsetDateTime) -> Result<Passed, Rejection> {
        let route = &self.route;
        let mut values = self.parts.headers.get_all(&route.signature_header).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Err(Rejection::InvalidSignature(SignatureError::Missing)),
            (Some(_), Some(_)) => {
                return Err(Rejection::InvalidSignature(SignatureError::Repeated));
            }
            (Some(v), None) => v,
        };
        let tag = signature::parse(value.as_bytes(), route.encoding)
            .map_err(Rejection::InvalidSignature)?;
        signature::verify(&self.body, &tag, &route.secrets().secrets)
            .map_err(Rejection::InvalidSignature)?;

        let validated = payload::validate(&self.body).map_err(|e| match e {
            PayloadError::InvalidJson(m) => Rejection::InvalidJson(m),
            PayloadError::Invalid(v) => Rejection::InvalidPayload(v),
        })?;
        let event = match validated {
            Validated::Known(event) => event,
            Validated::Unknown(unknown) => {
                return match route.unknown_events {
                    UnknownEvents::Acknowledge => Ok(Passed::Acknowledged),
                    UnknownEvents::Reject => Err(Rejection::InvalidPayload(unknown.violations)),
                    UnknownEvents::Forward => Ok(Passed::Event(EventInfo {
                        kind: None,
                        name: unknown.name.as_deref().and_then(event_token),
                        campaign_id: unknown
                            .campaign_id
                            .and_then(|id| HeaderValue::from_str(&id).ok()),
                        timestamp: None,
                    })),
                };
            }
        };
        if !route.allows(event.kind) {
            return Err(Rejection::EventNotAllowed(event.kind.as_str()));
        }
        replay_window(route, event.timestamp, now)?;
        let campaign_id = HeaderValue::from_bytes(event.campaign_id.as_bytes()).map_err(|_| {
            Rejection::InvalidPayload(vec![Violation {
                path: "/campaign_id".to_owned(),
                message: "cannot be carried in an HTTP header",
            }])
        })?;
        Ok(Passed::Event(EventInfo {
            kind: Some(event.kind),
            name: Some(HeaderValue::from_static(event.kind.as_str())),
            campaign_id: Some(campaign_id),
            timestamp: Some(event.timestamp),
        }))
    }
}

/// The replay window on a known event's signed `timestamp`: not older
/// than `max_event_age` (unless that is zero), not later than now plus
/// `max_clock_skew`.
fn replay_window(
    route: &Route,
    timestamp: time::OffsetDateTime,
    now: time::OffsetDateTime,
) -> Result<(), Rejection> {
    if !route.max_event_age.is_zero() && timestamp < now - route.max_event_age {
        return Err(Rejection::EventTooOld);
    }
    if timestamp > now + route.max_clock_skew {
        return Err(Rejection::EventFromFuture);
    }
    Ok(())
}

/// What a request that passed the checks is.
enum Passed {
    /// Forward it.
    Event(EventInfo),
    /// An unknown event on a route that acknowledges those.
    Acknowledged,
}

/// `[A-Za-z0-9._-]{1,64}`: an unknown event name that may become `X-Webhook-Event`.
fn event_token(name: &str) -> Option<HeaderValue> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then(|| HeaderValue::from_str(name).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_tokens_are_short_and_clean() {
        assert!(event_token("popup.hovered").is_some());
        assert!(event_token(&"e".repeat(64)).is_some());
        for bad in ["", "with space", "a/b", "ä", &"e".repeat(65)] {
            assert!(event_token(bad).is_none(), "{bad:?}");
        }
    }
}
