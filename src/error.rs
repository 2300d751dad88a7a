//! Every way a webhook request can fail, with an exhaustive mapping to the
//! HTTP status, the spec's `error` code, and whose fault it is.
//!
//! Whose fault decides the log level: a client's mistake is routine (the
//! internet sends junk), an upstream failure is worth a warning, an internal
//! failure is an error.

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use crate::forward::upstream::TransportError;
use crate::payload::Violation;
use crate::verify::signature::SignatureError;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller sent something wrong (4xx).
    Client,
    /// The app behind hookgate failed (502/504).
    Upstream,
    /// hookgate itself failed (500).
    Internal,
}

/// Why a request was not forwarded (or the forward failed).
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// Plain HTTP from a peer that is not a trusted proxy, or without
    /// `X-Forwarded-Proto: https` (only with `server.tls.enabled = false`).
    #[error("HTTPS is required: send through the TLS-terminating proxy")]
    HttpsRequired,
    /// The request does not name exactly one host (RFC 9112 §3.2, RFC 9113 §8.3.1).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// No route has this path.
    #[error("no route for this path")]
    NotFound,
    /// The method is not POST, GET or HEAD.
    #[error("method not allowed; use POST")]
    MethodNotAllowed,
    /// Declared or streamed body larger than `max_body_bytes`.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// Content-Type is not `application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedContentType,
    /// Content-Encoding is not `identity`.
    #[error("Content-Encoding must be identity (compressed bodies are not accepted)")]
    UnsupportedContentEncoding,
    /// The signature header is missing, repeated, malformed or wrong.
    #[error("invalid signature")]
    InvalidSignature(SignatureError),
    /// The client stopped sending before the body was complete, or too slowly.
    #[error("the request body could not be read completely")]
    BodyIncomplete {
        /// True when `body_read_timeout` ran out.
        timed_out: bool,
    },
    /// The body is not valid UTF-8 JSON, or has duplicate keys.
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body breaks the Cool Popup schema.
    #[error("body does not match the Cool Popup event schema")]
    InvalidPayload(Vec<Violation>),
    /// The signed `timestamp` is older than the route's `max_event_age`.
    #[error("the event is older than this route accepts (max_event_age)")]
    EventTooOld,
    /// The signed `timestamp` is further ahead than `max_clock_skew`.
    #[error("the event's timestamp is in the future (beyond max_clock_skew)")]
    EventFromFuture,
    /// The event is valid but the route does not accept it.
    #[error("event {0} is not enabled on this route")]
    EventNotAllowed(&'static str),
    /// The upstream refused the connection, reset it, or sent garbage.
    #[error("the upstream app is unavailable")]
    UpstreamUnavailable(#[source] TransportError),
    /// The upstream did not answer within `upstream.timeout`.
    #[error("the upstream app did not answer in time")]
    UpstreamTimeout(#[source] TransportError),
    /// The event store failed or took longer than `store.timeout`
    /// (queued routes): the provider should retry.
    #[error("the event store is unavailable; retry later")]
    StoreUnavailable(String),
    /// Something in hookgate failed.
    #[error("internal error")]
    Internal,
}

impl Rejection {
    /// The HTTP status sent to the caller.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::HttpsRequired => StatusCode::FORBIDDEN,
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedContentType | Self::UnsupportedContentEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            Self::BodyIncomplete { timed_out: true } => StatusCode::REQUEST_TIMEOUT,
            Self::BodyIncomplete { timed_out: false } => StatusCode::BAD_REQUEST,
            Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Self::InvalidPayload(_)
            | Self::EventNotAllowed(_)
            | Self::EventTooOld
            | Self::EventFromFuture => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The spec's `error` code; also the metrics `outcome` label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::HttpsRequired => "https_required",
            Self::InvalidRequest(_) => "invalid_request",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedContentType | Self::UnsupportedContentEncoding => {
                "unsupported_media_type"
            }
            Self::InvalidSignature(_) => "invalid_signature",
            Self::BodyIncomplete { timed_out: true } => "body_timeout",
            Self::BodyIncomplete { timed_out: false } => "body_incomplete",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidPayload(_) => "invalid_payload",
            Self::EventNotAllowed(_) => "event_not_allowed",
            Self::EventTooOld => "event_too_old",
            Self::EventFromFuture => "event_from_future",
            Self::UpstreamUnavailable(_) => "upstream_unavailable",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Internal => "internal_error",
        }
    }

    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::HttpsRequired
            | Self::InvalidRequest(_)
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::PayloadTooLarge { .. }
            | Self::UnsupportedContentType
            | Self::UnsupportedContentEncoding
            | Self::InvalidSignature(_)
            | Self::BodyIncomplete { .. }
            | Self::InvalidJson(_)
            | Self::InvalidPayload(_)
            | Self::EventNotAllowed(_)
            | Self::EventTooOld
            | Self::EventFromFuture => Fault::Client,
            Self::UpstreamUnavailable(_) | Self::UpstreamTimeout(_) => Fault::Upstream,
            Self::StoreUnavailable(_) | Self::Internal => Fault::Internal,
        }
    }

    /// The JSON error body: `{"error", "message"[, "details"]}`. Never holds
    /// the expected signature, a secret or a payload value.
    pub fn body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'static str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a [Violation]>,
        }
        let details = match self {
            Self::InvalidPayload(v) => Some(v.as_slice()),
            _ => None,
        };
        let body = Body {
            error: self.code(),
            message: self.to_string(),
            details,
        };
        match serde_json::to_vec(&body) {
            Ok(mut v) => {
                v.push(b'\n');
                Bytes::from(v)
            }
            Err(_) => Bytes::from_static(
                b"{\"error\":\"internal_error\",\"message\":\"internal error\"}\n",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spec_table_statuses_and_codes() {
        let rows: [(Rejection, u16, &str); 11] = [
            (Rejection::NotFound, 404, "not_found"),
            (Rejection::MethodNotAllowed, 405, "method_not_allowed"),
            (
                Rejection::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                Rejection::UnsupportedContentType,
                415,
                "unsupported_media_type",
            ),
            (
                Rejection::UnsupportedContentEncoding,
                415,
                "unsupported_media_type",
            ),
            (
                Rejection::InvalidSignature(SignatureError::Missing),
                401,
                "invalid_signature",
            ),
            (Rejection::InvalidJson("x".into()), 400, "invalid_json"),
            (Rejection::InvalidPayload(vec![]), 422, "invalid_payload"),
            (
                Rejection::EventNotAllowed("popup.shown"),
                422,
                "event_not_allowed",
            ),
            (
                Rejection::UpstreamUnavailable(TransportError::Target),
                502,
                "upstream_unavailable",
            ),
            (
                Rejection::UpstreamTimeout(TransportError::Timeout(Duration::from_secs(4))),
                504,
                "upstream_timeout",
            ),
        ];
        for (r, status, code) in rows {
            assert_eq!(r.status().as_u16(), status, "{r:?}");
            assert_eq!(r.code(), code);
            let body: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
            assert_eq!(body["error"], code);
            assert!(body["message"].is_string());
        }
    }

    #[test]
    fn invalid_payload_lists_details() {
        let r = Rejection::InvalidPayload(vec![Violation {
            path: "/visitor".into(),
            message: "is required",
        }]);
        let body: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(body["details"][0]["path"], "/visitor");
    }

    #[test]
    fn signature_reason_is_not_told_to_the_client() {
        let r = Rejection::InvalidSignature(SignatureError::Mismatch);
        let body = String::from_utf8(r.body().to_vec()).unwrap();
        assert!(!body.contains("matches no secret"), "{body}");
    }
}
