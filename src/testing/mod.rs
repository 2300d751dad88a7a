//! What the fuzz targets, benchmarks and integration tests need from the
//! inside, behind the `testing` cargo feature (never in a release build):
//! the checks of one request without sockets, and the pieces they time;
//! [`pg`], a throwaway PostgreSQL cluster for the store's tests.

pub mod pg;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::Full;

pub use crate::error::Rejection;
pub use crate::forward::headers::{Forwarding, normalize_request, request_id};
pub use crate::forward::upstream::Upstream;
pub use crate::load::{Route, Routes};
pub use crate::payload::{Event, EventKind, PayloadError, Unknown, Validated, Violation, validate};
pub use crate::verify::secret::{HmacSha256, Secret};
pub use crate::verify::signature::{self, Encoding, MAC_LEN, SignatureError};

use crate::forward::{Envelope, Peer};
use crate::verify::{Checked, Unverified};

/// What the checks made of one request.
#[derive(Debug)]
pub enum Verdict {
    /// Refused with this answer.
    Rejected(Rejection),
    /// An unknown event the route acknowledges: nothing forwarded.
    Acknowledged,
    /// The request for the app: `verified` is false only on a shadow route.
    Forwarded {
        /// Every check passed (`X-Webhook-Verified: true`).
        verified: bool,
        /// The known event, if any.
        event: Option<EventKind>,
        /// What the app would receive.
        request: Box<Request<Full<Bytes>>>,
    },
}

/// Only the checks (signature, schema, event list): true if the request
/// is verified. What `whole/verify+validate` times.
pub fn verify(routes: &Routes, request: Request<Bytes>) -> bool {
    let (parts, body) = request.into_parts();
    let Some(route) = routes.find(parts.uri.path()).cloned() else {
        return false;
    };
    matches!(
        Unverified::new(parts, body, route).check(None, time::OffsetDateTime::now_utc()),
        Ok(Checked::Verified(_))
    )
}

/// Runs one request through the checks and builds what the app would
/// receive, as the public listener does, without sockets.
pub fn check(
    routes: &Routes,
    upstream: &Upstream,
    request: Request<Bytes>,
    peer: SocketAddr,
    trusted_proxy: bool,
    request_id: &HeaderValue,
) -> Verdict {
    let (parts, body) = request.into_parts();
    let Some(route) = routes.find(parts.uri.path()).cloned() else {
        return Verdict::Rejected(Rejection::NotFound);
    };
    let peer = Peer::new(peer, trusted_proxy);
    match Unverified::new(parts, body, route).check(None, time::OffsetDateTime::now_utc()) {
        Err(rejection) => Verdict::Rejected(rejection),
        Ok(Checked::Acknowledged) => Verdict::Acknowledged,
        Ok(Checked::Verified(verified)) => {
            let event = verified.event().kind;
            match Envelope::new(verified, upstream, &peer, request_id) {
                Ok(envelope) => Verdict::Forwarded {
                    verified: true,
                    event,
                    request: Box::new(envelope.into_request().into_inner()),
                },
                Err(_) => Verdict::Rejected(Rejection::Internal),
            }
        }
        Ok(Checked::Shadowed(shadowed)) => {
            match shadowed.into_request(upstream, &peer, request_id) {
                Ok(request) => Verdict::Forwarded {
                    verified: false,
                    event: None,
                    request: Box::new(request.into_inner()),
                },
                Err(_) => Verdict::Rejected(Rejection::Internal),
            }
        }
    }
}

/// A signed-payload-shaped `event` body of exactly `size` bytes, as
/// benches/load/body.py makes them: `campaign_id` as given, a timestamp of
/// now (the replay window's), a visitor with form fields, padded with a
/// `note`. `None` if `size` is too small for the fixed part.
#[must_use]
pub fn sized_body(event: &str, campaign_id: &str, size: usize) -> Option<Vec<u8>> {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    let head = format!(
        r#"{{"event":"{event}","campaign_id":"{campaign_id}","campaign_name":"Summer Sale Popup","timestamp":"{now}","visitor":{{"email":"jane@example.com","fields":{{"name":"Jane Smith","email":"jane@example.com""#
    );
    let tail = r#"}},"page_url":"https://yoursite.com/products/summer-sale""#;
    // Room left for the padding field (`,"note":""`) and the closing `}`.
    const PAD_FIELD: usize = 11;
    let mut fields = String::new();
    for i in 0.. {
        let entry = format!(r#","field_{i}":"answer number {i} to question {i}""#);
        if head.len() + fields.len() + entry.len() + tail.len() + PAD_FIELD > size {
            break;
        }
        fields.push_str(&entry);
    }
    let pad = size.checked_sub(head.len() + fields.len() + tail.len() + PAD_FIELD)?;
    Some(format!(r#"{head}{fields}{tail},"note":"{}"}}"#, "x".repeat(pad)).into_bytes())
}

pub use crate::forward::h1::{Answer, Error as AnswerError};

/// Bytes handed out at most `step` at a time, as a socket might; never
/// pending: the end of the bytes is the end of the stream.
struct Pieces<'a> {
    data: &'a [u8],
    step: usize,
}

impl tokio::io::AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.step.min(self.data.len()).min(buf.remaining());
        let (now, later) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = later;
        std::task::Poll::Ready(Ok(()))
    }
}

/// Reads one answer of the app (`forward::h1::read_answer`) from `wire`,
/// handed out `step` bytes at a time (at least 1), with a body limit of
/// `max_body`. Returns the answer and how many bytes were left after it:
/// read into the connection's buffer, and not read at all (on a socket,
/// those would be found by the pool's check of an idle connection). `None`
/// if the reader waited for more bytes than `wire` has instead of ending:
/// it must never.
#[must_use]
pub fn read_answer(
    wire: &[u8],
    step: usize,
    max_body: usize,
) -> Option<(Result<Answer, AnswerError>, usize, usize)> {
    use std::future::Future;
    let mut io = Pieces {
        data: wire,
        step: step.max(1),
    };
    let mut buf = bytes::BytesMut::new();
    let answer = {
        let read = std::pin::pin!(crate::forward::h1::read_answer(&mut io, &mut buf, max_body));
        match read.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(answer) => answer,
            std::task::Poll::Pending => return None,
        }
    };
    Some((answer, buf.len(), io.data.len()))
}
