//! Reading a request body, bounded in size and time, and draining what is
//! left of one after an early answer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

use crate::error::Rejection;

/// Reads the whole body within `timeout`, refusing it as soon as it grows
/// past `limit`. `size_hint` is the declared length, to allocate once.
pub(super) async fn read<B>(
    body: &mut B,
    limit: usize,
    size_hint: usize,
    timeout: Duration,
) -> Result<Bytes, Rejection>
where
    B: Body<Data = Bytes> + Unpin,
{
    tokio::time::timeout(timeout, read_all(body, limit, size_hint))
        .await
        .unwrap_or(Err(Rejection::BodyIncomplete { timed_out: true }))
}

async fn read_all<B>(body: &mut B, limit: usize, size_hint: usize) -> Result<Bytes, Rejection>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Rejection::BodyIncomplete { timed_out: false })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we forward
        };
        let so_far = first.as_ref().map_or(buf.len(), Bytes::len);
        if so_far + data.len() > limit {
            return Err(Rejection::PayloadTooLarge { limit });
        }
        // The common case, a body in one frame, is kept without a copy.
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(f) => {
                buf.reserve(size_hint.max(f.len() + data.len()));
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// How much of an unread body is drained after an early answer, and for how
/// long, so the client reads the answer instead of a reset.
const DRAIN_BYTES: usize = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and discards what is left of a body in the background (bounded),
/// so closing the connection after an early answer does not reset it while
/// the client is still sending.
pub(super) fn drain<B>(mut body: B)
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, Bytes::len);
                if seen > DRAIN_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn body_limit_applies_to_streamed_bodies() {
        use http_body_util::StreamBody;
        let frames = || {
            futures_util::stream::iter([
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(
                    b"12345",
                ))),
                Ok(http_body::Frame::data(Bytes::from_static(b"67890"))),
            ])
        };
        let second = Duration::from_secs(1);
        let mut body = StreamBody::new(frames());
        assert_eq!(read(&mut body, 10, 0, second).await.unwrap(), "1234567890");
        let mut body = StreamBody::new(frames());
        assert!(matches!(
            read(&mut body, 9, 0, second).await,
            Err(Rejection::PayloadTooLarge { limit: 9 })
        ));
    }
}
